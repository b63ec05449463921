"""Centralized evaluation against numpy accuracy and cross-entropy: uneven
batches weighted by their sizes, non-trainable weights (BatchNorm's moving
statistics) assigned, labels of shape [B] or [B, 1], an empty dataset."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import evaluation

_F, _L = tiny.NUM_FEATURES, tiny.NUM_CLASSES


def _model_fn(batch_norm=False, labels_2d=False):
  """The tiny softmax regression, optionally with BatchNorm before it."""

  def model_fn():
    layers = [tf.keras.layers.InputLayer((_F,))]
    if batch_norm:
      layers.append(tf.keras.layers.BatchNormalization())
    layers.append(tf.keras.layers.Dense(_L))
    return tff.learning.models.from_keras_model(
        tf.keras.Sequential(layers),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=collections.OrderedDict(
            x=tf.TensorSpec([None, _F], tf.float32),
            y=tf.TensorSpec([None, 1] if labels_2d else [None], tf.int32)),
    )

  return model_fn


def _np_logits(weights, x, batch_norm):
  if batch_norm:
    gamma, beta, kernel, bias = weights.trainable
    mean, var = weights.non_trainable
    x = (x - mean) / np.sqrt(var + 1e-3) * gamma + beta  # Keras' epsilon.
  else:
    kernel, bias = weights.trainable
  return x @ kernel + bias


class EvaluationTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('uneven_batches', False, 3, False),
      ('one_batch', False, 32, False),
      ('labels_2d', False, 4, True),
      ('batch_norm_statistics', True, 3, False),
  )
  def test_matches_numpy(self, batch_norm, batch_size, labels_2d):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, _F)).astype(np.float32)
    y = rng.integers(0, _L, size=10).astype(np.int32)
    trainable = [rng.normal(size=(_F, _L)), rng.normal(size=_L)]
    non_trainable = []
    if batch_norm:
      trainable = [rng.uniform(0.5, 2, _F), rng.normal(size=_F)] + trainable
      non_trainable = [rng.normal(size=_F), rng.uniform(0.5, 2, _F)]
    weights = tff.learning.models.ModelWeights(
        trainable=[w.astype(np.float32) for w in trainable],
        non_trainable=[w.astype(np.float32) for w in non_trainable])
    labels = y[:, None] if labels_2d else y
    dataset = tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(x=x, y=labels)).batch(batch_size)

    result = evaluation.build_evaluator(
        _model_fn(batch_norm, labels_2d))(weights, dataset)

    z = _np_logits(weights, x.astype(np.float64), batch_norm)
    p = tiny.np_softmax(z)
    self.assertEqual(result['num_examples'], 10)
    self.assertAllClose(result['accuracy'], np.mean(z.argmax(axis=1) == y))
    self.assertAllClose(result['loss'],
                        -np.mean(np.log(p[np.arange(10), y])), rtol=1e-5)
    # Neither trivially right nor trivially wrong on these numbers.
    self.assertBetween(result['accuracy'], 0.05, 0.95)

  def test_empty_dataset_is_an_error(self):
    evaluate = evaluation.build_evaluator(tiny.model_fn)
    weights = tff.learning.models.ModelWeights(
        trainable=[np.zeros((_F, _L), np.float32), np.zeros(_L, np.float32)],
        non_trainable=[])
    x, y = tiny.client_arrays([0])[0]
    with self.assertRaisesRegex(ValueError, 'evaluation dataset is empty'):
      evaluate(weights, tiny.datasets([(x, y)], batch_size=4)[0])


if __name__ == '__main__':
  tf.test.main()
