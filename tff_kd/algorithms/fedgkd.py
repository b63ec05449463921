"""FedGKD: global knowledge distillation (Yao et al., "FedGKD: Toward
Heterogeneous Federated Learning via Global Knowledge Distillation", IEEE
Transactions on Computers 2023; official code `CGCL-codes/FedGKD`).

The server keeps a buffer of the last M global models and sends their
parameter average with the model; clients add gamma * tau^2 *
KL(q_teacher,tau || q_local,tau) to their cross-entropy. The server is FedAvg.
With M = 1 the teacher is the current global model (plain local-global KD).

The buffer is the state of this algorithm's distributor (so it is in the
checkpoints). As in the official code (`pcode/masters/master_fedgkd.py`,
`pcode/workers/worker_fedgkd.py` at 72e7bac): the buffer holds aggregated
global models only, never the random initial one, and round 0 (the official
round 1) has no distillation; from round t >= 1 on, the model broadcast in
round t (the aggregate of round t - 1) is pushed before the teacher is
averaged, so the teacher is the parameter mean of w_t, ..., w_{t-M+1} over the
aggregates so far (fewer than M in the first rounds). One difference: with
M = 1 the official worker keeps the first model it received as a stale
teacher (its buffer is only sent for M > 1); ours is the current global
model, the paper's FedGKD with M = 1.
"""

import collections
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import client_work
from tff_kd import losses
from tff_kd import model_parts
from tff_kd import process as process_lib
from tff_kd import settings
from tff_kd.aggregators import knowledge
from tff_kd.aggregators import stack
from tff_kd.algorithms import fedavg
from tff_kd.algorithms import spec as spec_lib


def build_teacher_buffer_distributor(
    model_weights_type: tff.Type, buffer_size: int
) -> tff.learning.templates.DistributionProcess:
  """Broadcasts `OrderedDict(model=w, teacher=..., extra=active)`.

  `teacher` is the parameter mean of the last M aggregated models and
  `active` (float32) is 1 once the buffer holds one: in round 0 the model is
  the untrained initial one, which is neither buffered nor distilled from
  (`teacher` is then that model and `active` 0).

  State: `OrderedDict(models=<each weight stacked M deep>, count=int32,
  round=int32)`, newest model first.
  """
  if buffer_size < 1:
    raise ValueError(f'buffer_size must be >= 1; got {buffer_size}.')

  @tff.tensorflow.computation()
  def initial_state():
    return collections.OrderedDict(
        models=stack.stacked_zeros(model_weights_type, buffer_size),
        count=tf.constant(0, tf.int32),
        round=tf.constant(0, tf.int32),
    )

  state_type = initial_state.type_signature.result

  @tff.tensorflow.computation(state_type, model_weights_type)
  def push(state, weights):
    """Buffers `weights` from round 1 on (round 0's are the initial ones)."""
    aggregated = state['round'] > 0
    models = tf.nest.map_structure(
        lambda buffer, w: tf.where(
            aggregated, tf.concat([w[tf.newaxis], buffer[:-1]], axis=0),
            buffer),
        state['models'],
        weights,
    )
    count = tf.minimum(state['count'] + tf.cast(aggregated, tf.int32),
                       buffer_size)
    return collections.OrderedDict(models=models, count=count,
                                   round=state['round'] + 1)

  @tff.tensorflow.computation(state_type, model_weights_type)
  def teacher(state, weights):
    count = state['count']
    teacher_weights = tf.nest.map_structure(
        lambda buffer, w: tf.where(
            count > 0, tf.reduce_mean(buffer[:tf.maximum(count, 1)], axis=0),
            w),
        state['models'],
        weights,
    )
    return teacher_weights, tf.cast(count > 0, tf.float32)

  @tff.federated_computation()
  def init_fn():
    return tff.federated_eval(initial_state, tff.SERVER)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(model_weights_type, tff.SERVER),
  )
  def next_fn(state, weights):
    new_state = tff.federated_map(push, (state, weights))
    teacher_weights, active = tff.federated_map(teacher, (new_state, weights))
    broadcast = tff.federated_zip(
        collections.OrderedDict(
            model=weights, teacher=teacher_weights, extra=active
        )
    )
    return tff.templates.MeasuredProcessOutput(
        new_state,
        tff.federated_broadcast(broadcast),
        tff.federated_value((), tff.SERVER),
    )

  return tff.learning.templates.DistributionProcess(init_fn, next_fn)


@dataclasses.dataclass(frozen=True)
class FedGKDConfig:
  buffer_size: int = settings.setting(
      5, 'FedGKD: M, past global models averaged into the teacher (each is'
      ' kept on the server).', **settings.count(1, 100))
  gamma: float = settings.setting(
      0.1, 'FedGKD: weight gamma of the KD term.', **settings.at_least(0))
  temperature: float = settings.setting(
      1.0, 'FedGKD: temperature tau.', **settings.TEMPERATURE)


def build_fedgkd(
    model_fn: model_parts.ModelFn,
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    *,
    buffer_size: int = FedGKDConfig.buffer_size,
    gamma: float = FedGKDConfig.gamma,
    temperature: float = FedGKDConfig.temperature,
    model_aggregator: Optional[knowledge.ModelAggregator] = None,
) -> process_lib.GlobalModelsProcess:
  """Builds FedGKD; arguments as `build_fedavg`, plus:

  Args:
    model_fn, client_optimizer_fn, server_optimizer_fn, model_aggregator: as
      in `build_fedavg`.
    buffer_size: M, how many past global models the teacher averages (>= 1).
    gamma: weight of the distillation term (>= 0); 0 is FedAvg.
    temperature: tau > 0.

  Returns:
    A `LearningProcess` whose `state.distributor` is the model buffer.
  """
  if gamma < 0:
    raise ValueError(f'gamma must be >= 0; got {gamma}.')
  if temperature <= 0:
    raise ValueError(f'temperature must be > 0; got {temperature}.')

  def loss_fn(labels, student_logits, teacher_logits, active):
    del labels
    return gamma * active * losses.distillation_loss(
        teacher_logits, student_logits, temperature
    )

  return fedavg.build_fedavg(
      model_fn,
      client_optimizer_fn,
      server_optimizer_fn,
      model_distributor=build_teacher_buffer_distributor(
          client_work.weights_type(model_fn), buffer_size
      ),
      model_aggregator=model_aggregator,
      distillation=client_work.Distillation(
          loss_fn, separate_teacher=True,
          extra_type=tff.TensorType(np.float32)),
  )


SPEC = spec_lib.Spec(
    'fedgkd', 'FedGKD (Yao et al. 2023): FedAvg + distillation from the'
    ' average of the last M global models on the client.', FedGKDConfig,
    spec_lib.averaging(build_fedgkd))
