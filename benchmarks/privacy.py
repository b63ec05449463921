r"""DP, secure aggregation and compression on what KD sends: docs/PRIVACY.md.

  python -m benchmarks.privacy --runs_dir=DIR --jobs=2   # runs, then the page
  python -m benchmarks.privacy                           # the page alone

The question: at the same epsilon, does sending knowledge (FedDF's logits,
FD's per-label outputs, DS-FL's soft labels) beat sending weights (FedAvg)?
Each algorithm runs under every `--aggregator` (`tff_kd.privacy`; the
mechanisms are described in docs/DESIGN.md) on digits and mnist1d. With
--runs_dir, the runs the store (docs/privacy/curves.csv) lacks are made with
`binaries.train --resume` under DIR and stored (`benchmarks.runs`); the page
and its plot are written from the store alone. A run whose model goes
non-finite (FedDF at large noise) is stored as such: the setting diverges.

Differences are judged by the claims page's rule: paired over seeds, the 95%
t-interval of the mean difference must exclude zero.
"""

from collections.abc import Mapping, Sequence
import os

from absl import app
from absl import flags
import matplotlib
matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from benchmarks import runs as stored_runs
from benchmarks.runs import final, interval, read_store, selected

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _define_flags():
  """The flags, defined when run as a program (importing defines none)."""
  flags.DEFINE_string(
      'runs_dir', None, 'Where the runs go (resumable); unset: write the '
      'page from the store alone.')
  flags.DEFINE_integer('jobs', 1, 'Runs at a time.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds.')
  flags.DEFINE_string(
      'store', os.path.join(_REPO, 'docs', 'privacy', 'curves.csv'),
      'The stored curves.')
  flags.DEFINE_string(
      'page', os.path.join(_REPO, 'docs', 'PRIVACY.md'),
      'The page written (its plot goes to privacy/ beside it).')


TASKS = ('digits', 'mnist1d')
# The output-exchange papers' cross-silo scale: 20 clients, 10 per round
# (sampling rate 0.5), delta = 1/20 (the default, 1/N).
COMMON = dict(partition='dirichlet', alpha=0.1, num_clients=20,
              clients_per_round=10, rounds=20, rounds_per_eval=1,
              rounds_per_checkpoint=10)
# FedDF releases two noisy sums a round (model and logits): at z sqrt(2) it
# spends the epsilon the others spend at z.
_SQRT2 = 2 ** 0.5
AGGREGATORS = {
    'mean': {},
    'dp0.3': dict(aggregator='dp', dp_noise_multiplier=0.3),
    'dp1.0': dict(aggregator='dp', dp_noise_multiplier=1.0),
    'dp0.4243': dict(aggregator='dp', dp_noise_multiplier=0.4243),
    'dp1.4142': dict(aggregator='dp', dp_noise_multiplier=1.4142),
    'secure': dict(aggregator='secure'),
    # Every tensor quantized: TFF's default threshold (20,000 entries) would
    # leave the knowledge payloads and most weights unquantized.
    'compression': dict(aggregator='compression', compression_threshold=0),
}
ALGORITHMS = ('fedavg', 'feddf', 'fd', 'dsfl')
# Variant -> (algorithm, its flags).
VARIANTS = {name: (name, {}) for name in ALGORITHMS} | {
    'fd_alone': ('fd', {'fd_beta': 0.0}),  # FD's clients without the exchange.
}
# Aggregator setting -> the variants run under it.
PLAN = {
    'mean': list(VARIANTS),
    'dp0.3': list(ALGORITHMS),
    'dp1.0': list(ALGORITHMS),
    'dp0.4243': ['feddf'],
    'dp1.4142': ['feddf'],
    'secure': list(ALGORITHMS),
    'compression': list(ALGORITHMS),
}
# The epsilon levels: the aggregator setting of each variant at that level.
LEVELS = {
    'low noise': {'fedavg': 'dp0.3', 'feddf': 'dp0.4243', 'fd': 'dp0.3',
                  'dsfl': 'dp0.3'},
    'high noise': {'fedavg': 'dp1.0', 'feddf': 'dp1.4142', 'fd': 'dp1.0',
                   'dsfl': 'dp1.0'},
}
FIELDS = ('setting', 'variant', 'seed', 'round', 'test_accuracy',
          'validation_accuracy', 'clients_accuracy',
          'clients_validation_accuracy', 'mb', 'mb_up', 'mb_up_plain',
          'epsilon', 'status', 'commit')


def run_flags(task: str, aggregator: str, variant: str,
              seed: int) -> list[str]:
  """The `binaries.train` flags of one run."""
  algorithm, extra = VARIANTS[variant]
  values = dict(COMMON, task=task, algorithm=algorithm, seed=seed,
                **AGGREGATORS[aggregator], **extra)
  return [f'--{k}={v}' for k, v in sorted(values.items())]


def planned_runs(seeds: Sequence[int]) -> dict:
  """(task_aggregator, variant, seed) -> flags, plain runs first."""
  return {(f'{task}_{aggregator}', variant, seed):
          run_flags(task, aggregator, variant, seed)
          for aggregator, variants in PLAN.items() for seed in seeds
          for task in TASKS for variant in variants}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  values = flags.FLAGS
  if values.jobs < 1:
    raise app.UsageError(f'--jobs must be >= 1; got {values.jobs}.')
  if values.runs_dir:
    stored_runs.run_missing(
        planned_runs([int(s) for s in values.seeds]), values.runs_dir,
        values.store, FIELDS, values.jobs, keep_non_finite=True)
  write_page(values.store, values.page)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
