r"""Runs several algorithms on the same client split and sampling, then tabulates.

  python -m binaries.compare --task=digits --partition=dirichlet --alpha=0.5 \
    --algorithms=fedavg,fedntd --seeds=0 --rounds=30 --root_output_dir=DIR

For each seed the task (split, model init) and the client sampling are the
same for every algorithm. Each run is an experiment named {algorithm}_seed{s}
under DIR (see binaries/train.py for the layout); --resume continues them.
Writes DIR/summary.csv and DIR/summary.md and prints the table: the final
test accuracy and the selected one (the test accuracy of the round with the
best accuracy on the labelled validation split; mean +- std over seeds),
accuracy at --report_rounds, the mean first round reaching --target_accuracy, MB uploaded and downloaded over
all rounds (all clients; from the TFF types of what travels), and the training
seconds (sum of the rounds' training time, evaluation excluded); rows
marked (L) used the server's labelled validation split; under
--aggregator=dp a column gives the epsilon spent by the last round (at the
run's delta, `privacy/epsilon` in the metrics), and under
--aggregator=compression the MB uploaded are the encoded sizes. Runs over
several model prototypes (--prototypes) get a row per prototype,
`algorithm[prototype]`, instead of one. Algorithms whose clients keep their
own models also get `algorithm[clients]` (the mean test accuracy of all
client models, when the test accuracy is a server model's) and
`algorithm[clients <prototype>]` rows. Plots: DIR/accuracy.png (test accuracy vs round, mean
with a +-1 std band over seeds) and DIR/communication.png (final accuracy vs
MB communicated). A progress bar counts rounds over all runs. DIR is held for
the whole comparison: a second one on it fails at once, naming the process
that holds it (the summary is one comparison's).

`main` gathers the flags in a `Config` and calls `run_comparison(config)`,
which returns the table it wrote (`Summary`); `binaries.results` calls it once
per setting.
"""

from collections.abc import Mapping, Sequence
import csv
import dataclasses
import os
import re
from typing import Any

from absl import app
from absl import flags
import numpy as np
import tensorflow_federated as tff
import tqdm

from binaries import common
from binaries import registry
from tff_kd import experiment
from tff_kd import run_directory
from tff_kd import privacy

for _name in common.KEY_FLAGS:
  flags.declare_key_flag(_name)
ALGORITHMS = flags.DEFINE_list(
    'algorithms', ['fedavg', 'fedntd'], 'Algorithms to compare, from: '
    + ', '.join(sorted(registry.ALGORITHMS))
)
SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds; each gives its own split.')
TARGET_ACCURACY = flags.DEFINE_float(
    'target_accuracy', 0.9, 'Report the first round reaching this test accuracy.'
)
REPORT_ROUNDS = flags.DEFINE_list(
    'report_rounds', [], 'Also report test accuracy at these rounds.'
)

flags.register_validator(
    'algorithms',
    lambda names: bool(names) and all(n in registry.ALGORITHMS for n in names),
    '--algorithms must be a non-empty list of: '
    + ', '.join(sorted(registry.ALGORITHMS)),
)
flags.register_validator(
    'algorithms', lambda names: len(set(names)) == len(names),
    '--algorithms must not list an algorithm twice.',
)
flags.register_validator(
    'seeds',
    lambda seeds: bool(seeds) and all(
        s.isascii() and s.isdigit() and int(s) < 2**31 for s in seeds)
    and len(set(map(int, seeds))) == len(seeds),
    '--seeds must be distinct integers in [0, 2**31).',
)
flags.register_validator(
    'report_rounds',
    lambda rounds: all(r.isascii() and r.isdigit() and int(r) >= 1
                       for r in rounds),
    '--report_rounds must be round numbers >= 1.',
)
flags.register_validator(
    'target_accuracy', lambda v: v is not None and 0 <= v <= 1,
    '--target_accuracy must be in [0, 1].',
)


@flags.multi_flags_validator(
    ['report_rounds', 'rounds'],
    message='--report_rounds must be at most --rounds.')
def _check_report_rounds(values):
  return all(int(r) <= values['rounds'] for r in values['report_rounds']
             if r.isascii() and r.isdigit())


LABELLED_MARK = ' (L)'
LABELLED_NOTE = (
    '(L): used the labelled server validation split (FedDF: early stopping '
    'and model selection of the distilled model; FedSSD: class credibility; '
    'others when their `*_validation` flag is set), data the other '
    'algorithms never see.')


