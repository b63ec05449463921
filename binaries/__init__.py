"""absl launchers. TensorFlow's C++ logs (hundreds of grappler INFO lines, CUDA-less
ERROR lines per run) are silenced before TensorFlow loads, unless the user set
TF_CPP_MIN_LOG_LEVEL."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
