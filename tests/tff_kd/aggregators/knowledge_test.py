"""KnowledgeFactory and build_fusion: types, per-prototype means and fused
knowledge against numpy, unweighted model aggregators, clear errors."""

import collections
import re

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd.aggregators import knowledge
from tff_kd.aggregators import logit_fusion
from tff_kd.aggregators import stack

F32 = np.float32
PROTOTYPES = ('linear', 'mlp')
# Two prototypes' updates (unnamed structures, as a client's delta) and two
# knowledge fields of different shapes.
MODEL_TYPES = collections.OrderedDict(
    linear=tff.to_type((tff.TensorType(F32, [2, 3]), tff.TensorType(F32, [3]))),
    mlp=tff.to_type((tff.TensorType(F32, [4]),)),
)
KNOWLEDGE_TYPES = collections.OrderedDict(
    logits=logit_fusion.value_type(5, 3),
    per_label=logit_fusion.value_type(3, 3),
)


def _value_type(prototypes=PROTOTYPES, fields=tuple(KNOWLEDGE_TYPES)):
  """As a client work's update type: Python containers (the factories'
  TensorFlow code maps over them)."""
  return tff.to_type(collections.OrderedDict(
      models=collections.OrderedDict((n, MODEL_TYPES[n]) for n in prototypes),
      knowledge=collections.OrderedDict(
          (f, KNOWLEDGE_TYPES[f]) for f in fields)))


def _weight_type(prototypes=PROTOTYPES):
  return tff.to_type(collections.OrderedDict(
      (n, tff.TensorType(F32)) for n in prototypes))


def _fusion_measurements_type():
  return tff.StructType([('fused_clients', tff.TensorType(np.int32)),
                         ('non_finite_clients', tff.TensorType(np.int32))])


def _clients(owners, seed):
  """Per client: its values (every prototype's update non-zero, also the
  other prototype's, so a wrong weighting shows) and weights (its own
  prototype's, 0 for the others)."""
  rng = np.random.default_rng(seed)
  values, weights = [], []
  for owner in owners:
    values.append(collections.OrderedDict(
        models=collections.OrderedDict(
            linear=[rng.normal(size=(2, 3)).astype(F32),
                    rng.normal(size=3).astype(F32)],
            mlp=[rng.normal(size=4).astype(F32)]),
        knowledge=collections.OrderedDict(
            logits=collections.OrderedDict(
                logits=rng.normal(size=(5, 3)).astype(F32),
                weights=rng.uniform(0.1, 1.0, size=5).astype(F32)),
            per_label=collections.OrderedDict(
                logits=rng.normal(size=(3, 3)).astype(F32),
                weights=rng.integers(0, 2, size=3).astype(F32)))))
    weights.append(collections.OrderedDict(
        (n, float(rng.integers(1, 20)) if n == owner else 0.0)
        for n in PROTOTYPES))
  return values, weights


def _np_fused(values, field):
  logits = np.stack([v['knowledge'][field]['logits'] for v in values])
  row_weights = np.stack([v['knowledge'][field]['weights'] for v in values])
  total = row_weights.sum(axis=0)
  fused = np.einsum('kr,krc->rc', row_weights, logits) / np.where(
      total > 0, total, 1.0)[:, None]
  return np.where(total[:, None] > 0, fused, 0.0), total


