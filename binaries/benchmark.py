r"""Measures round times: TFF overhead, TFF's own FedAvg, and every algorithm.

  python -m binaries.benchmark --output=docs/PERFORMANCE.md

(`make bench` installs torch, then runs that.) All figures of one invocation
are measured in the same process, one after the other, and reported as
medians over --timed_rounds rounds after --warmup_rounds (the first round
includes graph compilation). Workload but in sections 4 and 7: digits, 10
clients of ~67 examples (IID split over 17 clients, 10 sampled), 1 local
epoch, batch 16, the task's `cnn`.

1. plain: the same client training (our `tff_kd.local_training` loop, same
   clients, data and epochs) in one process with no TFF, then a numpy
   weighted average: the compute floor.
2. ours: `tff_kd.algorithms.build_fedavg` on the TFF C++ runtime.
3. tff: `tff.learning.algorithms.build_weighted_fed_avg`, same runtime, with
   its default training loop (`Dataset.reduce`) and with
   `loop_implementation=DATASET_ITERATOR` (the loop ours uses, see
   `tff_kd.local_training.dataset_reduce`).
4. against PyTorch: our FedAvg (`tff_kd.algorithms.build_fedavg`) and a
   plain PyTorch FedAvg (`binaries.torch_reference`) on the PyTorch peers'
   workload, their rounds interleaved: digits split over 20 clients by
   Dirichlet(0.1) label skew, 10 clients a round (the same seeded schedule on
   both sides), 1 epoch of full batches of 16, SGD at 0.05, the peers' CNN
   (33,802 parameters) on both sides. Skipped, with a line saying so, when
   torch is not importable (it is benchmark-only: `make bench` installs
   requirements-bench.lock).
5. each registered algorithm, relative to our FedAvg.
6. server distillation (FedDF's loop, `tff_kd.server_distillation`):
   examples per second as a `tf.function` and run eagerly.
7. scale: FedAvg round time and peak resident memory (trainer and TFF
   worker) with --scale_clients clients per round on mnist1d (IID, 1 epoch,
   batch 16, `cnn`), and the 100-client round on 1 vs --scale_workers local
   workers (TFF's mergeable context).
"""

import os
import statistics
import sys
import threading
import time

from absl import app
from absl import flags
import numpy as np
import psutil
import tensorflow as tf
import tensorflow_federated as tff

from binaries import common
from binaries import registry
import tasks
from tff_kd import algorithms
from tff_kd import experiment
from tff_kd import local_training
from tff_kd import runtime
from tff_kd import server_distillation

try:
  from binaries import torch_reference  # pylint: disable=g-import-not-at-top
  _TORCH_IMPORT_ERROR = None
except ImportError as error:  # torch is benchmark-only.
  torch_reference = None
  _TORCH_IMPORT_ERROR = error

OUTPUT = flags.DEFINE_string('output', 'docs/PERFORMANCE.md', 'Report file.')
WARMUP_ROUNDS = flags.DEFINE_integer('warmup_rounds', 3, 'Untimed rounds.')
TIMED_ROUNDS = flags.DEFINE_integer('timed_rounds', 20, 'Timed rounds.')
BENCH_ALGORITHMS = flags.DEFINE_list(
    'bench_algorithms', sorted(registry.ALGORITHMS),
    'Algorithms timed relative to FedAvg.'
)
SCALE_CLIENTS = flags.DEFINE_list(
    'scale_clients', ['10', '100', '500'],
    'Clients per round of the scale measurement (mnist1d).'
)
SCALE_WORKERS = flags.DEFINE_integer(
    'scale_workers', 2, 'Local workers compared with one worker.'
)
SCALE_WORKERS_CLIENTS = flags.DEFINE_integer(
    'scale_workers_clients', 100, 'Clients per round of that comparison.'
)
DISTILL_STEPS = flags.DEFINE_integer(
    'bench_distill_steps', 200, 'Steps of the distillation measurement.'
)
TORCH_THREADS = flags.DEFINE_integer(
    'torch_threads', 0, 'Threads of the PyTorch reference '
    '(torch.set_num_threads); 0: torch\'s default, one per core. On a loaded '
    'machine its OpenMP threads wait for each other: 1 avoids that.',
    lower_bound=0,
)

