"""Flags shared by the binaries, and the objects built from them.

Every flag is validated when it is parsed (absl validators; every float must
be finite and in its range), so a bad value stops the program before any
data is loaded or any model is built, with a message that names the flag and
the value. `run(main)` runs a binary: an error prints one line (`--debug`
shows the traceback), and Ctrl-C stops cleanly (exit 130), keeping the last
checkpoint.

Only the binaries' `main` functions read the flags: they gather them once in a
`Settings` (`Settings.from_flags()`), and everything below `main` (the task,
the process, the TFF runtime, hparams.json) is built from a `Settings`, so one
program can run several settings (compare's seeds, results' tasks and label
skews) without rewriting global flags.
"""

from collections.abc import Mapping
import dataclasses
import json
import math
import os
import re
import sys
import tempfile
from typing import Any, Optional

from absl import app
from absl import flags
from absl import logging
import tensorflow_federated as tff

from binaries import registry
import tasks
from tff_kd import experiment
from tff_kd import optimizers
from tff_kd import privacy
from tff_kd import run_directory
from tff_kd import runtime
from tff_kd import server_step

# Task and data.
TASK = flags.DEFINE_string(
    'task', 'digits', 'Task (dataset): one of '
    + ', '.join(tasks.TASK_NAMES) + ' (federated_*: TFF\'s datasets, clients '
    'kept as they are), or npz:PATH, a file of your own with x_train, '
    'y_train, x_test, y_test and optionally client_ids (one per training '
    'example). See README.md, "Your data".'
)
MODEL = flags.DEFINE_enum(
    'model', 'cnn', tasks.MODEL_NAMES, 'Model architecture.'
)
DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'tensorflow_datasets directory holding prepared data '
    '(tasks mnist, emnist_digits, cifar10, cifar100); TFF\'s cache directory'
    ' for its federated datasets (default ~/.tff).'
)
USE_SYNTHETIC_DATA = flags.DEFINE_bool(
    'use_synthetic_data', False,
    'TFF\'s federated datasets (federated_*): TFF\'s synthetic stand-in, 2 '
    'clients, instead of the real data (read from TFF\'s cache; never '
    'downloaded here).'
)
PROTOTYPES = flags.DEFINE_list(
    'prototypes', [], 'Model prototypes (architectures) of the clients, for '
    'algorithms that fuse heterogeneous models (feddf, fedaux); the first '
    'replaces --model; clients are assigned in turn in a seeded order.'
)
PARTITION = flags.DEFINE_enum(
    'partition', 'dirichlet', ['iid', 'dirichlet', 'shards', 'quantity'],
    'How training data is split over clients.'
)
ALPHA = flags.DEFINE_float(
    'alpha', 0.5, 'Dirichlet concentration (partition=dirichlet: label skew; '
    'partition=quantity: size skew). Smaller is more skewed.'
)
CLASSES_PER_CLIENT = flags.DEFINE_integer(
    'classes_per_client', 2, 'partition=shards: classes per client.'
)
NUM_CLIENTS = flags.DEFINE_integer(
    'num_clients', 20, 'Number of clients K (tasks we split over clients).')
# The flags of tasks we split over clients: given for a task with natural
# clients, they are an error.
SPLIT_FLAGS = ('num_clients', 'partition', 'alpha', 'classes_per_client',
               'split_file')
SPLIT_FILE = flags.DEFINE_string(
    'split_file', None, 'An .npz client split from another library (replaces '
    '--partition): num_clients, train_{c} index arrays into the task\'s '
    'canonical example order, optional test_{c} (their union is the test '
    'set). See tasks/data.py for each task\'s canonical order.'
)

# Training.
CLIENTS_PER_ROUND = flags.DEFINE_integer(
    'clients_per_round', 10, 'Clients sampled per round (C * K).'
)
CLIENT_DROPOUT = flags.DEFINE_float(
    'client_dropout', 0.0, 'Probability that a sampled client drops out of a '
    'round (sends nothing); seeded by (seed, round).'
)
LOCAL_EPOCHS = flags.DEFINE_integer('local_epochs', 5, 'Local epochs E.')
BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Client batch size B.')
# Optimizers (tff_kd.optimizers), named as google-research/federated's
# trainers name them: --{client,server}_optimizer, --*_learning_rate and each
# optimizer's own --{client,server}_{optimizer}_{hparam}.
CLIENT_OPTIMIZER = flags.DEFINE_enum(
    'client_optimizer', 'sgd', list(optimizers.NAMES),
    'Client optimizer (its state restarts every round).')
CLIENT_LEARNING_RATE = flags.DEFINE_float(
    'client_learning_rate', 0.1, 'Client learning rate.'
)
CLIENT_WEIGHT_DECAY = flags.DEFINE_float(
    'client_weight_decay', 0.0, 'Client L2 weight decay added to the '
    'gradients (PyTorch\'s weight_decay).')
