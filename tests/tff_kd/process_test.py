"""tff_kd.process.GlobalModelsProcess: the experiment protocol (client_input,
client_data_type, evaluation_models), keyed global weights, clear errors."""

import collections
import functools
import re

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import algorithms
from tff_kd import process as process_lib

MODEL_FNS = collections.OrderedDict(linear=tiny.model_fn,
                                    mlp=tiny.mlp_model_fn)
OWNERS = collections.OrderedDict(a='linear', b='mlp', c='linear')
DATA_TYPE = tff.SequenceType(tff.StructWithPythonType(
    [('x', tff.TensorType(np.float32, [None, tiny.NUM_FEATURES])),
     ('y', tff.TensorType(np.int32, [None]))], collections.OrderedDict))


def _distill_x():
  return np.random.default_rng(3).normal(
      size=(4, tiny.NUM_FEATURES)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _fedavg():
  return algorithms.build_fedavg(tiny.model_fn, tiny.sgd(0.1))


@functools.lru_cache(maxsize=None)
def _feddf(prototypes=('linear', 'mlp')):
  fns = collections.OrderedDict((n, MODEL_FNS[n]) for n in prototypes)
  return algorithms.build_feddf(
      fns, tiny.sgd(0.1), distillation_inputs=_distill_x(), distill_steps=0,
      distill_batch_size=2,
      client_prototypes=OWNERS if len(fns) > 1 else None)


@functools.lru_cache(maxsize=None)
def _fedgen():
  return algorithms.build_fedgen(
      tiny.attention_model_fn, tiny.sgd(0.1), num_classes=tiny.NUM_CLASSES,
      clients_per_round=3, noise_dim=2, hidden_dim=4, generator_steps=1,
      generator_batch_size=2)


def _datasets():
  return tiny.datasets(tiny.client_arrays([5, 7, 6], seed=1), 3)


def _elements(dataset):
  return [collections.OrderedDict((k, np.asarray(v)) for k, v in e.items())
          for e in dataset.as_numpy_iterator()]


def _random_weights(weights, seed):
  rng = np.random.default_rng(seed)
  return tff.learning.models.ModelWeights(
      trainable=[rng.normal(size=np.shape(w)).astype(np.float32)
                 for w in weights.trainable],
      non_trainable=list(weights.non_trainable))


def data_computation(arrays, batch_size):
  """`(int32 -> B*)`: client k's data of `arrays`, built where it runs."""
  offsets = np.cumsum([0] + [len(y) for _, y in arrays])
  x_all = np.concatenate([x for x, _ in arrays])
  y_all = np.concatenate([y for _, y in arrays])

  @tff.tensorflow.computation(np.int32)
  def client_data(k):
    bounds = tf.constant(offsets)
    start, end = bounds[k], bounds[k + 1]
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=tf.constant(x_all)[start:end], y=tf.constant(y_all)[start:end]
    )).batch(batch_size)

  return client_data


class _TestCase(tf.test.TestCase, parameterized.TestCase):

  def assertExactlyEqual(self, a, b, msg=None):  # pylint: disable=invalid-name
    """Nested structures of arrays (of different shapes), exactly equal."""
    self.assertAllClose(a, b, rtol=0, atol=0, msg=msg)