class KnowledgeFactoryComputationTest(tf.test.TestCase, parameterized.TestCase):

  def test_type_signature_two_prototypes_two_fields(self):
    value_type, weight_type = _value_type(), _weight_type()
    process = knowledge.KnowledgeFactory().create(value_type, weight_type)
    empty = tff.StructType([])
    state_type = tff.FederatedType(tff.StructType([
        ('models', tff.StructType([(n, empty) for n in PROTOTYPES])),
        ('knowledge', tff.StructType([(f, empty) for f in KNOWLEDGE_TYPES])),
    ]), tff.SERVER)
    result_type = tff.FederatedType(value_type, tff.SERVER)
    measurements_type = tff.FederatedType(tff.StructType([
        ('models', tff.StructType([
            (n, tff.StructType([('total_weight', tff.TensorType(F32))]))
            for n in PROTOTYPES])),
        ('knowledge', tff.StructType([(f, _fusion_measurements_type())
                                      for f in KNOWLEDGE_TYPES])),
    ]), tff.SERVER)
    tff.test.assert_types_equivalent(
        process.initialize.type_signature,
        tff.FunctionType(None, state_type))
    tff.test.assert_types_equivalent(
        process.next.type_signature,
        tff.FunctionType(
            tff.StructType([
                ('state', state_type),
                ('value', tff.FederatedType(value_type, tff.CLIENTS)),
                ('weight', tff.FederatedType(weight_type, tff.CLIENTS)),
            ]),
            tff.templates.MeasuredProcessOutput(
                state_type, result_type, measurements_type)))

  def test_weights_must_name_the_prototypes(self):
    with self.assertRaisesRegex(TypeError, r"prototypes \['linear', 'mlp'\]"):
      knowledge.KnowledgeFactory().create(_value_type(),
                                          _weight_type(('linear',)))

  def test_value_must_have_models_and_knowledge(self):
    with self.assertRaisesRegex(TypeError, 'KnowledgeFactory needs values'):
      knowledge.KnowledgeFactory().create(
          tff.StructType([('models', _value_type().models)]), _weight_type())

  def test_unweighted_model_aggregator_with_two_prototypes_is_a_value_error(
      self):
    factory = knowledge.KnowledgeFactory(
        model_aggregator=tff.aggregators.UnweightedMeanFactory())
    with self.assertRaisesRegex(
        ValueError, r"one model prototype only; the process has "
        r"\['linear', 'mlp'\]"):
      factory.create(_value_type(), _weight_type())

  def test_a_non_factory_model_aggregator_is_a_type_error(self):
    with self.assertRaisesRegex(TypeError, "model_aggregator must be.*'mean'"):
      knowledge.KnowledgeFactory(model_aggregator='mean')

  @parameterized.named_parameters(
      ('missing_field', {'logits': logit_fusion.LogitFusionFactory()}),
      ('misspelt_field', {'logits': logit_fusion.LogitFusionFactory(),
                          'per_labels': logit_fusion.LogitFusionFactory()}),
      ('extra_field', {'logits': logit_fusion.LogitFusionFactory(),
                       'per_label': logit_fusion.LogitFusionFactory(),
                       'heads': logit_fusion.LogitFusionFactory()}),
  )
  def test_fusion_mapping_with_other_keys_is_a_value_error_naming_both(
      self, mapping):
    factory = knowledge.KnowledgeFactory(fusion_aggregator=mapping)
    with self.assertRaisesRegex(
        ValueError, re.escape(f'factories for {sorted(mapping)}') + '.*'
        + re.escape("fields ['logits', 'per_label']")):
      factory.create(_value_type(), _weight_type())

  def test_an_empty_fusion_mapping_is_a_value_error(self):
    factory = knowledge.KnowledgeFactory(fusion_aggregator={})
    with self.assertRaisesRegex(
        ValueError, re.escape("factories for []; the knowledge sent has fields "
                              "['logits', 'per_label']")):
      factory.create(_value_type(), _weight_type())

  @parameterized.named_parameters(
      ('in_a_mapping', {'logits': logit_fusion.LogitFusionFactory(),
                        'per_label': 'avg'}, 'per_label'),
      ('weighted_factory', {'logits': tff.aggregators.MeanFactory(),
                            'per_label': logit_fusion.LogitFusionFactory()},
       'logits'),
      ('for_every_field', 'avg', 'logits'),
  )
  def test_a_non_factory_is_a_type_error_naming_the_field(self, fusion, field):
    factory = knowledge.KnowledgeFactory(fusion_aggregator=fusion)
    with self.assertRaisesRegex(
        TypeError, f"fusion aggregator of '{field}' must be a "
        'tff.aggregators.UnweightedAggregationFactory'):
      factory.create(_value_type(), _weight_type())


class KnowledgeFactoryExecutionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('three_clients', ('linear', 'mlp', 'linear'), 0),
      ('two_clients', ('mlp', 'linear'), 1),
  )
  def test_per_prototype_weighted_means_and_fused_knowledge(self, owners,
                                                            seed):
    values, weights = _clients(owners, seed)
    process = knowledge.KnowledgeFactory().create(_value_type(),
                                                  _weight_type())
    output = process.next(process.initialize(), values, weights)
    for n in PROTOTYPES:
      total = sum(w[n] for w in weights)
      # Clients of the other prototype carry weight 0: only the owners count.
      self.assertGreater(total, 0)
      expected = [sum(w[n] * v['models'][n][i] for v, w in zip(values, weights))
                  / total for i in range(len(values[0]['models'][n]))]
      self.assertAllClose(output.result['models'][n], expected, rtol=1e-5,
                          atol=1e-6)
      unweighted = [np.mean([v['models'][n][i] for v in values], axis=0)
                    for i in range(len(values[0]['models'][n]))]
      self.assertNotAllClose(output.result['models'][n], unweighted)
      self.assertAllClose(output.measurements['models'][n]['total_weight'],
                          total)
    for field in KNOWLEDGE_TYPES:
      fused, row_weights = _np_fused(values, field)
      self.assertAllClose(output.result['knowledge'][field]['logits'], fused,
                          rtol=1e-5, atol=1e-6)
      self.assertAllClose(output.result['knowledge'][field]['weights'],
                          row_weights, rtol=1e-6)
      self.assertEqual(output.measurements['knowledge'][field],
                       collections.OrderedDict(fused_clients=len(owners),
                                               non_finite_clients=0))

  def test_unweighted_model_aggregator_with_one_prototype_averages_uniformly(
      self):
    values, weights = _clients(('linear', 'linear', 'linear'), seed=2)
    values = [collections.OrderedDict(
        models=collections.OrderedDict(linear=v['models']['linear']),
        knowledge=v['knowledge']) for v in values]
    weights = [collections.OrderedDict(linear=w['linear']) for w in weights]
    self.assertLen(set(w['linear'] for w in weights), 3)  # Would differ.
    process = knowledge.KnowledgeFactory(
        model_aggregator=tff.aggregators.UnweightedMeanFactory()).create(
            _value_type(('linear',)), _weight_type(('linear',)))
    output = process.next(process.initialize(), values, weights)
    self.assertAllClose(
        output.result['models']['linear'],
        [np.mean([v['models']['linear'][i] for v in values], axis=0)
         for i in range(2)], rtol=1e-5, atol=1e-6)
    # TFF's unweighted mean's own (empty) measurements, with no total_weight.
    self.assertEqual(output.measurements['models']['linear'],
                     collections.OrderedDict(mean_value=(), mean_count=()))

  def test_state_of_every_part_is_carried(self):
    # Adaptive clipping on the models: its clipping norm lives in
    # state.models.<prototype> and moves from one call to the next.
    clipping = tff.aggregators.clipping_factory(
        tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
            initial_estimate=0.1, target_quantile=0.5, learning_rate=0.5),
        tff.aggregators.MeanFactory())
    process = knowledge.KnowledgeFactory(model_aggregator=clipping).create(
        _value_type(), _weight_type())
    values, weights = _clients(('linear', 'mlp', 'linear'), seed=3)
    state = process.initialize()
    norms = []
    for _ in range(2):
      output = process.next(state, values, weights)
      state = output.state
      norms.append([output.measurements['models'][n]['clipping_norm']
                    for n in PROTOTYPES])
    self.assertAllClose(norms[0], [0.1, 0.1])
    self.assertNotAllClose(norms[1], norms[0])


class BuildFusionTest(tf.test.TestCase):

  def test_a_factory_per_field_applies_each(self):
    knowledge_type = tff.to_type(collections.OrderedDict(
        logits=KNOWLEDGE_TYPES['logits'],
        heads=collections.OrderedDict(kernel=tff.TensorType(F32, [2, 3]))))
    fusion = knowledge.build_fusion(
        collections.OrderedDict(heads=stack.StackFactory(4),
                                logits=logit_fusion.LogitFusionFactory()),
        knowledge_type)
    tff.test.assert_types_equivalent(
        fusion.next.type_signature.result.result,
        tff.FederatedType(tff.StructType([
            ('logits', KNOWLEDGE_TYPES['logits']),
            ('heads', tff.StructType([
                ('values', tff.StructType([
                    ('kernel', tff.TensorType(F32, [4, 2, 3]))])),
                ('count', tff.TensorType(np.int32))])),
        ]), tff.SERVER))
    values, _ = _clients(('linear', 'mlp', 'linear'), seed=4)
    rng = np.random.default_rng(5)
    kernels = [rng.normal(size=(2, 3)).astype(F32) for _ in values]
    clients = [collections.OrderedDict(
        logits=v['knowledge']['logits'],
        heads=collections.OrderedDict(kernel=k)) for v, k in zip(values, kernels)]
    output = fusion.next(fusion.initialize(), clients)
    fused, _ = _np_fused(values, 'logits')
    self.assertAllClose(output.result['logits']['logits'], fused, rtol=1e-5,
                        atol=1e-6)
    heads = output.result['heads']
    self.assertEqual(heads['count'], 3)
    # The stack's row order is the runtime's: compare as a set of rows.
    stacked = heads['values']['kernel']
    self.assertAllEqual(stacked[3], np.zeros((2, 3)))
    self.assertCountEqual([r.tobytes() for r in stacked[:3]],
                          [k.tobytes() for k in kernels])
    self.assertEqual(output.measurements['logits'],
                     collections.OrderedDict(fused_clients=3,
                                             non_finite_clients=0))
    self.assertEmpty(output.measurements['heads'])

  def test_one_factory_serves_every_field(self):
    values, _ = _clients(('linear', 'mlp'), seed=6)
    fusion = knowledge.build_fusion(logit_fusion.LogitFusionFactory(),
                                    _value_type().knowledge)
    output = fusion.next(fusion.initialize(),
                         [v['knowledge'] for v in values])
    for field in KNOWLEDGE_TYPES:
      self.assertAllClose(output.result[field]['logits'],
                          _np_fused(values, field)[0], rtol=1e-5, atol=1e-6)


if __name__ == '__main__':
  tf.test.main()
