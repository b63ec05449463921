"""FedAvg: one round against a numpy hand computation, against TFF's FedAvg,
non-finite clients, and FedNTD's reduction to FedAvg."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import algorithms

_NUM_FEATURES, _NUM_CLASSES = 4, 3
_SPEC = collections.OrderedDict(
    x=tf.TensorSpec([None, _NUM_FEATURES], tf.float32),
    y=tf.TensorSpec([None], tf.int32),
)


def _model_fn():
  keras_model = tf.keras.Sequential([
      tf.keras.layers.InputLayer((_NUM_FEATURES,)),
      tf.keras.layers.Dense(
          _NUM_CLASSES,
          kernel_initializer=tf.keras.initializers.GlorotUniform(seed=1),
          bias_initializer=tf.keras.initializers.RandomNormal(seed=2),
      ),
  ])
  return tff.learning.models.from_keras_model(
      keras_model,
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      input_spec=_SPEC,
      metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
  )


def _client_arrays(sizes, seed=0):
  rng = np.random.default_rng(seed)
  return [
      (
          rng.normal(size=(n, _NUM_FEATURES)).astype(np.float32),
          rng.integers(0, _NUM_CLASSES, size=n).astype(np.int32),
      )
      for n in sizes
  ]


def _datasets(arrays, batch_size):
  return [
      tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y))
      .batch(batch_size)
      for x, y in arrays
  ]


def _np_softmax(z):
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def _sgd(optimizer_lr=0.1):
  return tff.learning.optimizers.build_sgdm(learning_rate=optimizer_lr)


class FedAvgTest(tf.test.TestCase, parameterized.TestCase):

  def test_one_round_matches_numpy(self):
    lr = 0.3
    sizes = [5, 9, 2]
    arrays = _client_arrays(sizes)
    process = algorithms.build_fedavg(_model_fn, _sgd(lr))
    state = process.initialize()
    kernel, bias = process.get_model_weights(state).trainable
    # Each client takes one full-batch SGD step on mean cross-entropy.
    client_weights = []
    for x, y in arrays:
      error = _np_softmax(x @ kernel + bias) - np.eye(_NUM_CLASSES)[y]
      client_weights.append((
          kernel - lr * x.T @ error / len(y),
          bias - lr * error.mean(axis=0),
      ))
    n = sum(sizes)
    expected_kernel = sum(k * m / n for (k, _), m in zip(client_weights, sizes))
    expected_bias = sum(b * m / n for (_, b), m in zip(client_weights, sizes))

    output = process.next(state, _datasets(arrays, batch_size=100))
    new_kernel, new_bias = process.get_model_weights(output.state).trainable
    self.assertAllClose(new_kernel, expected_kernel, rtol=1e-5, atol=1e-6)
    self.assertAllClose(new_bias, expected_bias, rtol=1e-5, atol=1e-6)
    train = output.metrics['client_work']['train']
    self.assertEqual(train['num_examples'], n)
    self.assertEqual(output.metrics['aggregator']['total_weight'], n)

  def test_matches_tff_build_weighted_fed_avg(self):
    data = _datasets(_client_arrays([12, 7, 20], seed=3), batch_size=4)
    ours = algorithms.build_fedavg(_model_fn, _sgd(), _sgd(1.0))
    theirs = tff.learning.algorithms.build_weighted_fed_avg(
        _model_fn, _sgd(), _sgd(1.0)
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
    arrays = _client_arrays([6, 6, 6], seed=4)
    poisoned = arrays[1][0].copy()
    poisoned[0, 0] = np.nan
    with_nan = [arrays[0], (poisoned, arrays[1][1]), arrays[2]]
    process = algorithms.build_fedavg(_model_fn, _sgd())
    state = process.initialize()
    output = process.next(state, _datasets(with_nan, 3))
    clean = process.next(state, _datasets([arrays[0], arrays[2]], 3))
    self.assertEqual(output.metrics['client_work']['non_finite_clients'], 1)
    self.assertEqual(output.metrics['aggregator']['total_weight'], 12.0)
    for a, b in zip(
        process.get_model_weights(output.state).trainable,
        process.get_model_weights(clean.state).trainable,
    ):
      self.assertAllClose(a, b, rtol=1e-6)

  def test_rejects_unweighted_aggregator(self):
    with self.assertRaisesRegex(TypeError, 'model_aggregator'):
      algorithms.build_fedavg(
          _model_fn, _sgd(),
          model_aggregator=tff.aggregators.UnweightedMeanFactory(),
      )


class FedNTDTest(tf.test.TestCase):

  def test_beta_zero_equals_fedavg_exactly(self):
    data = _datasets(_client_arrays([10, 15], seed=5), batch_size=4)
    fedavg = algorithms.build_fedavg(_model_fn, _sgd())
    fedntd = algorithms.build_fedntd(_model_fn, _sgd(), beta=0.0)
    a_state, b_state = fedavg.initialize(), fedntd.initialize()
    for _ in range(2):
      a_state = fedavg.next(a_state, data).state
      b_state = fedntd.next(b_state, data).state
    for a, b in zip(
        fedavg.get_model_weights(a_state).trainable,
        fedntd.get_model_weights(b_state).trainable,
    ):
      self.assertAllEqual(a, b)

  def test_positive_beta_changes_the_update(self):
    data = _datasets(_client_arrays([10, 15], seed=5), batch_size=4)
    fedavg = algorithms.build_fedavg(_model_fn, _sgd())
    fedntd = algorithms.build_fedntd(_model_fn, _sgd(), beta=1.0)
    a = fedavg.next(fedavg.initialize(), data).state
    b = fedntd.next(fedntd.initialize(), data).state
    # The first local step has teacher == student, so the terms only differ
    # after it; with 3 batches per client the results must differ.
    self.assertNotAllClose(
        fedavg.get_model_weights(a).trainable[0],
        fedntd.get_model_weights(b).trainable[0],
    )

  def test_rejects_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'beta must be >= 0; got -1'):
      algorithms.build_fedntd(_model_fn, _sgd(), beta=-1.0)
    with self.assertRaisesRegex(ValueError, 'temperature must be > 0; got 0'):
      algorithms.build_fedntd(_model_fn, _sgd(), temperature=0.0)


if __name__ == '__main__':
  tf.test.main()
