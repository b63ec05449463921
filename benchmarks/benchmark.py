r"""Measures round times: against PyTorch, TFF overhead, every algorithm.

  python -m benchmarks.benchmark --output=docs/PERFORMANCE.md \
    [--torch_path=.venv-bench]

(`make bench` installs torch into .venv-bench, then runs that.) All figures
of one invocation come from one run: the in-process ones are medians over
--timed_rounds rounds after --warmup_rounds (the first round includes graph
compilation), the rounds of the variants compared in a table interleaved
(a, b, c, a, b, c, ...), so a slow phase of the shared machine falls on all
of them alike. The rounds against PyTorch (sections 1 and 2) are measured
--repeats times, one full measurement after the other: the page gives the
median of the repeats' medians and their spread (min, max). The report
gives the load average at the start and the end, and says so when the
machine was not idle at the start (1-minute load average above 0.5). It
states the targets of ours / PyTorch per round (<= 1.2 for the tiny CNN,
<= 1.0 for ResNet-8) and whether this run meets them. Workload but in
sections 1-3: digits, 10 clients of ~67 examples (IID split over 17
clients, 10 sampled), 1 local epoch, batch 16, the task's `cnn`.

1. against PyTorch, tiny CNN, on the PyTorch peers' workload: digits split
   over 20 clients by Dirichlet(0.1) label skew, 10 clients a round (the
   same seeded schedule on every side), 1 epoch of full batches of 16, SGD
   at 0.05, the peers' CNN (33,802 parameters). Interleaved: a plain
   PyTorch FedAvg (`benchmarks.torch_reference`, in a Python process of its
   own driven round by round over a pipe: torch and TF 2.14 cannot share a
   process, see that module; skipped, with a line saying so, when
   --torch_path holds no torch); our `tff_kd.algorithms.build_fedavg` on
   the TFF C++ worker, also as it was before the tf.data fix of
   `tff_kd.local_training.dataset_reduce`; the same client training in a
   plain `tf.function` loop without TFF; TFF rounds that do no training
   (the floor of a TFF round); our FedAvg on workers with each of
   --worker_settings (threads, concurrency).
2. against PyTorch, ResNet-8: FedDF's (Lin et al. 2020; BatchNorm, 78,042
   parameters, checked equal on both sides) on seeded random 32x32x3
   images of 10 labels, the same arrays on both sides: 20 clients of
   80-120% of --resnet8_examples examples, 10 a round (the same seeded
   schedule on every side), 1 epoch of full batches of 16, SGD at 0.05.
   Interleaved: the PyTorch process (`model='resnet8'`, with
   --resnet8_torch_threads) and our `build_fedavg` on the TFF C++ worker.
3. the whole process for --process_rounds rounds of section 1's workload,
   ours and PyTorch's, each a fresh subprocess, with its phases (imports,
   worker start, data, build, rounds), and `python -m binaries.train` for
   the same rounds.
4. plain vs ours vs TFF: the same client training (our
   `tff_kd.local_training` loop) in one process with no TFF, then a numpy
   weighted average (the compute floor); `tff_kd.algorithms.build_fedavg`;
   `tff.learning.algorithms.build_weighted_fed_avg` with its default
   training loop (`Dataset.reduce`) and with
   `loop_implementation=DATASET_ITERATOR` (the loop ours uses).
5. each registered algorithm, relative to our FedAvg.
6. server distillation (FedDF's loop, `tff_kd.server_distillation`):
   examples per second as a `tf.function` and run eagerly.
Population scale (memory against the clients) is `benchmarks.population`'s
page, docs/POPULATION.md, linked from this one.

Our TFF workers run with the --worker_* flags (`tff_kd.runtime.LocalRuntime`
arguments; default: TFF's and TensorFlow's defaults).
"""

import time

_START = time.time()  # The whole-process run's phases: what imports take.

# pylint: disable=g-import-not-at-top,wrong-import-position
import collections
import contextlib
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
from unittest import mock

from absl import app
from absl import flags
import numpy as np
import psutil
import tensorflow as tf

_TF_IMPORTED = time.time()
import tensorflow_federated as tff

_TFF_IMPORTED = time.time()
import binaries
from binaries import common
from binaries import registry
import tasks
from tff_kd import algorithms
from tff_kd import local_training
from tff_kd import optimizers
from tff_kd import runtime
from tff_kd import server_distillation

_IMPORTED = time.time()
# pylint: enable=g-import-not-at-top,wrong-import-position

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SETTING_KEYS = {
    'intra': 'intra_op_threads',
    'inter': 'inter_op_threads',
    'mccc': 'max_concurrent_computation_calls',
}

OUTPUT = flags.DEFINE_string('output', 'docs/PERFORMANCE.md', 'Report file.')
WARMUP_ROUNDS = flags.DEFINE_integer('warmup_rounds', 3, 'Untimed rounds.')
TIMED_ROUNDS = flags.DEFINE_integer('timed_rounds', 20, 'Timed rounds.')
BENCH_ALGORITHMS = flags.DEFINE_list(
    'bench_algorithms', sorted(registry.ALGORITHMS),
    'Algorithms timed relative to FedAvg.'
)
DISTILL_STEPS = flags.DEFINE_integer(
    'bench_distill_steps', 200, 'Steps of the distillation measurement.'
)
TORCH_PATH = flags.DEFINE_string(
    'torch_path', os.path.join(_REPO_ROOT, '.venv-bench'),
    'Directory holding torch and its dependencies (requirements-bench.lock, '
    'installed there by `make bench` with pip --target; never in .venv). '
    'The PyTorch reference runs in a separate Python process with it first '
    'on PYTHONPATH; without torch there its rows are skipped.'
)
TORCH_THREADS = flags.DEFINE_integer(
    'torch_threads', 1, 'Threads of the PyTorch reference '
    '(torch.set_num_threads); 0: torch\'s default, one per core. 1 is its '
    'best on a 2-core machine: with 2 its OpenMP threads wait for each '
    'other (its round was 20-40x as long at load average 8; on an idle '
    'machine 1 and 2 threads were within 4%).',
    lower_bound=0,
)
WORKER_INTRA_OP_THREADS = flags.DEFINE_integer(
    'worker_intra_op_threads', None, 'TF_NUM_INTRAOP_THREADS of our TFF '
    'workers (`tff_kd.runtime.LocalRuntime(intra_op_threads=)`); default: '
    'inherited, else TensorFlow\'s (one per core).', lower_bound=1,
)
WORKER_INTER_OP_THREADS = flags.DEFINE_integer(
    'worker_inter_op_threads', None, 'TF_NUM_INTEROP_THREADS of our TFF '
    'workers (`LocalRuntime(inter_op_threads=)`); default: inherited, else '
    'TensorFlow\'s (one per core).', lower_bound=1,
)
WORKER_MAX_CONCURRENT_CALLS = flags.DEFINE_integer(
    'worker_max_concurrent_computation_calls', None, 'The worker binary\'s '
    '--max_concurrent_computation_calls for our TFF workers '
    '(`LocalRuntime(max_concurrent_computation_calls=)`): at most that many '
    'clients of a round train at once; default: no limit.', lower_bound=1,
)
WORKER_SETTINGS = flags.DEFINE_list(
    'worker_settings', ['intra=1+inter=1', 'intra=2+inter=2', 'mccc=1',
                        'mccc=2'],
    'Worker settings timed against the --worker_* ones in the PyTorch '
    'section, each on a worker of its own: intra=N (intra-op threads), '
    'inter=N (inter-op threads), mccc=N (max concurrent computation calls), '
    'joined by +.'
)
REPEATS = flags.DEFINE_integer(
    'repeats', 3, 'Full measurements of the against-PyTorch rounds (tiny CNN '
    'and ResNet-8), one after the other, each --warmup_rounds then '
    '--timed_rounds interleaved rounds of the same clients: the page gives '
    'the median of the repeats\' medians and their spread (min, max), so a '
    'reader sees how far one measurement can be off.', lower_bound=1,
)
RESNET8_TORCH_THREADS = flags.DEFINE_integer(
    'resnet8_torch_threads', 0, 'Threads of the PyTorch reference for '
    'ResNet-8, as --torch_threads; 0: torch\'s default, one per core, as our '
    'TFF worker uses (for ResNet-8, faster than 1 thread on an idle 2-core '
    'machine).', lower_bound=0,
)
RESNET8_EXAMPLES = flags.DEFINE_integer(
    'resnet8_examples', 50, 'Mean examples per client of the ResNet-8 '
    'workload (each client has 80-120% of it).', lower_bound=1,
)
PROCESS_ROUNDS = flags.DEFINE_integer(
    'process_rounds', 30, 'Rounds of the whole-process runs.', lower_bound=1,
)
PROCESS_REPEATS = flags.DEFINE_integer(
    'process_repeats', 3, 'Whole-process runs of each side (alternated; '
    'medians reported); 0 skips them.', lower_bound=0,
)
TIME_TRAIN_BINARY = flags.DEFINE_bool(
    'time_train_binary', True, 'Also time `python -m binaries.train` '
    '(FedAvg, the `cnn`) for --process_rounds rounds.'
)
PROCESS_CHILD = flags.DEFINE_enum(
    'process_child', '', ['', 'ours'], 'Internal: run as the whole-process '
    'child (ours) and print its phases as JSON.'
)
LAUNCHED_AT = flags.DEFINE_float(
    'launched_at', None, 'Internal: the parent\'s time.time() when it '
    'started this process.'
)