CLIENT_LEARNING_RATE_DECAY = flags.DEFINE_float(
    'client_learning_rate_decay', 1.0, 'Factor of the client learning rate '
    'per round (PyTorch\'s ExponentialLR stepped once a round).')
SERVER_OPTIMIZER = flags.DEFINE_enum(
    'server_optimizer', 'sgd', list(optimizers.NAMES),
    'Server optimizer on the averaged update (adam: FedAdam, yogi: FedYogi).')
SERVER_LEARNING_RATE = flags.DEFINE_float(
    'server_learning_rate', 1.0, 'Server learning rate (sgd at 1 = FedAvg).'
)
# --{prefix}_{optimizer}_{hparam} -> (prefix, optimizer, hparam).
OPTIMIZER_HPARAM_FLAGS = {}
for _prefix in ('client', 'server'):
  for _optimizer, _defaults in optimizers.HPARAMS.items():
    for _key, _default in _defaults.items():
      _flag = f'{_prefix}_{_optimizer}_{_key}'
      OPTIMIZER_HPARAM_FLAGS[_flag] = (_prefix, _optimizer, _key)
      flags.DEFINE_float(_flag, _default,
                         f'{_prefix.capitalize()} {_optimizer}: {_key}.')
      _ok, _requirement = optimizers.hparam_range(_key)
      flags.register_validator(_flag, _ok,
                               f'--{_flag} must be {_requirement}.')
flags.register_validator(
    'client_weight_decay', lambda v: v is not None and 0 <= v < 1,
    '--client_weight_decay must be in [0, 1).')
flags.register_validator(
    'client_learning_rate_decay', lambda v: v is not None and 0 < v <= 1,
    '--client_learning_rate_decay must be in (0, 1].')
ROUNDS = flags.DEFINE_integer('rounds', 30, 'Training rounds.')
ROUNDS_PER_EVAL = flags.DEFINE_integer(
    'rounds_per_eval', 1, 'Evaluate on the test set every this many rounds.'
)
ROUNDS_PER_CHECKPOINT = flags.DEFINE_integer(
    'rounds_per_checkpoint', 1, 'Checkpoint every this many rounds.'
)
SEED = flags.DEFINE_integer('seed', 0, 'Seed of data split, init, sampling.')

# Aggregation: privacy and compression of what clients send (tff_kd.privacy).
AGGREGATOR = flags.DEFINE_enum(
    'aggregator', 'mean', list(privacy.AGGREGATORS),
    'How model updates and knowledge are aggregated, both with TFF\'s '
    'factories: mean (each algorithm\'s own), dp (client-level differential '
    'privacy: clipping and Gaussian noise, uniform weights; epsilon reported '
    'as privacy/epsilon), secure (secure aggregation, simulated), compression '
    '(uniform quantization; encoded bytes counted). See docs/PRIVACY.md.'
)
DP_NOISE_MULTIPLIER = flags.DEFINE_float(
    'dp_noise_multiplier', 1.0, '--aggregator=dp: z > 0, the Gaussian noise\'s'
    ' standard deviation over the clip, on every sum (model and knowledge).'
)
DP_CLIP = flags.DEFINE_string(
    'dp_clip', '1.0', '--aggregator=dp: the L2 clip of a client\'s model '
    'update (fixed), or `adaptive` (TFF\'s adaptive clipping, from 0.1 toward'
    ' the median norm; needs --dp_noise_multiplier < 0.1 * '
    '--clients_per_round).'
)
DP_LOGIT_CLIP = flags.DEFINE_float(
    'dp_logit_clip', 10.0, '--aggregator=dp: a client\'s logits on R inputs '
    '(FedDF, FedAD) are clipped to L2 norm dp_logit_clip * sqrt(R), an RMS '
    'norm per input of dp_logit_clip. Soft labels and attention maps are '
    'bounded (rows of norm <= 1) and need no flag.'
)
DP_DELTA = flags.DEFINE_float(
    'dp_delta', None, '--aggregator=dp: the delta of the reported epsilon; '
    'default 1 / --num_clients.'
)
COMPRESSION_BITS = flags.DEFINE_integer(
    'compression_bits', 8, '--aggregator=compression: bits per quantized '
    'entry (TFF\'s default 8).'
)
COMPRESSION_THRESHOLD = flags.DEFINE_integer(
    'compression_threshold', 20000, '--aggregator=compression: tensors of at '
    'most this many elements are sent unquantized (TFF\'s default 20000; 0 '
    'quantizes every tensor).'
)
# The flags of each aggregator: given with another one, they are an error.
AGGREGATOR_FLAGS = {
    'dp': ('dp_noise_multiplier', 'dp_clip', 'dp_logit_clip', 'dp_delta'),
    'compression': ('compression_bits', 'compression_threshold'),
}

