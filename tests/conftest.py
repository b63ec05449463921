"""Test-session setup: quiet TF, parsed absl flags, and one owned TFF worker for the whole session.

Every TFF computation in the tests runs on a worker that `tff_kd.runtime`
started and stops at the end of the session (TFF's default local context would
leak its worker at exit).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # Shared helpers: tests/tiny.py.
# The repository root: benchmarks/ (not installed) beside the packages.
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import flags  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from tff_kd import runtime  # pylint: disable=g-import-not-at-top


# absltest helpers (create_tempdir, flagsaver) need parsed absl flags; pytest
# does not parse them, so the defaults stand.
if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope='session', autouse=True)
def tff_runtime():
  with runtime.LocalRuntime() as local_runtime:
    yield local_runtime


def pytest_collection_modifyitems(config, items):
  """Drops `tf.test.TestCase.test_session`, a deprecated context manager
  that pytest would collect, and skip, as a test of every test class."""
  del config
  items[:] = [item for item in items if item.name != 'test_session']