def parse_worker_setting(spec: str) -> dict:
  """'intra=1+inter=1' -> {'intra_op_threads': 1, 'inter_op_threads': 1}."""
  settings = {}
  for part in spec.split('+'):
    key, _, value = part.partition('=')
    if key not in _SETTING_KEYS or not re.fullmatch('[0-9]{1,4}', value) or (
        int(value) < 1):
      raise ValueError(
          f'--worker_settings: bad setting {part!r} in {spec!r} (expected '
          'intra=N, inter=N or mccc=N with N >= 1, joined by +).')
    settings[_SETTING_KEYS[key]] = int(value)
  return settings


def _check_worker_settings(specs) -> bool:
  for spec in specs:
    try:
      parse_worker_setting(spec)
    except ValueError as e:
      raise flags.ValidationError(str(e)) from None
  return True


flags.register_validator('worker_settings', _check_worker_settings)

_LR = 0.05
# The PyTorch peers' workload (section 1 of the module docstring).
_PEER_CLIENTS, _PEER_CLIENTS_PER_ROUND, _PEER_ALPHA = 20, 10, 0.1
_PEER_EPOCHS, _PEER_BATCH = 1, 16
# The ResNet-8 workload (section 2 of the module docstring).
_RESNET8_CLIENTS, _RESNET8_CLIENTS_PER_ROUND = 20, 10
_RESNET8_EPOCHS, _RESNET8_BATCH = 1, 16
# Targets of ours / PyTorch per round.
_CNN_TARGET, _RESNET8_TARGET = 1.2, 1.0
_TFF_PLAIN_TARGET = 1.2  # Ours / the plain loop per round, tiny CNN.


def _worker_settings() -> dict:
  """The --worker_* flags given, as `LocalRuntime` keyword arguments."""
  values = {
      'intra_op_threads': WORKER_INTRA_OP_THREADS.value,
      'inter_op_threads': WORKER_INTER_OP_THREADS.value,
      'max_concurrent_computation_calls': WORKER_MAX_CONCURRENT_CALLS.value,
  }
  return {k: v for k, v in values.items() if v is not None}


def _worker_flags() -> list[str]:
  """The --worker_* flags given, for a child process."""
  names = {v: f'--worker_{v}' for v in _SETTING_KEYS.values()}
  return [f'{names[k]}={v}' for k, v in _worker_settings().items()]


def _describe_settings(settings: dict) -> str:
  if not settings:
    return 'TFF\'s and TensorFlow\'s defaults'
  words = {'intra_op_threads': 'intra-op threads',
           'inter_op_threads': 'inter-op threads',
           'max_concurrent_computation_calls': 'max concurrent calls'}
  return ', '.join(f'{words[k]} {v}' for k, v in settings.items())


def _thread_count(pid) -> str:
  try:
    return str(psutil.Process(pid).num_threads())
  except psutil.Error:
    return 'n/a'


def _load() -> str:
  return ' '.join(f'{x:.2f}' for x in os.getloadavg())


def _median_round_seconds(step, warmup, timed):
  return _interleaved_medians({None: step}, warmup, timed)[None]


def _interleaved_medians(steps, warmup, timed):
  return {name: statistics.median(t)
          for name, t in _interleaved_times(steps, warmup, timed).items()}


class OwnTime(float):
  """Seconds a step measured itself (see `_interleaved_times`)."""


def _interleaved_times(steps, warmup, timed):
  """Seconds of each step's timed rounds, the steps' rounds interleaved.

  Every step takes its warm-up rounds, then the timed rounds go round-robin
  (a, b, c, a, b, c, ...), so a slow phase of the machine (or of the TFF
  worker: the first TFF process timed in a run used to look ~0.3 s slower
  than the same process timed later) falls on all of them alike. A step that
  returns an `OwnTime` reports its own time: the PyTorch process's round,
  timed there, without the pipe.
  """
  for step in steps.values():
    for _ in range(warmup):
      step()
  times = {name: [] for name in steps}
  for _ in range(timed):
    for name, step in steps.items():
      start = time.perf_counter()
      own = step()
      seconds = time.perf_counter() - start
      times[name].append(own if isinstance(own, OwnTime) else seconds)
  return times


def _repeated_times(steps, warmup, timed, repeats):
  """`repeats` full measurements (`_interleaved_times`), one after another.

  Each repeat takes its own warm-up rounds and trains the same clients (the
  round iterators start the schedule again: `_Rounds`).
  """
  return [_interleaved_times(steps, warmup, timed) for _ in range(repeats)]


def _repeat_medians(runs):
  """Per step, its median seconds per round in each repeat."""
  return {name: [statistics.median(run[name]) for run in runs]
          for name in runs[0]}


def _ms_per_step(runs, timed_steps):
  """Per step, ms per SGD step: the median over the repeats of the median
  over the timed rounds of the round's time / its SGD steps."""
  return {name: statistics.median(
      statistics.median(1000 * s / n for s, n in zip(run[name], timed_steps)
                        if n) for run in runs) for name in runs[0]}


def _spread(values, digits: int) -> str:
  """'median [min, max]' of `values`; the median alone for one value."""
  text = f'{statistics.median(values):.{digits}f}'
  if len(values) > 1:
    text += f' [{min(values):.{digits}f}, {max(values):.{digits}f}]'
  return text


def _describe_repeats(warmup, timed, repeats) -> str:
  """The page's sentence on how a table's figures were taken."""
  text = (f'Medians over {timed} rounds after {warmup} warm-up rounds, '
          'every row\'s rounds interleaved')
  if repeats == 1:
    return text + '.'
  return text + (f', in each of {repeats} repeats one after the other; '
                 'figures: the median of the repeats\' medians, then '
                 '[min, max] over the repeats.')