# Runtime.
WORKERS = flags.DEFINE_list(
    'workers', [], 'Run on TFF worker binaries already serving at these '
    'host:port addresses (started with `worker_binary --port=PORT`, shipped '
    'in the tensorflow-federated wheel); clients are spread over them. '
    'Default: start --local_workers workers on this machine.'
)
LOCAL_WORKERS = flags.DEFINE_integer(
    'local_workers', 1, 'Without --workers: TFF workers to start locally.'
)
CLIENTS_PER_GROUP = flags.DEFINE_integer(
    'clients_per_group', None, 'At most this many of a round\'s clients at '
    'once on a worker, the groups run one after the other and their '
    'aggregates merged (tff_kd.runtime.GroupingContext): a worker\'s memory '
    'grows with the group, not the round. Default: all of them at once.'
)

# Output.
ROOT_OUTPUT_DIR = flags.DEFINE_string(
    'root_output_dir', '/tmp/tff_kd', 'Root of checkpoints/, results/, logdir/.'
)
RESUME = flags.DEFINE_bool(
    'resume', False, 'Continue from the last checkpoint of the experiment '
    '(with the flags it was started with; only --rounds may grow, and '
    '--rounds_per_eval, --rounds_per_checkpoint and the runtime may change).'
)
DEBUG = flags.DEFINE_bool(
    'debug', False, 'On an error, show the traceback instead of one line.'
)

# Each registered algorithm's own hyperparameters, one flag each.
ALGORITHM_HPARAM_FLAGS = {}
for _algorithm in registry.ALGORITHMS.values():
  for _name, _hparam in _algorithm.hparams.items():
    if _name in ALGORITHM_HPARAM_FLAGS:  # Shared by several algorithms.
      continue
    _define = {
        bool: flags.DEFINE_bool,
        int: flags.DEFINE_integer,
        float: flags.DEFINE_float,
        str: flags.DEFINE_string,
    }[type(_hparam.default)]
    ALGORITHM_HPARAM_FLAGS[_name] = _define(_name, _hparam.default, _hparam.help)
    if isinstance(_hparam.default, float):
      flags.register_validator(
          _name,
          lambda v, check=_hparam.check: v is not None and math.isfinite(v)
          and (check is None or check(v)),
          f'--{_name} must be finite'
          + (f' and {_hparam.requirement}' if _hparam.check else '') + '.',
      )
    elif _hparam.check is not None:
      flags.register_validator(
          _name, _hparam.check, f'--{_name} must be {_hparam.requirement}.'
      )

_POSITIVE = [
    'local_workers', 'num_clients', 'clients_per_round', 'local_epochs', 'batch_size', 'rounds',
    'rounds_per_eval', 'rounds_per_checkpoint', 'classes_per_client',
]
for _name in _POSITIVE:
  flags.register_validator(
      _name, lambda v: v is not None and v >= 1, f'--{_name} must be >= 1.'
  )
for _name in ['client_learning_rate', 'server_learning_rate']:
  flags.register_validator(
      _name, lambda v: v is not None and math.isfinite(v) and v > 0,
      f'--{_name} must be finite and > 0.'
  )
# Below 1e-3 numpy's Dirichlet sampler crawls; above 1e3 it is IID anyway.
flags.register_validator(
    'alpha', lambda v: v is not None and 1e-3 <= v <= 1e3,
    '--alpha must be in [0.001, 1000].'
)
flags.register_validator(
    'seed', lambda v: v is not None and 0 <= v < 2**31,
    '--seed must be in [0, 2**31).'
)


def _check_workers(addresses):
  for address in addresses:
    try:
      runtime.check_worker_address(address)
    except ValueError as e:
      raise flags.ValidationError(f'--workers: {e}') from None
  return True


flags.register_validator('workers', _check_workers)
flags.register_validator(
    'clients_per_group', lambda v: v is None or v >= 1,
    '--clients_per_group must be >= 1.'
)
flags.register_validator(
    'prototypes',
    lambda v: set(v) <= set(tasks.MODEL_NAMES) and len(set(v)) == len(v),
    f'--prototypes must be distinct names from {tasks.MODEL_NAMES}.',
)


flags.register_validator(
    'client_dropout', lambda v: v is not None and 0 <= v < 1,
    '--client_dropout must be in [0, 1).',  # NaN fails both comparisons.
)


