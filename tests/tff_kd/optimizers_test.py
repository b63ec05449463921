"""Optimizers by name: TFF's, PyTorch's coupled weight decay checked against
numpy on a tiny quadratic, the per-round decay, and argument errors."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tff_kd import optimizers


def _run(optimizer, weights, gradients_fn, steps):
  """`steps` steps of `optimizer` from `weights` (a list of arrays)."""
  specs = tuple(tf.TensorSpec(w.shape, tf.float32) for w in weights)
  state = optimizer.initialize(specs)
  weights = [tf.constant(w, tf.float32) for w in weights]
  for _ in range(steps):
    gradients = [tf.constant(g, tf.float32)
                 for g in gradients_fn([w.numpy() for w in weights])]
    state, weights = optimizer.next(state, tuple(weights), tuple(gradients))
    weights = list(weights)
  return [w.numpy() for w in weights]


def _gradient(weights):
  """Of 0.5 * ||w - 1||^2: w - 1."""
  return [w - 1.0 for w in weights]


class OptimizerConfigTest(tf.test.TestCase, parameterized.TestCase):

  def test_sgd_momentum_weight_decay_matches_pytorch_formula(self):
    lr, momentum, decay = 0.1, 0.9, 0.01
    w0 = [np.array([0.5, -2.0, 3.0], np.float32)]
    got = _run(optimizers.OptimizerConfig(
        name='sgd', learning_rate=lr, hparams={'momentum': momentum},
        weight_decay=decay).build(), w0, _gradient, steps=4)
    # PyTorch SGD(momentum, weight_decay, dampening=0): g += wd * w;
    # buf = momentum * buf + g; w -= lr * buf.
    w, buf = w0[0].astype(np.float64), np.zeros(3)
    for _ in range(4):
      g = (w - 1.0) + decay * w
      buf = momentum * buf + g
      w = w - lr * buf
    self.assertAllClose(got[0], w, rtol=1e-5)

  @parameterized.named_parameters(('adam', 'adam'), ('yogi', 'yogi'))
  def test_weight_decay_is_the_optimizer_on_decayed_gradients(self, name):
    w0 = [np.array([0.5, -2.0], np.float32), np.array([[1.0]], np.float32)]
    decay = 0.1
    got = _run(optimizers.OptimizerConfig(
        name=name, learning_rate=0.01, weight_decay=decay).build(),
               w0, _gradient, steps=3)
    want = _run(optimizers.OptimizerConfig(name=name,
                                           learning_rate=0.01).build(),
                w0, lambda ws: [w - 1.0 + decay * w for w in ws], steps=3)
    for g, e in zip(got, want):
      self.assertAllClose(g, e)
    self.assertNotAllClose(got[0], _run(optimizers.OptimizerConfig(
        name=name, learning_rate=0.01).build(), w0, _gradient, steps=3)[0])

  def test_hparams_default_to_tff_and_reach_the_optimizer(self):
    config = optimizers.OptimizerConfig(name='adam', learning_rate=0.5,
                                        hparams={'beta_1': 0.5})
    self.assertEqual(config.all_hparams(),
                     {'beta_1': 0.5, 'beta_2': 0.999, 'epsilon': 1e-7})
    optimizer = config.build()
    hparams = optimizer.get_hparams(optimizer.initialize(
        tf.TensorSpec([2], tf.float32)))
    self.assertAllClose(hparams['beta_1'], 0.5)
    self.assertAllClose(hparams['learning_rate'], 0.5)

  def test_round_decay(self):
    optimizer = optimizers.OptimizerConfig(
        learning_rate=0.1, learning_rate_decay=0.99).build()
    self.assertEqual(optimizers.round_decay(optimizer), 0.99)
    self.assertEqual(optimizers.round_decay(optimizers.OptimizerConfig(
        learning_rate=0.1).build()), 1.0)
    hparams = collections.OrderedDict(learning_rate=0.1)
    self.assertAllClose(optimizers.decayed(hparams, 0.99, 3)['learning_rate'],
                        0.1 * 0.99**3)
    with self.assertRaisesRegex(ValueError, 'FD.*learning_rate_decay=0.99'):
      optimizers.check_no_round_decay(optimizer, 'FD')

  def test_plain_sgd(self):
    self.assertTrue(optimizers.OptimizerConfig(learning_rate=1.0).is_plain_sgd)
    for config in (
        optimizers.OptimizerConfig(learning_rate=1.0,
                                   hparams={'momentum': 0.9}),
        optimizers.OptimizerConfig(learning_rate=1.0, weight_decay=1e-5),
        optimizers.OptimizerConfig(name='adam', learning_rate=1.0)):
      self.assertFalse(config.is_plain_sgd)

  @parameterized.named_parameters(
      ('name', dict(name='lamb', learning_rate=0.1), 'lamb'),
      ('hparam', dict(name='sgd', learning_rate=0.1, hparams={'beta_1': 0.9}),
       'beta_1'),
      ('lr', dict(learning_rate=0.0), 'learning_rate'),
      ('lr_nan', dict(learning_rate=float('nan')), 'learning_rate'),
      ('weight_decay', dict(learning_rate=0.1, weight_decay=-1.0),
       'weight_decay'),
      ('decay', dict(learning_rate=0.1, learning_rate_decay=1.5),
       'learning_rate_decay'),
      ('momentum', dict(learning_rate=0.1, hparams={'momentum': 1.0}),
       'momentum'),
      ('epsilon', dict(name='adam', learning_rate=0.1,
                       hparams={'epsilon': 0.0}), 'epsilon'),
  )
  def test_rejects_bad_arguments(self, kwargs, named):
    with self.assertRaisesRegex(ValueError, named):
      optimizers.OptimizerConfig(**kwargs)


if __name__ == '__main__':
  tf.test.main()