def _plain_step_fn(model_fn, next_datasets, example_dataset, *,
                   before_fix=False):
  """One FedAvg round without TFF: our client loop, numpy averaging.

  `next_datasets()` gives each round's client datasets. The loop is traced
  here, on `example_dataset` (before TFF traces a model: see `main`);
  `before_fix`: with `dataset_reduce` as it was before the tf.data options
  (`_before_the_tf_data_fix`).
  """
  model = model_fn()
  sgd = tff.learning.optimizers.build_sgdm(learning_rate=_LR)
  update = local_training.build_client_update(model, sgd)
  hparams = sgd.get_hparams(sgd.initialize(tf.TensorSpec((), tf.float32)))
  weights = [tuple(v.numpy() for v in model.trainable_variables),
             tuple(v.numpy() for v in model.non_trainable_variables)]

  def step():
    deltas, sizes = [], []
    for dataset in next_datasets():
      delta, weight, _, _ = update(tuple(weights), dataset, hparams)
      deltas.append([d.numpy() for d in delta])
      sizes.append(float(weight))
    total = sum(sizes)
    mean = [sum(s / total * d[i] for d, s in zip(deltas, sizes))
            for i in range(len(deltas[0]))]
    weights[0] = tuple(w - m for w, m in zip(weights[0], mean))

  with _before_the_tf_data_fix() if before_fix else contextlib.nullcontext():
    update.get_concrete_function(tuple(weights), example_dataset, hparams)
  return step


def _loop_before_the_fix(dataset, initial_state, reduce_fn):
  """`local_training.dataset_reduce` before issue 19: no tf.data options."""
  state = initial_state
  for batch in iter(dataset):
    state = reduce_fn(state, batch)
  return state


@contextlib.contextmanager
def _before_the_tf_data_fix():
  """What is traced within iterates datasets as before the tf.data fix.

  Only for the benchmark's before/after rows: TFF traces a process's
  computations when it is built, a `tf.function` at its first call.
  """
  with mock.patch.object(local_training, 'dataset_reduce',
                         _loop_before_the_fix):
    yield


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


class _Workload:
  """A FedAvg workload for both sides: `datasets`, `schedule` (each round's
  client ids), `steps` (each round's SGD steps) and `keras_model()`."""

  def model_fn(self):
    return tff.learning.models.from_keras_model(
        self.keras_model(),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=self.datasets[0].element_spec)

  def build_fedavg(self):
    return algorithms.build_fedavg(
        self.model_fn, tff.learning.optimizers.build_sgdm(learning_rate=_LR))

  def rounds(self):
    """A fresh iterator over the rounds' datasets."""
    return _Rounds(self.schedule, self.datasets)


class _PeerWorkload(_Workload):
  """The PyTorch peers' workload: split, datasets, schedule, model."""

  def __init__(self, rounds: int):
    self.task = tasks.create_task(
        'digits',
        train_client_spec=tff.simulation.baselines.ClientSpec(
            num_epochs=_PEER_EPOCHS, batch_size=_PEER_BATCH),
        partition='dirichlet', alpha=_PEER_ALPHA, num_clients=_PEER_CLIENTS,
        seed=0,
    )
    rng = np.random.default_rng(0)
    self.schedule = [
        rng.choice(_PEER_CLIENTS, _PEER_CLIENTS_PER_ROUND, replace=False)
        for _ in range(rounds)]
    sizes = [len(i) for i in self.task.client_indices]
    self.steps = [sum(_PEER_EPOCHS * (sizes[k] // _PEER_BATCH)
                      for k in clients) for clients in self.schedule]
    # Full batches, a new order each epoch (shuffle reshuffles every pass).
    self.datasets = [
        self.task.datasets.train_data.create_tf_dataset_for_client(str(k))
        .shuffle(max(sizes), seed=k).batch(_PEER_BATCH, drop_remainder=True)
        .repeat(_PEER_EPOCHS) for k in range(_PEER_CLIENTS)]

  def keras_model(self):
    return _peer_keras_model(self.task.input_shape, self.task.num_classes)

  def clients(self):
    """Per client, its (x, y) arrays, for the PyTorch side."""
    arrays = self.task.arrays
    return [(arrays.x_train[i], arrays.y_train[i])
            for i in self.task.client_indices]


class _Rounds:
  """Calls give each round's client datasets in turn (`ids()`: their ids).

  After the schedule's last round it starts again, so every repeat of a
  measurement (--repeats) trains the same clients.
  """

  def __init__(self, schedule, datasets):
    self._schedule, self._datasets, self._next = schedule, datasets, 0

  def ids(self):
    """The next round's client ids; after the last round, the first again."""
    clients = self._schedule[self._next % len(self._schedule)]
    self._next += 1
    return clients

  def __call__(self):
    return [self._datasets[k] for k in self.ids()]


def resnet8_keras_model(input_shape, num_classes):
  """FedDF's ResNet-8 (`torch_reference.build_resnet8`) in Keras.

  The same layers, shapes and parameters as PyTorch's: convolutions without
  biases, BatchNorm with PyTorch's defaults (its momentum 0.1 is Keras's
  0.9, epsilon 1e-5). Not `tasks.models`' `resnet8`, which uses
  GroupNormalization (that module's docstring says why); FedDF's uses
  BatchNorm.
  """

  def conv(channels, size, stride=1):
    return tf.keras.layers.Conv2D(channels, size, strides=stride,
                                  padding='same', use_bias=False)

  def norm(x):
    return tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)

  def block(x, channels, stride):
    y = tf.keras.layers.ReLU()(norm(conv(channels, 3, stride)(x)))
    y = norm(conv(channels, 3)(y))
    if stride != 1 or x.shape[-1] != channels:
      x = norm(conv(channels, 1, stride)(x))
    return tf.keras.layers.ReLU()(tf.keras.layers.Add()([x, y]))

  inputs = tf.keras.Input(input_shape)
  x = tf.keras.layers.ReLU()(norm(conv(16, 3)(inputs)))
  for channels, stride in ((16, 1), (32, 2), (64, 2)):
    x = block(x, channels, stride)
  x = tf.keras.layers.GlobalAveragePooling2D()(x)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes)(x))


def trainable_parameters(keras_model_fn) -> int:
  """Trainable parameters of `keras_model_fn()`, built in a graph of its own.

  (Not eagerly: a Keras model built eagerly breaks once TFF traces models of
  the same classes, see `tff_kd.evaluation`.)
  """
  with tf.Graph().as_default():
    return sum(int(np.prod(v.shape))
               for v in keras_model_fn().trainable_variables)


