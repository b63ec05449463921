"""Centralized evaluation of model weights, in pure TensorFlow.

The server-side test and validation sets are evaluated in the Python process
with one `tf.function` over the dataset (no TFF round trip): the weights are
assigned to a model built once, its metrics are accumulated with
`forward_pass(training=False)` and finalized with its own finalizers. Works for
any `tff.learning.models.VariableModel`, so for TFF baseline tasks too.
"""

import collections
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tff_kd import local_training


def build_evaluator(model_fn: Callable[[], Any]) -> Callable[..., dict]:
  """Returns `evaluate(model_weights, dataset) -> OrderedDict of metrics`.

  Args:
    model_fn: no-arg function returning a `VariableModel`-like model.

  The metrics are the model's own (for our tasks `sparse_categorical_accuracy`,
  `loss`, `num_examples`, `num_batches`), as Python floats and ints.
  """
  model = model_fn()
  finalizers = model.metric_finalizers()

  @tf.function
  def accumulate(trainable, non_trainable, dataset):
    local_training.assign(model.trainable_variables, trainable)
    local_training.assign(model.non_trainable_variables, non_trainable)
    model.reset_metrics()
    dataset.reduce(
        tf.constant(0),
        lambda n, batch: n + tf.shape(
            model.forward_pass(batch, training=False).predictions
        )[0],
    )
    return model.report_local_unfinalized_metrics()

  def evaluate(model_weights, dataset) -> dict:
    unfinalized = accumulate(
        tuple(model_weights.trainable),
        tuple(model_weights.non_trainable),
        dataset,
    )
    return collections.OrderedDict(
        (name, finalizers[name](value).numpy().item())
        for name, value in unfinalized.items()
    )

  return evaluate
