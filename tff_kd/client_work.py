"""The client work of FedAvg and of client-side distillation, as a TFF process.

`build_round_client_work` is the client work of the algorithms whose clients
need the round number (FedDF's data-free noise, FedAUX's privacy noise,
FedGen's regularizer schedule): its state is the round.

`build_client_work` wraps `local_training.build_client_update` in a
`tff.learning.templates.ClientWorkProcess`. Its state is the client
optimizer's hyperparameters (as in TFF's model-delta client work), so a
program can change the learning rate between rounds; a client optimizer with
a per-round decay (`tff_kd.optimizers.RoundDecay`) has its learning rate
multiplied by the decay after every round.

Type signature of `next`:
`(<S@SERVER, W@CLIENTS, {B*}@CLIENTS> -> <state=S@SERVER,
result=ClientResult(update=T, update_weight=float32)@CLIENTS,
measurements=<train=M, non_finite_clients=int32,
communication=<bytes_uploaded=int64, bytes_downloaded=int64>>@SERVER>)`,
T the trainable part of the model weights, B a batch, and W what the
distributor broadcasts: the model weights, or, when the `Distillation` asks
for more, `OrderedDict(model=..., teacher=..., extra=...)` (see
`broadcast_type`). `communication` counts the bytes of W down and of the
update and its weight up, summed over the round's clients.
"""

import collections
from collections.abc import Callable
import dataclasses
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import communication
from tff_kd import local_training
from tff_kd import model_parts
from tff_kd import optimizers


@dataclasses.dataclass(frozen=True)
class Distillation:
  """The client-side distillation term, and what it needs in the broadcast.

  Attributes:
    loss_fn: `(labels, student_logits, teacher_logits, extra) -> scalar`,
      added to the model's loss on every batch.
    separate_teacher: the teacher's weights are broadcast beside the model
      (FedGKD); otherwise the teacher is the broadcast model itself.
    extra_type: the TFF type of an extra payload broadcast to the clients and
      passed to `loss_fn` as `extra` (FedSSD's class credibility), or None.
  """

  loss_fn: local_training.DistillationFn
  separate_teacher: bool = False
  extra_type: Optional[tff.Type] = None

  @property
  def needs_struct(self) -> bool:
    return self.separate_teacher or self.extra_type is not None


def weights_type(
    model_fn: model_parts.ModelFn
) -> tff.Type:
  """The TFF type of the `ModelWeights` of `model_fn`'s model."""
  with tf.Graph().as_default():
    return tff.learning.models.weights_type_from_model(model_fn())


def broadcast_type(
    model_weights_type: tff.Type, distillation: Optional[Distillation]
) -> tff.Type:
  """What the distributor must broadcast for `distillation` (unplaced)."""
  if distillation is None or not distillation.needs_struct:
    return model_weights_type
  fields = collections.OrderedDict(model=model_weights_type)
  if distillation.separate_teacher:
    fields['teacher'] = model_weights_type
  if distillation.extra_type is not None:
    fields['extra'] = distillation.extra_type
  return tff.StructWithPythonType(fields, collections.OrderedDict)


def build_client_work(
    model_fn: model_parts.ModelFn,
    client_optimizer: tff.learning.optimizers.Optimizer,
    *,
    distillation: Optional[Distillation] = None,
) -> tff.learning.templates.ClientWorkProcess:
  """Builds local training with an optional distillation term.

  Args:
    model_fn: no-arg function returning a new `tff.learning.models.
      VariableModel` (for example a TFF `BaselineTask.model_fn`).
    client_optimizer: a `tff.learning.optimizers.Optimizer`.
    distillation: optional `Distillation`: the loss term toward a frozen
      teacher, and whether the broadcast carries teacher weights or an extra
      payload beside the model.

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

  input_type = broadcast_type(weights_type, distillation)
  decay = optimizers.round_decay(client_optimizer)

  @tff.tensorflow.computation(hparams_type)
  def next_hparams(hparams):
    return optimizers.decayed(hparams, decay, 1)

  @tff.tensorflow.computation(hparams_type, input_type, data_type)
  def client_update(hparams, broadcast, dataset):
    update_fn = local_training.build_client_update(
        model_fn(),
        client_optimizer,
        teacher=None if distillation is None else model_fn(),
        distillation_fn=None if distillation is None else distillation.loss_fn,
    )
    if distillation is not None and distillation.needs_struct:
      result = update_fn(
          broadcast['model'], dataset, hparams,
          teacher_weights=broadcast.get('teacher'),
          extra=broadcast.get('extra'),
      )
    else:
      result = update_fn(broadcast, dataset, hparams)
    delta, weight, is_finite, metrics = result
    return (
        tff.learning.templates.ClientResult(update=delta, update_weight=weight),
        1 - is_finite,
        metrics,
    )

  bytes_fn = communication.build_bytes_counter(
      down=input_type, up=client_update.type_signature.result[0]
  )

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(input_type, tff.CLIENTS),
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
            communication=bytes_fn(non_finite),
        )
    )
    if decay != 1:
      state = tff.federated_map(next_hparams, state)
    return tff.templates.MeasuredProcessOutput(state, result, measurements)

  return tff.learning.templates.ClientWorkProcess(
      init_fn,
      next_fn,
      get_hparams_fn=get_hparams_fn,
      set_hparams_fn=set_hparams_fn,
  )


def build_round_client_work(
    client_update: tff.Computation,
    measure: Callable[[tff.Value], tff.Value],
) -> tff.learning.templates.ClientWorkProcess:
  """A `ClientWorkProcess` whose state is the round (0 first), sent along.

  Args:
    client_update: `(<int32 round, W, D> -> <ClientResult, P>)`, one
      client's work on the broadcast W and its data D; P is what `measure`
      summarizes.
    measure: `P@CLIENTS -> measurements@SERVER`, called inside the federated
      computation.

  Returns:
    A `ClientWorkProcess` with `next`: `(<int32@SERVER, W@CLIENTS, D@CLIENTS>
    -> <state=int32@SERVER (the round + 1), result=ClientResult@CLIENTS,
    measurements@SERVER>)`.
  """
  round_type, weights_type, data_type = client_update.type_signature.parameter

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value(0, tff.SERVER)

  @tff.tensorflow.computation(round_type)
  def next_round(round_num):
    return round_num + 1

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(round_num, weights, client_data):
    result, per_client = tff.federated_map(
        client_update,
        (tff.federated_broadcast(round_num), weights, client_data))
    return tff.templates.MeasuredProcessOutput(
        tff.federated_map(next_round, round_num), result,
        measure(per_client))

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)