class _ResNet8Workload(_Workload):
  """Section 2's workload: synthetic CIFAR-size clients, FedDF's ResNet-8."""

  input_shape, num_classes = (32, 32, 3), 10

  def __init__(self, rounds: int, examples: int):
    rng = np.random.default_rng(0)
    sizes = rng.integers(round(0.8 * examples), round(1.2 * examples) + 1,
                         _RESNET8_CLIENTS)
    self._arrays = [
        (rng.random((n,) + self.input_shape, dtype=np.float32),
         rng.integers(0, self.num_classes, n).astype(np.int32))
        for n in sizes]
    self.schedule = [
        rng.choice(_RESNET8_CLIENTS, _RESNET8_CLIENTS_PER_ROUND,
                   replace=False) for _ in range(rounds)]
    self.steps = [sum(_RESNET8_EPOCHS * (sizes[k] // _RESNET8_BATCH)
                      for k in clients) for clients in self.schedule]
    self.sizes = sizes
    # Full batches, a new order each epoch, as on the PyTorch side.
    self.datasets = [
        tf.data.Dataset.from_tensor_slices(
            collections.OrderedDict(x=x, y=y))
        .shuffle(len(y), seed=k)
        .batch(_RESNET8_BATCH, drop_remainder=True).repeat(_RESNET8_EPOCHS)
        for k, (x, y) in enumerate(self._arrays)]

  def keras_model(self):
    return resnet8_keras_model(self.input_shape, self.num_classes)

  def clients(self):
    """Per client, its (x, y) arrays, for the PyTorch side."""
    return self._arrays


def torch_unavailable(torch_path: str):
  """None if `torch_path` holds torch, else the report's line saying why."""
  if os.path.isfile(os.path.join(torch_path, 'torch', '__init__.py')):
    return None
  return (f'Skipped: no PyTorch in `{torch_path}`. torch is benchmark-only '
          'and never goes into .venv (it needs typing_extensions >= 4.10, '
          'which breaks TF 2.14): `make bench` installs '
          'requirements-bench.lock there (`pip install --no-deps --target '
          '.venv-bench`).')


def _torch_environment(torch_path: str) -> dict:
  path = [os.path.abspath(torch_path), _REPO_ROOT] + [
      p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
  return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


class _NumpyUnpickler(pickle.Unpickler):
  """Loads builtins and numpy arrays only: never imports torch here."""

  def find_class(self, module, name):
    if module == 'builtins' or module.split('.')[0] == 'numpy':
      return super().find_class(module, name)
    raise pickle.UnpicklingError(
        f'The PyTorch process sent a {module}.{name}; only numpy arrays and '
        'builtins may cross the pipe.')


class TorchProcess:
  """`python -m benchmarks.torch_reference serve`, driven over a pipe.

  The same interpreter, with `torch_path` first on PYTHONPATH; torch is
  never imported in this process (see `benchmarks.torch_reference`). Use as a
  context manager or call `close()`. Raises RuntimeError, with the child's
  traceback or the end of its stderr, when it fails.
  """

  def __init__(self, torch_path: str):
    self._stderr = tempfile.TemporaryFile()
    self._process = subprocess.Popen(
        [sys.executable, '-m', 'benchmarks.torch_reference', 'serve'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
        env=_torch_environment(torch_path), cwd=_REPO_ROOT,
    )
    self.pid = self._process.pid
    try:
      self.ready = self._receive('ready')
    except Exception:
      self.close()
      raise

  def _failure(self, problem: str) -> RuntimeError:
    try:
      status = self._process.wait(timeout=5)
    except subprocess.TimeoutExpired:
      status = 'still running'
    self._stderr.seek(0)
    tail = self._stderr.read().decode(errors='replace').strip()
    tail = '\n'.join(tail.splitlines()[-10:])
    return RuntimeError(
        f'The PyTorch process {problem} (status {status}); its stderr '
        f'ends with:\n{tail}')

  def _receive(self, expected='ok'):
    try:
      kind, value = _NumpyUnpickler(self._process.stdout).load()
    except EOFError:
      raise self._failure('exited') from None
    if kind == 'error':
      raise RuntimeError(f'The PyTorch process failed:\n{value}')
    if kind != expected:
      raise RuntimeError(f'The PyTorch process answered {kind!r}, not '
                         f'{expected!r}.')
    return value

  def call(self, *request):
    """Sends one request (module docstring of torch_reference); its value."""
    try:
      pickle.dump(request, self._process.stdin,
                  protocol=pickle.HIGHEST_PROTOCOL)
      self._process.stdin.flush()
    except BrokenPipeError:
      raise self._failure('exited') from None
    return self._receive()

  def start(self, **fedavg_kwargs) -> dict:
    """Builds its `FedAvg(**fedavg_kwargs)`; {'threads', 'build_seconds'}."""
    return self.call('start', fedavg_kwargs)

  def run_round(self, client_ids) -> dict:
    """Runs a round: {'steps': SGD steps, 'seconds': timed in the child}."""
    return self.call('round', [int(k) for k in client_ids])

  def weights(self):
    return self.call('weights')

  def close(self) -> None:
    """Stops the process (a 'stop' request, then SIGKILL); idempotent."""
    if self._process.poll() is None:
      try:
        self.call('stop')
        self._process.wait(timeout=5)
      except (RuntimeError, OSError, subprocess.TimeoutExpired):
        self._process.kill()
        self._process.wait()
    for stream in (self._process.stdin, self._process.stdout, self._stderr):
      stream.close()

  def __enter__(self) -> 'TorchProcess':
    return self

  def __exit__(self, *unused_exc_info) -> None:
    self.close()


def _floor_computations(process, element_spec):
  """TFF rounds without training: the floor of a round on the worker.

  Both broadcast the model weights, ship the round's datasets to the clients
  and sum one number per client: `untouched` does nothing with the dataset,
  `iterate` counts its examples with `local_training.dataset_reduce` (no
  SGD).
  """
  weights_type = (
      process.initialize.type_signature.result.member.global_model_weights)
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(element_spec))

  @tff.tensorflow.computation(weights_type, data_type)
  def untouched(unused_weights, unused_dataset):
    return tf.constant(1.0)

  @tf.function
  def count(dataset):
    return local_training.dataset_reduce(
        dataset, tf.constant(0.0), lambda total, batch: total + tf.cast(
            tf.shape(local_training.batch_labels(batch))[0], tf.float32))

  @tff.tensorflow.computation(weights_type, data_type)
  def iterate(unused_weights, dataset):
    return count(dataset)

  def federated(client_fn):
    @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                               tff.FederatedType(data_type, tff.CLIENTS))
    def round_fn(weights, datasets):
      return tff.federated_sum(tff.federated_map(
          client_fn, (tff.federated_broadcast(weights), datasets)))
    return round_fn

  return federated(untouched), federated(iterate)


def _on(context, step):
  """`step` run with `context` installed (one of several TFF runtimes)."""

  def run():
    with tff.framework.get_context_stack().install(context):
      return step()

  return run


def _max_difference(a, b) -> float:
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def _start_torch(stack, torch_path, skip, **fedavg_kwargs):
  """(the PyTorch process or None, its thread settings, the skip line).

  The process is started in `stack` and builds `FedAvg(**fedavg_kwargs)`,
  unless `skip` (a reason already) is given; when it fails, the skip line
  says why.
  """
  if skip is not None:
    return None, None, skip
  try:
    torch = stack.enter_context(TorchProcess(torch_path))
    threads = torch.start(**fedavg_kwargs)['threads']
  except RuntimeError as e:
    return None, None, ('Skipped: the PyTorch process failed: '
                        + str(e).strip().splitlines()[-1])
  return torch, threads, None


def _torch_step_fn(torch, rounds, walls=None):
  """A step running PyTorch's next round (timed there: `OwnTime`).

  With `walls`, it appends each round's time as seen from this process (with
  the pipe) to that list.
  """

  def step():
    start = time.perf_counter()
    seconds = torch.run_round(rounds.ids())['seconds']
    if walls is not None:
      walls.append(time.perf_counter() - start)
    return OwnTime(seconds)

  return step


def _against_pytorch(warmup, timed, repeats, torch_path):
  """Section 1's interleaved rounds: (the report's lines, ratio lists).

  Round r of every variant trains the schedule's clients r, so the rounds'
  SGD steps are equal too; every TFF variant starts from the same state.
  The ratios, one per repeat: 'ours / PyTorch' (None without torch) and
  'TFF / plain'.
  """
  workload = _PeerWorkload(warmup + timed)
  timed_steps = workload.steps[warmup:]
  steps = {}
  torch_wall = []
  with contextlib.ExitStack() as stack:
    torch, torch_threads, skip = _start_torch(
        stack, torch_path, torch_unavailable(torch_path),
        clients=workload.clients(), num_classes=workload.task.num_classes,
        epochs=_PEER_EPOCHS, batch_size=_PEER_BATCH, learning_rate=_LR,
        seed=0, num_threads=TORCH_THREADS.value)
    if torch is not None:
      steps['torch'] = _torch_step_fn(torch, workload.rounds(), torch_wall)
    # Eager Keras models break once TFF traces models of the same classes
    # (module docs of tff_kd.evaluation): the plain loops first.
    steps['plain'] = _plain_step_fn(
        workload.model_fn, workload.rounds(), workload.datasets[0])
    steps['plain before'] = _plain_step_fn(
        workload.model_fn, workload.rounds(), workload.datasets[0],
        before_fix=True)
    local = stack.enter_context(runtime.LocalRuntime(**_worker_settings()))
    others = {spec: stack.enter_context(
        runtime.LocalRuntime(**parse_worker_setting(spec)))
              for spec in WORKER_SETTINGS.value}
    process = workload.build_fedavg()
    with _before_the_tf_data_fix():
      process_before = workload.build_fedavg()
    with tff.framework.get_context_stack().install(local.context):
      initial = process.initialize()
      initial_weights = process.get_model_weights(initial)
    untouched, iterate = _floor_computations(
        process, workload.datasets[0].element_spec)
    states = {}

    def tff_round(name, tff_process, context):
      states[name] = initial
      rounds = workload.rounds()

      def step():
        states[name] = tff_process.next(states[name], rounds()).state

      return _on(context, step)

    def floor_round(computation):
      rounds = workload.rounds()
      return _on(local.context,
                 lambda: computation(initial_weights, rounds()))

    steps['ours'] = tff_round('ours', process, local.context)
    steps['ours before'] = tff_round(
        'ours before', process_before, local.context)
    steps['floor'] = floor_round(untouched)
    steps['floor iterate'] = floor_round(iterate)
    for spec, other in others.items():
      steps[f'worker {spec}'] = tff_round(
          f'worker {spec}', process, other.context)
    runs = _repeated_times(steps, warmup, timed, repeats)
    worker_threads = {'ours': _thread_count(local.workers[0].process.pid)}
    for spec, other in others.items():
      worker_threads[f'worker {spec}'] = _thread_count(
          other.workers[0].process.pid)
    trainer_threads = _thread_count(os.getpid())
    torch_process_threads = (_thread_count(torch.pid) if torch is not None
                             else None)
    with tff.framework.get_context_stack().install(local.context):
      final = {name: process.get_model_weights(state).trainable
               for name, state in states.items()}

  per_repeat = _repeat_medians(runs)
  median = {name: statistics.median(m) for name, m in per_repeat.items()}
  ms_per_step = _ms_per_step(runs, timed_steps)
  has_torch = 'torch' in median

  def ratios(name, base):
    return [a / b for a, b in zip(per_repeat[name], per_repeat[base])]

  def per_torch(name):
    return (f'{statistics.median(ratios(name, "torch")):.2f}' if has_torch
            else 'n/a')

  def row(label, name):
    if not has_torch:
      ratio = 'n/a'
    else:
      ratio = '1.00' if name == 'torch' else _spread(ratios(name, 'torch'), 2)
    return (f'| {label} | {_spread(per_repeat[name], 4)} | '
            f'{ms_per_step[name]:.2f} | {ratio} |')

  params = _peer_keras_model(
      workload.task.input_shape, workload.task.num_classes).count_params()
  lines = [
      '### Tiny CNN',
      '',
      f'Workload: digits split over {_PEER_CLIENTS} clients by '
      f'Dirichlet({_PEER_ALPHA}) label skew, {_PEER_CLIENTS_PER_ROUND} '
      'clients a round (the same seeded schedule on every side), '
      f'{_PEER_EPOCHS} epoch of full batches of {_PEER_BATCH} (the last '
      f'partial batch dropped), client SGD at {_LR}, the peers\' CNN '
      f'({params:,} parameters: Conv2D 32 3x3 + ReLU + MaxPool 2, Dense 64 '
      'ReLU, Dense 10); weighted averaging. SGD steps per timed round: median'
      f' {statistics.median(timed_steps):.0f}, {sum(timed_steps)} in all. '
      f'{_describe_repeats(warmup, timed, repeats)} '
      'ms per SGD step: median over rounds of round time / its SGD steps.',
      '',
  ]
  if not has_torch:
    lines += [skip, '']
  lines += [
      '| FedAvg round | seconds per round | ms per SGD step | / PyTorch |',
      '|---|---|---|---|',
  ]
  if has_torch:
    lines.append(row('plain PyTorch, in its own process '
                     '(`benchmarks/torch_reference.py`)', 'torch'))
  lines += [
      row('`tff_kd` `build_fedavg`, TFF C++ worker', 'ours'),
      row('the same before the tf.data fix (`dataset_reduce` without its '
          'options)', 'ours before'),
      row('plain `tf.function` loop, no TFF (our client update, numpy '
          'mean)', 'plain'),
      row('the same before the tf.data fix', 'plain before'),
      '',
  ]
  if has_torch:
    pipe = [s for k, s in enumerate(torch_wall) if k % (warmup + timed)
            >= warmup]
    lines += [
        f'The PyTorch rows are timed in its process (`perf_counter` around '
        f'`run_round`); seen from this process, with the pipe, its round '
        f'takes {statistics.median(pipe):.4f} s.',
        '',
    ]
  same = {name: _max_difference(final['ours'], w)
          for name, w in final.items() if name != 'ours'}
  def label(name):
    if name == 'ours before':
      return 'ours before the tf.data fix'
    settings = parse_worker_setting(name[len('worker '):])
    return f'ours on a worker with {_describe_settings(settings)}'

  equal = [label(name) for name, d in same.items() if d == 0.0]
  differ = [f'{label(name)} (max |w - w_ours| {d:.2g})'
            for name, d in same.items() if d != 0.0]
  lines += [
      f'Same numbers: after the {repeats * (warmup + timed)} rounds (every '
      'variant from one state, training the same clients), the server '
      'weights of `ours`, bit for bit, are those of: '
      + ('; '.join(equal) or 'none') + '.'
      + (' They differ by float rounding from those of: '
         + '; '.join(differ) + '. A worker\'s intra-op thread count '
         'decides how some kernels split their float sums, so a count '
         'other than the default (one per core) changes the last bits, '
         'which add up over the rounds.' if differ else ''),
  ]

  lines += [
      '',
      '#### Changes, before and after',
      '',
      'Ours / PyTorch per round (medians over the repeats):',
      '',
      '| change | before | after | round s, before -> after |',
      '|---|---|---|---|',
      f'| tf.data\'s default graph optimizations and autotuning off for '
      f'the client loop (`dataset_reduce` in `tff_kd/local_training.py`) | '
      f'{per_torch("ours before")} | {per_torch("ours")} | '
      f'{median["ours before"]:.4f} -> {median["ours"]:.4f} '
      f'({median["ours"] / median["ours before"]:.2f}x) |',
  ]
  settings = {spec: median[f'worker {spec}'] for spec in others}
  if settings:
    best = min(settings, key=settings.get)
    lines.append(
        f'| TFF worker settings: the best of `--worker_settings` ({best}) '
        f'against the default | {per_torch("ours")} | '
        f'{per_torch(f"worker {best}")} | {median["ours"]:.4f} -> '
        f'{settings[best]:.4f} ({settings[best] / median["ours"]:.2f}x); '
        + ('the default is kept: another intra-op thread count changes the '
           'numbers ("Same numbers" above) |'
           if settings[best] < 0.95 * median['ours'] else
           'no gain: the default is kept |'))
  lines += [
      '',
      '#### Where a round\'s time goes',
      '',
      'The same interleaved rounds. The first two rows are TFF rounds that '
      'train nothing: they broadcast the weights, ship the round\'s 10 '
      'datasets to the worker and sum one number per client; the second '
      'also iterates each dataset with `dataset_reduce` (no SGD).',
      '',
      '| round | seconds per round | / ours |',
      '|---|---|---|',
      f'| TFF, no client work | {median["floor"]:.4f} | '
      f'{median["floor"] / median["ours"]:.2f} |',
      f'| TFF, datasets iterated, no SGD | {median["floor iterate"]:.4f} | '
      f'{median["floor iterate"] / median["ours"]:.2f} |',
      f'| ours: the SGD steps too (a FedAvg round) | {median["ours"]:.4f} | '
      '1.00 |',
      f'| plain loop: the same client work, no TFF | {median["plain"]:.4f} '
      f'| {median["plain"] / median["ours"]:.2f} |',
  ]
  if has_torch:
    lines.append(f'| PyTorch | {median["torch"]:.4f} | '
                 f'{median["torch"] / median["ours"]:.2f} |')
  floor = median['floor']
  lines += [
      '',
      f'So of our {1000 * median["ours"]:.0f} ms round, '
      f'{1000 * floor:.0f} ms is TFF\'s floor (the computation\'s '
      'invocation, the datasets\' serialization and deserialization, the '
      'broadcast and the sum), '
      f'{1000 * (median["floor iterate"] - floor):.0f} ms making and '
      'draining the clients\' tf.data iterators, and '
      f'{1000 * (median["ours"] - median["floor iterate"]):.0f} ms the SGD '
      'steps and the model update\'s bookkeeping.'
      + (f' PyTorch\'s whole round is {1000 * median["torch"]:.0f} ms: the '
         'floor alone is '
         f'{floor / median["torch"]:.2f} of it.' if has_torch else ''),
  ]
  ours_torch = ratios('ours', 'torch') if has_torch else None
  if has_torch and statistics.median(ours_torch) > _CNN_TARGET:
    per_step_needed = (1000 * (_CNN_TARGET * median['torch'] - floor)
                       / statistics.median(timed_steps))
    lines += [
        '',
        f'What ours / PyTorch <= {_CNN_TARGET} would take: the floor above '
        'is per round, whatever the clients do, and is TFF\'s (its C++ '
        'executor, the gRPC call, the datasets\' graphs); with it our SGD '
        f'steps would have to cost {per_step_needed:.2f} ms each, against '
        f'{ms_per_step["plain"]:.2f} ms per step for '
        'our plain loop without TFF (tf.data iteration and the TF kernels '
        f'of a batch of {_PEER_BATCH} 8x8 images) and '
        f'{ms_per_step["torch"]:.2f} for PyTorch\'s eager loop over '
        'in-memory tensors.',
    ]
  lines += [
      '',
      '#### TFF worker settings',
      '',
      'Our FedAvg round on TFF workers started with other settings '
      '(`tff_kd.runtime.LocalRuntime(intra_op_threads=, inter_op_threads=, '
      'max_concurrent_computation_calls=)`; the benchmark\'s `--worker_*` '
      'flags and `--worker_settings`), each worker its own, the rounds '
      'interleaved with those above. Threads: the worker\'s OS threads after '
      'the rounds.',
      '',
      '| worker | seconds per round | / default | / PyTorch | threads |',
      '|---|---|---|---|---|',
      f'| {_describe_settings(_worker_settings())} (default) | '
      f'{median["ours"]:.4f} | 1.00 | {per_torch("ours")} | '
      f'{worker_threads["ours"]} |',
  ] + [
      f'| {_describe_settings(parse_worker_setting(spec))} | '
      f'{median[f"worker {spec}"]:.4f} | '
      f'{statistics.median(ratios(f"worker {spec}", "ours")):.2f} | '
      f'{per_torch(f"worker {spec}")} | {worker_threads[f"worker {spec}"]} |'
      for spec in others
  ] + [
      '',
      'Thread settings of each side: '
      + (f'PyTorch: {torch_threads}, {torch_process_threads} OS threads in '
         'its process; it trains a round\'s clients one after the other. '
         if has_torch else '')
      + 'Ours: this process (the trainer, which only orchestrates) '
      f'`tf.config.threading` intra-op '
      f'{tf.config.threading.get_intra_op_parallelism_threads()}, inter-op '
      f'{tf.config.threading.get_inter_op_parallelism_threads()} (0: one per '
      f'core), {trainer_threads} OS threads; the TFF worker, where the '
      f'clients train: {_describe_settings(_worker_settings())}, which may '
      'train a round\'s clients concurrently.',
  ]
  return lines, {'ours / PyTorch': ours_torch,
                 'TFF / plain': ratios('ours', 'plain')}


def _against_pytorch_resnet8(warmup, timed, repeats, torch_path):
  """Section 2's interleaved rounds: (the report's lines, ratio list).

  The ratio list: ours / PyTorch per round, one per repeat (None without
  torch). Raises RuntimeError if the two sides' models differ in their
  parameter counts.
  """
  workload = _ResNet8Workload(warmup + timed, RESNET8_EXAMPLES.value)
  timed_steps = workload.steps[warmup:]
  ours_params = trainable_parameters(workload.keras_model)
  torch_params = None
  steps = {}
  with contextlib.ExitStack() as stack:
    torch, torch_threads, skip = _start_torch(
        stack, torch_path, torch_unavailable(torch_path),
        clients=workload.clients(), num_classes=workload.num_classes,
        epochs=_RESNET8_EPOCHS, batch_size=_RESNET8_BATCH, learning_rate=_LR,
        seed=0, num_threads=RESNET8_TORCH_THREADS.value, model='resnet8')
    if torch is not None:
      torch_params = sum(w.size for w in torch.weights())
      if torch_params != ours_params:
        raise RuntimeError(
            f'ResNet-8: {ours_params:,} trainable parameters here, '
            f'{torch_params:,} in PyTorch\'s: not the same model.')
      steps['torch'] = _torch_step_fn(torch, workload.rounds())
    local = stack.enter_context(runtime.LocalRuntime(**_worker_settings()))
    process = workload.build_fedavg()
    with tff.framework.get_context_stack().install(local.context):
      state = [process.initialize()]
    rounds = workload.rounds()

    def ours():
      state[0] = process.next(state[0], rounds()).state

    steps['ours'] = _on(local.context, ours)
    runs = _repeated_times(steps, warmup, timed, repeats)

  per_repeat = _repeat_medians(runs)
  ms_per_step = _ms_per_step(runs, timed_steps)
  ours_torch = ([a / b for a, b in zip(per_repeat['ours'],
                                       per_repeat['torch'])]
                if torch is not None else None)
  sizes = workload.sizes
  lines = [
      '',
      '### ResNet-8',
      '',
      'Workload: FedDF\'s ResNet-8 (Lin et al. 2020: a 3x3 convolution of 16 '
      'channels, then 3 stages of one basic block each, 16, 32 and 64 '
      'channels, BatchNorm, global average pooling, a dense head; '
      '`resnet8_keras_model` here, `build_resnet8` in '
      '`benchmarks/torch_reference.py`) on synthetic 32x32x3 images (seeded '
      'uniform random pixels and labels of 10 classes, the same arrays on '
      f'both sides): {_RESNET8_CLIENTS} clients of {min(sizes)}-{max(sizes)} '
      f'examples ({sum(sizes)} in all), {_RESNET8_CLIENTS_PER_ROUND} a round '
      '(the same seeded schedule on every side), '
      f'{_RESNET8_EPOCHS} epoch of full batches of {_RESNET8_BATCH}, client '
      f'SGD at {_LR}; weighted averaging (of the trainable weights: '
      'BatchNorm\'s running statistics are not averaged on either side). '
      'SGD steps per timed round: median '
      f'{statistics.median(timed_steps):.0f}. '
      f'{_describe_repeats(warmup, timed, repeats)}',
      '',
      f'Trainable parameters: ours {ours_params:,}; PyTorch\'s '
      + (f'{torch_params:,} (checked equal).' if torch is not None else
         'not counted (no PyTorch process).'),
      '',
  ]
  if torch is None:
    lines += [skip, '']
  lines += [
      '| FedAvg round, ResNet-8 | seconds per round | ms per SGD step | '
      '/ PyTorch |',
      '|---|---|---|---|',
  ]
  if torch is not None:
    lines.append(
        '| plain PyTorch, in its own process (`benchmarks/torch_reference.py`)'
        f' | {_spread(per_repeat["torch"], 4)} | {ms_per_step["torch"]:.2f} '
        '| 1.00 |')
  lines += [
      '| `tff_kd` `build_fedavg`, TFF C++ worker | '
      f'{_spread(per_repeat["ours"], 4)} | {ms_per_step["ours"]:.2f} | '
      + (_spread(ours_torch, 2) if torch is not None else 'n/a') + ' |',
      '',
      'Thread settings: '
      + (f'PyTorch: {torch_threads}; ' if torch is not None else '')
      + f'our TFF worker: {_describe_settings(_worker_settings())}.',
  ]
  return lines, ours_torch


def _ours_whole_process(rounds: int) -> dict:
  """The whole-process child (ours): what `binaries.train` would do.

  Imports, worker, data, `build_fedavg`, `rounds` rounds of the peers'
  workload, no evaluation and no checkpoints; returns its phases.
  """
  marks = [('interpreter start', _START - (LAUNCHED_AT.value or _START)),
           ('import tensorflow', _TF_IMPORTED - _START),
           ('import tensorflow_federated', _TFF_IMPORTED - _TF_IMPORTED),
           ('import the rest (absl, tff_kd, binaries)',
            _IMPORTED - _TFF_IMPORTED)]
  clock = [_IMPORTED]

  def mark(phase):
    now = time.time()
    marks.append((phase, now - clock[0]))
    clock[0] = now

  mark('absl start-up, flags')
  with runtime.LocalRuntime(**_worker_settings()):
    mark('start the TFF worker')
    workload = _PeerWorkload(rounds)
    mark('data: load digits, split, datasets')
    process = workload.build_fedavg()
    mark('build the process (build_fedavg)')
    state = process.initialize()
    mark('initialize')
    rounds_iter = workload.rounds()
    state = process.next(state, rounds_iter()).state
    mark('round 1')
    for _ in range(rounds - 1):
      state = process.next(state, rounds_iter()).state
    mark(f'rounds 2-{rounds}')
  mark('stop the TFF worker')
  return {'phases': marks, 'steps': sum(workload.steps)}


def _run_child(command, env=None):
  """Runs `command`; (wall seconds, its last stdout line as JSON or None)."""
  launched = time.time()
  start = time.perf_counter()
  result = subprocess.run(
      command + [f'--launched_at={launched!r}'], cwd=_REPO_ROOT, env=env,
      capture_output=True, text=True, check=False)
  wall = time.perf_counter() - start
  if result.returncode:
    raise RuntimeError(
        f'{" ".join(command[:4])} ... failed (status {result.returncode}): '
        + '\n'.join(result.stderr.strip().splitlines()[-10:]))
  last = result.stdout.strip().splitlines()[-1:] or ['null']
  try:
    return wall, json.loads(last[0])
  except json.JSONDecodeError:
    return wall, None


def _whole_processes(rounds, repeats, torch_path, skip_torch):
  """Section 3's whole-process runs, ours and PyTorch's; report lines."""
  workload = _PeerWorkload(rounds)
  ours, torch, train = [], [], []
  with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, 'clients.npz')
    arrays = {'schedule': np.stack(workload.schedule),
              'num_classes': workload.task.num_classes}
    for k, (x, y) in enumerate(workload.clients()):
      arrays[f'x{k}'], arrays[f'y{k}'] = x, y
    np.savez(data, **arrays)
    ours_command = [sys.executable, '-m', 'benchmarks.benchmark',
                    '--process_child=ours', f'--process_rounds={rounds}'
                   ] + _worker_flags()
    torch_command = [
        sys.executable, '-m', 'benchmarks.torch_reference', 'run',
        f'--data={data}', f'--epochs={_PEER_EPOCHS}',
        f'--batch_size={_PEER_BATCH}', f'--learning_rate={_LR}', '--seed=0',
        f'--threads={TORCH_THREADS.value}']
    for _ in range(repeats):
      ours.append(_run_child(ours_command))
      if skip_torch is None:
        try:
          torch.append(_run_child(torch_command, env=_torch_environment(
              torch_path)))
        except RuntimeError as e:
          skip_torch = ('Skipped: the PyTorch process failed: '
                        + str(e).strip().splitlines()[-1])
          torch = []
    if TIME_TRAIN_BINARY.value:
      train_command = [
          sys.executable, '-m', 'binaries.train', '--task=digits',
          '--model=cnn', '--algorithm=fedavg', '--partition=dirichlet',
          f'--alpha={_PEER_ALPHA}', f'--num_clients={_PEER_CLIENTS}',
          f'--clients_per_round={_PEER_CLIENTS_PER_ROUND}',
          f'--local_epochs={_PEER_EPOCHS}', f'--batch_size={_PEER_BATCH}',
          f'--client_learning_rate={_LR}', f'--rounds={rounds}',
          f'--rounds_per_eval={rounds}', f'--rounds_per_checkpoint={rounds}',
          '--seed=0', f'--root_output_dir={os.path.join(tmp, "train")}']
      start = time.perf_counter()
      subprocess.run(train_command, cwd=_REPO_ROOT, check=True,
                     capture_output=True)
      train.append(time.perf_counter() - start)

  def phases(runs):
    """Median seconds of each phase over the runs, and of the exit."""
    names = [name for name, _ in runs[0][1]['phases']]
    table = {name: statistics.median(dict(r[1]['phases'])[name]
                                     for r in runs) for name in names}
    table['exit (wall time - the phases)'] = statistics.median(
        wall - sum(s for _, s in r['phases']) for wall, r in runs)
    return table

  ours_wall = statistics.median(wall for wall, _ in ours)
  lines = [
      '',
      f'## Whole process: {rounds} rounds',
      '',
      f'Each side a fresh Python process, run {repeats} times, alternated '
      '(medians): ours (`python -m benchmarks.benchmark --process_child=ours`:'
      ' what `binaries.train` does for this workload, without evaluation '
      'and checkpoints: imports, worker, data split, `build_fedavg`, the '
      f'rounds) and PyTorch\'s (`python -m benchmarks.torch_reference run`: '
      'imports, the clients\' data from an .npz written from the same split, '
      'as PFLlib\'s generators write them before training, the rounds). '
      'Wall time measured by this process, phases by the child.',
      '',
  ]
  ours_phases = phases(ours)
  lines += ['| ours: phase | seconds |', '|---|---|'] + [
      f'| {name} | {seconds:.2f} |' for name, seconds in ours_phases.items()
  ] + [f'| **total (wall)** | **{ours_wall:.2f}** |', '']
  if skip_torch is None:
    torch_wall = statistics.median(wall for wall, _ in torch)
    lines += ['| PyTorch: phase | seconds |', '|---|---|'] + [
        f'| {name} | {seconds:.2f} |'
        for name, seconds in phases(torch).items()
    ] + [f'| **total (wall)** | **{torch_wall:.2f}** |', '']
    ratio = ours_wall / torch_wall
    after_start = sum(s for name, s in ours_phases.items() if name.startswith(
        ('round', 'rounds')))
    lines.append(
        f'Ours / PyTorch, whole process: {ratio:.2f} (target <= 1.5: '
        f'{"met" if ratio <= 1.5 else "not met"}). Of ours, '
        f'{ours_wall - after_start:.1f} s come before and after the rounds '
        '(imports, the worker, building the process, stopping), '
        f'{after_start:.1f} s are the rounds (round 1 includes the worker\'s '
        'first execution of the computations).')
    if ratio > 1.5:
      imports = sum(s for name, s in ours_phases.items()
                    if name.startswith('import'))
      lines += [
          '',
          'Why <= 1.5 is out of reach here: importing TensorFlow and TFF '
          f'alone takes {imports:.1f} s, building the process (tracing and '
          'serializing its TFF computations: `build_fedavg`) '
          f'{ours_phases["build the process (build_fedavg)"]:.1f} s and the '
          f'worker\'s start {ours_phases["start the TFF worker"]:.1f} s, '
          f'against {torch_wall:.1f} s for PyTorch\'s whole process; these '
          'are fixed costs of TF 2.14 and TFF 0.87, paid once per process '
          'whatever the rounds.',
      ]
  else:
    lines.append(f'PyTorch: {skip_torch}')
  if train:
    lines += [
        '',
        f'`python -m binaries.train` (FedAvg with the task\'s `cnn`, see '
        'the next section, instead of the peers\' CNN; same split, E, B and '
        f'lr; test evaluation at rounds 0 and {rounds}, one checkpoint, '
        'metrics CSV and TensorBoard), for comparison: '
        f'{statistics.median(train):.2f} s wall.',
    ]
  return lines