class ProtocolTest(_TestCase):

  def test_one_model_client_input_is_the_dataset(self):
    dataset = _datasets()[0]
    process = _fedavg()
    self.assertIsInstance(process, process_lib.GlobalModelsProcess)
    self.assertIs(process.client_input('a', dataset), dataset)
    # The input a TFF process takes as is: a round runs on it.
    output = process.next(process.initialize(),
                          [process.client_input('a', dataset)])
    self.assertEqual(
        output.metrics['client_work']['train']['num_examples'], 5)

  def test_one_prototype_client_input_names_it(self):
    dataset = _datasets()[0]
    client_input = _feddf(('linear',)).client_input('anyone', dataset)
    self.assertEqual(list(client_input), ['linear'])
    self.assertIs(client_input['linear'], dataset)

  @parameterized.named_parameters(('a', 'a', 'linear'), ('b', 'b', 'mlp'),
                                  ('c', 'c', 'linear'))
  def test_prototypes_client_input_has_only_its_own_non_empty(self, client,
                                                              own):
    dataset = _datasets()[1]
    client_input = _feddf().client_input(client, dataset)
    self.assertIsInstance(client_input, collections.OrderedDict)
    self.assertEqual(list(client_input), ['linear', 'mlp'])
    for name, data in client_input.items():
      self.assertEqual(data.element_spec, dataset.element_spec)
      if name == own:
        self.assertIs(data, dataset)
      else:
        self.assertEmpty(_elements(data))

  def test_prototypes_client_input_trains_its_own_prototype(self):
    process = _feddf()
    datasets = _datasets()
    output = process.next(process.initialize(), [
        process.client_input(c, d) for c, d in zip(OWNERS, datasets)])
    models = output.metrics['aggregator']['models']
    self.assertEqual(models['linear']['total_weight'], 5 + 6)
    self.assertEqual(models['mlp']['total_weight'], 7)

  @parameterized.named_parameters(('one_model', _fedavg),
                                  ('prototypes', _feddf))
  def test_data_built_where_it_runs_gives_the_same_round(self, build):
    # Client ids in, TFF's composition builds the datasets on the worker.
    process = build()
    client_data = data_computation(tiny.client_arrays([5, 7, 6], seed=1), 3)
    keyed = process.with_client_data(client_data)
    tff.test.assert_types_equivalent(keyed.client_data_type, DATA_TYPE)
    clients_type = keyed.next.type_signature.parameter[1]
    self.assertEqual(clients_type.placement, tff.CLIENTS)
    want = process.next(process.initialize(), [
        process.client_input(c, d) for c, d in zip(OWNERS, _datasets())])
    got = keyed.next(keyed.initialize(), [
        keyed.client_input(c, np.int32(k)) for k, c in enumerate(OWNERS)])
    self.assertExactlyEqual(tf.nest.flatten(got.state),
                            tf.nest.flatten(want.state))
    self.assertEqual(got.metrics['client_work'], want.metrics['client_work'])
    with self.assertRaisesRegex(ValueError, 'already builds'):
      keyed.with_client_data(client_data)

  @parameterized.named_parameters(
      ('fedavg', _fedavg), ('feddf', _feddf), ('fedgen', _fedgen))
  def test_client_data_type(self, build):
    tff.test.assert_types_equivalent(build().client_data_type, DATA_TYPE)

  def test_one_model_evaluation_models(self):
    process = _fedavg()
    state = process.initialize()
    models = process.evaluation_models(state)
    self.assertEqual(list(models), ['test'])
    [(model_fn, weights)] = models['test']
    self.assertIs(model_fn, tiny.model_fn)
    self.assertExactlyEqual(weights.trainable,
                        state.global_model_weights.trainable)

  def test_prototypes_evaluation_models(self):
    process = _feddf()
    state = process.initialize()
    new = _random_weights(state.global_model_weights['linear'], 4)
    state = process.set_model_weights(state, new)
    models = process.evaluation_models(state)
    self.assertEqual(list(models), ['test', 'test_linear', 'test_mlp'])
    for name, prototype in (('test', 'linear'), ('test_linear', 'linear'),
                            ('test_mlp', 'mlp')):
      [(model_fn, weights)] = models[name]
      self.assertIs(model_fn, MODEL_FNS[prototype], name)
      self.assertExactlyEqual(
          weights.trainable,
          state.global_model_weights[prototype].trainable, msg=name)
    self.assertExactlyEqual(models['test'][0][1].trainable, new.trainable)

  def test_fedgen_evaluates_its_model_not_the_generator(self):
    process = _fedgen()
    state = process.initialize()
    models = process.evaluation_models(state)
    self.assertEqual(list(models), ['test'])
    [(model_fn, weights)] = models['test']
    self.assertIs(model_fn, tiny.attention_model_fn)
    self.assertExactlyEqual(weights.trainable,
                        state.global_model_weights['model'].trainable)


