"""Every algorithm by name, with its own hyperparameters and their defaults.

Binaries read this registry: an algorithm added here gets its flags in
`binaries/train.py` and joins `binaries/compare.py` without editing them.
Each entry's `build(task, *, client_learning_rate, server_learning_rate,
clients_per_round, **hparams)` returns a `tff.learning.templates.
LearningProcess` for the task.
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

import tensorflow_federated as tff

from tff_kd.algorithms import fedavg
from tff_kd.algorithms import fedgen
from tff_kd.algorithms import fedgkd
from tff_kd.algorithms import fedntd
from tff_kd.algorithms import fedssd


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


def _build_fedavg(
    task, *, client_learning_rate, server_learning_rate, clients_per_round
):
  del clients_per_round
  return fedavg.build_fedavg(
      task.model_fn, *_optimizers(client_learning_rate, server_learning_rate)
  )


def _build_fedntd(
    task, *, client_learning_rate, server_learning_rate, clients_per_round,
    ntd_beta, ntd_temperature,
):
  del clients_per_round
  return fedntd.build_fedntd(
      task.model_fn,
      *_optimizers(client_learning_rate, server_learning_rate),
      beta=ntd_beta,
      temperature=ntd_temperature,
  )


def _build_fedgkd(
    task, *, client_learning_rate, server_learning_rate, clients_per_round,
    gkd_buffer_size, gkd_gamma, gkd_temperature,
):
  del clients_per_round
  return fedgkd.build_fedgkd(
      task.model_fn,
      *_optimizers(client_learning_rate, server_learning_rate),
      buffer_size=gkd_buffer_size,
      gamma=gkd_gamma,
      temperature=gkd_temperature,
  )


def _build_fedssd(
    task, *, client_learning_rate, server_learning_rate, clients_per_round,
    ssd_kd_weight, ssd_temperature,
):
  del clients_per_round
  if getattr(task, 'validation', None) is None:
    raise ValueError(
        'fedssd needs a task with a labelled server validation split; '
        f'{type(task).__name__} has none.'
    )
  return fedssd.build_fedssd(
      task.model_fn,
      *_optimizers(client_learning_rate, server_learning_rate),
      validation_x=task.validation[0],
      validation_y=task.validation[1],
      num_classes=task.num_classes,
      kd_weight=ssd_kd_weight,
      temperature=ssd_temperature,
  )


def _build_fedgen(
    task, *, client_learning_rate, server_learning_rate, clients_per_round,
    gen_alpha, gen_beta, gen_steps,
):
  return fedgen.build_fedgen(
      task.model_fn,
      tff.learning.optimizers.build_sgdm(learning_rate=client_learning_rate),
      num_classes=task.num_classes,
      clients_per_round=clients_per_round,
      server_learning_rate=server_learning_rate,
      alpha=gen_alpha,
      beta=gen_beta,
      generator_steps=gen_steps,
      seed=task.seed,
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
        Algorithm(
            'fedgkd',
            'FedGKD (Yao et al. 2023): FedAvg + distillation from the average'
            ' of the last M global models on the client.',
            _build_fedgkd,
            {
                'gkd_buffer_size': Hparam(5, 'FedGKD: M, past global models'
                                          ' averaged into the teacher.'),
                'gkd_gamma': Hparam(0.1, 'FedGKD: weight gamma of the KD'
                                    ' term.'),
                'gkd_temperature': Hparam(1.0, 'FedGKD: temperature tau.'),
            },
        ),
        Algorithm(
            'fedssd',
            'FedSSD (He et al. 2022): FedAvg + self-distillation from the'
            ' global model weighted by its class and sample credibility.',
            _build_fedssd,
            {
                'ssd_kd_weight': Hparam(1.0, 'FedSSD: weight lambda of the'
                                        ' KD term.'),
                'ssd_temperature': Hparam(1.0, 'FedSSD: temperature tau.'),
            },
        ),
        Algorithm(
            'fedgen',
            'FedGen (Zhu et al. 2021): FedAvg + a server-trained conditional'
            ' generator regularizing the clients (data-free KD).',
            _build_fedgen,
            {
                'gen_alpha': Hparam(1.0, 'FedGen: initial weight of the'
                                    ' clients\' generated-sample CE (the'
                                    ' paper: 10 at client lr 0.01; 1 keeps'
                                    ' alpha*lr at our lr 0.1).'),
                'gen_beta': Hparam(1.0, 'FedGen: initial weight of the'
                                   ' clients\' latent KL (paper: 10 at lr'
                                   ' 0.01).'),
                'gen_steps': Hparam(50, 'FedGen: generator steps per round.'),
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
