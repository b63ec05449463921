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
from typing import Optional

from absl import app
from absl import flags
import matplotlib
matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from benchmarks import runs as stored_runs
from benchmarks.runs import final, interval, points, read_store, selected

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


def _seeds(runs: Mapping, setting: str, variant: str) -> list[int]:
  return sorted(s for (st, v, s) in runs if st == setting and v == variant)


def _diverged(rows) -> str:
  return rows[0].get('status', '')


def _accuracy(rows, model: str, measure: str) -> float:
  return (final if measure == 'final' else selected)(rows, model=model)


def _epsilon(runs: Mapping, setting: str, variant: str) -> Optional[float]:
  """The epsilon spent by the runs' last round (the most over the seeds: a
  run stopped early spent less); None without runs."""
  return max((float(max(runs[setting, variant, s],
                        key=lambda r: int(r['round']))['epsilon'])
              for s in _seeds(runs, setting, variant)), default=None)


def cell(runs: Mapping, setting: str, variant: str, model: str = 'global',
         measure: str = 'final') -> str:
  """mean +- std over seeds; the seeds whose model went non-finite named."""
  seeds = _seeds(runs, setting, variant)
  if not seeds:
    return ''
  diverged = [(s, _diverged(runs[setting, variant, s])) for s in seeds
              if _diverged(runs[setting, variant, s])]
  values = np.array([_accuracy(runs[setting, variant, s], model, measure)
                     for s in seeds if _diverged(runs[setting, variant, s])
                     == ''])
  text = (f'{values.mean():.3f} +- {values.std():.3f}' if len(values) else '')
  if diverged:
    text += ((' (' if text else '') + f'{len(diverged)} of {len(seeds)} '
             'seeds non-finite: ' + ', '.join(
                 f'seed {s} {status}' for s, status in diverged)
             + (')' if text else ''))
  return text


def level_epsilons(runs: Mapping, task: str) -> dict[str, dict[str, float]]:
  """Level -> variant -> the epsilon its runs spent by the last round."""
  out = {}
  for level, settings in LEVELS.items():
    spent = {variant: _epsilon(runs, f'{task}_{aggregator}', variant)
             for variant, aggregator in settings.items()}
    out[level] = {v: e for v, e in spent.items() if e is not None}
  return out


def _level_name(epsilons: Mapping[str, float]) -> str:
  if not epsilons:
    return 'not run'
  values = sorted(set(f'{e:.3g}' for e in epsilons.values()))
  return 'epsilon ' + ' / '.join(values)


def accuracy_table(runs: Mapping, task: str, measure: str) -> str:
  levels = level_epsilons(runs, task)
  others = [_epsilon(runs, f'{task}_{a}', 'feddf') for a in ('dp0.3', 'dp1.0')]
  header = (['algorithm', 'no DP']
            + [_level_name(levels[level]) for level in LEVELS]
            + ['FedDF at the others\' z' + (
                ' (epsilon ' + ' / '.join(f'{e:.3g}' for e in others) + ')'
                if None not in others else ''), 'secure', 'compression'])
  rows = []
  for variant, model, name in (
      [(a, 'global', a) for a in ALGORITHMS]
      + [('dsfl', 'clients', 'dsfl[clients]'),
         ('fd_alone', 'global', 'fd, clients alone (beta 0)')]):
    row = [name, cell(runs, f'{task}_mean', variant, model, measure)]
    for level in LEVELS:
      aggregator = LEVELS[level].get(variant)
      row.append(cell(runs, f'{task}_{aggregator}', variant, model, measure)
                 if aggregator and variant != 'fd_alone' else '')
    others = [cell(runs, f'{task}_{a}', variant, model, measure)
              for a in ('dp0.3', 'dp1.0')]
    row.append(' / '.join(others) if variant == 'feddf' and any(others)
               else '')
    for aggregator in ('secure', 'compression'):
      row.append(cell(runs, f'{task}_{aggregator}', variant, model, measure)
                 if variant != 'fd_alone' else '')
    rows.append(row)
  return _markdown(header, rows)


def _z(aggregator: str) -> float:
  return AGGREGATORS[aggregator]['dp_noise_multiplier']


def _markdown(header, rows) -> str:
  return '\n'.join(['| ' + ' | '.join(header) + ' |',
                    '|---' * len(header) + '|']
                   + ['| ' + ' | '.join(row) + ' |' for row in rows])


