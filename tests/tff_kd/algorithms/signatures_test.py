"""Every builder's process: the types of initialize and next (or the round of
the stateful-clients ones) and the top-level keys of its metrics."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import algorithms
from tff_kd import server_distillation
from tff_kd import stateful_clients

OWNERS = {'a': 'model', 'b': 'model'}
DATA_TYPE = tff.SequenceType(tff.StructType([
    ('x', tff.TensorType(np.float32, [None, tiny.NUM_FEATURES])),
    ('y', tff.TensorType(np.int32, [None]))]))
COMPOSED_STATE = ['global_model_weights', 'distributor', 'client_work',
                  'aggregator', 'finalizer']
COMPOSED_METRICS = ['distributor', 'client_work', 'aggregator', 'finalizer']
STATEFUL_METRICS = ['client_work', 'fusion', 'server']


def _public(rows=6):
  return np.random.default_rng(1).normal(
      size=(rows, tiny.NUM_FEATURES)).astype(np.float32)


def _builders():
  """name -> (build, prototype name -> model_fn, global weights keyed)."""
  sgd = tiny.sgd()
  one = {'model': tiny.model_fn}
  attention = {'model': tiny.attention_model_fn}
  two = collections.OrderedDict(linear=tiny.model_fn, mlp=tiny.mlp_model_fn)
  x, y = tiny.client_arrays([8], seed=9)[0]
  config = server_distillation.DistillationConfig(steps=1, batch_size=2)
  return {
      'fedavg': (lambda: algorithms.build_fedavg(tiny.model_fn, sgd), one),
      'fedntd': (lambda: algorithms.build_fedntd(tiny.model_fn, sgd), one),
      'fedgkd': (lambda: algorithms.build_fedgkd(tiny.model_fn, sgd), one),
      'fedssd': (lambda: algorithms.build_fedssd(
          tiny.model_fn, sgd, validation_x=x, validation_y=y,
          num_classes=tiny.NUM_CLASSES), one),
      'feddf': (lambda: algorithms.build_feddf(
          two, sgd, distillation_inputs=_public(), distill_steps=1,
          distill_batch_size=2, client_prototypes={'a': 'linear',
                                                   'b': 'mlp'}), two),
      'fedaux': (lambda: algorithms.build_fedaux(
          attention, sgd, distillation_inputs=_public(),
          negative_inputs=_public(3) + 1.0), attention),
      'fedgen': (lambda: algorithms.build_fedgen(
          tiny.attention_model_fn, sgd, num_classes=tiny.NUM_CLASSES,
          clients_per_round=2, noise_dim=2, hidden_dim=4, generator_steps=1,
          generator_batch_size=2), attention),
      'fd': (lambda: algorithms.build_fd(one, sgd, client_prototypes=OWNERS),
             one),
      'dsfl': (lambda: algorithms.build_dsfl(
          one, sgd, client_prototypes=OWNERS, public_inputs=_public(),
          subset_size=4, distill_batch_size=2), one),
      'fedad': (lambda: algorithms.build_fedad(
          attention, sgd, client_prototypes=OWNERS, public_inputs=_public(),
          server_distillation=config), attention),
  }


def _model_weights_type(model_fn):

  @tff.tensorflow.computation()
  def weights():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  return weights.type_signature.result


class SignaturesTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      # (name, client data: 'plain' or 'prototypes', global weights keys)
      ('fedavg', 'fedavg', 'plain', None),
      ('fedntd', 'fedntd', 'plain', None),
      ('fedgkd', 'fedgkd', 'plain', None),
      ('fedssd', 'fedssd', 'plain', None),
      ('feddf', 'feddf', 'prototypes', ['linear', 'mlp']),
      ('fedaux', 'fedaux', 'prototypes', ['model']),
      ('fedgen', 'fedgen', 'plain', ['model', 'generator']),
  )
  def test_composed_process(self, name, data, weights_keys):
    build, model_fns = _builders()[name]
    process = build()
    self.assertIsInstance(process, tff.learning.templates.LearningProcess)
    state_type = process.initialize.type_signature.result
    self.assertIsNone(process.initialize.type_signature.parameter)
    self.assertIsInstance(state_type, tff.FederatedType)
    self.assertEqual(state_type.placement, tff.SERVER)
    self.assertEqual(tff.structure.name_list(state_type.member),
                     COMPOSED_STATE)
    weights_type = state_type.member.global_model_weights
    if weights_keys is None:
      tff.test.assert_types_equivalent(
          weights_type, _model_weights_type(model_fns['model']))
    else:
      self.assertEqual(tff.structure.name_list(weights_type), weights_keys)
      for n, model_fn in model_fns.items():
        tff.test.assert_types_equivalent(weights_type[n],
                                         _model_weights_type(model_fn))

    if data == 'plain':
      data_type = DATA_TYPE
    else:
      data_type = tff.StructType([(n, DATA_TYPE) for n in model_fns])
    next_type = process.next.type_signature
    tff.test.assert_types_equivalent(
        next_type.parameter,
        tff.StructType([('state', state_type),
                        ('client_data', tff.FederatedType(data_type,
                                                          tff.CLIENTS))]))
    tff.test.assert_types_equivalent(next_type.result.state, state_type)
    metrics_type = next_type.result.metrics
    self.assertEqual(metrics_type.placement, tff.SERVER)
    self.assertEqual(tff.structure.name_list(metrics_type.member),
                     COMPOSED_METRICS)

  @parameterized.named_parameters(
      # (name, a client's state, the fused knowledge fields)
      ('fd', 'fd', ['model', 'upload'], ['per_label']),
      ('dsfl', 'dsfl', ['model'], ['soft_labels']),
      ('fedad', 'fedad', ['model'], ['logits', 'attention']),
  )
  def test_stateful_clients_round(self, name, client_state_keys, fields):
    build, model_fns = _builders()[name]
    process = build()
    self.assertIsInstance(process, stateful_clients.StatefulClientsProcess)
    round_type = process.round.type_signature
    state_type, clients_type = round_type.parameter
    self.assertIsInstance(state_type, tff.FederatedType)
    self.assertEqual(state_type.placement, tff.SERVER)
    self.assertEqual(tff.structure.name_list(state_type.member),
                     ['server', 'fusion'])
    # The fusion's state: one part per knowledge field.
    self.assertEqual(tff.structure.name_list(state_type.member.fusion),
                     fields)
    # The client input: its data, prototype, position and every prototype's
    # state (each with its model).
    member = clients_type.member
    states_type = member.state
    self.assertEqual(tff.structure.name_list(states_type), list(model_fns))
    for n, model_fn in model_fns.items():
      self.assertEqual(tff.structure.name_list(states_type[n]),
                       client_state_keys)
      tff.test.assert_types_equivalent(states_type[n].model,
                                       _model_weights_type(model_fn))
    tff.test.assert_types_equivalent(
        clients_type,
        tff.FederatedType(
            stateful_clients.client_input_type(DATA_TYPE, states_type),
            tff.CLIENTS))
    tff.test.assert_types_equivalent(process.client_data_type, DATA_TYPE)

    new_state_type, metrics_type, client_states_type = round_type.result
    tff.test.assert_types_equivalent(new_state_type, state_type)
    self.assertEqual(metrics_type.placement, tff.SERVER)
    self.assertEqual(tff.structure.name_list(metrics_type.member),
                     STATEFUL_METRICS)
    self.assertEqual(tff.structure.name_list(metrics_type.member.fusion),
                     fields)
    tff.test.assert_types_equivalent(
        client_states_type,
        tff.FederatedType(tff.StructType([
            ('position', tff.TensorType(np.int32)),
            ('state', states_type)]), tff.CLIENTS))
    # The process's state (a Python structure, checkpointed): the round's
    # state and every client's own state.
    state = process.initialize()
    self.assertEqual(list(state), ['server', 'fusion', 'clients'])
    self.assertEqual(list(state['clients']), list(OWNERS))
    self.assertEqual(list(state['clients']['a']), client_state_keys)


if __name__ == '__main__':
  tf.test.main()
