"""Importing `binaries` silences TensorFlow's and gRPC's C++ logs, unless the
user set their level."""

import os
import subprocess
import sys

import tensorflow as tf

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
_VARIABLES = ('TF_CPP_MIN_LOG_LEVEL', 'GRPC_VERBOSITY')


def _levels_after_import(**env):
  """The variables as a fresh `import binaries` leaves them."""
  environ = {k: v for k, v in os.environ.items() if k not in _VARIABLES}
  result = subprocess.run(
      [sys.executable, '-c', 'import os, binaries; print(*(os.environ[v] for v'
       f' in {_VARIABLES!r}))'],
      cwd=_REPO, env=dict(environ, **env), capture_output=True, text=True,
      check=True)
  return result.stdout.split()


class QuietLogsTest(tf.test.TestCase):

  def test_silenced_by_default(self):
    self.assertEqual(_levels_after_import(), ['3', 'ERROR'])

  def test_a_users_levels_are_kept(self):
    self.assertEqual(
        _levels_after_import(TF_CPP_MIN_LOG_LEVEL='0', GRPC_VERBOSITY='INFO'),
        ['0', 'INFO'])


if __name__ == '__main__':
  tf.test.main()