def _distillation_rates(task, steps):
  """Examples per second of the distillation loop: tf.function, eager."""
  model = task.model_fn()
  batch_size = 32
  distill = server_distillation.build_server_distillation(
      model, server_distillation.DistillationConfig(
          steps=steps, batch_size=batch_size))
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


def _targets(cnn_ratios, resnet8_ratios) -> str:
  """The page's paragraph on the targets, from this run's ratios."""

  def verdict(name, ratios, target):
    if ratios is None:
      return f'{name}: not measured (no PyTorch)'
    met = 'met' if statistics.median(ratios) <= target else 'not met'
    return f'{name} {_spread(ratios, 2)} (target <= {target}): {met}'

  tff_plain = cnn_ratios['TFF / plain']
  return (
      '**Targets** (this run\'s interleaved rounds; median over the repeats'
      + (', [min, max]' if len(tff_plain) > 1 else '') + '): ours / PyTorch '
      'per round, '
      + verdict('tiny CNN', cnn_ratios['ours / PyTorch'], _CNN_TARGET) + '; '
      + verdict('ResNet-8', resnet8_ratios, _RESNET8_TARGET) + '. '
      + verdict('TFF round / plain loop (tiny CNN)', tff_plain,
                _TFF_PLAIN_TARGET)
      + '. The whole-process target is in "Whole process" below.')