def _curve(rows, key) -> dict[int, float]:
  return {int(r['round_num']): float(r[key]) for r in rows if r.get(key)}


def _run_summary(rows) -> dict:
  """One run's accuracy curves, MB and seconds.

  Curves: None (the test accuracy), per prototype (`evaluation/test_<p>`),
  and for processes whose clients keep their models the clients' mean
  (`clients`, when it differs from the test accuracy, i.e. there is a server
  model) and per prototype (`clients <p>`).
  """
  keys = rows[0] if rows else {}
  prototypes = sorted({
      m.group(1) for key in keys
      if (m := re.fullmatch(r'evaluation/test_(.+)/accuracy', key))
  })
  client_groups = sorted({
      m.group(1) for key in keys
      if (m := re.fullmatch(r'evaluation/(clients(?:_.+)?)/accuracy', key))
  })

  def total(key):
    return sum(float(r[key]) for r in rows if r.get(key))

  trained = [r for r in rows if r.get(experiment.BYTES_UPLOADED_KEY)]

  groups = {None: 'test'} | {p: f'test_{p}' for p in prototypes}
  curves = {key: _curve(rows, f'evaluation/{group}/accuracy')
            for key, group in groups.items()}
  for group in client_groups:
    curve = _curve(rows, f'evaluation/{group}/accuracy')
    if curve != curves[None]:
      key = group.replace('_', ' ', 1)
      groups[key], curves[key] = group, curve
  return dict(
      curves=curves,
      validation={key: _curve(rows, f'evaluation/{group}/'
                              f'{experiment.VALIDATION_PREFIX}accuracy')
                  for key, group in groups.items()},
      # The encoded sizes of what was compressed (privacy.bytes_uploaded).
      mb_up=sum(privacy.bytes_uploaded(
          r, experiment.BYTES_UPLOADED_KEY) for r in trained) / 1e6,
      mb_down=total(experiment.BYTES_DOWNLOADED_KEY) / 1e6,
      seconds=total(tff.simulation.TRAINING_TIME_KEY),
      epsilon=privacy.epsilon(rows[-1]) if rows else None,
  )


def _mean_std(values) -> str:
  values = np.array(values, dtype=float)
  return f'{values.mean():.4f} +- {values.std():.4f}'


