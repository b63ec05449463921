"""LogitFusionFactory: AVGLOGITS, certainty-weighted and per-label fusion vs numpy."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

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

  def test_rejects_other_value_types(self):
    with self.assertRaisesRegex(TypeError, 'logits=float32'):
      logit_fusion.LogitFusionFactory().create(
          tff.TensorType(np.float32, [R, C]))


if __name__ == '__main__':
  tf.test.main()
