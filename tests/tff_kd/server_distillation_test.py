"""Server distillation: one Adam step by hand (with FedAD's attention term
too), epochs of batches (shuffled or in order) with a constant learning rate
and optional clipping against numpy Adam, plain SGD against numpy, the KL
falls, early stopping, FedDF's batch-scaled noise."""

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import server_distillation


def _run(weights, inputs, teacher, validation=None, max_steps=1000,
         model_fn=tiny.model_fn, attention_targets=None, **kwargs):
  """Runs the distillation in a TFF computation, as the algorithms do."""
  weights_type = tff.types.tensorflow_to_type(
      tf.nest.map_structure(lambda a: tf.TensorSpec(a.shape, a.dtype), weights))

  @tff.tensorflow.computation(weights_type)
  def distill(start):
    attention = {k: kwargs.pop(k) for k in ('attention_weight',
                                            'attention_grid') if k in kwargs}
    fn = server_distillation.build_server_distillation(
        model_fn(), server_distillation.DistillationConfig(**kwargs),
        **attention)
    return fn(start, inputs, teacher, validation, tf.constant([0, 7]),
              tf.constant(max_steps), attention_targets=attention_targets)

  return distill(weights)


def _np_attention_loss(params, x, teacher, target, beta):
  """KL + beta ||a_S - target||^2 of `tiny.attention_model_fn`, in numpy."""
  conv_kernel, conv_bias, kernel, bias = params
  features = x[:, :, None] * conv_kernel[0, 0] + conv_bias  # [B, 4, 2]
  z = features.reshape(len(x), -1) @ kernel + bias
  q_t, q_s = tiny.np_softmax(teacher), tiny.np_softmax(z)
  kl = np.sum(q_t * (np.log(q_t) - np.log(q_s)), axis=1)
  maps = np.mean(features**2, axis=-1)
  maps /= np.linalg.norm(maps, axis=1, keepdims=True)
  return np.mean(kl + beta * np.sum((maps - target)**2, axis=1))


def _np_adam(params, batches, x, teacher, lr, clip_norm):
  """`tiny.np_adam` on the KL of the tiny softmax regression, over the given
  batches, constant lr."""

  def gradients(step, params):
    index = batches[step]
    kernel, bias = params
    dz = (tiny.np_softmax(x[index] @ kernel + bias)
          - tiny.np_softmax(teacher[index])) / len(index)
    return [x[index].T @ dz, dz.sum(axis=0)]

  return tiny.np_adam(params, gradients, [lr] * len(batches), clip_norm)


def _initial_weights(model_fn=tiny.model_fn):
  with tf.Graph().as_default():
    weights_type = tff.learning.models.weights_type_from_model(model_fn())
  rng = np.random.default_rng(0)
  return tff.learning.models.ModelWeights(
      trainable=[rng.normal(size=t.shape).astype(np.float32)
                 for t in weights_type.trainable],
      non_trainable=[],
  )


class ServerDistillationTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(1)
    self.inputs = rng.normal(size=(8, tiny.NUM_FEATURES)).astype(np.float32)
    self.teacher = 3 * rng.normal(size=(8, tiny.NUM_CLASSES)).astype(np.float32)
    self.weights = _initial_weights()

  def _kl(self, weights):
    kernel, bias = weights.trainable
    q_t = tiny.np_softmax(self.teacher)
    q_s = tiny.np_softmax(self.inputs @ kernel + bias)
    return np.mean(np.sum(q_t * (np.log(q_t) - np.log(q_s)), axis=1))

  def test_one_adam_step_matches_a_hand_computation(self):
    x, t = self.inputs[:1], self.teacher[:1]
    kernel, bias = self.weights.trainable
    # KL(q_T || q_S) of a softmax regression: d/dz = q_S - q_T (tau = 1).
    dz = tiny.np_softmax(x @ kernel + bias) - tiny.np_softmax(t)
    grad_kernel, grad_bias = x.T @ dz, dz[0]
    # Adam's first step moves each weight by lr * g / (|g| + eps').
    lr = 0.01
    result, metrics = _run(self.weights, x, t, steps=1, batch_size=4,
                           learning_rate=lr)
    self.assertEqual(metrics['steps'], 1)
    self.assertAllClose(result.trainable[0],
                        kernel - lr * np.sign(grad_kernel), atol=1e-5)
    self.assertAllClose(result.trainable[1],
                        bias - lr * np.sign(grad_bias), atol=1e-5)
    self.assertAllClose(metrics['loss_first'],
                        np.sum(tiny.np_softmax(t) * (
                            np.log(tiny.np_softmax(t))
                            - np.log(tiny.np_softmax(x @ kernel + bias)))),
                        rtol=1e-5)

  def test_one_adam_step_with_attention_matches_a_hand_computation(self):
    weights = _initial_weights(tiny.attention_model_fn)
    x, t = self.inputs[:1].astype(np.float64), self.teacher[:1]
    target = np.abs(np.random.default_rng(2).normal(size=(1, 4)))
    target /= np.linalg.norm(target)
    beta, lr = 3.0, 0.01
    params = [np.array(w, np.float64) for w in weights.trainable]
    loss = _np_attention_loss(params, x, t, target, beta)
    # Central differences, clipped to global norm 5. Adam's first step (TFF's:
    # bias correction in the learning rate, eps = 1e-7) moves a weight by
    # lr * g / (|g| + eps / sqrt(1 - beta_2)).
    grads = []
    for i, p in enumerate(params):
      grad = np.zeros_like(p)
      for j in np.ndindex(p.shape):
        shifted = [q.copy() for q in params]
        shifted[i][j] += 1e-6
        up = _np_attention_loss(shifted, x, t, target, beta)
        shifted[i][j] -= 2e-6
        down = _np_attention_loss(shifted, x, t, target, beta)
        grad[j] = (up - down) / 2e-6
      grads.append(grad)
    scale = min(1.0, 5.0 / np.sqrt(sum(np.sum(g**2) for g in grads)))
    eps = 1e-7 / np.sqrt(1 - 0.999)
    expected = [p - lr * scale * g / (scale * np.abs(g) + eps)
                for p, g in zip(params, grads)]
    result, metrics = _run(
        weights, self.inputs[:1], t, model_fn=tiny.attention_model_fn,
        attention_targets=target.astype(np.float32), steps=1, batch_size=4,
        learning_rate=lr, attention_weight=beta)
    self.assertAllClose(metrics['loss_first'], loss, rtol=1e-4)
    for got, want in zip(result.trainable, expected):
      self.assertAllClose(got, want, atol=1e-5)

  def test_distillation_lowers_the_kl_to_the_teacher(self):
    before = self._kl(self.weights)
    result, metrics = _run(self.weights, self.inputs, self.teacher, steps=300,
                           batch_size=4, learning_rate=0.05)
    self.assertEqual(metrics['steps'], 300)
    self.assertLess(self._kl(result), 0.3 * before)
    self.assertLess(metrics['loss_last'], metrics['loss_first'])

  def test_zero_max_steps_returns_the_start(self):
    result, metrics = _run(self.weights, self.inputs, self.teacher,
                           max_steps=0, steps=50, batch_size=4)
    self.assertEqual(metrics['steps'], 0)
    for a, b in zip(result.trainable, self.weights.trainable):
      self.assertAllEqual(a, b)

  def test_early_stopping_keeps_the_best_weights(self):
    # Validation labels are the start model's own predictions (accuracy 1),
    # so distilling toward another teacher can only lose: training stops
    # after `patience` evaluations and the start weights are kept.
    kernel, bias = self.weights.trainable
    labels = np.argmax(self.inputs @ kernel + bias, axis=1).astype(np.int32)
    teacher = -10.0 * np.eye(tiny.NUM_CLASSES, dtype=np.float32)[labels]
    result, metrics = _run(self.weights, self.inputs, teacher,
                           validation=(self.inputs, labels), steps=500,
                           batch_size=4, learning_rate=0.05, eval_every=5,
                           patience=3)
    self.assertEqual(metrics['steps'], 15)
    self.assertEqual(metrics['validation_before'], 1.0)
    self.assertEqual(metrics['validation_best'], 1.0)
    for a, b in zip(result.trainable, self.weights.trainable):
      self.assertAllEqual(a, b)

  def test_ordered_epochs_constant_rate_and_clipping_match_numpy_adam(self):
    # 5 inputs, batches of 3: an epoch is [0, 3) then the smaller [3, 5).
    x, teacher = 10 * self.inputs[:5], self.teacher[:5]
    batches = [np.arange(3), np.arange(3, 5)] * 2
    for clip_norm in (None, 1.0):
      result, metrics = _run(self.weights, x, teacher, steps=4, batch_size=3,
                             learning_rate=0.01, schedule='constant',
                             clip_norm=clip_norm, sampling='ordered')
      self.assertEqual(metrics['steps'], 4)
      self.assertAllClose(
          result.trainable,
          _np_adam(self.weights.trainable, batches, x, teacher, 0.01,
                   clip_norm), atol=1e-5)

  def test_sgd_epochs_match_numpy_sgd(self):
    # DS-FL's server model distilled as its clients: plain SGD, constant.
    x, teacher = self.inputs[:5], self.teacher[:5]
    kernel, bias = [np.array(w, np.float64) for w in self.weights.trainable]
    for index in [np.arange(3), np.arange(3, 5)] * 2:
      dz = (tiny.np_softmax(x[index] @ kernel + bias)
            - tiny.np_softmax(teacher[index])) / len(index)
      kernel, bias = kernel - 0.5 * x[index].T @ dz, bias - 0.5 * dz.sum(0)
    result, metrics = _run(self.weights, x, teacher, steps=4, batch_size=3,
                           learning_rate=0.5, schedule='constant',
                           clip_norm=None, sampling='ordered',
                           optimizer='sgd')
    self.assertEqual(metrics['steps'], 4)
    self.assertAllClose(result.trainable, [kernel, bias], atol=1e-5)

  def test_shuffled_epochs_are_fresh_permutations(self):
    x, teacher = self.inputs[:5], self.teacher[:5]
    seed = tf.constant([0, 7])  # `_run`'s.
    batches = []
    for epoch in range(3):
      order = tf.argsort(tf.random.stateless_uniform(
          [5], tf.random.experimental.stateless_fold_in(seed, epoch))).numpy()
      batches += [order[:3], order[3:]]
    self.assertNotAllEqual(batches[0], batches[2])
    result, _ = _run(self.weights, x, teacher, steps=6, batch_size=3,
                     learning_rate=0.01, schedule='constant', clip_norm=None,
                     sampling='shuffled')
    self.assertAllClose(
        result.trainable,
        _np_adam(self.weights.trainable, batches, x, teacher, 0.01, None),
        atol=1e-5)

  def test_fewer_inputs_than_a_batch_make_one_batch_of_all(self):
    x, teacher = self.inputs[:2], self.teacher[:2]
    result, _ = _run(self.weights, x, teacher, steps=2, batch_size=128,
                     learning_rate=0.01, schedule='constant', clip_norm=None,
                     sampling='shuffled')
    self.assertAllClose(
        result.trainable,
        _np_adam(self.weights.trainable, [np.arange(2)] * 2, x, teacher, 0.01,
                 None), atol=1e-5)

  def test_noise_inputs_are_min_max_scaled_per_batch(self):
    seed = tf.constant([3, 9])
    noise = server_distillation.noise_inputs(
        seed, num_batches=3, batch_size=4, input_shape=(2, 5, 1)).numpy()
    self.assertEqual(noise.shape, (12, 2, 5, 1))
    raw = tf.random.stateless_normal([3, 4 * 10], seed).numpy()
    for i in range(3):
      batch = raw[i]
      expected = (batch - batch.min()) / (batch.max() - batch.min())
      self.assertAllClose(noise[4 * i:4 * (i + 1)],
                          expected.reshape(4, 2, 5, 1), atol=1e-6)
      # Over the whole batch: the batch's min and max are 0 and 1, not each
      # input's.
      self.assertAllClose([noise[4 * i:4 * (i + 1)].min(),
                           noise[4 * i:4 * (i + 1)].max()], [0.0, 1.0])
    self.assertGreater(noise.reshape(12, -1).min(axis=1).max(), 0.0)
    self.assertNotAllClose(
        noise, server_distillation.noise_inputs(
            tf.constant([3, 10]), num_batches=3, batch_size=4,
            input_shape=(2, 5, 1)))

  def test_rejects_bad_arguments(self):
    config = server_distillation.DistillationConfig
    with self.assertRaisesRegex(ValueError, 'batch_size must be >= 1; got 0'):
      config(steps=1, batch_size=0)
    with self.assertRaisesRegex(ValueError, 'temperature must be > 0'):
      config(steps=1, batch_size=1, temperature=0.0)
    with self.assertRaisesRegex(ValueError, "schedule must be one of .*'step'"):
      config(steps=1, batch_size=1, schedule='step')
    with self.assertRaisesRegex(ValueError, "sampling must be one of .*'x'"):
      config(steps=1, batch_size=1, sampling='x')
    with self.assertRaisesRegex(ValueError, 'clip_norm must be > 0 or None; '
                                'got 0'):
      config(steps=1, batch_size=1, clip_norm=0)
    with tf.Graph().as_default():
      model = tiny.model_fn()
      with self.assertRaisesRegex(TypeError, 'must be a DistillationConfig'):
        server_distillation.build_server_distillation(
            model, dict(steps=1, batch_size=1))
      with self.assertRaisesRegex(ValueError, 'attention_weight must be >= 0'):
        server_distillation.build_server_distillation(
            model, config(steps=1, batch_size=1), attention_weight=-1.0)
    with self.assertRaisesRegex(ValueError, 'num_batches must be >= 1; got 0'):
      server_distillation.noise_inputs(tf.constant([0, 0]), 0, 4, (3,))


if __name__ == '__main__':
  tf.test.main()
