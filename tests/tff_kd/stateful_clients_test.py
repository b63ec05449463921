"""The stateful-clients template on a tiny recipe, against numpy.

The recipe: every client trains its own model one SGD step per round (a
single batch) and sends the mean one-hot of its labels; the server stores the
fused mean (and keeps a model, or not); the broadcast is the server state;
a client keeps its model, the number of rounds it trained and the label mean
it last received. The fusion factory counts its rounds in its state.
"""

import collections
import re

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import client_store
from tff_kd import communication
from tff_kd import local_training
from tff_kd import model_parts
from tff_kd import server_step
from tff_kd import stateful_clients
from tff_kd.aggregators import logit_fusion

C = tiny.NUM_CLASSES
LR = 0.5
SIZES = collections.OrderedDict(a=5, b=8, c=6, d=7)
ONE = collections.OrderedDict(linear=tiny.model_fn)
TWO = collections.OrderedDict(linear=tiny.model_fn, mlp=tiny.mlp_model_fn)
OWNERS = {
    1: collections.OrderedDict((c, 'linear') for c in SIZES),
    2: collections.OrderedDict(a='linear', b='mlp', c='linear', d='mlp'),
}


class CountingFusion(tff.aggregators.UnweightedAggregationFactory):
  """`LogitFusionFactory` with a round counter as its state."""

  def create(self, value_type):
    inner = logit_fusion.LogitFusionFactory().create(value_type)

    @tff.tensorflow.computation(np.int32)
    def increment(count):
      return count + 1

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value(0, tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      output = inner.next(inner.initialize(), value)
      rounds = tff.federated_map(increment, state)
      return tff.templates.MeasuredProcessOutput(
          rounds, output.result, tff.federated_zip(collections.OrderedDict(
              inner=output.measurements, rounds=rounds)))

    return tff.templates.AggregationProcess(init_fn, next_fn)


def _count_labels(counts, labels, logits):
  del logits
  return counts + tf.reduce_sum(
      tf.one_hot(tf.cast(labels, tf.int32), C), axis=0)


def _step(*parameter_types):
  """A `ServerStep` of a function that builds nothing."""
  return lambda fn: server_step.ServerStep(lambda: fn, parameter_types)


def _parts(model_fns, server_model=True):
  """The recipe's parts (keyword arguments of the template)."""
  names = list(model_fns)
  probes = model_parts.probe_prototypes(model_fns)
  sgd = tiny.sgd(LR)
  hparams = sgd.get_hparams(sgd.initialize(tf.TensorSpec((), tf.float32)))

  @tff.tensorflow.computation()
  def initial_client_states():
    return stateful_clients.initial_states(
        model_fns, rounds=tf.constant(0), seen=tf.zeros([C]))

  @tff.tensorflow.computation()
  def initial_server_state():
    state = collections.OrderedDict(label_mean=tf.zeros([C]),
                                    round=tf.constant(0))
    if server_model:
      state['model'] = tff.learning.models.ModelWeights.from_model(
          model_fns[names[0]]())
    return state

  server_type = initial_server_state.type_signature.result

  @tff.tensorflow.computation(server_type)
  def broadcast_fn(state):
    return state

  client_type = stateful_clients.client_input_type(
      probes[names[0]]['data_type'],
      initial_client_states.type_signature.result)

  @tff.tensorflow.computation(server_type, client_type)
  def client_work(broadcast, client):
    models = {n: fn() for n, fn in model_fns.items()}
    updates = {n: local_training.build_client_update(
        models[n], sgd, observe_fn=_count_labels) for n in names}

    @tf.function
    def run():
      states, metrics = collections.OrderedDict(), collections.OrderedDict()
      label_sums = tf.zeros([C])
      non_finite = tf.constant(0)
      for i, n in enumerate(names):
        state = client['state'][n]
        delta, _, is_finite, metrics[n], counts = updates[n](
            state['model'],
            stateful_clients.own_data(client['data'], client['prototype'], i),
            hparams, observed=tf.zeros([C]))
        states[n] = stateful_clients.select(
            tf.equal(client['prototype'], i),
            collections.OrderedDict(
                model=stateful_clients.trained(state['model'], delta),
                rounds=state['rounds'] + 1, seen=broadcast['label_mean']),
            state)
        label_sums += counts
        non_finite += 1 - is_finite
      total = tf.reduce_sum(label_sums)
      return stateful_clients.client_output(
          client, states,
          knowledge=collections.OrderedDict(labels=collections.OrderedDict(
              logits=tf.math.divide_no_nan(label_sums, total)[tf.newaxis],
              weights=tf.cast(total > 0, tf.float32)[tf.newaxis])),
          metrics=metrics, non_finite=non_finite)

    return run()

  @_step(
      server_type, server_type,
      collections.OrderedDict(labels=logit_fusion.value_type(1, C)))
  def server_update(state, broadcast, fused):
    del broadcast
    new_state = collections.OrderedDict(
        state, label_mean=fused['labels']['logits'][0],
        round=state['round'] + 1)
    return new_state, collections.OrderedDict(
        clients_fused=fused['labels']['weights'][0])

  parts = dict(
      prototype_model_fns=model_fns,
      initial_server_state=initial_server_state,
      initial_client_states=initial_client_states,
      broadcast_fn=broadcast_fn,
      client_work=client_work,
      fusion_aggregator=CountingFusion(),
      server_update=server_update,
  )
  return parts


def _build(model_fns, server_model=True, **overrides):
  parts = _parts(model_fns, server_model)
  parts.update(overrides)
  return stateful_clients.build_stateful_clients_process(
      client_prototypes=OWNERS[len(model_fns)], **parts)


def _data():
  """Per client (x, y) and a one-batch dataset (one SGD step a round)."""
  arrays = dict(zip(SIZES, tiny.client_arrays(list(SIZES.values()), seed=4)))
  datasets = dict(zip(arrays, tiny.datasets(list(arrays.values()), 100)))
  return arrays, datasets


def _np_step(weights, x, y):
  """One SGD step of CE on a full batch: the linear model or the MLP."""
  onehot = np.eye(C)[y]
  if len(weights) == 2:
    kernel, bias = weights
    dz = (tiny.np_softmax(x @ kernel + bias) - onehot) / len(x)
    return [kernel - LR * x.T @ dz, bias - LR * dz.sum(0)]
  w1, b1, w2, b2 = weights
  hidden = np.maximum(x @ w1 + b1, 0)
  dz = (tiny.np_softmax(hidden @ w2 + b2) - onehot) / len(x)
  dh = dz @ w2.T * (hidden > 0)
  return [w1 - LR * x.T @ dh, b1 - LR * dh.sum(0),
          w2 - LR * hidden.T @ dz, b2 - LR * dz.sum(0)]


def _np_rounds(initial, arrays, rounds):
  """Client states and the server's label mean after `rounds`, each a list
  of (client id, has data)."""
  clients = {c: dict(model=[np.asarray(w, np.float64)
                            for w in s['model'].trainable],
                     rounds=0, seen=np.zeros(C))
             for c, s in initial['clients'].items()}
  label_mean = np.zeros(C)
  for sampled in rounds:
    means = []
    for c, has_data in sampled:
      x, y = arrays[c]
      if has_data:
        clients[c]['model'] = _np_step(clients[c]['model'], x, y)
        means.append(np.bincount(y, minlength=C) / len(y))
      clients[c]['rounds'] += 1
      clients[c]['seen'] = label_mean
    label_mean = np.mean(means, axis=0)
  return clients, label_mean


def _run(process, datasets, rounds):
  state = initial = process.initialize()
  for sampled in rounds:
    output = process.next(state, [
        (c, datasets[c] if has_data else datasets[c].take(0))
        for c, has_data in sampled])
    state = output.state
  return initial, state, output


# Shuffled orders; in round 2 `a` has no data; one client is never sampled.
ROUNDS = [[('c', True), ('a', True)],
          [('b', True), ('a', False), ('c', True)]]
ROUNDS_TWO = [[('d', True), ('a', True)],
              [('b', True), ('a', False), ('d', True)]]


class StatefulClientsComputationTest(tf.test.TestCase,
                                     parameterized.TestCase):

  @parameterized.named_parameters(('with_server_model', True),
                                  ('without_server_model', False))
  def test_round_type_signature(self, server_model):
    parts = _parts(ONE, server_model)
    process = _build(ONE, server_model)
    server_type = parts['initial_server_state'].type_signature.result
    client_states_type = parts['initial_client_states'].type_signature.result
    data_type = tff.SequenceType(tff.StructType([
        ('x', tff.TensorType(np.float32, [None, tiny.NUM_FEATURES])),
        ('y', tff.TensorType(np.int32, [None]))]))
    tff.test.assert_types_equivalent(process.client_data_type, data_type)
    client_type = stateful_clients.client_input_type(data_type,
                                                     client_states_type)
    tff.test.assert_types_equivalent(client_type, tff.StructType([
        ('data', data_type), ('prototype', tff.TensorType(np.int32)),
        ('position', tff.TensorType(np.int32)),
        ('state', client_states_type)]))
    state_type = tff.FederatedType(tff.StructType([
        ('server', server_type),
        ('fusion', tff.StructType([('labels', tff.TensorType(np.int32))])),
    ]), tff.SERVER)
    round_type = process.round.type_signature
    tff.test.assert_types_equivalent(
        round_type.parameter,
        tff.StructType([('state', state_type),
                        ('clients', tff.FederatedType(client_type,
                                                      tff.CLIENTS))]))
    tff.test.assert_types_equivalent(round_type.result[0], state_type)
    tff.test.assert_types_equivalent(
        round_type.result[2],
        tff.FederatedType(tff.StructType([
            ('position', tff.TensorType(np.int32)),
            ('state', client_states_type)]), tff.CLIENTS))
    metrics_type = round_type.result[1]
    self.assertEqual(metrics_type.placement, tff.SERVER)
    self.assertEqual(tff.structure.name_list(metrics_type.member),
                     ['client_work', 'fusion', 'server'])
    self.assertEqual(
        tff.structure.name_list(metrics_type.member.client_work),
        ['train', 'non_finite_clients', 'communication'])
    tff.test.assert_types_equivalent(
        metrics_type.member.server,
        tff.StructType([('clients_fused', tff.TensorType(np.float32))]))

  def test_broadcast_fn_taking_another_type(self):

    @tff.tensorflow.computation(np.float32)
    def broadcast_fn(x):
      return x

    with self.assertRaisesRegex(
        TypeError, re.escape('The parts do not fit: broadcast_fn takes '
                             'float32 but is given <label_mean=')):
      _build(ONE, broadcast_fn=broadcast_fn)

  def test_client_work_taking_another_broadcast(self):

    server_type = _parts(ONE)['initial_server_state'].type_signature.result

    @tff.tensorflow.computation(server_type)
    def broadcast_fn(state):  # Not the model, which client_work takes.
      return collections.OrderedDict(label_mean=state['label_mean'],
                                     round=state['round'])

    with self.assertRaisesRegex(
        TypeError, re.escape('client_work (its first argument) takes <')
        + '.*model=.*' + re.escape('but is given <label_mean=float32[3],'
                                   'round=int32>')):
      _build(ONE, broadcast_fn=broadcast_fn)

  def test_server_update_returning_another_state_type(self):
    server_type = _parts(ONE)['initial_server_state'].type_signature.result

    @_step(
        server_type, server_type,
        collections.OrderedDict(labels=logit_fusion.value_type(1, C)))
    def server_update(state, broadcast, fused):
      del broadcast, fused
      return (collections.OrderedDict(state, round=tf.constant(0.0)),
              collections.OrderedDict())

    with self.assertRaisesRegex(
        TypeError, re.escape('The parts do not fit: server_update (its new '
                             'state)') + '.*round=float32.*round=int32'):
      _build(ONE, server_update=server_update)

  def test_server_update_new_state_error_says_what_it_returns(self):
    server_type = _parts(ONE)['initial_server_state'].type_signature.result

    @_step(
        server_type, server_type,
        collections.OrderedDict(labels=logit_fusion.value_type(1, C)))
    def server_update(state, broadcast, fused):
      del broadcast, fused
      return (collections.OrderedDict(state, round=tf.constant(0.0)),
              collections.OrderedDict())

    with self.assertRaisesRegex(TypeError, 'server_update') as raised:
      _build(ONE, server_update=server_update)
    self.assertNotRegex(str(raised.exception), r'takes <[^ ]*round=float32')

  def test_server_update_taking_another_fused_knowledge(self):
    server_type = _parts(ONE)['initial_server_state'].type_signature.result

    @_step(
        server_type, server_type,
        collections.OrderedDict(labels=logit_fusion.value_type(2, C)))
    def server_update(state, broadcast, fused):
      del broadcast, fused
      return state, collections.OrderedDict()

    with self.assertRaisesRegex(
        TypeError, re.escape('server_update (argument 3, the fused '
                             'knowledge) takes')):
      _build(ONE, server_update=server_update)

  def test_client_work_result_missing_a_field(self):
    parts = _parts(ONE)
    work = parts['client_work'].type_signature

    @tff.tensorflow.computation(work.parameter[0], work.parameter[1])
    def client_work(broadcast, client):
      del broadcast
      return collections.OrderedDict(
          state=collections.OrderedDict(position=client['position'],
                                        state=client['state']),
          knowledge=collections.OrderedDict(labels=collections.OrderedDict(
              logits=tf.zeros([1, C]), weights=tf.ones([1]))),
          metrics=collections.OrderedDict())

    with self.assertRaisesRegex(
        TypeError, re.escape('client_work must return <state, knowledge, '
                             'metrics, non_finite>; it returns <state=')):
      _build(ONE, client_work=client_work)


class StatefulClientsExecutionTest(tf.test.TestCase, parameterized.TestCase):

  def assertClientStates(self, state, expected, model_fns):
    owners = OWNERS[len(model_fns)]
    self.assertEqual(list(state['clients']), list(SIZES))
    for c, want in expected.items():
      got = state['clients'][c]
      self.assertEqual(list(got), ['model', 'rounds', 'seen'])
      self.assertAllClose(got['model'].trainable, want['model'], rtol=1e-5,
                          atol=1e-6, msg=c)
      self.assertEqual(got['rounds'], want['rounds'], c)
      self.assertAllClose(got['seen'], want['seen'], atol=1e-6, msg=c)
      # A client's state is its own prototype's.
      self.assertLen(got['model'].trainable,
                     2 if owners[c] == 'linear' else 4)

  @parameterized.named_parameters(
      ('one_prototype', ONE, ROUNDS),
      ('two_prototypes', TWO, ROUNDS_TWO),
  )
  def test_two_rounds_match_numpy(self, model_fns, rounds):
    arrays, datasets = _data()
    process = _build(model_fns)
    initial, state, output = _run(process, datasets, rounds)
    # Every client starts from its prototype's initial state.
    for c, prototype in OWNERS[len(model_fns)].items():
      with tf.Graph().as_default():
        count = len(model_fns[prototype]().trainable_variables)
      self.assertLen(initial['clients'][c]['model'].trainable, count)
    clients, label_mean = _np_rounds(initial, arrays, rounds)
    self.assertClientStates(state, clients, model_fns)
    # A client never sampled keeps its initial state.
    [never] = set(SIZES) - {c for sampled in rounds for c, _ in sampled}
    self.assertEqual(state['clients'][never]['rounds'], 0)
    self.assertAllClose(state['clients'][never]['model'].trainable,
                        initial['clients'][never]['model'].trainable,
                        rtol=0, atol=0)
    self.assertAllClose(state['server']['label_mean'], label_mean, atol=1e-6)
    self.assertEqual(state['server']['round'], 2)
    # The fusion's state is carried in state['fusion'].
    self.assertEqual(state['fusion'], collections.OrderedDict(labels=2))

    metrics = output.metrics
    self.assertEqual(list(metrics), ['client_work', 'fusion', 'server'])
    work = metrics['client_work']
    self.assertEqual(list(work),
                     ['train', 'non_finite_clients', 'communication'])
    self.assertEqual(list(work['train']), list(model_fns))
    owners = OWNERS[len(model_fns)]
    for n in model_fns:
      self.assertEqual(work['train'][n]['num_examples'], sum(
          SIZES[c] for c, has_data in rounds[-1]
          if has_data and owners[c] == n))
    self.assertEqual(work['non_finite_clients'], 0)
    down = 4 * (C + 1) + 4 * (tiny.NUM_FEATURES * C + C)  # B = S: the model.
    up = 4 * (C + 1)
    self.assertEqual(
        work['communication'], collections.OrderedDict(
            bytes_uploaded=3 * up, bytes_downloaded=3 * down,
            bytes_uploaded_per_client=float(up),
            bytes_downloaded_per_client=float(down)))
    self.assertEqual(metrics['fusion'], collections.OrderedDict(
        labels=collections.OrderedDict(
            inner=collections.OrderedDict(fused_clients=3,
                                          non_finite_clients=0),
            rounds=2)))
    self.assertEqual(metrics['server'],
                     collections.OrderedDict(clients_fused=2.0))

  def test_data_built_where_it_runs_and_states_in_a_store(self):
    # Client keys in (datasets built on the worker by TFF's composition) and
    # client states in a disk-backed store: the rounds of the in-memory,
    # datasets-in process, bit for bit.
    arrays, datasets = _data()
    process = _build(TWO)
    _, want, want_output = _run(process, datasets, ROUNDS_TWO)
    ids = list(SIZES)
    x_all = np.concatenate([arrays[c][0] for c in ids])
    y_all = np.concatenate([arrays[c][1] for c in ids])
    offsets = np.cumsum([0] + [SIZES[c] for c in ids])

    @tff.tensorflow.computation(collections.OrderedDict(k=np.int32,
                                                        take=np.int64))
    def client_data(key):
      bounds = tf.constant(offsets)
      start, end = bounds[key['k']], bounds[key['k'] + 1]
      return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
          x=tf.constant(x_all)[start:end], y=tf.constant(y_all)[start:end]
      )).batch(100).take(key['take'])

    keyed = process.with_client_data(client_data)
    tff.test.assert_types_equivalent(keyed.client_data_type,
                                     process.client_data_type)
    store = keyed.open_client_store(self.create_tempdir().full_path)
    state = keyed.initialize(client_store=store)
    for sampled in ROUNDS_TWO:
      output = keyed.next(state, [keyed.client_input(c, collections.OrderedDict(
          k=np.int32(ids.index(c)), take=np.int64(-1 if has_data else 0)))
                                  for c, has_data in sampled])
      state = output.state
    self.assertIsInstance(state['clients'], client_store.ClientStates)
    self.assertEqual(list(state['clients']), list(SIZES))
    for c in SIZES:
      self.assertAllClose(tf.nest.flatten(state['clients'][c]),
                          tf.nest.flatten(want['clients'][c]), rtol=0, atol=0)
    self.assertAllClose(tf.nest.flatten(state['server']),
                        tf.nest.flatten(want['server']), rtol=0, atol=0)
    self.assertEqual(output.metrics, want_output.metrics)
    models = keyed.evaluation_models(state)
    self.assertLen(models['clients'], 4)
    self.assertLen(models['clients_mlp'], 2)
    self.assertAllClose(models['clients_mlp'][1][1].trainable,
                        want['clients']['d']['model'].trainable, rtol=0, atol=0)
    store.close()

  def test_bytes_are_the_type_sizes(self):
    parts = _parts(ONE, server_model=False)
    process = _build(ONE, server_model=False)
    _, datasets = _data()
    output = process.next(process.initialize(),
                          [('a', datasets['a']), ('b', datasets['b'])])
    down = communication.type_bytes(
        parts['broadcast_fn'].type_signature.result)
    up = communication.type_bytes(
        parts['client_work'].type_signature.result.knowledge)
    self.assertEqual((down, up), (4 * (C + 1), 4 * (C + 1)))
    communicated = output.metrics['client_work']['communication']
    self.assertEqual(communicated['bytes_downloaded'], 2 * down)
    self.assertEqual(communicated['bytes_uploaded'], 2 * up)

  def test_positions_map_states_back_whatever_the_output_order(self):
    arrays, datasets = _data()
    process = _build(ONE)
    round_fn = process.round

    def reversed_round(state, clients):
      # A runtime over several workers may return the clients in any order.
      server, metrics, outputs = round_fn(state, clients)
      return server, metrics, list(reversed(outputs))

    process.round = reversed_round
    initial, state, _ = _run(process, datasets, ROUNDS)
    clients, _ = _np_rounds(initial, arrays, ROUNDS)
    self.assertClientStates(state, clients, ONE)

  def test_a_round_missing_a_client_is_an_error(self):
    _, datasets = _data()
    process = _build(ONE)
    round_fn = process.round
    process.round = lambda state, clients: (
        lambda server, metrics, outputs: (server, metrics, outputs[:1]))(
            *round_fn(state, clients))
    with self.assertRaisesRegex(
        RuntimeError, re.escape('client states at positions [0]; expected '
                                'each of the 2 clients once')):
      process.next(process.initialize(),
                   [('a', datasets['a']), ('b', datasets['b'])])

  @parameterized.named_parameters(
      ('one_prototype_server_model', ONE, True, ['clients', 'test']),
      ('one_prototype_no_server_model', ONE, False, ['clients', 'test']),
      ('two_prototypes_server_model', TWO, True,
       ['clients', 'clients_linear', 'clients_mlp', 'test']),
  )
  def test_evaluation_models(self, model_fns, server_model, names):
    _, datasets = _data()
    process = _build(model_fns, server_model)
    state = process.next(process.initialize(),
                         [('b', datasets['b']), ('a', datasets['a'])]).state
    models = process.evaluation_models(state)
    self.assertEqual(list(models), names)
    owners = OWNERS[len(model_fns)]

    def check(entries, clients):
      self.assertLen(entries, len(clients))
      for (model_fn, weights), c in zip(entries, clients):
        self.assertIs(model_fn, model_fns[owners[c]])
        self.assertAllClose(weights.trainable,
                            state['clients'][c]['model'].trainable,
                            rtol=0, atol=0)

    check(models['clients'], list(SIZES))
    for n in model_fns:
      if f'clients_{n}' in models:
        check(models[f'clients_{n}'], [c for c in SIZES if owners[c] == n])
    if server_model:
      [(model_fn, weights)] = models['test']
      self.assertIs(model_fn, tiny.model_fn)
      self.assertAllClose(weights.trainable,
                          state['server']['model'].trainable, rtol=0, atol=0)
    else:
      check(models['test'], list(SIZES))

  def test_client_input_and_initialize(self):
    process = _build(TWO)
    _, datasets = _data()
    self.assertEqual(process.client_input('b', datasets['b']),
                     ('b', datasets['b']))
    self.assertEqual(process.prototypes, ['linear', 'mlp'])
    state = process.initialize()
    self.assertEqual(list(state), ['server', 'fusion', 'clients'])
    self.assertEqual(state['fusion'], collections.OrderedDict(labels=0))
    self.assertEqual(state['server']['round'], 0)
    self.assertAllClose(state['clients']['b']['model'].trainable,
                        state['clients']['d']['model'].trainable,
                        rtol=0, atol=0)

  def test_unknown_prototype_or_no_clients(self):
    parts = _parts(ONE)
    with self.assertRaisesRegex(
        ValueError, re.escape("prototypes ['mlp'] that the process does not "
                              "have (it has ['linear'])")):
      stateful_clients.build_stateful_clients_process(
          client_prototypes={'a': 'linear', 'b': 'mlp'}, **parts)
    with self.assertRaisesRegex(ValueError, 'client_prototypes is empty'):
      stateful_clients.build_stateful_clients_process(
          client_prototypes={}, **parts)


if __name__ == '__main__':
  tf.test.main()
