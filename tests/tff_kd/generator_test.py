"""FedGen's generator and losses against numpy; the generator learns."""

import collections

import numpy as np
import tensorflow as tf

from tff_kd import generator


def _np_softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


class GeneratorTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.params = generator.init_generator(
        noise_dim=4, num_classes=3, hidden=8, feature_dim=5, seed=0
    )
    rng = np.random.default_rng(0)
    self.noise = rng.normal(size=(6, 4)).astype(np.float32)
    self.labels = np.array([0, 1, 2, 0, 1, 2], np.int32)

  def test_generate_matches_numpy(self):
    p = {k: v.numpy() for k, v in self.params.items()}
    h = np.concatenate([self.noise, np.eye(3)[self.labels]], 1) @ p['w1']
    h += p['b1']
    h = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-5) * p['gamma'] + p['beta']
    expected = np.maximum(h, 0) @ p['w2'] + p['b2']
    self.assertAllClose(
        generator.generate(self.params, self.noise,
                           tf.one_hot(self.labels, 3)),
        expected, rtol=1e-4, atol=1e-5,
    )

  def test_diversity_loss_matches_numpy(self):
    features = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    noise_d = ((self.noise[:, None] - self.noise[None]) ** 2).mean(-1)
    feature_d = np.abs(features[:, None] - features[None]).mean(-1)
    self.assertAllClose(
        generator.diversity_loss(self.noise, features),
        np.exp(-(noise_d * feature_d).mean()), rtol=1e-5,
    )

  def test_ensemble_loss_matches_numpy(self):
    rng = np.random.default_rng(2)
    kernels = rng.normal(size=(2, 5, 3)).astype(np.float32)
    biases = rng.normal(size=(2, 3)).astype(np.float32)
    counts = np.array([[5, 0, 1], [5, 3, 0]], np.float32)
    features = generator.generate(
        self.params, self.noise, tf.one_hot(self.labels, 3)
    ).numpy()
    share = counts / counts.sum(0, keepdims=True)
    teacher = 0.0
    for k in range(2):
      probs = _np_softmax(features @ kernels[k] + biases[k])
      ce = -np.log(probs[np.arange(6), self.labels])
      teacher += np.mean(share[k, self.labels] * ce)
    expected = teacher + 0.5 * generator.diversity_loss(
        self.noise, features).numpy()
    self.assertAllClose(
        generator.ensemble_loss(self.params, kernels, biases, counts,
                                self.labels, self.noise, 0.5),
        expected, rtol=1e-4,
    )

  def test_training_lowers_the_loss_and_heads_recognize_the_samples(self):
    rng = np.random.default_rng(3)
    feature_dim, num_classes = 16, 4
    params = generator.init_generator(
        noise_dim=8, num_classes=num_classes, hidden=32,
        feature_dim=feature_dim, seed=1,
    )
    kernels = rng.normal(size=(3, feature_dim, num_classes)).astype(np.float32)
    biases = np.zeros((3, num_classes), np.float32)
    counts = rng.integers(0, 20, size=(3, num_classes)).astype(np.float32)
    counts[:, 0] += 1  # Every label present somewhere.
    counts[0, 1:] += 1
    import tensorflow_federated as tff  # Adam, as the server uses it.
    adam = tff.learning.optimizers.build_adam(learning_rate=1e-2)
    state = adam.initialize(
        tuple(tf.TensorSpec(v.shape, v.dtype) for v in params.values())
    )
    params, _, losses = tf.function(generator.train_generator)(
        params, adam, state, kernels, biases, counts, steps=100,
        batch_size=32, noise_dim=8, weight_decay=0.0, diversity_weight=1.0,
        seed=tf.constant(0),
    )
    losses = losses.numpy()
    self.assertLess(losses[-10:].mean(), 0.5 * losses[:10].mean())
    labels = np.arange(num_classes).repeat(25).astype(np.int32)
    noise = rng.normal(size=(len(labels), 8)).astype(np.float32)
    features = generator.generate(
        params, noise, tf.one_hot(labels, num_classes)
    ).numpy()
    for k in range(3):
      predicted = np.argmax(features @ kernels[k] + biases[k], axis=1)
      self.assertGreater(np.mean(predicted == labels), 0.5)  # Chance: 0.25.

  def test_client_loss_is_off_in_round_zero_and_on_after(self):
    head = tf.keras.layers.Dense(3)
    head.build([None, 5])
    counter = tf.Variable(0)
    loss_fn = generator.make_client_loss(
        head, counter, num_classes=3, noise_dim=4, alpha=1.0, beta=1.0,
        decay=0.98,
    )
    extra = collections.OrderedDict(
        generator=self.params,
        label_probs=tf.constant([0.5, 0.5, 0.0]),
        round=tf.constant(0),
    )
    logits = tf.constant(np.random.default_rng(4).normal(size=(6, 3)),
                         tf.float32)
    self.assertEqual(float(loss_fn(self.labels, logits, None, extra)), 0.0)
    extra['round'] = tf.constant(3)
    self.assertGreater(float(loss_fn(self.labels, logits, None, extra)), 0.0)
    self.assertEqual(int(counter.numpy()), 2)


if __name__ == '__main__':
  tf.test.main()
