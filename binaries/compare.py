r"""Runs several algorithms on the same client split and sampling, then tabulates.

  python -m binaries.compare --task=digits --partition=dirichlet --alpha=0.5 \
    --algorithms=fedavg,fedntd --seeds=0 --rounds=30 --root_output_dir=DIR

For each seed the task (split, model init) and the client sampling are the
same for every algorithm. Each run is an experiment named {algorithm}_seed{s}
under DIR (see binaries/train.py for the layout); --resume continues them.
Writes DIR/summary.csv and DIR/summary.md and prints the table: final and
best test accuracy (mean +- std over seeds), accuracy at --report_rounds, the
mean first round reaching --target_accuracy, and the training seconds (sum of
the rounds' training time, evaluation excluded).
"""

import csv
import os

from absl import app
from absl import flags
import numpy as np
import tensorflow_federated as tff

from binaries import common
from tff_kd import experiment
from tff_kd import runtime
from tff_kd.algorithms import registry

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
    'seeds',
    lambda seeds: bool(seeds) and all(s.lstrip('-').isdigit() for s in seeds),
    '--seeds must be a non-empty list of integers.',
)


def _accuracy_by_round(rows) -> dict[int, float]:
  return {
      int(r['round_num']): float(r[experiment.ACCURACY_KEY])
      for r in rows if r.get(experiment.ACCURACY_KEY)
  }


def _mean_std(values) -> str:
  values = np.array(values, dtype=float)
  return f'{values.mean():.4f} +- {values.std():.4f}'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  common.quiet_logging()
  root = common.ROOT_OUTPUT_DIR.value
  results = {name: [] for name in ALGORITHMS.value}
  with runtime.LocalRuntime():
    for seed in [int(s) for s in SEEDS.value]:
      flags.FLAGS.seed = seed
      task = common.create_task()
      for name in ALGORITHMS.value:
        algorithm = registry.get(name)
        print(f'== {name}, seed {seed}')
        rows = experiment.run_experiment(
            common.build_process(task, algorithm),
            task,
            total_rounds=common.ROUNDS.value,
            clients_per_round=common.CLIENTS_PER_ROUND.value,
            root_output_dir=root,
            experiment_name=f'{name}_seed{seed}',
            seed=seed,
            rounds_per_eval=common.ROUNDS_PER_EVAL.value,
            rounds_per_checkpoint=common.ROUNDS_PER_CHECKPOINT.value,
            resume=common.RESUME.value,
            hparams=common.run_hparams(algorithm),
        )
        seconds = sum(
            float(r[tff.simulation.TRAINING_TIME_KEY])
            for r in rows if r.get(tff.simulation.TRAINING_TIME_KEY)
        )
        results[name].append((_accuracy_by_round(rows), seconds))

  report_rounds = [int(r) for r in REPORT_ROUNDS.value]
  target = TARGET_ACCURACY.value
  header = (['algorithm', 'seeds', 'final_accuracy_mean', 'final_accuracy_std',
             'best_accuracy_mean']
            + [f'accuracy_at_round_{r}_mean' for r in report_rounds]
            + [f'rounds_to_{target}', 'training_seconds_mean'])
  table, lines = [], []
  for name, runs in results.items():
    curves = [curve for curve, _ in runs]
    final = [curve[max(curve)] for curve in curves]
    best = [max(curve.values()) for curve in curves]
    at = [[curve.get(r, np.nan) for curve in curves] for r in report_rounds]
    reached = [min((r for r, a in c.items() if a >= target), default=None)
               for c in curves]
    hits = [r for r in reached if r is not None]
    to_target = (f'{np.mean(hits):.1f} ({len(hits)}/{len(curves)} seeds)'
                 if hits else f'not reached (0/{len(curves)})')
    seconds = np.mean([t for _, t in runs])
    table.append([name, len(runs), np.mean(final), np.std(final),
                  np.mean(best)] + [np.mean(a) for a in at]
                 + [to_target, seconds])
    lines.append(
        f'| {name} | {_mean_std(final)} | {np.mean(best):.4f} | '
        + ''.join(f'{_mean_std(a)} | ' for a in at)
        + f'{to_target} | {seconds:.0f} |'
    )
  with open(os.path.join(root, 'summary.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(table)
  summary = '\n'.join([
      f'{common.TASK.value}, model={common.MODEL.value}, '
      f'partition={common.PARTITION.value}, alpha={common.ALPHA.value}, '
      f'{common.NUM_CLIENTS.value} clients, '
      f'{common.CLIENTS_PER_ROUND.value} per round, '
      f'E={common.LOCAL_EPOCHS.value}, B={common.BATCH_SIZE.value}, '
      f'{common.ROUNDS.value} rounds, seeds {",".join(SEEDS.value)}',
      '',
      '| algorithm | final test accuracy | best | '
      + ''.join(f'round {r} | ' for r in report_rounds)
      + f'rounds to {target} | training s |',
      '|---|---|---|' + '---|' * len(report_rounds) + '---|---|',
  ] + lines) + '\n'
  with open(os.path.join(root, 'summary.md'), 'w') as f:
    f.write(summary)
  print('\n' + summary)


if __name__ == '__main__':
  app.run(main)