_LR = 0.05
# The PyTorch peers' workload (section 4 of the module docstring).
_PEER_CLIENTS, _PEER_CLIENTS_PER_ROUND, _PEER_ALPHA = 20, 10, 0.1
_PEER_EPOCHS, _PEER_BATCH = 1, 16


def _median_round_seconds(step, warmup, timed):
  return _interleaved_medians({None: step}, warmup, timed)[None]


def _interleaved_medians(steps, warmup, timed):
  return {name: statistics.median(t)
          for name, t in _interleaved_times(steps, warmup, timed).items()}


def _interleaved_times(steps, warmup, timed):
  """Seconds of each step's timed rounds, the steps' rounds interleaved.

  Every step takes its warm-up rounds, then the timed rounds go round-robin
  (a, b, c, a, b, c, ...), so a slow phase of the machine (or of the TFF
  worker: the first TFF process timed in a run used to look ~0.3 s slower
  than the same process timed later) falls on all of them alike.
  """
  for step in steps.values():
    for _ in range(warmup):
      step()
  times = {name: [] for name in steps}
  for _ in range(timed):
    for name, step in steps.items():
      start = time.perf_counter()
      step()
      times[name].append(time.perf_counter() - start)
  return times


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


def _peer_keras_model(input_shape, num_classes):
  """The PyTorch peers' CNN (`torch_reference.build_cnn`) in Keras."""
  return tf.keras.Sequential([
      tf.keras.Input(input_shape),
      tf.keras.layers.Conv2D(32, 3, padding='same', activation='relu'),
      tf.keras.layers.MaxPool2D(2),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(64, activation='relu'),
      tf.keras.layers.Dense(num_classes),
  ])


