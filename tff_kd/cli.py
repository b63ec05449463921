"""Console scripts for the checkout's binaries: `tff-kd-train ARGS` is
`python -m binaries.train ARGS` (likewise `tff-kd-compare`, `tff-kd-results`),
from any directory.

The binaries are the repository's programs, not installed (pyproject.toml):
a script runs those of the checkout this `tff_kd` is installed from
(`pip install -e .`, as the Makefile does). Without one, it says so.
"""

import os
import runpy
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(binary: str) -> None:
  if not os.path.isfile(os.path.join(_ROOT, 'binaries', f'{binary}.py')):
    sys.exit(f'{os.path.basename(sys.argv[0])} runs binaries/{binary}.py of '
             f'the checkout tff_kd is installed from (pip install -e .); '
             f'there is none at {_ROOT}.')
  sys.path.insert(0, _ROOT)
  runpy.run_module(f'binaries.{binary}', run_name='__main__', alter_sys=True)


def train() -> None:
  _run('train')


def compare() -> None:
  _run('compare')


def results() -> None:
  _run('results')