def _check_task(name):
  resolved = tasks.TASK_ALIASES.get(name, name)
  if resolved.startswith(tasks.NPZ_PREFIX):
    path = resolved[len(tasks.NPZ_PREFIX):]
    if not os.path.isfile(path):
      raise flags.ValidationError(f'--task={name}: no file at {path!r}.')
    return True
  if resolved not in tasks.TASK_NAMES:
    raise flags.ValidationError(
        f'--task={name!r} is not a task: choose one of '
        f'{", ".join(tasks.TASK_NAMES)}, or npz:PATH.')
  return True


flags.register_validator('task', _check_task)


@flags.multi_flags_validator(
    ['task', 'clients_per_round', 'num_clients'],
    message='--clients_per_round must be <= --num_clients.',
)
def _check_clients_per_round(values):
  # A task with natural clients: checked against its clients once loaded.
  return (tasks.has_natural_clients(values['task'])
          or values['clients_per_round'] <= values['num_clients'])


def parse_dp_clip(value: str) -> Optional[float]:
  """`--dp_clip`: a float, or None for `adaptive`; ValueError otherwise."""
  if value == 'adaptive':
    return None
  try:
    clip = float(value)
  except (TypeError, ValueError):
    clip = math.nan
  if not 0 < clip <= privacy.MAX_CLIP:  # NaN fails the comparison.
    raise ValueError(f'--dp_clip must be `adaptive` or a number in (0, '
                     f'{privacy.MAX_CLIP:g}]; got {value!r}.')
  return clip


def _valid_dp_clip(value):
  try:
    parse_dp_clip(value)
  except ValueError:
    return False
  return True


# The upper limits: beyond them float32 overflows or the accountant fails
# (`tff_kd.privacy.MAX_CLIP`, `MAX_NOISE_MULTIPLIER`).
flags.register_validator(
    'dp_noise_multiplier',
    lambda v: v is not None and 0 < v <= privacy.MAX_NOISE_MULTIPLIER,
    f'--dp_noise_multiplier must be in (0, {privacy.MAX_NOISE_MULTIPLIER:g}]'
    ' (0 gives no privacy: epsilon is infinite; use --aggregator=mean).')
flags.register_validator(
    'dp_clip', _valid_dp_clip,
    '--dp_clip must be `adaptive` or a number in (0, '
    f'{privacy.MAX_CLIP:g}].')
flags.register_validator(
    'dp_logit_clip', lambda v: v is not None and 0 < v <= privacy.MAX_CLIP,
    f'--dp_logit_clip must be in (0, {privacy.MAX_CLIP:g}].')
flags.register_validator(
    'dp_delta', lambda v: v is None or 0 < v < 1,
    '--dp_delta must be in (0, 1).')  # NaN fails the comparison.
flags.register_validator(
    'compression_bits', lambda v: v is not None and 1 <= v <= 16,
    '--compression_bits must be in [1, 16].')
flags.register_validator(
    'compression_threshold', lambda v: v is not None and v >= 0,
    '--compression_threshold must be >= 0.')


@flags.multi_flags_validator(
    ['aggregator', 'dp_clip', 'dp_noise_multiplier', 'clients_per_round'],
    message='--dp_clip=adaptive needs --dp_noise_multiplier < 0.1 * '
    '--clients_per_round (TFF\'s adaptive clipping spends 0.05 * '
    '--clients_per_round of noise on its clipped-count query); give a fixed '
    '--dp_clip or more clients per round.')
def _check_adaptive_clip(values):
  return not (values['aggregator'] == 'dp' and values['dp_clip'] == 'adaptive'
              and values['dp_noise_multiplier'] is not None
              and values['clients_per_round'] is not None
              and values['dp_noise_multiplier']
              >= 0.1 * values['clients_per_round'])


SERVER_STEP = flags.DEFINE_enum(
    'server_step', server_step.DEFAULT_PLACEMENT,
    list(server_step.PLACEMENTS),
    'Where the server\'s learning (FedDF\'s and FedAUX\'s distillation, '
    'FedGen\'s generator, DS-FL\'s and FedAD\'s server models) runs: worker '
    '(in the TFF round, on the TFF worker\'s CPU: TFF 0.87\'s worker has no '
    'CUDA) or program (a tf.function of this process, on its GPU when '
    'TensorFlow sees one). The same ops: numbers equal to float rounding.')


# The shared flags that say how a run is executed, not what it computes:
# hparams.json records them under `run_directory.RUNTIME_KEY`, which --resume
# never compares. Every other flag is run-defining (compared on --resume).
RUNTIME_FLAGS = ('workers', 'local_workers', 'clients_per_group',
                 'root_output_dir', 'resume', 'debug')


def _optimizer_hparam_defaults() -> dict[str, float]:
  return {name: flags.FLAGS[name].default for name in OPTIMIZER_HPARAM_FLAGS}