def _against_pytorch(warmup, timed):
  """Report lines: our FedAvg and plain PyTorch's on the peers' workload.

  Runs in a TFF context. Round r of each side trains the same clients (a
  seeded schedule), so the rounds' SGD steps are equal too.
  """
  if torch_reference is None:
    return [f'Skipped: torch is not importable here ({_TORCH_IMPORT_ERROR}). '
            '`make bench` installs it (requirements-bench.lock).']
  task = tasks.create_task(
      'digits',
      train_client_spec=tff.simulation.baselines.ClientSpec(
          num_epochs=_PEER_EPOCHS, batch_size=_PEER_BATCH),
      partition='dirichlet', alpha=_PEER_ALPHA, num_clients=_PEER_CLIENTS,
      seed=0,
  )
  rng = np.random.default_rng(0)
  schedule = [rng.choice(_PEER_CLIENTS, _PEER_CLIENTS_PER_ROUND, replace=False)
              for _ in range(warmup + timed)]
  sizes = [len(i) for i in task.client_indices]
  steps = [sum(_PEER_EPOCHS * (sizes[k] // _PEER_BATCH) for k in clients)
           for clients in schedule[warmup:]]
  # Full batches, a new order each epoch (shuffle reshuffles every pass).
  datasets = [
      task.datasets.train_data.create_tf_dataset_for_client(str(k))
      .shuffle(max(sizes), seed=k).batch(_PEER_BATCH, drop_remainder=True)
      .repeat(_PEER_EPOCHS) for k in range(_PEER_CLIENTS)]

  def model_fn():
    return tff.learning.models.from_keras_model(
        _peer_keras_model(task.input_shape, task.num_classes),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=datasets[0].element_spec)

  process = algorithms.build_fedavg(
      model_fn, tff.learning.optimizers.build_sgdm(learning_rate=_LR))
  state, ours_rounds = [process.initialize()], iter(schedule)

  def ours():
    clients = next(ours_rounds)
    state[0] = process.next(state[0], [datasets[k] for k in clients]).state

  peer = torch_reference.FedAvg(
      [(task.arrays.x_train[i], task.arrays.y_train[i])
       for i in task.client_indices], task.num_classes, epochs=_PEER_EPOCHS,
      batch_size=_PEER_BATCH, learning_rate=_LR,
      num_threads=TORCH_THREADS.value)
  torch_rounds = iter(schedule)
  times = _interleaved_times(
      {'ours': ours, 'torch': lambda: peer.run_round(next(torch_rounds))},
      warmup, timed)
  params = _peer_keras_model(task.input_shape, task.num_classes).count_params()
  median = {name: statistics.median(t) for name, t in times.items()}
  ms_per_step = {name: statistics.median(
      1000 * s / n for s, n in zip(t, steps) if n) for name, t in times.items()}
  return [
      f'Workload: digits split over {_PEER_CLIENTS} clients by '
      f'Dirichlet({_PEER_ALPHA}) label skew, {_PEER_CLIENTS_PER_ROUND} '
      f'clients a round (the same seeded schedule on both sides), '
      f'{_PEER_EPOCHS} epoch of full batches of {_PEER_BATCH} (the last '
      f'partial batch dropped), client SGD at {_LR}, the peers\' CNN '
      f'({params:,} parameters: Conv2D 32 3x3 + ReLU + MaxPool 2, Dense 64 '
      'ReLU, Dense 10); weighted averaging. SGD steps per timed round: median'
      f' {statistics.median(steps):.0f}, {sum(steps)} in all.',
      '',
      '| FedAvg | seconds per round | ms per SGD step |',
      '|---|---|---|',
      f'| `tff_kd` `build_fedavg`, TFF C++ runtime | {median["ours"]:.3f} | '
      f'{ms_per_step["ours"]:.2f} |',
      f'| plain PyTorch (`binaries/torch_reference.py`) | '
      f'{median["torch"]:.3f} | {ms_per_step["torch"]:.2f} |',
      '',
      f'Ours / PyTorch: {median["ours"] / median["torch"]:.2f} (seconds per '
      'round). Medians of the rounds; ms per step: median over rounds of '
      'round time / its SGD steps.',
      '',
      f'Threads: {torch_reference.describe()}; TensorFlow in this process: '
      '`tf.config.threading` intra-op '
      f'{tf.config.threading.get_intra_op_parallelism_threads()}, inter-op '
      f'{tf.config.threading.get_inter_op_parallelism_threads()} (0: TF picks,'
      ' one per core); our rounds run in TFF\'s C++ worker, started with no '
      'thread settings (its flags: `--port`, '
      '`--max_concurrent_computation_calls`), which may train a round\'s '
      'clients concurrently; PyTorch trains them one after the other.',
  ]


def _distillation_rates(task, steps):
  """Examples per second of the distillation loop: tf.function, eager."""
  model = task.model_fn()
  batch_size = 32
  distill = server_distillation.build_server_distillation(
      model, steps=steps, batch_size=batch_size)
  weights = tff.learning.models.ModelWeights(
      trainable=[v.numpy() for v in model.trainable_variables],
      non_trainable=[v.numpy() for v in model.non_trainable_variables])
  inputs = task.public_x
  teacher = np.random.default_rng(0).normal(
      size=(len(inputs), task.num_classes)).astype(np.float32)
  args = (weights, inputs, teacher, None, tf.constant([0, 0]),
          tf.constant(steps))
  rates = {}
  for mode in ('tf.function', 'eager'):
    tf.config.run_functions_eagerly(mode == 'eager')
    try:
      distill(*args)  # Warm-up (tracing).
      start = time.perf_counter()
      distill(*args)
      rates[mode] = steps * batch_size / (time.perf_counter() - start)
    finally:
      tf.config.run_functions_eagerly(False)
  return rates


class _PeakRss:
  """Samples the resident memory of processes every 20 ms; keeps the peak."""

  def __init__(self, pids):
    self._processes = [psutil.Process(pid) for pid in pids]
    self.peak = [0] * len(pids)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      for i, process in enumerate(self._processes):
        self.peak[i] = max(self.peak[i], process.memory_info().rss)
      time.sleep(0.02)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *unused):
    self._stop.set()
    self._thread.join()


def _scale_task(num_clients):
  """mnist1d split IID over `num_clients`, 1 epoch, batch 16, the `cnn`."""
  return tasks.create_task(
      'mnist1d',
      train_client_spec=tff.simulation.baselines.ClientSpec(
          num_epochs=1, batch_size=16),
      model='cnn', partition='iid', num_clients=num_clients, seed=0,
  )


def _scale(num_clients, num_workers, warmup, timed):
  """(seconds per round, peak trainer MB, peak worker MB, examples/client)."""
  task = _scale_task(num_clients)
  datasets = [task.datasets.train_preprocess_fn(
      task.datasets.train_data.create_tf_dataset_for_client(c))
              for c in task.datasets.train_data.client_ids]
  with runtime.LocalRuntime(num_workers=num_workers) as local:
    process = registry.get('fedavg').build(
        task, client_learning_rate=_LR, server_learning_rate=1.0,
        clients_per_round=num_clients)
    step = _process_step_fn(process, datasets)
    for _ in range(warmup):
      step()
    pids = [os.getpid()] + [w.process.pid for w in local.workers]
    with _PeakRss(pids) as rss:
      seconds = _median_round_seconds(step, 0, timed)
  mb = [p / 2**20 for p in rss.peak]
  return seconds, mb[0], sum(mb[1:]), np.mean(
      [len(i) for i in task.client_indices])


def _model_mb(task):
  """MB of the task model's float32 trainable weights (built in a graph)."""
  with tf.Graph().as_default():
    variables = task.model_fn().trainable_variables
  return sum(4 * v.shape.num_elements() for v in variables) / 2**20


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

  # Eager Keras models break once TFF traces models of the same classes
  # (module docs of tff_kd.evaluation): the plain loop and the eager
  # distillation run first. The TFF processes' rounds are interleaved.
  plain = _median_round_seconds(_plain_step_fn(task, datasets), warmup, timed)
  distill_rates = _distillation_rates(task, DISTILL_STEPS.value)
  steps = {}
  with runtime.LocalRuntime():
    steps['ours'] = _process_step_fn(registry.get('fedavg').build(
        task, client_learning_rate=_LR, server_learning_rate=1.0,
        clients_per_round=10), datasets)
    for name, loop in (('tff', 'DATASET_REDUCE'),
                       ('tff_iterator', 'DATASET_ITERATOR')):
      steps[name] = _process_step_fn(
          tff.learning.algorithms.build_weighted_fed_avg(
              task.model_fn, sgd(_LR), sgd(1.0),
              loop_implementation=getattr(
                  tff.learning.LoopImplementation, loop)), datasets)
    for name in BENCH_ALGORITHMS.value:
      algorithm = registry.get(name)
      process = algorithm.build(
          task, client_learning_rate=_LR, server_learning_rate=1.0,
          clients_per_round=10,
          **{k: h.default for k, h in algorithm.hparams.items()})
      client_input = experiment.client_input_fn(process, task)
      steps[f'algorithm {name}'] = _process_step_fn(process, [
          client_input(k, d) for k, d in zip(ids, datasets)])
    medians = _interleaved_medians(steps, warmup, timed)
    against_pytorch = _against_pytorch(warmup, timed)
  results = dict(plain=plain, **{k: medians[k]
                                 for k in ('ours', 'tff', 'tff_iterator')})
  per_algorithm = {name: medians[f'algorithm {name}']
                   for name in BENCH_ALGORITHMS.value}

  scale = {n: _scale(n, 1, 1, timed) for n in map(int, SCALE_CLIENTS.value)}
  fewest, most = min(scale), max(scale)
  growth = []
  if most > fewest:
    model_mb = _model_mb(_scale_task(most))
    per_client = (scale[most][2] - scale[fewest][2]) / (most - fewest)
    growth = [
        '',
        f'Worker memory from {fewest} to {most} clients per round: '
        f'{per_client:.2f} MB per added client, '
        f'{per_client / model_mb:.1f} x the model ({model_mb:.2f} MB of '
        'float32 weights): the models being averaged. TFF\'s C++ executor '
        'runs every client\'s computation before the federated mean sums '
        'their outputs, so all the round\'s client values (inputs and '
        'updates) are alive at once; which buffers make up the multiple was '
        'not broken down.',
    ]
  workers, at = SCALE_WORKERS.value, SCALE_WORKERS_CLIENTS.value
  scale_workers = _scale(at, workers, 1, timed)
  scale_one = scale.get(at) or _scale(at, 1, 1, timed)

  command = ' '.join(['python -m binaries.benchmark'] + sys.argv[1:])
  lines = [
      '# Performance',
      '',
      f'Measured by `{command}` (all figures from one run; medians over '
      f'{timed} rounds after {warmup} warm-up rounds; the rounds of our '
      'FedAvg, TFF\'s and every algorithm interleaved), on a machine with '
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
      '| TFF `build_weighted_fed_avg(loop_implementation=DATASET_ITERATOR)`'
      f' | {results["tff_iterator"]:.3f} | ours / TFF = '
      f'{results["ours"] / results["tff_iterator"]:.2f} |',
      '',
      '## Against PyTorch',
      '',
  ] + against_pytorch + [
      '',
      '## Round time of each algorithm, relative to FedAvg',
      '',
      '| algorithm | seconds per round | / FedAvg |',
      '|---|---|---|',
  ] + [
      f'| {name} | {seconds:.3f} | '
      f'{seconds / per_algorithm.get("fedavg", results["ours"]):.2f} |'
      for name, seconds in per_algorithm.items()
  ] + [
      '',
      '## Server distillation loop (FedDF/FedAUX), examples per second',
      '',
      f'{DISTILL_STEPS.value} Adam steps of batch 32 on the public split, the'
      ' `cnn`.',
      '',
      '| mode | examples / s | ratio |',
      '|---|---|---|',
      f'| `tf.function` (one `tf.while_loop`) | '
      f'{distill_rates["tf.function"]:,.0f} | '
      f'{distill_rates["tf.function"] / distill_rates["eager"]:.1f} x eager |',
      f'| eager | {distill_rates["eager"]:,.0f} | 1.0 |',
      '',
      '## Scale: clients per round (mnist1d, FedAvg)',
      '',
      'IID split over as many clients as take part, 1 epoch, batch 16, the '
      '`cnn`; peak resident memory sampled every 20 ms over the timed rounds.',
      '',
      'How client data reach TFF: each sampled client\'s `tf.data.Dataset` '
      '(its slice of the task arrays, shuffled, repeated, batched) is an '
      'argument of the round computation; TFF serializes the dataset\'s '
      'graph, which holds only that client\'s examples, and the worker '
      'iterates it lazily, one batch at a time, in '
      '`local_training.dataset_reduce`\'s loop. So the trainer never '
      'materializes a round\'s data and a client\'s batches exist only '
      'while it trains. The loop is a `for` over the dataset\'s iterator, '
      'not `Dataset.reduce`: that op instantiates its reduce function anew '
      'on every call, about 50 ms per client for the `cnn`\'s training step '
      '(with it, this page at commit 3a4b0c6 had the plain loop at 0.591 s '
      'per round).',
      '',
      '| clients per round | examples per client | seconds per round | '
      'ms per client | peak trainer MB | peak worker MB |',
      '|---|---|---|---|---|---|',
  ] + [
      f'| {n} | {size:.1f} | {sec:.2f} | {1000 * sec / n:.1f} | '
      f'{trainer:.0f} | {worker:.0f} |'
      for n, (sec, trainer, worker, size) in scale.items()
  ] + [
      '',
      f'{at} clients per round on 1 worker: {scale_one[0]:.2f} s; on '
      f'{workers} local workers (TFF mergeable context): '
      f'{scale_workers[0]:.2f} s (ratio {scale_workers[0] / scale_one[0]:.2f}'
      f'); peak worker MB {scale_one[2]:.0f} vs {scale_workers[2]:.0f} '
      '(summed).',
  ] + growth
  report = '\n'.join(lines) + '\n'
  os.makedirs(os.path.dirname(OUTPUT.value) or '.', exist_ok=True)
  with open(OUTPUT.value, 'w') as f:
    f.write(report)
  print(report)


if __name__ == '__main__':
  app.run(main)
