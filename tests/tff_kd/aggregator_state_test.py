"""Every algorithm carries its aggregators' state from round to round.

A stateful factory (here one that counts its rounds, wrapping the default)
plugged in as `model_aggregator` or `fusion_aggregator` must see its state
advance 1, 2, 3 over three rounds: an algorithm that re-initialized its
aggregation process every round would report 1, 1, 1. And with TFF's own
adaptive clipping the clipping norm moves between rounds.
"""

import collections

import attr
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import aggregators
from tff_kd import algorithms
from tff_kd import server_distillation

IDS = ('a', 'b', 'c')


def _leaves(value, key):
  """Every value stored under `key` anywhere in a nested state/metrics."""
  if attr.has(type(value)):
    value = attr.asdict(value, recurse=False)
  if isinstance(value, collections.abc.Mapping):
    found = [value[key]] if key in value else []
    for k, v in value.items():
      if k != key:
        found += _leaves(v, key)
    return found
  if isinstance(value, (list, tuple)):
    return [x for v in value for x in _leaves(v, key)]
  return []


def _public():
  return np.random.default_rng(1).normal(
      size=(6, tiny.NUM_FEATURES)).astype(np.float32)


def _process(name, model_aggregator, fusion_aggregator):
  """`name` built on the tiny models with the given aggregators."""
  prototypes = {c: 'model' for c in IDS}
  sgd = tiny.sgd()
  if name in ('fedavg', 'fedntd', 'fedgkd'):
    build = getattr(algorithms, f'build_{name}')
    return build(tiny.model_fn, sgd, model_aggregator=model_aggregator)
  if name == 'fedssd':
    x, y = tiny.client_arrays([8], seed=9)[0]
    return algorithms.build_fedssd(
        tiny.model_fn, sgd, validation_x=x, validation_y=y,
        num_classes=tiny.NUM_CLASSES, model_aggregator=model_aggregator)
  if name == 'feddf':
    return algorithms.build_feddf(
        {'model': tiny.model_fn}, sgd, distillation_inputs=_public(),
        distill_steps=2, distill_batch_size=2, client_prototypes=prototypes,
        model_aggregator=model_aggregator,
        fusion_aggregator=fusion_aggregator)
  if name == 'fedaux':
    return algorithms.build_fedaux(
        {'model': tiny.attention_model_fn}, sgd,  # It has a `head`.
        distillation_inputs=_public(),
        negative_inputs=_public()[:3] + 1.0, client_prototypes=prototypes,
        model_aggregator=model_aggregator,
        fusion_aggregator=fusion_aggregator)
  if name == 'fedgen':
    return algorithms.build_fedgen(
        tiny.attention_model_fn, sgd, num_classes=tiny.NUM_CLASSES,
        clients_per_round=len(IDS), noise_dim=4, hidden_dim=8,
        generator_steps=2, generator_batch_size=2,
        model_aggregator=model_aggregator,
        fusion_aggregator=(fusion_aggregator and tiny.CountingUnweighted(
            aggregators.StackFactory(len(IDS)))))
  if name == 'fd':
    return algorithms.build_fd({'model': tiny.model_fn}, sgd,
                               client_prototypes=prototypes,
                               fusion_aggregator=fusion_aggregator)
  if name == 'dsfl':
    return algorithms.build_dsfl(
        {'model': tiny.model_fn}, sgd, client_prototypes=prototypes,
        public_inputs=_public(), subset_size=4, distill_batch_size=2,
        fusion_aggregator=fusion_aggregator and tiny.CountingUnweighted(
            aggregators.EntropyReductionFactory()))
  if name == 'fedad':
    return algorithms.build_fedad(
        {'model': tiny.attention_model_fn}, sgd,
        client_prototypes=prototypes, public_inputs=_public(),
        server_distillation=server_distillation.DistillationConfig(
            steps=2, batch_size=2),
        fusion_aggregator=fusion_aggregator)
  raise ValueError(name)


# (algorithm, has a model aggregator, number of fused knowledge fields)
ALGORITHMS = (
    ('fedavg', True, 0), ('fedntd', True, 0), ('fedgkd', True, 0),
    ('fedssd', True, 0), ('feddf', True, 1), ('fedaux', True, 1),
    ('fedgen', True, 1), ('fd', False, 1), ('dsfl', False, 1),
    ('fedad', False, 2),
)


class AggregatorStateTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters((name, name, models, fields)
                                  for name, models, fields in ALGORITHMS)
  def test_aggregator_state_advances_every_round(self, name, models, fields):
    process = _process(
        name,
        tiny.CountingWeighted(aggregators.WeightedMeanFactory())
        if models else None,
        tiny.CountingUnweighted(aggregators.LogitFusionFactory())
        if fields else None)
    datasets = tiny.datasets(tiny.client_arrays([5, 7, 6], seed=2), 3)
    state = process.initialize()
    self.assertAllEqual(_leaves(state, 'rounds'), [0] * (models + fields))
    for round_num in (1, 2, 3):
      if hasattr(process, 'client_input'):
        client_data = [process.client_input(c, d)
                       for c, d in zip(IDS, datasets)]
      else:
        client_data = datasets
      output = process.next(state, client_data)
      state = output.state
      # Every counted aggregator, in the state and in the metrics.
      self.assertAllEqual(_leaves(state, 'rounds'),
                          [round_num] * (models + fields))
      self.assertAllEqual(_leaves(output.metrics, 'rounds'),
                          [round_num] * (models + fields))

  def test_adaptive_clipping_norm_moves_across_rounds(self):
    # TFF's adaptive clipping (a quantile estimate in the aggregator state)
    # as FedAvg's model aggregator: its norm must change round by round.
    clipping = tff.aggregators.clipping_factory(
        tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
            initial_estimate=0.1, target_quantile=0.5, learning_rate=0.5),
        aggregators.WeightedMeanFactory())
    process = algorithms.build_fedavg(tiny.model_fn, tiny.sgd(),
                                      model_aggregator=clipping)
    datasets = tiny.datasets(tiny.client_arrays([5, 7, 6], seed=2), 3)
    state = process.initialize()
    norms = []
    for _ in range(3):
      output = process.next(state, datasets)
      state = output.state
      norms.append(output.metrics['aggregator']['clipping_norm'])
    self.assertLen(set(np.round(norms, 6)), 3)


if __name__ == '__main__':
  tf.test.main()
