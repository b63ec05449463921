"""A tiny softmax-regression model and client data, for algorithm tests; an
aggregation factory that counts its rounds."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

NUM_FEATURES, NUM_CLASSES = 4, 3
_SPEC = collections.OrderedDict(
    x=tf.TensorSpec([None, NUM_FEATURES], tf.float32),
    y=tf.TensorSpec([None], tf.int32),
)


def _variable_model(keras_model):
  return tff.learning.models.from_keras_model(
      keras_model,
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      input_spec=_SPEC,
      metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
  )


def model_fn():
  return _variable_model(tf.keras.Sequential([
      tf.keras.layers.InputLayer((NUM_FEATURES,)),
      tf.keras.layers.Dense(
          NUM_CLASSES,
          kernel_initializer=tf.keras.initializers.GlorotUniform(seed=1),
          bias_initializer=tf.keras.initializers.RandomNormal(seed=2),
      ),
  ]))


def client_arrays(sizes, seed=0):
  rng = np.random.default_rng(seed)
  return [
      (
          rng.normal(size=(n, NUM_FEATURES)).astype(np.float32),
          rng.integers(0, NUM_CLASSES, size=n).astype(np.int32),
      )
      for n in sizes
  ]


def datasets(arrays, batch_size):
  return [
      tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y))
      .batch(batch_size)
      for x, y in arrays
  ]


def np_softmax(z):
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def sgd(optimizer_lr=0.1):
  return tff.learning.optimizers.build_sgdm(learning_rate=optimizer_lr)


def mlp_model_fn():
  """A second architecture (one hidden layer, a `head`), for prototypes."""
  return _variable_model(tf.keras.Sequential([
      tf.keras.layers.InputLayer((NUM_FEATURES,)),
      tf.keras.layers.Dense(
          5, activation='relu',
          kernel_initializer=tf.keras.initializers.GlorotUniform(seed=3),
      ),
      tf.keras.layers.Dense(
          NUM_CLASSES, name='head',
          kernel_initializer=tf.keras.initializers.GlorotUniform(seed=4),
      ),
  ]))


def attention_model_fn(pool: bool = False):
  """A model with a convolutional `feature_map` layer (FedAD), on 4 features.

  Inputs [B, 4] -> [B, 4, 1] -> (pool to [B, 2, 1]) -> Conv1D(2, kernel 1)
  named `feature_map` -> flatten -> Dense `head`.
  """
  layers = [
      tf.keras.layers.InputLayer((NUM_FEATURES,)),
      tf.keras.layers.Reshape((NUM_FEATURES, 1)),
  ]
  if pool:
    layers.append(tf.keras.layers.MaxPool1D(2))
  layers += [
      tf.keras.layers.Conv1D(
          2, 1, name='feature_map',
          kernel_initializer=tf.keras.initializers.GlorotUniform(seed=5),
          bias_initializer=tf.keras.initializers.RandomNormal(seed=6),
      ),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(
          NUM_CLASSES, name='head',
          kernel_initializer=tf.keras.initializers.GlorotUniform(seed=7),
      ),
  ]
  return _variable_model(tf.keras.Sequential(layers))


def two_rounds_third_client_dropping_out(process, ids, datasets):
  """Two rounds of a stateful-client process over clients ids[:3], the third
  with no data (dropped out); returns (initial state, state, last output)."""
  initial = state = process.initialize()
  for _ in range(2):
    output = process.next(state, list(zip(
        ids[:3], [datasets[0], datasets[1], datasets[2].take(0)])))
    state = output.state
  return initial, state, output


def check_client_states(test, initial, state, changed):
  """Every client's model keeps its shapes; exactly `changed` moved."""
  for c in initial['clients']:
    before = initial['clients'][c]['model'].trainable
    after = state['clients'][c]['model'].trainable
    test.assertEqual([w.shape for w in after], [w.shape for w in before])
    moved = any(not np.array_equal(a, b) for a, b in zip(after, before))
    test.assertEqual(moved, c in changed, c)


def np_adam(params, gradient_fn, learning_rates, clip_norm=None):
  """TFF's Adam (bias correction in the learning rate, eps 1e-7), one step
  per learning rate; `gradient_fn(step, params)` gives the gradients."""
  params = [np.array(p, np.float64) for p in params]
  m = [np.zeros_like(p) for p in params]
  v = [np.zeros_like(p) for p in params]
  for t, lr in enumerate(learning_rates, start=1):
    grads = gradient_fn(t - 1, params)
    if clip_norm is not None:
      norm = np.sqrt(sum(np.sum(g**2) for g in grads))
      grads = [g * min(1.0, clip_norm / norm) for g in grads]
    rate = lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
    for i, g in enumerate(grads):
      m[i] = 0.9 * m[i] + 0.1 * g
      v[i] = 0.999 * v[i] + 0.001 * g**2
      params[i] = params[i] - rate * m[i] / (np.sqrt(v[i]) + 1e-7)
  return params


def _counted(inner_process, weighted):
  """`inner_process` with a round counter in its state and measurements."""

  @tff.tensorflow.computation(np.int32)
  def increment(count):
    return count + 1

  @tff.federated_computation()
  def init_fn():
    return tff.federated_zip(collections.OrderedDict(
        inner=inner_process.initialize(),
        rounds=tff.federated_value(0, tff.SERVER)))

  value_type = inner_process.next.type_signature.parameter[1]

  def step(state, value, *weight):
    output = inner_process.next(state.inner, value, *weight)
    rounds = tff.federated_map(increment, state.rounds)
    return tff.templates.MeasuredProcessOutput(
        tff.federated_zip(collections.OrderedDict(inner=output.state,
                                                  rounds=rounds)),
        output.result,
        tff.federated_zip(collections.OrderedDict(
            inner=output.measurements, rounds=rounds)))

  if weighted:
    next_fn = tff.federated_computation(
        lambda state, value, weight: step(state, value, weight),
        init_fn.type_signature.result, value_type,
        inner_process.next.type_signature.parameter[2])
  else:
    next_fn = tff.federated_computation(
        lambda state, value: step(state, value),
        init_fn.type_signature.result, value_type)
  return tff.templates.AggregationProcess(init_fn, next_fn)


class CountingWeighted(tff.aggregators.WeightedAggregationFactory):
  """`inner`, with its rounds counted in its state and measurements."""

  def __init__(self, inner: tff.aggregators.WeightedAggregationFactory):
    self._inner = inner

  def create(self, value_type, weight_type):
    return _counted(self._inner.create(value_type, weight_type), True)


class CountingUnweighted(tff.aggregators.UnweightedAggregationFactory):
  """`inner`, with its rounds counted in its state and measurements."""

  def __init__(self, inner: tff.aggregators.UnweightedAggregationFactory):
    self._inner = inner

  def create(self, value_type):
    return _counted(self._inner.create(value_type), False)
