"""FedGen's generator and losses against numpy; the generator learns."""

import collections

import numpy as np
import tensorflow as tf

from tff_kd import generator


def _np_softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _np_generate(g, noise, labels, num_classes, training):
  """G(z, y) as the official PyTorch Generator in train() / eval() mode."""
  p = {k: v.numpy() for k, v in g['params'].items()}
  h = np.concatenate([noise, np.eye(num_classes)[labels]], 1) @ p['w1']
  h += p['b1']
  if training:
    mean, var = h.mean(0), h.var(0)  # Biased, as BatchNorm1d normalizes.
  else:
    mean, var = g['running_mean'].numpy(), g['running_var'].numpy()
  h = (h - mean) / np.sqrt(var + 1e-5) * p['gamma'] + p['beta']
  return np.maximum(h, 0) @ p['w2'] + p['b2']


class GeneratorTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.generator = generator.init_generator(
        noise_dim=4, num_classes=3, hidden=8, feature_dim=5, seed=0
    )
    # Running statistics as after some training, so eval mode is not the
    # identity normalization.
    self.generator['running_mean'] = tf.constant(
        rng.normal(size=8), tf.float32)
    self.generator['running_var'] = tf.constant(
        rng.uniform(0.5, 2.0, size=8), tf.float32)
    self.noise = rng.random(size=(6, 4)).astype(np.float32)
    self.labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
    self.head = tf.keras.layers.Dense(
        3, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=0))
    self.head.build([None, 5])

  def test_init_has_pytorch_running_statistics(self):
    g = generator.init_generator(
        noise_dim=4, num_classes=3, hidden=8, feature_dim=5, seed=0
    )
    self.assertAllEqual(g['running_mean'], np.zeros(8))
    self.assertAllEqual(g['running_var'], np.ones(8))

  def test_generate_matches_numpy_in_training_and_eval_mode(self):
    for training in (True, False):
      self.assertAllClose(
          generator.generate(self.generator, self.noise,
                             tf.one_hot(self.labels, 3), training=training),
          _np_generate(self.generator, self.noise, self.labels, 3, training),
          rtol=1e-4, atol=1e-5,
      )

  def test_single_label_batch_depends_on_the_label_in_eval_mode(self):
    zeros, twos = np.zeros(6, np.int32), np.full(6, 2, np.int32)
    features = {
        (label, training): generator.generate(
            self.generator, self.noise, tf.one_hot(labels, 3),
            training=training).numpy()
        for label, labels in ((0, zeros), (2, twos))
        for training in (True, False)
    }
    # Batch statistics remove the constant one-hot column: the label is lost.
    self.assertAllClose(features[0, True], features[2, True], atol=1e-5)
    # The running statistics (the clients' path) keep it.
    self.assertAllClose(
        features[2, False], _np_generate(self.generator, self.noise, twos, 3,
                                         training=False),
        rtol=1e-4, atol=1e-5)
    self.assertGreater(np.abs(features[0, False] - features[2, False]).max(),
                       0.1)

  def test_update_statistics_matches_pytorch_formula(self):
    g = self.generator
    mean, var = g['running_mean'].numpy(), g['running_var'].numpy()
    p = {k: v.numpy() for k, v in g['params'].items()}
    rng = np.random.default_rng(5)
    for _ in range(2):
      noise = rng.random(size=(6, 4)).astype(np.float32)
      labels = rng.integers(0, 3, size=6)
      h = np.concatenate([noise, np.eye(3)[labels]], 1) @ p['w1'] + p['b1']
      mean = 0.9 * mean + 0.1 * h.mean(0)
      var = 0.9 * var + 0.1 * h.var(0, ddof=1)  # Unbiased.
      g = generator.update_statistics(g, noise, tf.one_hot(labels, 3))
    self.assertAllClose(g['running_mean'], mean, rtol=1e-5, atol=1e-6)
    self.assertAllClose(g['running_var'], var, rtol=1e-5)
    for name in p:  # The parameters are untouched.
      self.assertAllEqual(g['params'][name], p[name])

  def test_diversity_loss_matches_numpy(self):
    features = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    noise_d = ((self.noise[:, None] - self.noise[None]) ** 2).mean(-1)
    feature_d = np.abs(features[:, None] - features[None]).mean(-1)
    self.assertAllClose(
        generator.diversity_loss(self.noise, features),
        np.exp(-(noise_d * feature_d).mean()), rtol=1e-5,
    )

  def test_label_weights_and_qualified_labels_match_numpy(self):
    # Raw label counts of three clients this round; a fourth slot is absent.
    raw = np.array([[4, 0, 0, 2, 0],
                    [1, 0, 0, 0, 0],
                    [0, 3, 0, 0, 0]], np.float32)
    # Uploaded: 1 + raw (the official clean_up_counts), zeros when absent.
    counts = np.concatenate([1 + raw, np.zeros((1, 5), np.float32)])
    expected = counts / counts.sum(0, keepdims=True)
    self.assertAllClose(generator.label_weights(counts), expected)
    self.assertAllClose(expected[:, 2], [1 / 3, 1 / 3, 1 / 3, 0])
    # Qualified: some client has more than MIN_SAMPLES_PER_LABEL = 1, i.e.
    # trained on the label this round.
    qualified = np.flatnonzero(counts.max(0) > 1)
    self.assertAllEqual(qualified, [0, 1, 3])
    labels = generator.sample_labels(counts, 3000, tf.constant([1, 2])).numpy()
    self.assertAllEqual(np.unique(labels), qualified)
    self.assertAllClose(np.bincount(labels, minlength=5)[qualified] / 3000,
                        np.full(3, 1 / 3), atol=0.03)

  def test_ensemble_loss_matches_numpy(self):
    rng = np.random.default_rng(2)
    kernels = rng.normal(size=(3, 5, 3)).astype(np.float32)
    biases = rng.normal(size=(3, 3)).astype(np.float32)
    kernels[2], biases[2] = 0, 0  # An absent client.
    counts = np.array([[6, 1, 2], [6, 4, 1], [0, 0, 0]], np.float32)
    features = _np_generate(self.generator, self.noise, self.labels, 3,
                            training=True)
    share = counts / counts.sum(0, keepdims=True)
    teacher = official = 0.0
    for k in range(3):
      probs = _np_softmax(features @ kernels[k] + biases[k])
      ce = -np.log(probs[np.arange(6), self.labels])
      teacher += np.mean(share[k, self.labels] * ce)
      # The official torch.mean(ce[B] * weight[B, 1]): a [B, B] product.
      official += np.mean(ce[None, :] * share[k, self.labels][:, None])
    noise_d = ((self.noise[:, None] - self.noise[None]) ** 2).mean(-1)
    feature_d = np.abs(features[:, None] - features[None]).mean(-1)
    diversity = 0.5 * np.exp(-(noise_d * feature_d).mean())
    self.assertAllClose(
        generator.ensemble_loss(self.generator, kernels, biases, counts,
                                self.labels, self.noise, 0.5),
        teacher + diversity, rtol=1e-4,
    )
    self.assertAllClose(
        generator.ensemble_loss(self.generator, kernels, biases, counts,
                                self.labels, self.noise, 0.5, 'official'),
        official + diversity, rtol=1e-4,
    )
    self.assertNotAllClose(teacher, official)
    with self.assertRaisesRegex(ValueError, 'teacher_loss.*mean'):
      generator.ensemble_loss(self.generator, kernels, biases, counts,
                              self.labels, self.noise, 0.5, 'mean')

  def test_training_lowers_the_loss_and_heads_recognize_the_samples(self):
    rng = np.random.default_rng(3)
    feature_dim, num_classes = 16, 4
    g = generator.init_generator(
        noise_dim=8, num_classes=num_classes, hidden=32,
        feature_dim=feature_dim, seed=1,
    )
    kernels = rng.normal(size=(3, feature_dim, num_classes)).astype(np.float32)
    biases = np.zeros((3, num_classes), np.float32)
    # Smoothed counts; every label trained on by some client.
    counts = 1 + rng.integers(0, 20, size=(3, num_classes)).astype(np.float32)
    counts[0] += 1
    import tensorflow_federated as tff  # Adam, as the server uses it.
    adam = tff.learning.optimizers.build_adam(learning_rate=1e-2)
    state = adam.initialize(
        tuple(tf.TensorSpec(v.shape, v.dtype)
              for v in g['params'].values())
    )
    trained, _, losses = tf.function(generator.train_generator)(
        g, adam, state, kernels, biases, counts, steps=100,
        batch_size=32, noise_dim=8, weight_decay=0.0, diversity_weight=1.0,
        seed=tf.constant(0),
    )
    losses = losses.numpy()
    self.assertLess(losses[-10:].mean(), 0.5 * losses[:10].mean())
    self.assertNotAllClose(trained['running_mean'], g['running_mean'])
    self.assertNotAllClose(trained['running_var'], g['running_var'])
    labels = np.arange(num_classes).repeat(25).astype(np.int32)
    noise = rng.random(size=(len(labels), 8)).astype(np.float32)
    for training in (True, False):  # The server's and the clients' mode.
      features = generator.generate(
          trained, noise, tf.one_hot(labels, num_classes), training=training
      ).numpy()
      for k in range(3):
        predicted = np.argmax(features @ kernels[k] + biases[k], axis=1)
        self.assertGreater(np.mean(predicted == labels), 0.5)  # Chance: 0.25.

  def _client_loss(self, counter, alpha=1.0, beta=1.0):
    return generator.make_client_loss(
        self.head, counter, num_classes=3, noise_dim=4, alpha=alpha,
        beta=beta, decay=0.98,
    )

  def test_client_loss_is_off_in_round_zero_and_on_after(self):
    counter = tf.Variable(0)
    loss_fn = self._client_loss(counter)
    extra = collections.OrderedDict(
        generator=self.generator, round=tf.constant(0)
    )
    logits = tf.constant(np.random.default_rng(4).normal(size=(6, 3)),
                         tf.float32)
    self.assertEqual(float(loss_fn(self.labels, logits, None, extra)), 0.0)
    extra['round'] = tf.constant(3)
    self.assertGreater(float(loss_fn(self.labels, logits, None, extra)), 0.0)
    self.assertEqual(int(counter.numpy()), 2)

  def test_client_loss_matches_numpy(self):
    counter = tf.Variable(0)
    loss_fn = self._client_loss(counter, alpha=2.0, beta=3.0)
    kernel, bias = self.head.kernel.numpy(), self.head.bias.numpy()
    logits = np.random.default_rng(6).normal(size=(6, 3)).astype(np.float32)
    extra = collections.OrderedDict(
        generator=self.generator, round=tf.constant(3)
    )
    loss = loss_fn(self.labels, logits, None, extra).numpy()
    # The draws of batch 1 of round 3 (uniform noise, uniform labels).
    seeds = generator.client_seeds(tf.constant(3), tf.constant(1), logits)
    noise = tf.random.stateless_uniform([6, 4], seeds[0]).numpy()
    sampled = tf.random.stateless_uniform(
        [6], seeds[1], maxval=3, dtype=tf.int32).numpy()
    sampled_noise = tf.random.stateless_uniform([6, 4], seeds[2]).numpy()
    self.assertTrue(((noise >= 0) & (noise < 1)).all())
    # Eval mode: the running statistics.
    target = _np_softmax(_np_generate(
        self.generator, noise, self.labels, 3, training=False) @ kernel + bias)
    log_student = np.log(_np_softmax(logits))
    kl = np.mean(np.sum(target * (np.log(target) - log_student), axis=1))
    probs = _np_softmax(_np_generate(
        self.generator, sampled_noise, sampled, 3, training=False)
                        @ kernel + bias)
    ce = -np.mean(np.log(probs[np.arange(6), sampled]))
    decay = 0.98**3
    self.assertAllClose(loss, 2.0 * decay * ce + 3.0 * decay * kl, rtol=1e-4)

  def test_client_loss_with_every_ablation_matches_numpy(self):
    loss_fn = generator.make_client_loss(
        self.head, tf.Variable(0), num_classes=3, noise_dim=4, alpha=2.0,
        beta=3.0, decay=0.98, noise='normal', client_batchnorm='batch',
        client_draws='shared', sampled_labels='label_distribution')
    kernel, bias = self.head.kernel.numpy(), self.head.bias.numpy()
    logits = np.random.default_rng(6).normal(size=(6, 3)).astype(np.float32)
    probs = np.array([0.7, 0.0, 0.3], np.float32)
    extra = collections.OrderedDict(
        generator=self.generator, round=tf.constant(3),
        label_probs=tf.constant(probs))
    loss = loss_fn(self.labels, logits, None, extra).numpy()
    # Shared draws: the seeds of (round 3, batch 1) alone.
    seeds = tf.random.experimental.stateless_split(
        tf.constant([3, 1], tf.int64), 3)
    noise = tf.random.stateless_normal([6, 4], seeds[0]).numpy()
    with np.errstate(divide='ignore'):  # log(0) = -inf, as tf.math.log.
      log_probs = np.log(probs)[np.newaxis]
    sampled = tf.random.stateless_categorical(
        log_probs, 6, seeds[1])[0].numpy()
    sampled_noise = tf.random.stateless_normal([6, 4], seeds[2]).numpy()
    self.assertLess(noise.min(), 0.0)  # Normal, not uniform.
    self.assertNotIn(1, sampled)  # Label 1 has probability 0.
    # Batch statistics instead of the running ones.
    target = _np_softmax(_np_generate(
        self.generator, noise, self.labels, 3, training=True) @ kernel + bias)
    kl = np.mean(np.sum(
        target * (np.log(target) - np.log(_np_softmax(logits))), axis=1))
    sampled_probs = _np_softmax(_np_generate(
        self.generator, sampled_noise, sampled, 3, training=True)
                                @ kernel + bias)
    ce = -np.mean(np.log(sampled_probs[np.arange(6), sampled]))
    decay = 0.98**3
    self.assertAllClose(loss, 2.0 * decay * ce + 3.0 * decay * kl, rtol=1e-4)

  def test_unsmoothed_counts_qualify_the_trained_labels(self):
    counts = tf.constant([[0.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    labels = generator.sample_labels(counts, 3000, tf.constant([1, 2]),
                                     smoothing=0.0).numpy()
    self.assertEqual(set(labels), {1, 2})
    # The same counts read as smoothed: only label 1 was trained on.
    labels = generator.sample_labels(counts, 3000, tf.constant([1, 2])).numpy()
    self.assertEqual(set(labels), {1})

  def test_bad_option_names_the_option_and_value(self):
    with self.assertRaisesRegex(ValueError, "noise.*'gaussian'"):
      generator.make_client_loss(self.head, tf.Variable(0), num_classes=3,
                                 noise_dim=4, alpha=1.0, beta=1.0, decay=1.0,
                                 noise='gaussian')

  def test_client_loss_of_a_single_label_batch_depends_on_the_label(self):
    logits = tf.constant(np.random.default_rng(7).normal(size=(6, 3)),
                         tf.float32)
    extra = collections.OrderedDict(
        generator=self.generator, round=tf.constant(3)
    )
    losses = []
    for label in (0, 2):
      counter = tf.Variable(0)  # Same batch number, logits: same noise.
      loss_fn = self._client_loss(counter, alpha=0.0, beta=1.0)
      losses.append(float(loss_fn(np.full(6, label), logits, None, extra)))
    self.assertGreater(abs(losses[0] - losses[1]), 1e-3)

  def test_clients_with_different_data_draw_differently(self):
    rng = np.random.default_rng(8)
    model = tf.keras.layers.Dense(3)
    data_a = rng.normal(size=(6, 7)).astype(np.float32)
    data_b = rng.normal(size=(6, 7)).astype(np.float32)
    logits_a, logits_b = model(data_a), model(data_b)
    round_num = tf.constant(3)

    def noise(logits, batch_number):
      seeds = generator.client_seeds(round_num, tf.constant(batch_number),
                                     logits)
      return tf.random.stateless_uniform([6, 4], seeds[0]).numpy()

    self.assertAllEqual(noise(logits_a, 1), noise(model(data_a), 1))
    self.assertNotAllClose(noise(logits_a, 1), noise(logits_b, 1))
    self.assertNotAllClose(noise(logits_a, 1), noise(logits_a, 2))

    def teacher_loss(logits):
      """The client loss with alpha only: a function of the draws alone."""
      loss_fn = self._client_loss(tf.Variable(0), alpha=1.0, beta=0.0)
      extra = collections.OrderedDict(generator=self.generator,
                                      round=round_num)
      return float(loss_fn(self.labels, logits, None, extra))

    self.assertEqual(teacher_loss(logits_a), teacher_loss(model(data_a)))
    self.assertNotAlmostEqual(teacher_loss(logits_a), teacher_loss(logits_b),
                              places=4)

  def test_shared_draws_are_the_same_for_every_client(self):
    rng = np.random.default_rng(8)
    logits_a, logits_b = (tf.constant(rng.normal(size=(6, 3)), tf.float32)
                          for _ in range(2))
    seeds_a, seeds_b = (generator.client_seeds(tf.constant(3), tf.constant(1),
                                               logits, 'shared')
                        for logits in (logits_a, logits_b))
    self.assertAllEqual(seeds_a, seeds_b)
    self.assertNotAllEqual(seeds_a, generator.client_seeds(
        tf.constant(3), tf.constant(2), logits_a, 'shared'))


if __name__ == '__main__':
  tf.test.main()
