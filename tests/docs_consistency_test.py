"""A hand-written page quotes a generated table's figures as that table has
them: FIDELITY.md's before-and-after table against RESULTS.md's summary, for
the settings RESULTS.md generates."""

import os
import re

import pytest

_DOCS = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'docs')


@pytest.fixture(autouse=True)
def tff_runtime():
  """Overrides conftest's session worker: nothing here runs TFF."""
  yield None


def _read(name: str) -> str:
  with open(os.path.join(_DOCS, name)) as f:
    return f.read()


def _rows(table: str) -> list[list[str]]:
  """The cells of a markdown table's body rows."""
  return [[cell.strip() for cell in line.strip().strip('|').split('|')]
          for line in table.strip().splitlines()[2:]]


def _results_summary() -> dict[tuple[str, str], str]:
  """(algorithm, setting) -> 'mean +- std' of RESULTS.md's first table."""
  text = _read('RESULTS.md')
  table = re.search(r'\n(\| algorithm \|.*?)\n\n', text, re.DOTALL).group(1)
  header = [c.strip() for c in table.splitlines()[0].strip('|').split('|')]
  return {(row[0], setting): value for row in _rows(table)
          for setting, value in zip(header[1:], row[1:])}


def _fidelity_after() -> dict[tuple[str, str], str]:
  """(algorithm, setting) -> FIDELITY.md's 'after' figure."""
  text = _read('FIDELITY.md')
  table = text.split('<!-- before-after -->', 1)[1].split(
      '<!-- /before-after -->', 1)[0]
  header = [c.strip() for c in table.strip().splitlines()[0].strip(
      '|').split('|')]
  settings = [re.match(r'(\w+) alpha ([\d.]+) before', c).groups()
              for c in header[1::2]]
  return {(row[0], f'{task}_alpha{alpha}'): after for row in _rows(table)
          for (task, alpha), after in zip(settings, row[2::2])}


def test_fidelity_quotes_results_as_generated():
  summary, after = _results_summary(), _fidelity_after()
  shared = sorted(key for key in after if key in summary)
  assert len(shared) >= 20, shared  # Both tasks at alpha 0.1, every row.
  for key in shared:
    assert after[key] == summary[key], (
        f'FIDELITY.md quotes {key} as {after[key]}; RESULTS.md has '
        f'{summary[key]}')
