"""Every algorithm by name, with its own hyperparameters and their defaults.

Binaries read this registry: an algorithm added here gets its flags in
`binaries/train.py` and joins `binaries/compare.py` without editing them.
Each entry's `build(task, *, client_learning_rate, server_learning_rate,
**hparams)` returns a `tff.learning.templates.LearningProcess` for the task.
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

import tensorflow_federated as tff

from tff_kd.algorithms import fedavg
from tff_kd.algorithms import fedntd


@dataclasses.dataclass(frozen=True)
class Hparam:
  default: Any
  help: str


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """A registered algorithm: how to build it and its own hyperparameters."""

  name: str
  description: str
  build: Callable[..., tff.learning.templates.LearningProcess]
  hparams: Mapping[str, Hparam] = dataclasses.field(default_factory=dict)


def _optimizers(client_learning_rate, server_learning_rate):
  return (
      tff.learning.optimizers.build_sgdm(learning_rate=client_learning_rate),
      tff.learning.optimizers.build_sgdm(learning_rate=server_learning_rate),
  )


def _build_fedavg(task, *, client_learning_rate, server_learning_rate):
  return fedavg.build_fedavg(
      task.model_fn, *_optimizers(client_learning_rate, server_learning_rate)
  )


def _build_fedntd(
    task, *, client_learning_rate, server_learning_rate, ntd_beta,
    ntd_temperature,
):
  return fedntd.build_fedntd(
      task.model_fn,
      *_optimizers(client_learning_rate, server_learning_rate),
      beta=ntd_beta,
      temperature=ntd_temperature,
  )


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in [
        Algorithm(
            'fedavg',
            'FedAvg (McMahan et al. 2017): n_k/n weighted model averaging.',
            _build_fedavg,
        ),
        Algorithm(
            'fedntd',
            'FedNTD (Lee et al. 2022): FedAvg + not-true distillation from'
            ' the global model on the client.',
            _build_fedntd,
            {
                'ntd_beta': Hparam(1.0, 'FedNTD: weight beta of the not-true'
                                   ' distillation term.'),
                'ntd_temperature': Hparam(1.0, 'FedNTD: temperature tau.'),
            },
        ),
    ]
}


def get(name: str) -> Algorithm:
  if name not in ALGORITHMS:
    raise ValueError(
        f'Unknown algorithm {name!r}; choose one of {sorted(ALGORITHMS)}.'
    )
  return ALGORITHMS[name]