def _process_step_fn(process, datasets):
  state = [process.initialize()]

  def step():
    state[0] = process.next(state[0], datasets).state

  return step


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  common.quiet_logging()
  if PROCESS_CHILD.value == 'ours':
    print(json.dumps(_ours_whole_process(PROCESS_ROUNDS.value)))
    return
  load_at_start = _load()
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
  # (module docs of tff_kd.evaluation): the plain loops and the eager
  # distillation run first. The TFF processes' rounds are interleaved.
  plain = _median_round_seconds(
      _plain_step_fn(task.model_fn, lambda: datasets, datasets[0]), warmup,
      timed)
  distill_rates = _distillation_rates(task, DISTILL_STEPS.value)
  repeats = REPEATS.value
  against_pytorch, cnn_ratios = _against_pytorch(
      warmup, timed, repeats, TORCH_PATH.value)
  against_resnet8, resnet8_ratios = _against_pytorch_resnet8(
      warmup, timed, repeats, TORCH_PATH.value)
  whole_process = []
  if PROCESS_REPEATS.value:
    whole_process = _whole_processes(
        PROCESS_ROUNDS.value, PROCESS_REPEATS.value, TORCH_PATH.value,
        torch_unavailable(TORCH_PATH.value))
  steps = {}
  with runtime.LocalRuntime(**_worker_settings()):
    steps['ours'] = _process_step_fn(registry.get('fedavg').build(
        task,
        client_optimizer=optimizers.OptimizerConfig(learning_rate=_LR),
        server_optimizer=optimizers.OptimizerConfig(learning_rate=1.0),
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
          task,
          client_optimizer=optimizers.OptimizerConfig(learning_rate=_LR),
          server_optimizer=optimizers.OptimizerConfig(learning_rate=1.0),
          clients_per_round=10,
          **{k: h.default for k, h in algorithm.hparams.items()})
      # The protocol of tff_kd.process; TFF's processes take the dataset.
      client_input = getattr(process, 'client_input',
                             lambda unused_id, dataset: dataset)
      steps[f'algorithm {name}'] = _process_step_fn(process, [
          client_input(k, d) for k, d in zip(ids, datasets)])
    medians = _interleaved_medians(steps, warmup, timed)
  results = dict(plain=plain, **{k: medians[k]
                                 for k in ('ours', 'tff', 'tff_iterator')})
  per_algorithm = {name: medians[f'algorithm {name}']
                   for name in BENCH_ALGORITHMS.value}

  command = ' '.join(['python -m benchmarks.benchmark'] + sys.argv[1:])
  load_at_end = _load()
  loads = [float(x) for x in (load_at_start + ' ' + load_at_end).split()]
  cores = os.cpu_count()
  machine = []
  if loads[0] > 0.5:
    machine.append(
        f'The machine was not idle at the start: its 1-minute load average '
        f'was {loads[0]:.2f}, above 0.5.')
  if max(loads) > 0.5 * cores:
    machine.append(
        f'The machine is shared and was loaded during the run (load average '
        f'up to {max(loads):.1f} on {cores} cores): absolute times are '
        'inflated and vary from run to run; the ratios, from rounds '
        'interleaved in this one run, are what to compare.')
  elif not machine:
    machine.append('The machine was close to idle during the run.')
  lines = [
      '# Performance',
      '',
      f'Measured by `{command}` at commit {binaries.git_commit()} '
      '(all figures from one '
      f'run; medians over {timed} rounds after {warmup} warm-up rounds, the '
      'rounds compared in a table interleaved; repeats of the '
      f'against-PyTorch rounds: {repeats}), on a machine with '
      f'{cores} cores and no GPU. Load average (1, 5, 15 min) at the start: '
      f'{load_at_start}; at the end: {load_at_end}. ' + ' '.join(machine),
      '',
      '## Against PyTorch',
      '',
      _targets(cnn_ratios, resnet8_ratios),
      '',
  ] + against_pytorch + against_resnet8 + whole_process + [
      '',
      '## Plain loop, ours and TFF\'s FedAvg',
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
      'The plain loop runs before the TFF rounds (not interleaved with '
      'them: its Keras model must be built before TFF traces one).',
  ] + [
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
      '## Population scale',
      '',
      'Memory (trainer, worker, client store on disk) against the total '
      'number of clients and the clients per round, checkpoints, round time '
      'on 1 and 2 workers: [POPULATION.md](POPULATION.md), written by '
      '`python -m benchmarks.population`.',
  ]
  report = '\n'.join(lines) + '\n'
  os.makedirs(os.path.dirname(OUTPUT.value) or '.', exist_ok=True)
  with open(OUTPUT.value, 'w') as f:
    f.write(report)
  print(report)


if __name__ == '__main__':
  app.run(main)
