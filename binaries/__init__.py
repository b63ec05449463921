"""absl launchers. The C++ logs of TensorFlow (hundreds of grappler INFO lines,
CUDA-less ERROR lines per run) and of gRPC (TFF's runtime; an INFO line when a
worker starts while another's threads run) are silenced before they load,
unless the user set TF_CPP_MIN_LOG_LEVEL or GRPC_VERBOSITY. `git_commit()` is the
commit the generated pages name."""

import os
import subprocess
from typing import Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')


def git_commit(directory: Optional[str] = None) -> str:
  """The short commit of the checkout at `directory` (default: this one),
  or 'unknown' (an unpacked archive, a machine without git): a page still
  gets written, and says so."""
  try:
    return subprocess.run(
        ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
        text=True, check=True,
        cwd=directory or os.path.dirname(os.path.abspath(__file__)),
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'
