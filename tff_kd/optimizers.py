"""Client and server optimizers by name: TFF's, with PyTorch's weight decay.

`OptimizerConfig(name, learning_rate, ...)` builds a
`tff.learning.optimizers.Optimizer`: `sgd` (`build_sgdm`, with momentum),
`adam` (`build_adam`) or `yogi` (`build_yogi`), the choices of
google-research/federated's trainers (`--client_optimizer`,
`--server_optimizer`). `weight_decay` adds `weight_decay * w` to every
gradient before the optimizer sees it: the coupled L2 decay of PyTorch's
`SGD(weight_decay=)` and `Adam(weight_decay=)`, which the references' clients
use (FedNTD, FedGKD: SGD momentum 0.9, weight decay 1e-5).
`learning_rate_decay` is a per-round factor for a client optimizer
(`ExponentialLR(gamma)` stepped once per round, as FedNTD's and FedGen's
clients): round t (0 first) trains at `learning_rate * decay**t`; the
client works that know the round apply it (`tff_kd.client_work`).
"""

import collections
from collections.abc import Callable, Mapping
import dataclasses
import math
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

# Each optimizer's own hyperparameters and their defaults (TFF's).
HPARAMS = {
    'sgd': {'momentum': 0.0},
    'adam': {'beta_1': 0.9, 'beta_2': 0.999, 'epsilon': 1e-7},
    'yogi': {'beta_1': 0.9, 'beta_2': 0.999, 'epsilon': 1e-3},
}
NAMES = tuple(HPARAMS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
  """An optimizer by name and hyperparameters.

  Attributes:
    name: one of `NAMES`.
    learning_rate: > 0.
    hparams: the optimizer's own hyperparameters (`HPARAMS[name]`'s keys);
      those not given take their defaults.
    weight_decay: coupled L2 decay (PyTorch's `weight_decay`), >= 0.
    learning_rate_decay: per-round factor of a client optimizer, in (0, 1].
  """

  name: str = 'sgd'
  learning_rate: float
  hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)
  weight_decay: float = 0.0
  learning_rate_decay: float = 1.0

  def __post_init__(self):
    if self.name not in HPARAMS:
      raise ValueError(f'Unknown optimizer {self.name!r}; choose one of '
                       f'{", ".join(NAMES)}.')
    unknown = sorted(set(self.hparams) - set(HPARAMS[self.name]))
    if unknown:
      raise ValueError(f'Optimizer {self.name!r} takes '
                       f'{sorted(HPARAMS[self.name])}; got {unknown}.')
    _check('learning_rate', self.learning_rate, lambda v: v > 0, '> 0')
    _check('weight_decay', self.weight_decay, lambda v: v >= 0, '>= 0')
    _check('learning_rate_decay', self.learning_rate_decay,
           lambda v: 0 < v <= 1, 'in (0, 1]')
    for key, value in self.hparams.items():
      ok, requirement = hparam_range(key)
      if not ok(value):
        raise ValueError(f'{key} must be {requirement}; got {value!r}.')

  @property
  def is_plain_sgd(self) -> bool:
    """SGD without momentum, decay or schedule (no state, no change)."""
    return (self.name == 'sgd' and not self.all_hparams()['momentum']
            and self.weight_decay == 0 and self.learning_rate_decay == 1)

  def all_hparams(self) -> dict[str, float]:
    return dict(HPARAMS[self.name], **self.hparams)

  def build(self) -> tff.learning.optimizers.Optimizer:
    hparams = self.all_hparams()
    if self.name == 'sgd':
      optimizer = tff.learning.optimizers.build_sgdm(
          learning_rate=self.learning_rate,
          momentum=hparams['momentum'] or None)
    elif self.name == 'adam':
      optimizer = tff.learning.optimizers.build_adam(
          learning_rate=self.learning_rate, **hparams)
    else:
      optimizer = tff.learning.optimizers.build_yogi(
          learning_rate=self.learning_rate, **hparams)
    if self.weight_decay:
      optimizer = WeightDecay(optimizer, self.weight_decay)
    if self.learning_rate_decay != 1:
      optimizer = RoundDecay(optimizer, self.learning_rate_decay)
    return optimizer


def hparam_range(key: str) -> tuple[Callable[[Any], bool], str]:
  """An optimizer hyperparameter's check and what it requires: epsilon
  finite and > 0, the others (momentum, the betas) in [0, 1)."""
  if key == 'epsilon':
    return (lambda v: isinstance(v, (int, float)) and math.isfinite(v)
            and v > 0), 'finite and > 0'
  return (lambda v: isinstance(v, (int, float)) and 0 <= v < 1), 'in [0, 1)'


def _check(name, value, ok, requirement):
  if not (isinstance(value, (int, float)) and math.isfinite(value)
          and ok(value)):
    raise ValueError(f'{name} must be finite and {requirement}; got '
                     f'{value!r}.')


class _Wrapper(tff.learning.optimizers.Optimizer):
  """Delegates to `optimizer`."""

  def __init__(self, optimizer: tff.learning.optimizers.Optimizer):
    self._optimizer = optimizer

  def initialize(self, specs: Any) -> Any:
    return self._optimizer.initialize(specs)

  def next(self, state, weights, gradients):
    return self._optimizer.next(state, weights, gradients)

  def get_hparams(self, state):
    return self._optimizer.get_hparams(state)

  def set_hparams(self, state, hparams):
    return self._optimizer.set_hparams(state, hparams)


class WeightDecay(_Wrapper):
  """`optimizer` on `gradients + weight_decay * weights` (PyTorch's L2)."""

  def __init__(self, optimizer: tff.learning.optimizers.Optimizer,
               weight_decay: float):
    super().__init__(optimizer)
    self._weight_decay = weight_decay

  def next(self, state, weights, gradients):
    gradients = tf.nest.map_structure(
        lambda g, w: g + tf.cast(self._weight_decay, g.dtype) * w,
        gradients, weights)
    return self._optimizer.next(state, weights, gradients)


class RoundDecay(_Wrapper):
  """`optimizer`, whose learning rate a client work multiplies by `decay`
  once per round (`tff_kd.client_work`); the steps of a round are the
  optimizer's own."""

  def __init__(self, optimizer: tff.learning.optimizers.Optimizer,
               decay: float):
    super().__init__(optimizer)
    self.decay = decay


def round_decay(optimizer: tff.learning.optimizers.Optimizer) -> float:
  """The per-round learning-rate factor of `optimizer` (1: none)."""
  return optimizer.decay if isinstance(optimizer, RoundDecay) else 1.0


def check_no_round_decay(optimizer: tff.learning.optimizers.Optimizer,
                         algorithm: str) -> None:
  """A clear error for an algorithm whose clients keep a constant rate."""
  if round_decay(optimizer) != 1:
    raise ValueError(
        f'{algorithm}\'s client work has no per-round learning-rate decay; '
        f'got a client optimizer with learning_rate_decay='
        f'{round_decay(optimizer)}.')


def decayed(hparams: Mapping[str, Any], decay: float, round_num) -> Any:
  """`hparams` with the learning rate of round `round_num` (0 first)."""
  if decay == 1:
    return hparams
  key = tff.learning.optimizers.LEARNING_RATE_KEY
  rate = tf.convert_to_tensor(hparams[key])
  out = collections.OrderedDict(hparams)
  out[key] = rate * tf.pow(tf.cast(decay, rate.dtype),
                           tf.cast(round_num, rate.dtype))
  return out
