"""FedGKD: global knowledge distillation (Yao et al., "FedGKD: Toward
Heterogeneous Federated Learning via Global Knowledge Distillation", IEEE
Transactions on Computers 2023; official code `CGCL-codes/FedGKD`).

The server keeps a buffer of the last M global models and sends their
parameter average with the model; clients add gamma * tau^2 *
KL(q_teacher,tau || q_local,tau) to their cross-entropy. The server is FedAvg.
With M = 1 the teacher is the current global model (plain local-global KD).

The buffer is the state of this algorithm's distributor (so it is in the
checkpoints): every round the broadcast model is pushed onto it before the
teacher is averaged, so in round t the teacher is mean(w_t, ..., w_{t-M+1})
over the models seen so far (fewer than M in the first rounds).
"""

import collections
from collections.abc import Callable
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import client_work
from tff_kd import losses
from tff_kd.aggregators import stack
from tff_kd.algorithms import fedavg


def build_teacher_buffer_distributor(
    model_weights_type: tff.Type, buffer_size: int
) -> tff.learning.templates.DistributionProcess:
  """Broadcasts `OrderedDict(model=w, teacher=mean of the last M models)`.

  State: `OrderedDict(models=<each weight stacked M deep>, count=int32)`,
  newest model first.
  """
  if buffer_size < 1:
    raise ValueError(f'buffer_size must be >= 1; got {buffer_size}.')

  @tff.tensorflow.computation()
  def initial_state():
    return collections.OrderedDict(
        models=stack.stacked_zeros(model_weights_type, buffer_size),
        count=tf.constant(0, tf.int32),
    )

  state_type = initial_state.type_signature.result

  @tff.tensorflow.computation(state_type, model_weights_type)
  def push(state, weights):
    models = tf.nest.map_structure(
        lambda buffer, w: tf.concat([w[tf.newaxis], buffer[:-1]], axis=0),
        state['models'],
        weights,
    )
    count = tf.minimum(state['count'] + 1, buffer_size)
    return collections.OrderedDict(models=models, count=count)

  @tff.tensorflow.computation(state_type)
  def teacher(state):
    count = state['count']
    return tf.nest.map_structure(
        lambda buffer: tf.reduce_mean(buffer[:count], axis=0),
        state['models'],
    )

  @tff.federated_computation()
  def init_fn():
    return tff.federated_eval(initial_state, tff.SERVER)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(model_weights_type, tff.SERVER),
  )
  def next_fn(state, weights):
    new_state = tff.federated_map(push, (state, weights))
    broadcast = tff.federated_zip(
        collections.OrderedDict(
            model=weights, teacher=tff.federated_map(teacher, new_state)
        )
    )
    return tff.templates.MeasuredProcessOutput(
        new_state,
        tff.federated_broadcast(broadcast),
        tff.federated_value((), tff.SERVER),
    )

  return tff.learning.templates.DistributionProcess(init_fn, next_fn)


def build_fedgkd(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    *,
    buffer_size: int = 5,
    gamma: float = 0.1,
    temperature: float = 1.0,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
) -> tff.learning.templates.LearningProcess:
  """Builds FedGKD; arguments as `build_fedavg`, plus:

  Args:
    model_fn: no-arg function returning a `tff.learning.models.VariableModel`
      whose predictions are logits.
    client_optimizer_fn: client `tff.learning.optimizers.Optimizer`.
    server_optimizer_fn: server optimizer; default SGD with learning rate 1.
    buffer_size: M, how many past global models the teacher averages (>= 1).
    gamma: weight of the distillation term (>= 0); 0 is FedAvg.
    temperature: tau > 0.
    model_aggregator: as in `build_fedavg`.

  Returns:
    A `LearningProcess` whose `state.distributor` is the model buffer.
  """
  if gamma < 0:
    raise ValueError(f'gamma must be >= 0; got {gamma}.')
  if temperature <= 0:
    raise ValueError(f'temperature must be > 0; got {temperature}.')

  def loss_fn(labels, student_logits, teacher_logits, extra):
    del labels, extra
    return gamma * losses.distillation_loss(
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
      distillation=client_work.Distillation(loss_fn, separate_teacher=True),
  )