def compare(runs: Mapping, a: tuple[str, str], b: tuple[str, str],
            model: str = 'global'):
  """(A - B selected, A - B final) intervals, paired by seed, or None when
  fewer than 2 seeds of both finished."""
  seeds = [s for s in sorted(set(_seeds(runs, *a)) & set(_seeds(runs, *b)))
           if not _diverged(runs[(*a, s)]) and not _diverged(runs[(*b, s)])]
  if len(seeds) < 2:
    return None
  return tuple(
      interval([_accuracy(runs[(*a, s)], model, measure)
                - _accuracy(runs[(*b, s)], model, measure) for s in seeds])
      for measure in ('selected', 'final')) + (len(seeds),)


def _verdict(low, high) -> str:
  return ('above' if low > 0 else 'below' if high < 0 else
          'not distinguishable')


def _comparison_row(label, result) -> list[str]:
  if result is None:
    return label + ['fewer than 2 seeds finished', '', 'not measured']
  (mean, low, high), (f_mean, f_low, f_high), n = result
  return label + [
      f'{points(mean)} [{points(low)}, {points(high)}] ({n} seeds)',
      f'{points(f_mean)} [{points(f_low)}, {points(f_high)}]',
      _verdict(low, high)]


def knowledge_rows(runs: Mapping) -> list[tuple]:
  """(task, level, algorithm, result, FedAvg's setting): each knowledge
  algorithm against FedAvg at the same epsilon (and without DP); a level is
  named with the epsilon its runs spent."""
  out = []
  for task in TASKS:
    epsilons = level_epsilons(runs, task)
    levels = [('no DP', {v: 'mean' for v in ALGORITHMS})] + [
        (f'{level}, {_level_name(epsilons[level])}', LEVELS[level])
        for level in LEVELS]
    for level, settings in levels:
      for algorithm in ALGORITHMS[1:]:
        fedavg = f'{task}_{settings["fedavg"]}'
        out.append((task, level, algorithm, compare(
            runs, (f'{task}_{settings[algorithm]}', algorithm),
            (fedavg, 'fedavg')), fedavg))
  return out


def _mean_selected(runs: Mapping, setting: str, variant: str) -> float:
  return np.mean([selected(runs[setting, variant, s])
                  for s in _seeds(runs, setting, variant)
                  if not _diverged(runs[setting, variant, s])])


def answer(runs: Mapping, rows: Sequence[tuple]) -> str:
  private = [r for r in rows if r[1] != 'no DP' and r[3] is not None]
  if not private:
    return '**Not measured yet**: the store has no DP runs.'
  above = [r for r in private if r[3][0][1] > 0]
  below = [r for r in private if r[3][0][2] < 0]
  names = {'feddf': 'FedDF', 'fd': 'FD', 'dsfl': 'DS-FL'}
  listed = lambda rs: '; '.join(f'{names[a]} on {t} at {lv}'
                                for t, lv, a, _, _ in rs)
  verdict = ('**No.**' if not above else
             '**Yes.**' if len(above) == len(private) else '**In part.**')
  return (f'{verdict} Of the {len(private)} comparisons at the same epsilon '
          '(FedDF, FD and DS-FL against FedAvg, at two noise levels, on two '
          f'tasks; selected accuracy, the rule below), sending knowledge '
          f'comes out above sending weights in {len(above)}'
          + (f' ({listed(above)})' if above else '')
          + f' and below in {len(below)}'
          + (f' ({listed(below)})' if below else '') + '.'
          + context(runs, above))


def context(runs: Mapping, above: Sequence[tuple]) -> str:
  """Where knowledge came out above: FedAvg's accuracy there, and FD's
  clients trained alone (no exchange at all), selected accuracy."""
  where = dict.fromkeys((t, lv, fedavg) for t, lv, _, _, fedavg in above)
  if not where:
    return ''
  return (' Where it comes out above, FedAvg itself is at ' + '; '.join(
      f'{_mean_selected(runs, fedavg, "fedavg"):.3f} ({t}, {lv})'
      for t, lv, fedavg in where) + ', while FD\'s clients trained alone, '
      'with no exchange at all, reach ' + '; '.join(
          f'{_mean_selected(runs, f"{t}_mean", "fd_alone"):.3f} ({t})'
          for t in dict.fromkeys(t for t, _, _ in where)) + '.')


