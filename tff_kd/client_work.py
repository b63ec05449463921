"""The client work of FedAvg and of client-side distillation, as a TFF process.

`build_client_work` wraps `local_training.build_client_update` in a
`tff.learning.templates.ClientWorkProcess`. Its state is the client
optimizer's hyperparameters (as in TFF's model-delta client work), so a
program can change the learning rate between rounds.

Type signature of `next`:
`(<S@SERVER, W@CLIENTS, {B*}@CLIENTS> -> <state=S@SERVER,
result=ClientResult(update=T, update_weight=float32)@CLIENTS,
measurements=<train=M, non_finite_clients=int32>@SERVER>)`,
W the model weights, T their trainable part, B a batch.
"""

import collections
from collections.abc import Callable
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import local_training


def build_client_work(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    client_optimizer: tff.learning.optimizers.Optimizer,
    *,
    distillation_fn: Optional[local_training.DistillationFn] = None,
) -> tff.learning.templates.ClientWorkProcess:
  """Builds local training with an optional distillation term.

  Args:
    model_fn: no-arg function returning a new `tff.learning.models.
      VariableModel` (for example a TFF `BaselineTask.model_fn`).
    client_optimizer: a `tff.learning.optimizers.Optimizer`.
    distillation_fn: optional `(labels, student_logits, teacher_logits) ->
      loss`; when given, the broadcast model (frozen) is the teacher.

  Returns:
    A `tff.learning.templates.ClientWorkProcess`.
  """
  if not callable(model_fn):
    raise TypeError(f'model_fn must be a no-arg callable; got {model_fn!r}.')
  if not isinstance(client_optimizer, tff.learning.optimizers.Optimizer):
    raise TypeError(
        'client_optimizer must be a tff.learning.optimizers.Optimizer; got '
        f'{client_optimizer!r}.'
    )
  with tf.Graph().as_default():
    model = model_fn()
    if not isinstance(model, tff.learning.models.VariableModel):
      raise TypeError(
          'model_fn must return a tff.learning.models.VariableModel; it '
          f'returned {type(model).__name__}.'
      )
    metrics_aggregation_fn = tff.learning.metrics.sum_then_finalize(
        model.metric_finalizers()
    )
    weights_type = tff.learning.models.weights_type_from_model(model)
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  initial_hparams = client_optimizer.get_hparams(
      client_optimizer.initialize(tf.TensorSpec((), tf.float32))
  )

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value(initial_hparams, tff.SERVER)

  hparams_type = init_fn.type_signature.result.member

  @tff.tensorflow.computation(hparams_type)
  def get_hparams_fn(state):
    return state

  @tff.tensorflow.computation(hparams_type, hparams_type)
  def set_hparams_fn(state, hparams):
    del state
    return hparams

  @tff.tensorflow.computation(hparams_type, weights_type, data_type)
  def client_update(hparams, initial_weights, dataset):
    teacher = model_fn() if distillation_fn is not None else None
    update_fn = local_training.build_client_update(
        model_fn(),
        client_optimizer,
        teacher=teacher,
        distillation_fn=distillation_fn,
    )
    delta, weight, is_finite, metrics = update_fn(
        initial_weights, dataset, hparams
    )
    return (
        tff.learning.templates.ClientResult(update=delta, update_weight=weight),
        1 - is_finite,
        metrics,
    )

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS),
  )
  def next_fn(state, weights, client_data):
    result, non_finite, metrics = tff.federated_map(
        client_update, (tff.federated_broadcast(state), weights, client_data)
    )
    measurements = tff.federated_zip(
        collections.OrderedDict(
            train=metrics_aggregation_fn(metrics),
            non_finite_clients=tff.federated_sum(non_finite),
        )
    )
    return tff.templates.MeasuredProcessOutput(state, result, measurements)

  return tff.learning.templates.ClientWorkProcess(
      init_fn,
      next_fn,
      get_hparams_fn=get_hparams_fn,
      set_hparams_fn=set_hparams_fn,
  )
