"""WeightedMeanFactory: types, a numpy hand computation, equality with MeanFactory."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd.aggregators import weighted_mean

_VALUE_TYPE = tff.to_type(
    collections.OrderedDict(
        a=tff.TensorType(np.float32, [2, 3]), b=tff.TensorType(np.float32, [4])
    )
)
_WEIGHT_TYPE = tff.TensorType(np.float32)


def _values(num_clients, seed):
  rng = np.random.default_rng(seed)
  values = [
      collections.OrderedDict(
          a=rng.normal(size=(2, 3)).astype(np.float32),
          b=rng.normal(size=4).astype(np.float32),
      )
      for _ in range(num_clients)
  ]
  weights = [float(w) for w in rng.integers(1, 100, size=num_clients)]
  return values, weights


class WeightedMeanComputationTest(tf.test.TestCase):

  def test_type_signature(self):
    process = weighted_mean.WeightedMeanFactory().create(
        _VALUE_TYPE, _WEIGHT_TYPE
    )
    next_type = process.next.type_signature
    self.assertEqual(
        next_type.result[1], tff.FederatedType(_VALUE_TYPE, tff.SERVER)
    )
    self.assertEqual(
        next_type.parameter[1], tff.FederatedType(_VALUE_TYPE, tff.CLIENTS)
    )

  def test_rejects_integer_values(self):
    with self.assertRaisesRegex(TypeError, 'floating-point'):
      weighted_mean.WeightedMeanFactory().create(
          tff.TensorType(np.int32, [2]), _WEIGHT_TYPE
      )


class WeightedMeanExecutionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(1, 3, 7)
  def test_matches_numpy_hand_computation(self, num_clients):
    values, weights = _values(num_clients, seed=num_clients)
    process = weighted_mean.WeightedMeanFactory().create(
        _VALUE_TYPE, _WEIGHT_TYPE
    )
    output = process.next(process.initialize(), values, weights)
    n = sum(weights)
    for key in ['a', 'b']:
      expected = sum(w / n * v[key] for v, w in zip(values, weights))
      self.assertAllClose(output.result[key], expected, rtol=1e-5)
    self.assertAllClose(output.measurements['total_weight'], n)

  @parameterized.parameters(2, 5)
  def test_equals_tff_mean_factory(self, num_clients):
    values, weights = _values(num_clients, seed=10 + num_clients)
    ours = weighted_mean.WeightedMeanFactory().create(_VALUE_TYPE, _WEIGHT_TYPE)
    theirs = tff.aggregators.MeanFactory().create(_VALUE_TYPE, _WEIGHT_TYPE)
    ours_result = ours.next(ours.initialize(), values, weights).result
    theirs_result = theirs.next(theirs.initialize(), values, weights).result
    for key in ['a', 'b']:
      self.assertAllEqual(ours_result[key], theirs_result[key])

  def test_all_zero_weights_give_zeros(self):
    values, _ = _values(3, seed=0)
    process = weighted_mean.WeightedMeanFactory().create(
        _VALUE_TYPE, _WEIGHT_TYPE
    )
    output = process.next(process.initialize(), values, [0.0, 0.0, 0.0])
    self.assertAllEqual(output.result['a'], np.zeros((2, 3)))
    self.assertAllEqual(output.result['b'], np.zeros(4))


if __name__ == '__main__':
  tf.test.main()
