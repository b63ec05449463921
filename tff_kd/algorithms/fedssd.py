"""FedSSD: selective self-distillation (Yuting He, Yiqiang Chen, XiaoDong Yang,
Hanchao Yu, Yi-Hua Huang, Yang Gu, "Learning Critically: Selective Self
Distillation in Federated Learning on Non-IID Data", IEEE Transactions on Big
Data; arXiv:2504.14694). No official code exists, and the paper's method
section could not be read offline (its abstract: the global model's knowledge
is self-distilled, "selectively weighting it by evaluating the credibility at
both the class and sample level", from a server-side credibility matrix; its
predecessor FedCAD (He et al., AAAI 2022) measures the global model's
per-class confidence on an auxiliary labelled dataset before each round).
The exact weighting used here is documented in
`tff_kd.losses.selective_distillation_loss` and docs/FIDELITY.md.

FedAvg whose clients distill from the frozen broadcast global model, each
sample's KL term weighted by the global model's credibility: the class-wise
credibility c (the global model's per-class accuracy on the server's labelled
validation split, computed by the server every round and broadcast with the
model) times the global model's probability of the sample's true label.
"""

import collections
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import client_work
from tff_kd import local_training
from tff_kd import losses
from tff_kd import model_parts
from tff_kd import process as process_lib
from tff_kd import settings
from tff_kd.aggregators import knowledge
from tff_kd.algorithms import fedavg
from tff_kd.algorithms import spec as spec_lib


def class_accuracy(logits, labels, num_classes):
  """Per-class accuracy (0 for a class absent from `labels`)."""
  labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
  correct = tf.cast(
      tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels),
      tf.float32,
  )
  hits = tf.math.unsorted_segment_sum(correct, labels, num_classes)
  counts = tf.math.unsorted_segment_sum(
      tf.ones_like(correct), labels, num_classes
  )
  return tf.math.divide_no_nan(hits, counts)


def build_credibility_distributor(
    model_fn: model_parts.ModelFn,
    validation_x: np.ndarray,
    validation_y: np.ndarray,
    num_classes: int,
) -> tff.learning.templates.DistributionProcess:
  """Broadcasts `OrderedDict(model=w, extra=per-class validation accuracy of w)`."""
  if len(validation_y) == 0:
    raise ValueError('FedSSD needs a non-empty validation split.')

  weights_type = client_work.weights_type(model_fn)

  @tff.tensorflow.computation(weights_type)
  def credibility(weights):
    model = model_fn()

    @tf.function
    def evaluate(weights):
      local_training.assign(model.trainable_variables, weights.trainable)
      local_training.assign(
          model.non_trainable_variables, weights.non_trainable
      )
      logits = model.predict_on_batch(
          tf.constant(validation_x), training=False
      )
      return class_accuracy(logits, tf.constant(validation_y), num_classes)

    return evaluate(weights)

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.SERVER),
  )
  def next_fn(state, weights):
    credibility_at_server = tff.federated_map(credibility, weights)
    broadcast = tff.federated_zip(
        collections.OrderedDict(model=weights, extra=credibility_at_server)
    )
    return tff.templates.MeasuredProcessOutput(
        state,
        tff.federated_broadcast(broadcast),
        tff.federated_zip(
            collections.OrderedDict(class_credibility=credibility_at_server)
        ),
    )

  return tff.learning.templates.DistributionProcess(init_fn, next_fn)


@dataclasses.dataclass(frozen=True)
class FedSSDConfig:
  kd_weight: float = settings.setting(
      1.0, 'FedSSD: weight lambda of the KD term.', **settings.at_least(0))
  temperature: float = settings.setting(
      1.0, 'FedSSD: temperature tau.', **settings.TEMPERATURE)


def build_fedssd(
    model_fn: model_parts.ModelFn,
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    *,
    validation_x: np.ndarray,
    validation_y: np.ndarray,
    num_classes: int,
    kd_weight: float = FedSSDConfig.kd_weight,
    temperature: float = FedSSDConfig.temperature,
    model_aggregator: Optional[knowledge.ModelAggregator] = None,
) -> process_lib.GlobalModelsProcess:
  """Builds FedSSD; arguments as `build_fedavg`, plus:

  Args:
    model_fn, client_optimizer_fn, server_optimizer_fn, model_aggregator: as
      in `build_fedavg`.
    validation_x: the server's labelled validation inputs.
    validation_y: their labels, in [0, num_classes).
    num_classes: number of classes.
    kd_weight: weight lambda of the distillation term (>= 0); 0 is FedAvg.
    temperature: tau > 0.

  Returns:
    A `LearningProcess`; its metrics report `distributor/class_credibility`.
  """
  if kd_weight < 0:
    raise ValueError(f'kd_weight must be >= 0; got {kd_weight}.')
  if temperature <= 0:
    raise ValueError(f'temperature must be > 0; got {temperature}.')
  validation_y = np.asarray(validation_y)
  if validation_y.size and not (
      0 <= validation_y.min() and validation_y.max() < num_classes
  ):
    raise ValueError(
        f'validation_y must lie in [0, {num_classes}); found labels from '
        f'{validation_y.min()} to {validation_y.max()}.'
    )

  def loss_fn(labels, student_logits, teacher_logits, credibility):
    return kd_weight * losses.selective_distillation_loss(
        labels, student_logits, teacher_logits, credibility, temperature
    )

  return fedavg.build_fedavg(
      model_fn,
      client_optimizer_fn,
      server_optimizer_fn,
      model_distributor=build_credibility_distributor(
          model_fn, validation_x, validation_y, num_classes
      ),
      model_aggregator=model_aggregator,
      distillation=client_work.Distillation(
          loss_fn, extra_type=tff.TensorType(np.float32, [num_classes])
      ),
  )


def _build(task: spec_lib.Task, config: FedSSDConfig,
           context: spec_lib.Context) -> process_lib.GlobalModelsProcess:
  spec_lib.no_fusion('fedssd', context)
  if not len(task.validation[1]):
    raise ValueError(
        'fedssd measures its class credibility on the labelled validation '
        f'split, and task {task.name!r} has none.')
  return build_fedssd(
      task.model_fn, context.client_optimizer.build(),
      context.server_optimizer.build(),
      validation_x=task.validation[0], validation_y=task.validation[1],
      num_classes=task.num_classes,
      model_aggregator=context.model_aggregator, **dataclasses.asdict(config))


SPEC = spec_lib.Spec(
    'fedssd', 'FedSSD (He et al. 2022): FedAvg + self-distillation from the'
    ' global model weighted by its class and sample credibility.',
    FedSSDConfig, _build,
    # Its class credibility is measured on the validation split.
    labelled_server_data=lambda config: True)