class KeyedWeightsTest(_TestCase):

  @parameterized.named_parameters(
      # (process, its first prototype, the other keys of its weights)
      ('feddf', _feddf, 'linear', ('mlp',)),
      ('fedgen', _fedgen, 'model', ('generator',)),
  )
  def test_set_then_get_round_trips_and_leaves_the_rest(self, build, first,
                                                        others):
    process = build()
    state = process.initialize()
    state_type = process.initialize.type_signature.result.member
    tff.test.assert_types_equivalent(
        process.get_model_weights.type_signature,
        tff.FunctionType(state_type, state_type.global_model_weights[first]))
    tff.test.assert_types_equivalent(
        process.set_model_weights.type_signature.result, state_type)
    got = process.get_model_weights(state)
    self.assertExactlyEqual(got.trainable,
                        state.global_model_weights[first].trainable)

    new = _random_weights(got, seed=5)
    new_state = process.set_model_weights(state, new)
    self.assertExactlyEqual(process.get_model_weights(new_state).trainable,
                        new.trainable)
    self.assertExactlyEqual(new_state.global_model_weights[first].trainable,
                        new.trainable)
    self.assertEqual(list(new_state.global_model_weights),
                     list(state.global_model_weights))
    for key in others:
      self.assertExactlyEqual(new_state.global_model_weights[key],
                          state.global_model_weights[key], msg=key)
    for part in ('distributor', 'client_work', 'aggregator', 'finalizer'):
      self.assertExactlyEqual(getattr(new_state, part), getattr(state, part),
                          msg=part)

  def test_a_round_starts_from_the_set_weights(self):
    # One linear client, no distillation: the new global linear model is the
    # client's model trained from the weights set (FedAvg of one client).
    process = _feddf()
    state = process.initialize()
    new = _random_weights(state.global_model_weights['linear'], seed=6)
    dataset = _datasets()[0]
    output = process.next(process.set_model_weights(state, new),
                          [process.client_input('a', dataset)])
    fedavg = _fedavg()
    expected = fedavg.next(
        fedavg.set_model_weights(fedavg.initialize(), new), [dataset]).state
    self.assertAllClose(process.get_model_weights(output.state).trainable,
                        fedavg.get_model_weights(expected).trainable,
                        rtol=1e-6, atol=1e-7)


class ErrorsTest(tf.test.TestCase):

  def test_several_prototypes_need_client_prototypes(self):
    with self.assertRaisesRegex(
        ValueError, re.escape("prototypes ['linear', 'mlp'] needs "
                              'client_prototypes')):
      process_lib.GlobalModelsProcess(_feddf(), MODEL_FNS)

  def test_client_prototypes_naming_an_unknown_prototype(self):
    with self.assertRaisesRegex(
        ValueError, re.escape("prototypes ['cnn'] that the process does not "
                              "have (it has ['linear', 'mlp'])")):
      process_lib.GlobalModelsProcess(
          _feddf(), MODEL_FNS, client_prototypes={'a': 'linear', 'b': 'cnn'})

  def test_a_prototype_the_weights_do_not_have(self):
    with self.assertRaisesRegex(ValueError,
                                re.escape("global model weights have no "
                                          "['cnn']")):
      process_lib.GlobalModelsProcess(
          _feddf(), collections.OrderedDict(linear=tiny.model_fn,
                                            cnn=tiny.mlp_model_fn),
          client_prototypes={'a': 'linear', 'b': 'cnn'})

  def test_no_prototypes(self):
    with self.assertRaisesRegex(ValueError, 'prototype_model_fns is empty'):
      process_lib.GlobalModelsProcess(_fedavg(), {})


if __name__ == '__main__':
  tf.test.main()
