"""LogitFusionFactory: AVGLOGITS, certainty-weighted and per-label fusion vs numpy;
its sum factory (TFF's sum by default, bit for bit) and fixed denominator."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd.aggregators import logit_fusion

R, C = 5, 3


def _process():
  value_type = tff.StructWithPythonType(
      collections.OrderedDict(
          logits=tff.TensorType(np.float32, [R, C]),
          weights=tff.TensorType(np.float32, [R]),
      ),
      collections.OrderedDict,
  )
  return logit_fusion.LogitFusionFactory().create(value_type)


def _values(logits, weights):
  return [collections.OrderedDict(logits=z.astype(np.float32),
                                  weights=w.astype(np.float32))
          for z, w in zip(logits, weights)]


class LogitFusionTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.logits = rng.normal(size=(4, R, C))

  def test_unit_weights_give_the_mean_of_client_logits(self):
    process = _process()
    output = process.next(process.initialize(),
                          _values(self.logits, np.ones((4, R))))
    self.assertAllClose(output.result['logits'], self.logits.mean(axis=0),
                        atol=1e-6)
    self.assertAllClose(output.result['weights'], np.full(R, 4.0))
    self.assertEqual(output.measurements['fused_clients'], 4)

  def test_certainty_weights_give_the_weighted_mean_per_row(self):
    weights = np.random.default_rng(1).uniform(size=(4, R))
    weights[2, 1] = 0.0
    expected = (weights[..., None] * self.logits).sum(0) / weights.sum(0)[:, None]
    process = _process()
    output = process.next(process.initialize(), _values(self.logits, weights))
    self.assertAllClose(output.result['logits'], expected, atol=1e-6)

  def test_rows_nobody_weighs_are_zero(self):
    weights = np.ones((4, R))
    weights[:, 3] = 0.0
    process = _process()
    output = process.next(process.initialize(), _values(self.logits, weights))
    self.assertAllEqual(output.result['logits'][3], np.zeros(C))

  def test_non_finite_client_is_dropped_and_counted(self):
    logits = self.logits.copy()
    logits[1, 2, 0] = np.nan
    weights = np.ones((4, R))
    weights[3, 0] = np.inf
    process = _process()
    output = process.next(process.initialize(), _values(logits, weights))
    self.assertAllClose(output.result['logits'],
                        self.logits[[0, 2]].mean(axis=0), atol=1e-6)
    self.assertEqual(output.measurements['non_finite_clients'], 2)
    self.assertEqual(output.measurements['fused_clients'], 2)

  def test_default_sum_is_tffs_federated_sum_bit_for_bit(self):
    weights = np.random.default_rng(5).uniform(size=(4, R))
    values = _values(self.logits * 7, weights)
    value_type = _process().next.type_signature.parameter[1].member

    @tff.federated_computation(tff.FederatedType(value_type, tff.CLIENTS))
    def plain(value):
      @tff.tensorflow.computation(value_type)
      def scale(v):
        return collections.OrderedDict(
            logits=v['logits'] * v['weights'][:, tf.newaxis],
            weights=v['weights'])
      return tff.federated_sum(tff.federated_map(scale, value))

    total = plain(values)
    process = _process()
    output = process.next(process.initialize(), values)
    expected = tf.math.divide_no_nan(
        total['logits'], total['weights'][:, tf.newaxis]).numpy()
    self.assertAllEqual(output.result['logits'], expected)  # Exactly.
    self.assertAllEqual(output.result['weights'], total['weights'])
    self.assertEqual(list(output.measurements),
                     ['fused_clients', 'non_finite_clients'])

  def test_sum_factory_sums_the_weighted_payload_and_reports(self):
    value_type = _process().next.type_signature.parameter[1].member
    factory = logit_fusion.LogitFusionFactory(
        tiny.CountingUnweighted(tff.aggregators.SumFactory()))
    process = factory.create(value_type)
    state = process.initialize()
    for expected_count in (1, 2):
      output = process.next(state, _values(self.logits, np.ones((4, R))))
      state = output.state
      self.assertEqual(output.measurements['sum']['rounds'], expected_count)
    self.assertAllClose(output.result['logits'], self.logits.mean(axis=0),
                        atol=1e-6)

  def test_fixed_denominator_is_the_uniform_mean_over_m_clients(self):
    # Client 2 sent nothing (weights 0): it still counts in m = 4.
    weights = np.ones((4, R))
    weights[2] = 0.0
    value_type = _process().next.type_signature.parameter[1].member
    process = logit_fusion.LogitFusionFactory(
        fixed_denominator=4.0).create(value_type)
    output = process.next(process.initialize(), _values(self.logits, weights))
    self.assertAllClose(output.result['logits'],
                        self.logits[[0, 1, 3]].sum(axis=0) / 4, atol=1e-6)
    self.assertAllEqual(output.result['weights'], np.full(R, 4.0))

  def test_rejects_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'fixed_denominator must be'):
      logit_fusion.LogitFusionFactory(fixed_denominator=0.0)
    with self.assertRaisesRegex(TypeError, 'sum_factory must be'):
      logit_fusion.LogitFusionFactory(tff.aggregators.MeanFactory())

  def test_rejects_other_value_types(self):
    with self.assertRaisesRegex(TypeError, 'logits=float32'):
      logit_fusion.LogitFusionFactory().create(
          tff.TensorType(np.float32, [R, C]))


if __name__ == '__main__':
  tf.test.main()