def compression_table(runs: Mapping) -> str:
  rows = []
  for task in TASKS:
    for algorithm in ALGORITHMS:
      plain = [runs[f'{task}_mean', algorithm, s]
               for s in _seeds(runs, f'{task}_mean', algorithm)]
      packed = [runs[f'{task}_compression', algorithm, s]
                for s in _seeds(runs, f'{task}_compression', algorithm)]
      if not plain or not packed:
        continue
      mb = lambda rs: np.mean([float(max(r, key=lambda x: int(x['round']))
                                     ['mb_up']) for r in rs])
      rows.append([task, algorithm, f'{mb(plain):.3g}', f'{mb(packed):.3g}',
                   cell(runs, f'{task}_mean', algorithm),
                   cell(runs, f'{task}_compression', algorithm)])
  return _markdown(['task', 'algorithm', 'MB up, plain', 'MB up, 8-bit',
                    'final accuracy, plain', 'final accuracy, 8-bit'], rows)


def plot(runs: Mapping, path: str) -> None:
  """Final accuracy (mean +- std over seeds) at each noise level, per task."""
  figure, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.6))
  for axis, task in zip(np.atleast_1d(axes), TASKS):
    levels = level_epsilons(runs, task)
    labels = ['no DP'] + [_level_name(levels[level]) for level in LEVELS]
    for variant, model, name in ([(a, 'global', a) for a in ALGORITHMS]
                                 + [('dsfl', 'clients', 'dsfl[clients]')]):
      settings = ['mean'] + [LEVELS[level][variant] for level in LEVELS]
      points = []
      for i, aggregator in enumerate(settings):
        setting = f'{task}_{aggregator}'
        finished = [runs[setting, variant, s]
                    for s in _seeds(runs, setting, variant)
                    if not _diverged(runs[setting, variant, s])]
        if finished:
          values = [final(r, model=model) for r in finished]
          points.append((i, np.mean(values), np.std(values)))
      if points:
        x, y, e = zip(*points)
        axis.errorbar(x, y, yerr=e, marker='o', capsize=3, label=name)
    alone = [final(runs[f'{task}_mean', 'fd_alone', s])
             for s in _seeds(runs, f'{task}_mean', 'fd_alone')]
    if alone:
      axis.axhline(np.mean(alone), color='gray', linestyle='--',
                   label='clients alone')
    axis.set_xticks(range(len(labels)), labels)
    axis.set_title(task)
    axis.set_ylabel('final test accuracy')
    if axis.get_legend_handles_labels()[0]:
      axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100, metadata={'Software': None})
  plt.close(figure)


