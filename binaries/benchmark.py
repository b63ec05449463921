r"""Measures round times: TFF overhead, TFF's own FedAvg, and every algorithm.

  python -m binaries.benchmark --output=docs/PERFORMANCE.md

All figures of one invocation are measured in the same process, one after the
other, and reported as medians over --timed_rounds rounds after
--warmup_rounds (the first round includes graph compilation). Workload (the
PyTorch peers' reference): digits, 10 clients of ~67 examples (IID split over
17 clients, 10 sampled), 1 local epoch, batch 16, the task's `cnn`.

1. plain: the same client training (our `tff_kd.local_training` loop, same
   clients, data and epochs) in one process with no TFF, then a numpy
   weighted average: the compute floor.
2. ours: `tff_kd.algorithms.build_fedavg` on the TFF C++ runtime.
3. tff: `tff.learning.algorithms.build_weighted_fed_avg`, same runtime.
4. each registered algorithm, relative to our FedAvg.
"""

import os
import statistics
import sys
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from binaries import common
import tasks
from tff_kd import local_training
from tff_kd import runtime
from tff_kd.algorithms import registry

OUTPUT = flags.DEFINE_string('output', 'docs/PERFORMANCE.md', 'Report file.')
WARMUP_ROUNDS = flags.DEFINE_integer('warmup_rounds', 2, 'Untimed rounds.')
TIMED_ROUNDS = flags.DEFINE_integer('timed_rounds', 5, 'Timed rounds.')
BENCH_ALGORITHMS = flags.DEFINE_list(
    'bench_algorithms', sorted(registry.ALGORITHMS),
    'Algorithms timed relative to FedAvg.'
)

_LR = 0.05


def _median_round_seconds(step, warmup, timed):
  for _ in range(warmup):
    step()
  times = []
  for _ in range(timed):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _plain_step_fn(task, datasets):
  """One FedAvg round without TFF: our client loop, numpy averaging."""
  model = task.model_fn()
  sgd = tff.learning.optimizers.build_sgdm(learning_rate=_LR)
  update = local_training.build_client_update(model, sgd)
  hparams = sgd.get_hparams(sgd.initialize(tf.TensorSpec((), tf.float32)))
  weights = [tuple(v.numpy() for v in model.trainable_variables),
             tuple(v.numpy() for v in model.non_trainable_variables)]

  def step():
    deltas, sizes = [], []
    for dataset in datasets:
      delta, weight, _, _ = update(tuple(weights), dataset, hparams)
      deltas.append([d.numpy() for d in delta])
      sizes.append(float(weight))
    total = sum(sizes)
    mean = [sum(s / total * d[i] for d, s in zip(deltas, sizes))
            for i in range(len(deltas[0]))]
    weights[0] = tuple(w - m for w, m in zip(weights[0], mean))

  return step


def _process_step_fn(process, datasets):
  state = [process.initialize()]

  def step():
    state[0] = process.next(state[0], datasets).state

  return step


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  common.quiet_logging()
  task = tasks.create_task(
      'digits',
      train_client_spec=tff.simulation.baselines.ClientSpec(
          num_epochs=1, batch_size=16),
      model='cnn', partition='iid', num_clients=17, seed=0,
  )
  ids = [str(k) for k in range(10)]
  datasets = [task.datasets.train_preprocess_fn(
      task.datasets.train_data.create_tf_dataset_for_client(k)) for k in ids]
  sizes = [len(task.client_indices[int(k)]) for k in ids]
  params = task.keras_model_fn().count_params()
  sgd = lambda lr: tff.learning.optimizers.build_sgdm(learning_rate=lr)
  warmup, timed = WARMUP_ROUNDS.value, TIMED_ROUNDS.value

  results = {}
  results['plain'] = _median_round_seconds(
      _plain_step_fn(task, datasets), warmup, timed)
  with runtime.LocalRuntime():
    results['ours'] = _median_round_seconds(
        _process_step_fn(registry.get('fedavg').build(
            task, client_learning_rate=_LR, server_learning_rate=1.0,
            clients_per_round=10), datasets), warmup, timed)
    results['tff'] = _median_round_seconds(
        _process_step_fn(tff.learning.algorithms.build_weighted_fed_avg(
            task.model_fn, sgd(_LR), sgd(1.0)), datasets), warmup, timed)
    per_algorithm = {}
    for name in BENCH_ALGORITHMS.value:
      algorithm = registry.get(name)
      process = algorithm.build(
          task, client_learning_rate=_LR, server_learning_rate=1.0,
          clients_per_round=10,
          **{k: h.default for k, h in algorithm.hparams.items()})
      per_algorithm[name] = _median_round_seconds(
          _process_step_fn(process, datasets), warmup, timed)

  command = ' '.join(['python -m binaries.benchmark'] + sys.argv[1:])
  lines = [
      '# Performance',
      '',
      f'Measured by `{command}` (all figures from one run; medians over '
      f'{timed} rounds after {warmup} warm-up rounds), on a machine with '
      f'{os.cpu_count()} cores and no GPU.',
      '',
      f'Workload: digits, 10 clients x {np.mean(sizes):.0f} examples '
      f'(IID), 1 local epoch, batch 16, the `cnn` model ({params:,} '
      'parameters), client SGD.',
      '',
      '| what | seconds per round | ratio |',
      '|---|---|---|',
      f'| plain `tf.function` loop, no TFF (compute floor) | '
      f'{results["plain"]:.3f} | 1.00 |',
      f'| `tff_kd` FedAvg on the TFF C++ runtime | {results["ours"]:.3f} | '
      f'{results["ours"] / results["plain"]:.2f} x plain |',
      f'| TFF `build_weighted_fed_avg`, same runtime | {results["tff"]:.3f} '
      f'| ours / TFF = {results["ours"] / results["tff"]:.2f} |',
      '',
      '## Round time of each algorithm, relative to FedAvg',
      '',
      '| algorithm | seconds per round | / FedAvg |',
      '|---|---|---|',
  ] + [
      f'| {name} | {seconds:.3f} | '
      f'{seconds / per_algorithm.get("fedavg", results["ours"]):.2f} |'
      for name, seconds in per_algorithm.items()
  ]
  report = '\n'.join(lines) + '\n'
  os.makedirs(os.path.dirname(OUTPUT.value) or '.', exist_ok=True)
  with open(OUTPUT.value, 'w') as f:
    f.write(report)
  print(report)


if __name__ == '__main__':
  app.run(main)
