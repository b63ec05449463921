"""FedNTD: federated not-true distillation (Lee et al., NeurIPS 2022).

FedAvg whose clients add beta * tau^2 * KL between the frozen broadcast
(global) model and the local model, both restricted to the not-true classes
(`tff_kd.losses.not_true_distillation_loss`): the client keeps the global
model's knowledge of the classes it does not see while it fits its own labels.
The server is FedAvg. Defaults beta=1, tau=1 (the paper; official code
`Lee-Gihun/FedNTD`). With beta=0 the process is FedAvg exactly.
"""

import dataclasses
from typing import Optional

import tensorflow_federated as tff

from tff_kd import client_work
from tff_kd import losses
from tff_kd import model_parts
from tff_kd import process as process_lib
from tff_kd import settings
from tff_kd.aggregators import knowledge
from tff_kd.algorithms import fedavg
from tff_kd.algorithms import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class FedNTDConfig:
  beta: float = settings.setting(
      1.0, 'FedNTD: weight beta of the not-true distillation term.',
      **settings.at_least(0))
  temperature: float = settings.setting(
      1.0, 'FedNTD: temperature tau.', **settings.TEMPERATURE)


def build_fedntd(
    model_fn: model_parts.ModelFn,
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    *,
    beta: float = FedNTDConfig.beta,
    temperature: float = FedNTDConfig.temperature,
    model_aggregator: Optional[knowledge.ModelAggregator] = None,
) -> process_lib.GlobalModelsProcess:
  """Builds FedNTD; arguments as `build_fedavg`, plus beta and temperature.

  Args:
    model_fn, client_optimizer_fn, server_optimizer_fn, model_aggregator: as
      in `build_fedavg`.
    beta: weight of the not-true distillation term, >= 0.
    temperature: softmax temperature tau > 0.

  Returns:
    A `tff_kd.process.GlobalModelsProcess`.
  """
  if beta < 0:
    raise ValueError(f'beta must be >= 0; got {beta}.')
  if temperature <= 0:
    raise ValueError(f'temperature must be > 0; got {temperature}.')

  def loss_fn(labels, student_logits, teacher_logits, extra):
    del extra  # The teacher is the broadcast model; nothing else is sent.
    return beta * losses.not_true_distillation_loss(
        labels, student_logits, teacher_logits, temperature
    )

  return fedavg.build_fedavg(
      model_fn,
      client_optimizer_fn,
      server_optimizer_fn,
      model_aggregator=model_aggregator,
      distillation=client_work.Distillation(loss_fn),
  )


SPEC = spec_lib.Spec(
    'fedntd', 'FedNTD (Lee et al. 2022): FedAvg + not-true distillation from'
    ' the global model on the client.', FedNTDConfig,
    spec_lib.averaging(build_fedntd))