def _plot(results, path_accuracy, path_communication, title):
  """Test accuracy vs round (mean, band = +-1 std over seeds); final vs MB.

  Series k gets color k mod 10 and line style / marker k // 10, so more than
  10 series stay distinguishable; the legend sits right of the axes.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  colors = plt.get_cmap('tab10').colors
  styles = [(colors[k % 10], ('-', '--', ':')[k // 10 % 3],
             ('o', 's', '^')[k // 10 % 3]) for k in range(len(results))]

  def save(fig, ax, path, **labels):
    ax.set(title=title, **labels)
    ax.legend(fontsize='small', loc='center left', bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

  fig, ax = plt.subplots(figsize=(7.5, 4))
  for (label, runs), (color, line, _) in zip(results.items(), styles):
    rounds = sorted(set.intersection(*[set(r) for r in runs['curves']]))
    values = np.array([[c[r] for r in rounds] for c in runs['curves']])
    mean, std = values.mean(axis=0), values.std(axis=0)
    ax.plot(rounds, mean, line, color=color, label=label)
    ax.fill_between(rounds, mean - std, mean + std, color=color, alpha=0.2)
  save(fig, ax, path_accuracy, xlabel='round', ylabel='test accuracy')

  fig, ax = plt.subplots(figsize=(7.5, 4))
  for (label, runs), (color, _, marker) in zip(results.items(), styles):
    final = [c[max(c)] for c in runs['curves']]
    ax.errorbar(np.mean(runs['mb']), np.mean(final), yerr=np.std(final),
                fmt=marker, color=color, label=label)
  save(fig, ax, path_communication,
       xlabel='MB communicated (up + down, all rounds)',
       ylabel='final test accuracy')


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
  """What `run_comparison` runs and reports.

  Attributes:
    settings: the shared settings of every run (`common.Settings`); its
      `seed` is replaced by each of `seeds`.
    algorithms: registered algorithm names, distinct.
    seeds: distinct seeds; each gives its own split, initialization and
      client sampling, the same for every algorithm.
    target_accuracy: report the first round reaching this test accuracy.
    report_rounds: also report the test accuracy at these rounds.
    runtime: more of how the comparison was launched (`binaries.results`:
      its own flags), recorded with --algorithms, --seeds, --target_accuracy
      and --report_rounds under each run's hparams.json 'runtime' entry.
  """

  settings: common.Settings = dataclasses.field(
      default_factory=common.Settings)
  algorithms: tuple[str, ...] = tuple(ALGORITHMS.default)
  seeds: tuple[int, ...] = tuple(int(s) for s in SEEDS.default)
  target_accuracy: float = TARGET_ACCURACY.default
  report_rounds: tuple[int, ...] = tuple(int(r) for r in REPORT_ROUNDS.default)
  runtime: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for name in self.algorithms:
      registry.get(name)  # An unknown name is an error naming the choices.
    for name in ('algorithms', 'seeds'):
      values = getattr(self, name)
      if not values or len(set(values)) != len(values):
        raise ValueError(f'{name} must be distinct and not empty; got '
                         f'{values!r}.')
    if not all(0 <= seed < 2**31 for seed in self.seeds):
      raise ValueError(f'seeds must be in [0, 2**31); got {self.seeds!r}.')
    if not all(1 <= r <= self.settings.rounds for r in self.report_rounds):
      raise ValueError(
          f'report_rounds must be rounds in [1, {self.settings.rounds}] '
          f'(settings.rounds); got {self.report_rounds!r}.')
    if not 0 <= self.target_accuracy <= 1:
      raise ValueError('target_accuracy must be in [0, 1]; got '
                       f'{self.target_accuracy!r}.')

  @classmethod
  def from_flags(cls) -> 'Config':
    """The configuration of the parsed flags."""
    return cls(
        settings=common.Settings.from_flags(),
        algorithms=tuple(ALGORITHMS.value),
        seeds=tuple(int(s) for s in SEEDS.value),
        target_accuracy=TARGET_ACCURACY.value,
        report_rounds=tuple(int(r) for r in REPORT_ROUNDS.value),
    )


@dataclasses.dataclass(frozen=True)
class Summary:
  """What `run_comparison` wrote: summary.csv's rows, summary.md's text.

  Attributes:
    rows: one dict per row of summary.csv, its header -> the value written
      (str, int or float).
    markdown: the text of summary.md (also printed).
  """

  rows: Sequence[Mapping[str, Any]]
  markdown: str


def run_comparison(config: Config) -> Summary:
  """Runs every algorithm on every seed and tabulates (module docstring).

  Runs are `{algorithm}_seed{seed}` under `config.settings.root_output_dir`,
  where summary.csv, summary.md and the two plots are written. With
  `settings.resume`, unfinished runs continue and finished ones (every round
  trained, the same settings in hparams.json) are read back. The root is
  locked for the whole comparison: a second one on it (another process)
  fails at once.

  Args:
    config: the comparison.

  Returns:
    The `Summary` written.
  """
  settings = config.settings
  root = settings.root_output_dir
  algorithms = [registry.get(name) for name in config.algorithms]
  common.check_output_dir(root)
  lock = _lock(root)
  try:
    return _compare(config, algorithms)
  finally:
    lock.release()


def _lock(root: str) -> run_directory.RunLock:
  """Holds `root` for one comparison at a time.

  summary.csv, summary.md and the plots are the comparison's, not a run's:
  a second comparison on the same root would write its own over them (its
  algorithms only), and a merge would mix settings in one table. So the
  second fails at once, before any run, naming the one that holds it.
  """
  try:
    return run_directory.RunLock(root, 'comparison')
  except RuntimeError:
    try:  # RunLock's file holds the holder's pid.
      with open(os.path.join(root, '.lock')) as f:
        holder = f.read().strip() or 'unknown'
    except OSError:
      holder = 'unknown'
    raise RuntimeError(
        f'--root_output_dir={root!r} is in use by another comparison '
        f'(pid {holder}): its summary would be overwritten. Wait for it to '
        'finish or give another --root_output_dir.') from None


def _compare(config: Config, algorithms) -> Summary:
  """`run_comparison`'s runs and tables, `config.settings.root_output_dir`
  locked."""
  settings = config.settings
  root = settings.root_output_dir
  runs = {a.name: [] for a in algorithms}
  labelled = {  # Algorithm -> it used the labelled server split.
      a.name: a.labelled_server_data(common.algorithm_hparams(settings, a))
      for a in algorithms}
  runtime_flags = dict(
      algorithms=list(config.algorithms), seeds=list(config.seeds),
      target_accuracy=config.target_accuracy,
      report_rounds=list(config.report_rounds), **config.runtime)
  with common.tff_runtime(settings):
    with tqdm.tqdm(total=len(config.seeds) * len(algorithms) * settings.rounds,
                   unit='round', disable=None) as progress:
      for seed in config.seeds:
        seed_settings = dataclasses.replace(settings, seed=seed)
        task = common.create_task(seed_settings)
        hparams = {a.name: common.run_hparams(
            seed_settings, a, run_name=f'{a.name}_seed{seed}', task=task,
            **runtime_flags) for a in algorithms}
        # With --resume, a run that already trained every round with these
        # settings and data is read back, not built again.
        finished = {
            a.name: run_directory.finished_run(
                root, f'{a.name}_seed{seed}', settings.rounds,
                hparams[a.name]) if settings.resume else None
            for a in algorithms}
        todo = [a for a in algorithms if finished[a.name] is None]
        if todo:
          # Every algorithm is built before the first run trains: a bad
          # combination fails before any run has spent time.
          processes = {a.name: common.build_process(seed_settings, task, a)
                       for a in todo}
        for algorithm in algorithms:
          name = algorithm.name
          end = progress.n + settings.rounds  # The bar when this run is done.
          if finished[name] is not None:
            runs[name].append(_run_summary(finished[name]))
            progress.update(settings.rounds)
            continue
          progress.set_description(f'{name} seed {seed}')
          rows = experiment.run_experiment(
              processes[name],
              task,
              total_rounds=settings.rounds,
              clients_per_round=settings.clients_per_round,
              root_output_dir=root,
              experiment_name=f'{name}_seed{seed}',
              seed=seed,
              rounds_per_eval=settings.rounds_per_eval,
              rounds_per_checkpoint=settings.rounds_per_checkpoint,
              resume=settings.resume,
              hparams=hparams[name],
              client_dropout=settings.client_dropout,
              # A line per released round, round 0 (the initial evaluation)
              # included: the bar stops at the run's end, then is set to it
              # (a resumed run releases only the rounds it trains).
              print_fn=lambda line, end=end: progress.update(
                  int(progress.n < end)),
          )
          progress.update(end - progress.n)
          runs[name].append(_run_summary(rows))

  # One table row per algorithm (per prototype of multi-prototype runs),
  # and rows for the clients' own models of stateful-client algorithms.
  results = {}
  for name, seed_runs in runs.items():
    keys = [k for k in seed_runs[0]['curves'] if k is not None]
    clients = [k for k in keys if k.startswith('clients')]
    prototypes = [k for k in keys if k not in clients]
    for key in (prototypes or [None]) + clients:
      label = name if key is None else f'{name}[{key}]'
      results[label] = dict(
          curves=[r['curves'][key] for r in seed_runs],
          validation=[r['validation'][key] for r in seed_runs],
          mb_up=[r['mb_up'] for r in seed_runs],
          mb_down=[r['mb_down'] for r in seed_runs],
          mb=[r['mb_up'] + r['mb_down'] for r in seed_runs],
          seconds=[r['seconds'] for r in seed_runs],
          epsilon=[r['epsilon'] for r in seed_runs],
          labelled=labelled[name],
      )

  report_rounds = list(config.report_rounds)
  target = config.target_accuracy
  # The epsilon column when a run reports one (--aggregator=dp).
  private = any(e is not None for r in results.values() for e in r['epsilon'])
  header = (['algorithm', 'seeds', 'final_accuracy_mean', 'final_accuracy_std',
             'selected_accuracy_mean', 'selected_accuracy_std']
            + [f'accuracy_at_round_{r}_mean' for r in report_rounds]
            + [f'rounds_to_{target}', 'mb_uploaded_mean',
               'mb_downloaded_mean', 'training_seconds_mean',
               'labelled_server_data'] + (['epsilon'] if private else []))
  table, lines = [], []
  for label, result in results.items():
    curves = result['curves']
    # The last round is always evaluated; round 0 (the untrained model)
    # is neither selected nor counted as reaching the target.
    final = [curve[max(curve)] for curve in curves]
    selected = [experiment.selected_accuracy(curve, validation)
                for curve, validation in zip(curves, result['validation'])]
    if None in selected:
      selected = []
    at = [[curve.get(r, np.nan) for curve in curves] for r in report_rounds]
    reached = [min((r for r, a in c.items() if r > 0 and a >= target),
                   default=None) for c in curves]
    hits = [r for r in reached if r is not None]
    to_target = (f'{np.mean(hits):.1f} ({len(hits)}/{len(curves)} seeds)'
                 if hits else f'not reached (0/{len(curves)})')
    mb_up, mb_down = np.mean(result['mb_up']), np.mean(result['mb_down'])
    seconds = np.mean(result['seconds'])
    # Epsilon depends on the rounds, not the seed: the largest over seeds.
    spent = [e for e in result['epsilon'] if e is not None]
    epsilon = max(spent) if spent else None
    table.append([label, len(curves), np.mean(final), np.std(final)]
                 + ([np.mean(selected), np.std(selected)] if selected
                    else ['', ''])
                 + [np.mean(a) for a in at]
                 + [to_target, mb_up, mb_down, seconds,
                    int(result['labelled'])]
                 + ([epsilon if epsilon is not None else ''] if private
                    else []))
    lines.append(
        f'| {label}{LABELLED_MARK if result["labelled"] else ""} | '
        f'{_mean_std(final)} | {_mean_std(selected) if selected else "-"} | '
        + ''.join(f'{_mean_std(a)} | ' for a in at)
        + f'{to_target} | {mb_up:.1f} | {mb_down:.1f} | {seconds:.0f} |'
        + (f' {_epsilon(epsilon)} |' if private else '')
    )
  with open(os.path.join(root, 'summary.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(table)
  title = (f'{settings.task}, {settings.partition}'
           + (f' alpha={settings.alpha}'
              if settings.partition in ('dirichlet', 'quantity') else ''))
  _plot(results, os.path.join(root, 'accuracy.png'),
        os.path.join(root, 'communication.png'), title)
  models = ','.join(settings.prototypes) or settings.model
  summary = '\n'.join([
      f'{settings.task}, model={models}, '
      f'partition={settings.partition}, alpha={settings.alpha}, '
      f'{settings.num_clients} clients, '
      f'{settings.clients_per_round} per round, '
      f'E={settings.local_epochs}, B={settings.batch_size}, '
      f'{settings.rounds} rounds, seeds {",".join(map(str, config.seeds))}'
      + _aggregator_note(settings),
      '',
      '| algorithm | final test accuracy | selected | '
      + ''.join(f'round {r} | ' for r in report_rounds)
      + f'rounds to {target} | MB up | MB down | training s |'
      + (' epsilon |' if private else ''),
      '|---|---|---|' + '---|' * len(report_rounds) + '---|---|---|---|'
      + ('---|' if private else ''),
  ] + lines + (['', LABELLED_NOTE] if any(
      r['labelled'] for r in results.values()) else [])) + '\n'
  with open(os.path.join(root, 'summary.md'), 'w') as f:
    f.write(summary)
  print('\n' + summary)
  return Summary(
      rows=[dict(zip(header, [_plain(v) for v in row])) for row in table],
      markdown=summary)


def _epsilon(value) -> str:
  return '' if value is None else f'{value:.3g}'


def _aggregator_note(settings: common.Settings) -> str:
  """The aggregation of the runs, for the table's caption ('' for mean)."""
  if settings.aggregator == 'dp':
    delta = (settings.dp_delta if settings.dp_delta is not None
             else f'1/{settings.num_clients}')
    return (f', aggregator=dp (noise multiplier {settings.dp_noise_multiplier}'
            f', clip {settings.dp_clip}, logit clip {settings.dp_logit_clip} '
            f'per input, delta {delta})')
  if settings.aggregator == 'compression':
    return (f', aggregator=compression ({settings.compression_bits} bits, '
            f'tensors over {settings.compression_threshold} elements)')
  if settings.aggregator == 'secure':
    return ', aggregator=secure'
  return ''


def _plain(value):
  """A numpy scalar as the Python number it prints as."""
  return value.item() if isinstance(value, np.generic) else value


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  common.quiet_logging()
  config = Config.from_flags()
  common.check_algorithm_flags(
      [registry.get(name) for name in config.algorithms])
  common.check_output_dir(config.settings.root_output_dir)
  # The comparison's flags, to replay it with --flagfile.
  with open(os.path.join(config.settings.root_output_dir, 'flags.txt'),
            'w') as f:
    f.write(common.flagfile())
  run_comparison(config)


if __name__ == '__main__':
  common.run(main)
