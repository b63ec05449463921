"""FedAD: the fused logits and attention maps by hand in numpy, heterogeneous
attention grids, dropout, a model without a feature map."""

import collections

import numpy as np
import tensorflow as tf

import tiny
from tff_kd import algorithms
from tff_kd import server_distillation

L = tiny.NUM_CLASSES


def _np_outputs(params, x):
  """Logits and attention maps of `tiny.attention_model_fn` (no pooling)."""
  conv_kernel, conv_bias, kernel, bias = params
  features = x[:, :, None] * conv_kernel[0, 0] + conv_bias
  maps = np.mean(features**2, axis=-1)
  return (features.reshape(len(x), -1) @ kernel + bias,
          maps / np.linalg.norm(maps, axis=1, keepdims=True))


class FedADTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.public = np.random.default_rng(9).normal(
        size=(5, tiny.NUM_FEATURES)).astype(np.float32)

  def test_distills_toward_the_mean_logits_and_attention_maps(self):
    arrays = tiny.client_arrays([9, 12, 7], seed=3)
    datasets = tiny.datasets(arrays, batch_size=4)
    ids = ['a', 'b', 'c']
    beta = 2.0
    # One public input: every distillation minibatch is that input, so the
    # first step's loss is a function of the fused targets alone.
    process = algorithms.build_fedad(
        {'model': tiny.attention_model_fn}, tiny.sgd(0.2),
        client_prototypes={c: 'model' for c in ids},
        public_inputs=self.public[:1], attention_weight=beta,
        server_distillation=server_distillation.DistillationConfig(
            steps=3, batch_size=1))
    state = process.initialize()
    output = process.next(state, list(zip(ids, datasets)))
    outputs = [_np_outputs(output.state['clients'][c]['model'].trainable,
                           self.public[:1].astype(np.float64)) for c in ids]
    teacher = np.mean([z for z, _ in outputs], axis=0)
    target = np.mean([a for _, a in outputs], axis=0)
    logits, maps = _np_outputs(state['server']['model'].trainable,
                               self.public[:1].astype(np.float64))
    q_t, q_s = tiny.np_softmax(teacher), tiny.np_softmax(logits)
    expected = np.sum(q_t * np.log(q_t / q_s)) + beta * np.sum(
        (maps - target)**2)
    metrics = output.metrics['server']
    self.assertEqual(metrics['steps'], 3)
    self.assertAllClose(metrics['loss_first'], expected, rtol=1e-4)
    self.assertEqual(output.metrics['fusion']['logits']['fused_clients'], 3)
    self.assertEqual(output.metrics['fusion']['attention']['fused_clients'], 3)

  def test_heterogeneous_grids_dropout_and_bytes(self):
    arrays = tiny.client_arrays([9, 12, 7, 5], seed=4)
    datasets = tiny.datasets(arrays, batch_size=4)
    ids = ['0', '1', '2', '3']
    process = algorithms.build_fedad(
        {'conv': tiny.attention_model_fn,
         'pooled': lambda: tiny.attention_model_fn(pool=True)},
        tiny.sgd(0.2),
        client_prototypes=dict(zip(ids, ['conv', 'pooled', 'conv', 'pooled'])),
        public_inputs=self.public,
        server_distillation=server_distillation.DistillationConfig(
            steps=10, batch_size=2))
    initial, state, output = tiny.two_rounds_third_client_dropping_out(
        process, ids, datasets)
    tiny.check_client_states(self, initial, state, changed=('0', '1'))
    self.assertFalse(np.array_equal(
        state['server']['model'].trainable[2],
        initial['server']['model'].trainable[2]))
    # Attention maps travel on the server model's grid: 4 x 1 (the pooled
    # prototype's 2 x 1 maps are resized).
    r = len(self.public)
    self.assertEqual(
        output.metrics['client_work']['communication'],
        collections.OrderedDict(
            bytes_uploaded=3 * (r * L * 4 + r * 4 + r * 4 * 4 + r * 4),
            bytes_downloaded=0,
            bytes_uploaded_per_client=r * L * 4 + r * 4 + r * 4 * 4 + r * 4,
            bytes_downloaded_per_client=0))
    self.assertEqual(output.metrics['fusion']['logits']['fused_clients'], 3)

  def test_a_model_without_feature_map_is_named(self):
    with self.assertRaisesRegex(
        ValueError, "FedAD \\(prototype 'mlp'\\) needs .*'feature_map'"):
      algorithms.build_fedad(
          {'conv': tiny.attention_model_fn, 'mlp': tiny.mlp_model_fn},
          tiny.sgd(), client_prototypes={'a': 'conv'},
          public_inputs=self.public,
          server_distillation=server_distillation.DistillationConfig(
              steps=1, batch_size=2))


if __name__ == '__main__':
  tf.test.main()