def _algorithm_hparam_defaults() -> dict[str, Any]:
  return {name: flag.default for name, flag in ALGORITHM_HPARAM_FLAGS.items()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
  """The values of the shared flags: what a run is, and how it is executed.

  One field per flag of this module (list flags as tuples), defaulting to the
  flag's default, and `algorithm_hparams`, every algorithm flag's value by
  name (each algorithm reads its own). Built from the parsed flags by
  `from_flags()`; the flags' validators have checked the values, and
  `tasks.create_task` and `tff_kd.experiment.run_experiment` check theirs
  again. `dataclasses.replace(settings, seed=1)` is another run's settings.
  """

  # Task and data.
  task: str = TASK.default
  model: str = MODEL.default
  data_dir: Optional[str] = DATA_DIR.default
  use_synthetic_data: bool = USE_SYNTHETIC_DATA.default
  prototypes: tuple[str, ...] = tuple(PROTOTYPES.default)
  partition: str = PARTITION.default
  alpha: float = ALPHA.default
  classes_per_client: int = CLASSES_PER_CLIENT.default
  num_clients: int = NUM_CLIENTS.default
  split_file: Optional[str] = SPLIT_FILE.default
  # Training.
  clients_per_round: int = CLIENTS_PER_ROUND.default
  client_dropout: float = CLIENT_DROPOUT.default
  local_epochs: int = LOCAL_EPOCHS.default
  batch_size: int = BATCH_SIZE.default
  client_optimizer: str = CLIENT_OPTIMIZER.default
  client_learning_rate: float = CLIENT_LEARNING_RATE.default
  client_weight_decay: float = CLIENT_WEIGHT_DECAY.default
  client_learning_rate_decay: float = CLIENT_LEARNING_RATE_DECAY.default
  server_optimizer: str = SERVER_OPTIMIZER.default
  server_learning_rate: float = SERVER_LEARNING_RATE.default
  rounds: int = ROUNDS.default
  rounds_per_eval: int = ROUNDS_PER_EVAL.default
  rounds_per_checkpoint: int = ROUNDS_PER_CHECKPOINT.default
  seed: int = SEED.default
  # Aggregation (tff_kd.privacy; `aggregator_config`).
  aggregator: str = AGGREGATOR.default
  dp_noise_multiplier: float = DP_NOISE_MULTIPLIER.default
  dp_clip: str = DP_CLIP.default
  dp_logit_clip: float = DP_LOGIT_CLIP.default
  dp_delta: Optional[float] = DP_DELTA.default
  compression_bits: int = COMPRESSION_BITS.default
  compression_threshold: int = COMPRESSION_THRESHOLD.default
  # Where the server learns (tff_kd.server_step).
  server_step: str = SERVER_STEP.default
  # Runtime and output (RUNTIME_FLAGS).
  workers: tuple[str, ...] = tuple(WORKERS.default)
  local_workers: int = LOCAL_WORKERS.default
  clients_per_group: Optional[int] = CLIENTS_PER_GROUP.default
  root_output_dir: str = ROOT_OUTPUT_DIR.default
  resume: bool = RESUME.default
  debug: bool = DEBUG.default
  # Each algorithm's own hyperparameters, by flag name.
  algorithm_hparams: Mapping[str, Any] = dataclasses.field(
      default_factory=_algorithm_hparam_defaults)
  # Each optimizer's own hyperparameters, by flag name
  # (OPTIMIZER_HPARAM_FLAGS).
  optimizer_hparams: Mapping[str, float] = dataclasses.field(
      default_factory=_optimizer_hparam_defaults)

  @classmethod
  def from_flags(cls) -> 'Settings':
    """The settings of the parsed flags."""
    values = {
        field.name: flags.FLAGS[field.name].value
        for field in dataclasses.fields(cls)
        if field.name not in _MAPPINGS
    }
    values['dp_clip'] = canonical_dp_clip(values['dp_clip'])
    values['task'] = tasks.canonical_task_name(values['task'])
    return cls(
        **{name: tuple(value) if isinstance(value, list) else value
           for name, value in values.items()},
        algorithm_hparams={name: flag.value
                           for name, flag in ALGORITHM_HPARAM_FLAGS.items()},
        optimizer_hparams={name: flags.FLAGS[name].value
                           for name in OPTIMIZER_HPARAM_FLAGS},
    )


_MAPPINGS = ('algorithm_hparams', 'optimizer_hparams')


def optimizer_config(settings: Settings,
                     prefix: str) -> optimizers.OptimizerConfig:
  """The client's or server's `tff_kd.optimizers.OptimizerConfig`."""
  name = getattr(settings, f'{prefix}_optimizer')
  client = prefix == 'client'
  return optimizers.OptimizerConfig(
      name=name,
      learning_rate=getattr(settings, f'{prefix}_learning_rate'),
      hparams={key: settings.optimizer_hparams[flag]
               for flag, (p, o, key) in OPTIMIZER_HPARAM_FLAGS.items()
               if p == prefix and o == name},
      weight_decay=settings.client_weight_decay if client else 0.0,
      learning_rate_decay=(settings.client_learning_rate_decay if client
                           else 1.0))


def canonical_dp_clip(value: str) -> str:
  """`--dp_clip` as hparams.json records it: `adaptive` or the float's repr
  (`1` and `1.0` are one setting)."""
  clip = parse_dp_clip(value)
  return 'adaptive' if clip is None else repr(clip)


def aggregator_config(settings: Settings) -> privacy.AggregatorConfig:
  """The `tff_kd.privacy.AggregatorConfig` of the aggregation flags."""
  return privacy.AggregatorConfig(
      aggregator=settings.aggregator,
      noise_multiplier=settings.dp_noise_multiplier,
      clip=parse_dp_clip(settings.dp_clip),
      logit_clip=settings.dp_logit_clip,
      delta=settings.dp_delta,
      compression_bits=settings.compression_bits,
      compression_threshold=settings.compression_threshold,
  )


def tff_runtime(settings: Settings):
  """The TFF runtime of the settings, a context manager."""
  if settings.workers:
    return runtime.RemoteRuntime(list(settings.workers),
                                 settings.clients_per_group)
  return runtime.LocalRuntime(num_workers=settings.local_workers,
                              clients_per_group=settings.clients_per_group)


# The shared flags a user needs: what --helpshort of train and compare shows.
KEY_FLAGS = ('task', 'data_dir', 'model', 'partition', 'alpha', 'num_clients',
             'clients_per_round', 'local_epochs', 'batch_size',
             'client_optimizer', 'client_learning_rate', 'server_optimizer',
             'server_learning_rate', 'rounds', 'seed', 'aggregator',
             'server_step', 'root_output_dir', 'resume')


def flagfile() -> str:
  """The flags given on the command line, one per line, for --flagfile.

  Every flag that was given (a flag file's included), except --resume:
  replaying the file starts the same run (add --resume to continue it, or a
  later --root_output_dir to run it elsewhere).
  """
  return ''.join(f'{flags.FLAGS[name].serialize()}\n'
                 for name in sorted(flags.FLAGS)
                 if flags.FLAGS[name].present
                 and name not in ('resume', 'flagfile'))


def run(main) -> None:
  """`app.run(main)`: errors as one line (exit 1), Ctrl-C as a clean stop."""

  def guarded(argv):
    try:
      return main(argv)
    except KeyboardInterrupt:
      # The runtime's `with` block has stopped the workers on the way here.
      print('\nInterrupted. The last checkpoint of the run is kept: continue '
            'it with the same flags and --resume.', file=sys.stderr)
      sys.stdout.flush()
      sys.stderr.flush()
      # Not sys.exit: a TFF call cut short leaves gRPC threads whose C++
      # teardown at interpreter exit aborts the process (SIGABRT).
      os._exit(130)  # pylint: disable=protected-access
    except Exception as e:  # pylint: disable=broad-except
      if DEBUG.value:
        raise
      print(f'Error: {e}  ({type(e).__name__}; --debug shows the traceback)',
            file=sys.stderr)
      sys.exit(1)

  app.run(guarded)


def check_output_dir(path: str) -> None:
  """`path` (--root_output_dir) is a writable directory (made if missing)."""
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    raise flags.ValidationError(
        f'--root_output_dir={path!r} is not a writable directory: '
        f'{e.strerror or e}.') from None


def check_algorithm_flags(algorithms) -> None:
  """Flags given on the command line belong to the run.

  Each algorithm flag belongs to one of `algorithms`; each aggregator flag
  (`AGGREGATOR_FLAGS`) to `--aggregator`, which applies to every algorithm
  (`registry.check_aggregator`), and to an algorithm that sends what it
  bounds (`--dp_clip`: model updates; `--dp_logit_clip`: logits). The
  flags of tasks we split over clients (`SPLIT_FLAGS`) belong to such a
  task, `--use_synthetic_data` to TFF's federated datasets and
  `--local_workers` to a run without `--workers`.
  """
  present = {name for name in flags.FLAGS if flags.FLAGS[name].present}
  task = tasks.TASK_ALIASES.get(flags.FLAGS['task'].value,
                                flags.FLAGS['task'].value)
  if tasks.has_natural_clients(task):
    given = [name for name in SPLIT_FLAGS if name in present]
    if given:
      raise flags.ValidationError(
          f'--{given[0]} does not apply to --task={task}: its clients are '
          'the dataset\'s own (none of '
          + ', '.join(f'--{n}' for n in SPLIT_FLAGS) + ' applies).')
  if 'use_synthetic_data' in present and task not in tasks.FEDERATED_TASKS:
    raise flags.ValidationError(
        f'--use_synthetic_data applies to TFF\'s federated datasets '
        f'({", ".join(tasks.FEDERATED_TASKS)}), not to --task={task}.')
  if 'local_workers' in present and flags.FLAGS['workers'].value:
    raise flags.ValidationError(
        '--local_workers starts workers on this machine; the run has '
        '--workers, which are already serving. Give one of them.')
  for name, (prefix, optimizer, _) in OPTIMIZER_HPARAM_FLAGS.items():
    chosen = flags.FLAGS[f'{prefix}_optimizer'].value
    if name in present and chosen != optimizer:
      raise flags.ValidationError(
          f'--{name} is a setting of --{prefix}_optimizer={optimizer}; the '
          f'run has --{prefix}_optimizer={chosen}.')
  aggregator = flags.FLAGS['aggregator'].value
  for owner, names in AGGREGATOR_FLAGS.items():
    for name in names:
      if name in present and aggregator != owner:
        raise flags.ValidationError(
            f'--{name} is a setting of --aggregator={owner}; the run has '
            f'--aggregator={aggregator}.')
  for name, applies, what in (
      ('dp_clip', lambda a: a.models, 'averages model updates'),
      ('dp_logit_clip', lambda a: privacy.LOGITS in a.knowledge.values(),
       'sends logits')):
    if name in present and not any(applies(a) for a in algorithms):
      raise flags.ValidationError(
          f'--{name} does not apply to '
          f'--algorithm={",".join(a.name for a in algorithms)}: none of them '
          f'{what}.')
  for algorithm in algorithms:
    try:
      registry.check_aggregator(algorithm, aggregator,
                                tuple(flags.FLAGS['prototypes'].value))
    except ValueError as e:
      raise flags.ValidationError(str(e)) from None
  own = {name for a in algorithms for name in a.hparams}
  foreign = sorted(name for name, flag in ALGORITHM_HPARAM_FLAGS.items()
                   if flag.present and name not in own)
  if foreign:
    raise flags.ValidationError(
        f'--{foreign[0]} is not a flag of '
        f'{", ".join(a.name for a in algorithms)}; the flags it takes: '
        + (', '.join(f'--{n}' for n in sorted(own)) or 'none') + '.')


def quiet_logging() -> None:
  """Logs warnings and errors only, unless --verbosity was given."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def create_task(settings: Settings) -> tasks.Task:
  """The task of the settings; data errors surface as `flags.ValidationError`.

  Also when `--clients_per_round` exceeds its training clients (known once a
  task with natural clients is loaded).
  """
  spec = tff.simulation.baselines.ClientSpec(
      num_epochs=settings.local_epochs, batch_size=settings.batch_size
  )
  prototypes = list(settings.prototypes)
  try:
    task = tasks.create_task(
        settings.task,
        train_client_spec=spec,
        model=prototypes[0] if prototypes else settings.model,
        prototypes=prototypes or None,
        partition=settings.partition,
        alpha=settings.alpha,
        classes_per_client=settings.classes_per_client,
        num_clients=settings.num_clients,
        seed=settings.seed,
        data_dir=settings.data_dir,
        split_file=settings.split_file,
        use_synthetic_data=settings.use_synthetic_data,
    )
  except (ValueError, FileNotFoundError) as e:
    raise flags.ValidationError(str(e)) from e
  if settings.clients_per_round > len(task.client_ids):
    raise flags.ValidationError(
        f'--clients_per_round={settings.clients_per_round} is more than the '
        f'{len(task.client_ids)} training clients of --task={settings.task}.')
  return task


def algorithm_hparams(settings: Settings,
                      algorithm: registry.Algorithm) -> dict[str, Any]:
  """The algorithm's own hyperparameters in the settings."""
  return {name: settings.algorithm_hparams[name] for name in algorithm.hparams}


def build_process(settings: Settings, task, algorithm: registry.Algorithm):
  """The algorithm's process for the task; bad combinations fail here."""
  if len(settings.prototypes) > 1 and not algorithm.prototypes:
    raise flags.ValidationError(
        f'--algorithm={algorithm.name} trains one architecture; '
        f'--prototypes={",".join(settings.prototypes)} needs one of '
        f'{[a.name for a in registry.ALGORITHMS.values() if a.prototypes]}.'
    )
  try:
    parts = registry.build_aggregators(
        algorithm, aggregator_config(settings),
        clients_per_round=settings.clients_per_round,
        num_clients=len(task.datasets.train_data.client_ids),
        total_rounds=settings.rounds, prototypes=settings.prototypes)
  except ValueError as e:
    raise flags.ValidationError(str(e)) from e
  return algorithm.build(
      task,
      client_optimizer=optimizer_config(settings, 'client'),
      server_optimizer=optimizer_config(settings, 'server'),
      clients_per_round=settings.clients_per_round,
      model_aggregator=parts.model_aggregator,
      fusion_aggregator=parts.fusion_aggregator,
      **({'server_step': settings.server_step} if algorithm.server_step
         else {}),
      **algorithm_hparams(settings, algorithm),
  )


def task_label(task: str) -> str:
  """Task `task` as a plain name (of runs, directories): a file's task
  (`npz:PATH`) is `npz_` and the file's stem."""
  if not task.startswith(tasks.NPZ_PREFIX):
    return task
  stem = os.path.splitext(os.path.basename(task[len(tasks.NPZ_PREFIX):]))[0]
  return 'npz_' + re.sub(r'[^A-Za-z0-9_.-]', '_', stem)


def default_run_name(settings: Settings, algorithm: str) -> str:
  """A run's default name: task, algorithm, partition (if split by us), seed."""
  partition = ('' if tasks.has_natural_clients(settings.task)
               else f'_{settings.partition}')
  return (f'{task_label(settings.task)}_{algorithm}{partition}'
          f'_seed{settings.seed}')


def _unused_settings(settings: Settings) -> tuple[str, ...]:
  """The shared settings that do not apply to the run (not recorded)."""
  unused = [name for owner, names in AGGREGATOR_FLAGS.items()
            if owner != settings.aggregator for name in names]
  if tasks.has_natural_clients(settings.task):
    unused += SPLIT_FLAGS
  if settings.task not in tasks.FEDERATED_TASKS:
    unused.append('use_synthetic_data')
  unused += [flag for flag, (prefix, name, _) in OPTIMIZER_HPARAM_FLAGS.items()
             if getattr(settings, f'{prefix}_optimizer') != name]
  return tuple(unused)


def run_hparams(settings: Settings, algorithm: registry.Algorithm,
                run_name: Optional[str] = None, task: Optional[tasks.Task] = None,
                **runtime_flags) -> dict[str, Any]:
  """hparams.json of a run: every flag of the run, and its data's digest.

  Top level, compared on --resume (`tff_kd.experiment`): every shared flag
  that applies to the run (not `RUNTIME_FLAGS`, nor `_unused_settings`),
  `algorithm`, the algorithm's own flags (the flags of the other algorithms
  are not the run's: giving one is an error) and `data_digest`,
  `task.data_digest()`, so that changed inputs (a split file, an .npz, a
  dataset) are not resumed. Under `run_directory.RUNTIME_KEY`, recorded and
  never compared: `RUNTIME_FLAGS` and `runtime_flags`, the binary's own flags that
  change no number (train's --experiment_name, compare's --algorithms,
  --seeds, ...).

  With --resume of `run_name`, a run recorded before a flag existed (absent
  from its hparams.json) resumes when that flag is at its default (the
  behavior it had); at another value it is a change, which --resume refuses,
  naming the key. Likewise a run recorded before the data digest resumes
  unverified, and a setting recorded that no longer applies is not compared.
  """
  unused = _unused_settings(settings)
  values = {
      field.name: getattr(settings, field.name)
      for field in dataclasses.fields(settings)
      if field.name not in RUNTIME_FLAGS + _MAPPINGS + unused
  }
  values.update((name, value)
                for name, value in settings.optimizer_hparams.items()
                if name not in unused)
  if not algorithm.server_step:
    del values['server_step']  # Nothing to place.
  values['algorithm'] = algorithm.name
  values.update(algorithm_hparams(settings, algorithm))
  if task is not None:
    values['data_digest'] = task.data_digest()
  if settings.resume and run_name is not None:
    path = run_directory.output_paths(settings.root_output_dir,
                                   run_name)['hparams']
    if os.path.exists(path):
      with open(path) as f:
        recorded = json.load(f)
      defaults = {field.name: field.default
                  for field in dataclasses.fields(settings)}
      defaults.update(_optimizer_hparam_defaults())
      defaults.update((name, hparam.default)
                      for name, hparam in algorithm.hparams.items())
      for name in [n for n in values if n not in recorded]:
        if name == 'data_digest' or (
            name in defaults and values[name] == defaults[name]):
          del values[name]
      values.update((name, recorded[name]) for name in unused
                    if name in recorded)
  values[run_directory.RUNTIME_KEY] = dict(
      {name: getattr(settings, name) for name in RUNTIME_FLAGS},
      **runtime_flags)
  return values