def write_page(store: str, page: str) -> None:
  runs = read_store(store)
  commits = sorted({r['commit'] for rows in runs.values() for r in rows})
  knowledge = knowledge_rows(runs)
  assets = os.path.join(os.path.dirname(os.path.abspath(page)), 'privacy')
  os.makedirs(assets, exist_ok=True)
  plot(runs, os.path.join(assets, 'accuracy_vs_epsilon.png'))
  common = ' '.join(f'--{k}={v}' for k, v in sorted(COMMON.items()))
  clients = COMMON['num_clients']
  rate = COMMON['clients_per_round'] / clients
  lines = [
      '# Private and compressed knowledge: DP, secure aggregation and '
      'compression on what KD sends',
      '',
      'KD\'s selling points are privacy and communication: FD and DS-FL send '
      'outputs instead of weights. This page puts differential privacy '
      '(DP), secure aggregation and compression on what each algorithm '
      'sends (`--aggregator`; the mechanisms, their bounds and the privacy '
      'accounting are in docs/DESIGN.md, "Privacy and compression") and '
      'asks: **at the same epsilon, does sending '
      'knowledge beat sending weights?**',
      '',
      answer(runs, knowledge),
      '',
      'Generated by `python -m benchmarks.privacy` from the stored curves '
      '(docs/privacy/curves.csv); the runs were made by `python -m '
      'benchmarks.privacy --runs_dir=DIR --jobs=2` at commit(s) '
      f'{", ".join(commits) or "none"}.',
      '',
      '## Setting',
      '',
      f'Each run is `binaries.train --task=TASK` (digits, mnist1d) '
      f'`{common}` with its algorithm and aggregator, every other flag at '
      'its default, seeds ' + ', '.join(
          str(s) for s in sorted({k[2] for k in runs})) + '. '
      f'The sampling rate is {rate:g} and delta = 1/{clients} (the '
      'default, 1/N). '
      'FedAvg, FD and DS-FL release one noisy sum a round; FedDF releases '
      'two (model and logits), so it runs at z sqrt(2) to spend the '
      'epsilon the others spend at z, and its runs at the others\' z are '
      'listed beside. The noise levels: ' + '; '.join(
          f'{level}: z = {_z(settings["fedavg"])} (FedDF '
          f'{_z(settings["feddf"])})' for level, settings in LEVELS.items())
      + '. FedDF uses the labelled validation split for early '
      'stopping (its default, as its code). Runs under `dp` and '
      '`compression` are not reproducible bit for bit: TF Privacy\'s noise '
      'and TFF\'s stochastic quantization are unseeded.',
      '',
      '| aggregator setting | flags |',
      '|---|---|',
  ] + [f'| {name} | `' + (' '.join(f'--{k}={v}' for k, v in flags_.items())
                          or '(none: --aggregator=mean)') + '` |'
       for name, flags_ in AGGREGATORS.items()] + [
      '',
      '`dsfl` is DS-FL\'s server model, `dsfl[clients]` the mean of its '
      'clients\' models; FD\'s accuracy is its clients\' mean, and `fd, '
      'clients alone` is FD without its distillation term (`--fd_beta=0`). '
      'A seed whose model went non-finite stopped there (the setting '
      'diverges) and is left out of the mean.',
      '',
      '## Final test accuracy',
      '',
      'Mean +- std over seeds.',
      '',
  ]
  for task in TASKS:
    lines += [f'### {task}', '', accuracy_table(runs, task, 'final'), '']
  lines += ['![accuracy vs epsilon](privacy/accuracy_vs_epsilon.png)', '',
            '## Selected test accuracy', '',
            'The test accuracy of the round with the best accuracy on the '
            'labelled validation split (never the maximum over test '
            'rounds); mean +- std over seeds.', '']
  for task in TASKS:
    lines += [f'### {task}', '', accuracy_table(runs, task, 'selected'), '']
  header = ['task', 'noise', 'algorithm (A) against fedavg (B)',
            'A - B selected [95% CI]', 'A - B final [95% CI]', 'A is']
  lines += [
      '## Knowledge against weights at the same epsilon',
      '',
      'The claims page\'s rule (docs/CLAIMS.md): the difference A - B per '
      'seed (paired: a seed fixes the split, the initialization and the '
      'client sampling of both runs), in accuracy points; A is above (or '
      'below) B when the 95% t-interval of its mean over the seeds lies '
      'above (below) zero. Seeds that went non-finite in either run are '
      'left out.',
      '',
      _markdown(header, [_comparison_row([t, lv, a], r)
                         for t, lv, a, r, _ in knowledge]),
      '',
      '## Secure aggregation and compression against the plain mean',
      '',
      'By the same rule: each algorithm under `secure` and `compression` '
      '(A) against its own run under `mean` (B).',
      '',
      _markdown(['task', 'algorithm', 'aggregator (A) against mean (B)',
                 'A - B selected [95% CI]', 'A - B final [95% CI]', 'A is'],
                [_comparison_row([t, a, g], compare(
                    runs, (f'{t}_{g}', a), (f'{t}_mean', a)))
                 for t in TASKS for a in ALGORITHMS
                 for g in ('secure', 'compression')]),
      '',
      '## Compression: accuracy against MB uploaded',
      '',
      '8 bits per entry, every tensor quantized; MB uploaded by all clients '
      'over all rounds (mean over seeds), encoded sizes '
      '(`communication/bytes_uploaded` with each compressed value at its '
      'encoded size); downloads are not compressed (TFF\'s broadcast).',
      '',
      compression_table(runs),
      '',
      '## Why, and what is not covered',
      '',
      '- Noise on knowledge scales with the payload: the DP sum of R '
      'public inputs\' outputs is clipped to a bound that grows as sqrt(R) '
      '(docs/DESIGN.md), so each probability of DS-FL\'s soft labels '
      'carries noise of standard deviation z sqrt(R) / m, which ERA\'s '
      'sharpening (T = 0.1) turns into confident labels; FedDF pays on both '
      'of its releases.',
      '- N = 20 clients with m = 10 per round is the output-exchange '
      'papers\' cross-silo setting, where DP needs far more noise per '
      'client than with thousands of clients (the noise on a mean falls as '
      '1/m), and delta = 1/N is weaker than the usual delta << 1/N. These '
      'runs say where the methods stand in this setting, not in a large '
      'cross-device population.',
      '- FedAD, FedNTD, FedGKD and FedSSD (DP-able), and FedAUX and FedGen '
      '(`secure` and `compression` only) run under the aggregators (a '
      '2-round test of every algorithm, tests/binaries/aggregators_test.py) '
      'but are not measured here; nor is adaptive clipping '
      '(`--dp_clip=adaptive`).',
      '',
  ]
  with open(page, 'w') as f:
    f.write('\n'.join(lines))
  print(f'Wrote {page}')


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
