"""FedAvg: one round against a numpy hand computation, against TFF's FedAvg,
and non-finite clients."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import algorithms

class FedAvgTest(tf.test.TestCase, parameterized.TestCase):

  def test_one_round_matches_numpy(self):
    lr = 0.3
    sizes = [5, 9, 2]
    arrays = tiny.client_arrays(sizes)
    process = algorithms.build_fedavg(tiny.model_fn, tiny.sgd(lr))
    state = process.initialize()
    kernel, bias = process.get_model_weights(state).trainable
    # Each client takes one full-batch SGD step on mean cross-entropy.
    client_weights = []
    for x, y in arrays:
      error = tiny.np_softmax(x @ kernel + bias) - np.eye(tiny.NUM_CLASSES)[y]
      client_weights.append((
          kernel - lr * x.T @ error / len(y),
          bias - lr * error.mean(axis=0),
      ))
    n = sum(sizes)
    expected_kernel = sum(k * m / n for (k, _), m in zip(client_weights, sizes))
    expected_bias = sum(b * m / n for (_, b), m in zip(client_weights, sizes))

    output = process.next(state, tiny.datasets(arrays, batch_size=100))
    new_kernel, new_bias = process.get_model_weights(output.state).trainable
    self.assertAllClose(new_kernel, expected_kernel, rtol=1e-5, atol=1e-6)
    self.assertAllClose(new_bias, expected_bias, rtol=1e-5, atol=1e-6)
    train = output.metrics['client_work']['train']
    self.assertEqual(train['num_examples'], n)
    self.assertEqual(output.metrics['aggregator']['total_weight'], n)
    # Down: the model (4x3 kernel + 3 biases, float32); up: delta + weight.
    self.assertEqual(output.metrics['client_work']['communication'],
                     dict(bytes_uploaded=3 * (15 * 4 + 4),
                          bytes_downloaded=3 * 15 * 4,
                          bytes_uploaded_per_client=15 * 4 + 4,
                          bytes_downloaded_per_client=15 * 4))

  def test_matches_tff_build_weighted_fed_avg(self):
    data = tiny.datasets(tiny.client_arrays([12, 7, 20], seed=3), batch_size=4)
    ours = algorithms.build_fedavg(tiny.model_fn, tiny.sgd(), tiny.sgd(1.0))
    theirs = tff.learning.algorithms.build_weighted_fed_avg(
        tiny.model_fn, tiny.sgd(), tiny.sgd(1.0)
    )
    ours_state, theirs_state = ours.initialize(), theirs.initialize()
    for _ in range(3):
      ours_state = ours.next(ours_state, data).state
      theirs_state = theirs.next(theirs_state, data).state
    for a, b in zip(
        ours.get_model_weights(ours_state).trainable,
        theirs.get_model_weights(theirs_state).trainable,
    ):
      self.assertAllClose(a, b, rtol=1e-6, atol=1e-7)

  def test_non_finite_client_is_dropped_and_counted(self):
    arrays = tiny.client_arrays([6, 6, 6], seed=4)
    poisoned = arrays[1][0].copy()
    poisoned[0, 0] = np.nan
    with_nan = [arrays[0], (poisoned, arrays[1][1]), arrays[2]]
    process = algorithms.build_fedavg(tiny.model_fn, tiny.sgd())
    state = process.initialize()
    output = process.next(state, tiny.datasets(with_nan, 3))
    clean = process.next(state, tiny.datasets([arrays[0], arrays[2]], 3))
    self.assertEqual(output.metrics['client_work']['non_finite_clients'], 1)
    self.assertEqual(output.metrics['aggregator']['total_weight'], 12.0)
    for a, b in zip(
        process.get_model_weights(output.state).trainable,
        process.get_model_weights(clean.state).trainable,
    ):
      self.assertAllClose(a, b, rtol=1e-6)

  def test_unweighted_aggregator_averages_clients_uniformly(self):
    # As TFF's builders: an unweighted factory (TFF's DP ones are) counts
    # every client the same, whatever its number of examples.
    arrays = tiny.client_arrays([3, 9], seed=5)
    process = algorithms.build_fedavg(
        tiny.model_fn, tiny.sgd(),
        model_aggregator=tff.aggregators.UnweightedMeanFactory())
    state = process.initialize()
    both = process.get_model_weights(
        process.next(state, tiny.datasets(arrays, 3)).state).trainable
    alone = [process.get_model_weights(
        process.next(state, tiny.datasets([a], 3)).state).trainable
             for a in arrays]
    for i, w in enumerate(both):
      self.assertAllClose(w, (alone[0][i] + alone[1][i]) / 2, rtol=1e-5)

  def test_rejects_a_model_aggregator_that_is_no_factory(self):
    with self.assertRaisesRegex(TypeError, 'model_aggregator must be a '
                                'tff.aggregators.WeightedAggregationFactory'):
      algorithms.build_fedavg(tiny.model_fn, tiny.sgd(),
                              model_aggregator='mean')


if __name__ == '__main__':
  tf.test.main()
