"""Models: shapes, layer-name conventions, seeding."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tasks import models

_SHAPES = {'image': (8, 8, 1), 'rgb': (32, 32, 3), 'signal': (40,)}


class ModelsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(name=models.MODEL_NAMES, kind=sorted(_SHAPES))
  def test_outputs_logits_and_names_its_head(self, name, kind):
    shape = _SHAPES[kind]
    model = models.build_keras_model(
        name, input_shape=shape, num_classes=7, seed=0
    )
    logits = model(np.random.default_rng(0).random((3,) + shape, np.float32))
    self.assertEqual(logits.shape, (3, 7))
    self.assertIs(model.layers[-1], model.get_layer('head'))
    # Logits, not probabilities: rows do not sum to one.
    self.assertNotAllClose(tf.reduce_sum(logits, axis=1), np.ones(3))
    if name == 'mlp':
      with self.assertRaises(ValueError):
        model.get_layer('feature_map')
    else:
      rank = len(model.get_layer('feature_map').output.shape)
      self.assertEqual(rank, 3 if kind == 'signal' else 4)

  def test_latent32_feeds_the_head_a_linear_32_d_layer(self):
    model = models.build_keras_model(
        'cnn_latent32', input_shape=(40,), num_classes=10, seed=0)
    latent = model.get_layer('latent')
    self.assertIs(model.get_layer('head').input, latent.output)
    self.assertEqual(latent.output.shape[-1], 32)
    self.assertIs(latent.activation, tf.keras.activations.linear)

  @parameterized.parameters(*models.MODEL_NAMES)
  def test_same_seed_same_weights(self, name):
    build = lambda seed: models.build_keras_model(
        name, input_shape=(8, 8, 1), num_classes=10, seed=seed
    )
    a, b, c = build(1), build(1), build(2)
    for x, y in zip(a.get_weights(), b.get_weights()):
      self.assertAllEqual(x, y)
    self.assertNotAllClose(a.get_weights()[0], c.get_weights()[0])

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "Unknown model 'vgg'"):
      models.build_keras_model('vgg', input_shape=(8, 8, 1), num_classes=10,
                               seed=0)
    with self.assertRaisesRegex(ValueError, r'input_shape must be .* got \(8, 8\)'):
      models.build_keras_model('cnn', input_shape=(8, 8), num_classes=10,
                               seed=0)


if __name__ == '__main__':
  tf.test.main()
