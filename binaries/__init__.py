"""absl launchers. The C++ logs of TensorFlow (hundreds of grappler INFO lines,
CUDA-less ERROR lines per run) and of gRPC (TFF's runtime; an INFO line when a
worker starts while another's threads run) are silenced before they load,
unless the user set TF_CPP_MIN_LOG_LEVEL or GRPC_VERBOSITY."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')
