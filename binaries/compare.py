r"""Runs several algorithms on the same client split and sampling, then tabulates.

  python -m binaries.compare --task=digits --partition=dirichlet --alpha=0.5 \
    --algorithms=fedavg,fedntd --seeds=0 --rounds=30 --root_output_dir=DIR

For each seed the task (split, model init) and the client sampling are the
same for every algorithm. Each run is an experiment named {algorithm}_seed{s}
under DIR (see binaries/train.py for the layout); --resume continues them.
Writes DIR/summary.csv and DIR/summary.md and prints the table.
"""

import csv
import os
import time

from absl import app
from absl import flags
import numpy as np

from binaries import common
from tff_kd import experiment
from tff_kd import runtime
from tff_kd.algorithms import registry

ALGORITHMS = flags.DEFINE_list(
    'algorithms', ['fedavg', 'fedntd'], 'Algorithms to compare, from: '
    + ', '.join(sorted(registry.ALGORITHMS))
)
SEEDS = flags.DEFINE_list('seeds', ['0'], 'Seeds; each gives its own split.')

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


def _final_accuracy(rows):
  values = [
      float(r[experiment.ACCURACY_KEY])
      for r in rows if r.get(experiment.ACCURACY_KEY)
  ]
  return values[-1], max(values)


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
        start = time.time()
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
        results[name].append((*_final_accuracy(rows), time.time() - start))

  header = ['algorithm', 'seeds', 'final_accuracy_mean', 'final_accuracy_std',
            'best_accuracy_mean', 'wall_seconds_mean']
  table = []
  for name, runs in results.items():
    final, best, seconds = (np.array(v) for v in zip(*runs))
    table.append([name, len(runs), final.mean(), final.std(), best.mean(),
                  seconds.mean()])
  with open(os.path.join(root, 'summary.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(header)
    writer.writerows(table)
  lines = [
      f'{common.TASK.value}, partition={common.PARTITION.value}, '
      f'alpha={common.ALPHA.value}, {common.NUM_CLIENTS.value} clients, '
      f'{common.CLIENTS_PER_ROUND.value} per round, '
      f'{common.ROUNDS.value} rounds, seeds {",".join(SEEDS.value)}',
      '',
      '| algorithm | final test accuracy | best test accuracy | seconds |',
      '|---|---|---|---|',
  ]
  for name, _, mean, std, best, seconds in table:
    lines.append(
        f'| {name} | {mean:.4f} +- {std:.4f} | {best:.4f} | {seconds:.0f} |'
    )
  summary = '\n'.join(lines) + '\n'
  with open(os.path.join(root, 'summary.md'), 'w') as f:
    f.write(summary)
  print('\n' + summary)


if __name__ == '__main__':
  app.run(main)
