"""Centralized evaluation of model weights, as one TFF computation.

The server's test and validation sets are evaluated by a
`tff.tensorflow.computation` (model weights, dataset) -> totals, run on the
TFF worker like every other computation: the model is built inside the traced
graph, the weights assigned, and `forward_pass(training=False)` gives the loss
and logits of each batch in a `local_training.dataset_reduce` loop. (A Keras
model built eagerly in the Python process breaks once TFF traces models of the same classes in
graph mode, which is why this is not a plain `tf.function`.) Works for any
classification `tff.learning.models.VariableModel`, TFF baseline tasks too.
"""

import collections
from collections.abc import Callable
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import local_training


def build_evaluator(model_fn: Callable[[], Any]) -> Callable[..., dict]:
  """Returns `evaluate(model_weights, dataset) -> OrderedDict`.

  Args:
    model_fn: no-arg function returning a `VariableModel`-like classifier
      whose predictions are logits (or probabilities) over the classes.

  The result has `accuracy` (argmax of the predictions equals the label),
  `loss` (the model's loss, averaged over examples) and `num_examples`.
  """
  with tf.Graph().as_default():
    spec_model = model_fn()
    weights_type = tff.learning.models.weights_type_from_model(spec_model)
    data_type = tff.SequenceType(
        tff.types.tensorflow_to_type(spec_model.input_spec)
    )

  @tff.tensorflow.computation(weights_type, data_type)
  def accumulate(model_weights, dataset):
    return _build_accumulate(model_fn())(model_weights, dataset)

  def evaluate(model_weights, dataset) -> dict:
    correct, loss_sum, count = accumulate(model_weights, dataset)
    count = int(count)
    if count == 0:
      raise ValueError('The evaluation dataset is empty.')
    return collections.OrderedDict(
        accuracy=int(correct) / count,
        loss=float(loss_sum) / count,
        num_examples=count,
    )

  return evaluate


def _build_accumulate(model):
  """A `tf.function` (weights, dataset) -> (correct, loss sum, count)."""

  @tf.function
  def accumulate(model_weights, dataset):
    local_training.assign(model.trainable_variables, model_weights.trainable)
    local_training.assign(
        model.non_trainable_variables, model_weights.non_trainable
    )

    def reduce_fn(totals, batch):
      correct, loss_sum, count = totals
      output = model.forward_pass(batch, training=False)
      labels = tf.reshape(
          tf.cast(local_training.batch_labels(batch), tf.int64), [-1]
      )
      size = tf.shape(labels, out_type=tf.int64)[0]
      predicted = tf.argmax(output.predictions, axis=-1)
      correct += tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.int64))
      loss_sum += tf.cast(output.loss, tf.float64) * tf.cast(size, tf.float64)
      return correct, loss_sum, count + size

    return local_training.dataset_reduce(
        dataset,
        (tf.constant(0, tf.int64), tf.constant(0.0, tf.float64),
         tf.constant(0, tf.int64)),
        reduce_fn,
    )

  return accumulate
