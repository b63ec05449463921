"""The pages tell what their commands write: a generated page names its
command and, where its runs are stored, is exactly what that command writes
from them; a hand-written page copies no figure of a generated table."""

import os
import re

from absl.testing import parameterized
import pytest
import tensorflow as tf

from benchmarks import claims
from benchmarks import privacy

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DOCS = os.path.join(_REPO, 'docs')
HAND_WRITTEN = ('README.md', 'docs/DESIGN.md', 'docs/FIDELITY.md')
# What a generated table's figures look like in prose: a mean +- std, a
# difference with its interval, a difference in accuracy points.
_COPIED_FIGURE = re.compile(
    r'\d\.\d{3} \+- \d\.\d{3}|[+-]\d+\.\d \[[+-]\d|\d+(?:\.\d+)? points')


@pytest.fixture(autouse=True)
def tff_runtime():
  """Overrides conftest's session worker: nothing here runs TFF."""
  yield None


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


class DocsConsistencyTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      ('CLAIMS.md', 'claims', claims.write_page),
      ('PRIVACY.md', 'privacy', privacy.write_page))
  def test_page_is_what_its_command_writes_from_the_store(self, page, store,
                                                          write_page):
    written = os.path.join(self.create_tempdir().full_path, page)
    write_page(os.path.join(_DOCS, store, 'curves.csv'), written)
    self.assertEqual(_read(written), _read(os.path.join(_DOCS, page)))

  def test_every_generated_page_names_its_command(self):
    for name in sorted(os.listdir(_DOCS)):
      path = os.path.join('docs', name)
      if name.endswith('.md') and path not in HAND_WRITTEN:
        head = '\n'.join(_read(os.path.join(_REPO, path)).splitlines()[:20])
        self.assertRegex(head, r'python -m (benchmarks|binaries)\.\w+', path)

  def test_hand_written_pages_copy_no_generated_figure(self):
    for path in HAND_WRITTEN:
      for number, line in enumerate(
          _read(os.path.join(_REPO, path)).splitlines(), 1):
        self.assertIsNone(
            _COPIED_FIGURE.search(line),
            f'{path}:{number} quotes a figure of a generated table; link the '
            f'page instead: {line}')


if __name__ == '__main__':
  tf.test.main()
