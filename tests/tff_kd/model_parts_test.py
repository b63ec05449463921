"""Attention maps vs numpy; bad models and splits get clear errors."""

import numpy as np
import tensorflow as tf

import tiny
from tff_kd import model_parts


class AttentionMapsTest(tf.test.TestCase):

  def test_channel_mean_of_squares_flattened_and_normalized(self):
    features = np.random.default_rng(0).normal(size=(3, 2, 4, 5))
    maps = np.mean(features**2, axis=-1).reshape(3, 8)
    expected = maps / np.linalg.norm(maps, axis=1, keepdims=True)
    self.assertAllClose(
        model_parts.attention_maps(tf.constant(features, tf.float32), (2, 4)),
        expected, atol=1e-6)

  def test_signals_and_resizing_to_another_grid(self):
    features = np.random.default_rng(1).normal(size=(2, 6, 3))
    maps = np.mean(features**2, axis=-1)
    expected = maps / np.linalg.norm(maps, axis=1, keepdims=True)
    self.assertAllClose(
        model_parts.attention_maps(tf.constant(features, tf.float32), (6, 1)),
        expected, atol=1e-6)
    resized = model_parts.attention_maps(
        tf.constant(features, tf.float32), (3, 1))
    self.assertEqual(resized.shape, (2, 3))
    self.assertAllClose(np.linalg.norm(resized, axis=1), np.ones(2), atol=1e-6)
    # Area halving averages neighbouring positions.
    halved = (maps[:, 0::2] + maps[:, 1::2]) / 2
    self.assertAllClose(
        resized, halved / np.linalg.norm(halved, axis=1, keepdims=True),
        atol=1e-5)

  def test_model_without_feature_map_is_named(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(
          ValueError, "FedAD needs .* layer named 'feature_map'.*"
          "Keras model 'sequential.*', which has no such layer"):
        model_parts.logits_and_feature_map(tiny.mlp_model_fn(), 'FedAD')
      self.assertEqual(model_parts.attention_grid(
          tiny.attention_model_fn(pool=True), 'FedAD'), (2, 1))


class CheckValidationTest(tf.test.TestCase):

  def test_converts_dtypes_and_rejects_an_empty_split(self):
    x, y = model_parts.check_validation(([[1, 2]], [np.int64(3)]))
    self.assertEqual((x.dtype, y.dtype), (np.float32, np.int32))
    self.assertAllEqual(x, [[1.0, 2.0]])
    self.assertIsNone(model_parts.check_validation(None))
    with self.assertRaisesRegex(ValueError, 'validation split is empty'):
      model_parts.check_validation((np.zeros((0, 2)), np.zeros(0)))


if __name__ == '__main__':
  tf.test.main()
