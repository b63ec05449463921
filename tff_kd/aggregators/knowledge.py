"""Aggregates what a KD client sends: model updates per prototype, knowledge.

In the KD algorithms a client sends up to two kinds of values:
- model updates, one per model prototype (architecture; FedDF and FedAUX
  average each prototype's updates over its own clients, FedGen has one);
- knowledge to fuse: logits on shared inputs (FedDF, FedAUX, FedAD), soft
  labels (DS-FL), per-label logits (FD), attention maps (FedAD), classifier
  heads for the generator (FedGen), each a named field.

`build_fusion` makes one aggregation process per knowledge field from a
`tff.aggregators.UnweightedAggregationFactory` (the same factory for every
field, or one per field); `KnowledgeFactory` adds a `model_aggregator`
process per prototype, weighted by that prototype's client weight (zero for
the clients of other prototypes). Any `tff.aggregators` factory plugs in
(differential privacy, secure sum, compression, clipping); every part's
state is kept in this process's state, so a stateful factory (adaptive
clipping, DP noise state, error feedback) advances from round to round:

  value = <models=<name: T_name, ...>, knowledge=<field: V_field, ...>>
  weight = <name: float32, ...>
  state = <models=<name: S_name, ...>, knowledge=<field: S_field, ...>>
  next: (<state@SERVER, value@CLIENTS, weight@CLIENTS> -> <state@SERVER,
         result=<models=<name: T_name>, knowledge=<field: fused>>@SERVER,
         measurements=<models=<name: M_name>, knowledge=<field: M>>@SERVER>)

An unweighted `model_aggregator` (as TFF's DP aggregators are) ignores the
weights, so it can only serve a single prototype (every client's update
counts); with several it is an error.
"""

import collections
from collections.abc import Mapping
from typing import Optional, Union

import tensorflow_federated as tff

from tff_kd.aggregators import logit_fusion
from tff_kd.aggregators import weighted_mean

FusionFactories = Union[tff.aggregators.UnweightedAggregationFactory,
                        Mapping[str, tff.aggregators.UnweightedAggregationFactory]]
# A builder's `fusion_aggregator` argument (None: the algorithm's default).
FusionAggregator = Optional[Union[
    tff.aggregators.UnweightedAggregationFactory,
    Mapping[str, tff.aggregators.UnweightedAggregationFactory]]]
ModelAggregator = Union[tff.aggregators.WeightedAggregationFactory,
                        tff.aggregators.UnweightedAggregationFactory]


def check_model_aggregator(model_aggregator: Optional[ModelAggregator]):
  """The factory, default `WeightedMeanFactory()`; a clear error if not one."""
  if model_aggregator is None:
    return weighted_mean.WeightedMeanFactory()
  if not isinstance(model_aggregator,
                    (tff.aggregators.WeightedAggregationFactory,
                     tff.aggregators.UnweightedAggregationFactory)):
    raise TypeError(
        'model_aggregator must be a tff.aggregators.WeightedAggregationFactory'
        f' or UnweightedAggregationFactory; got {model_aggregator!r}.')
  return model_aggregator


def _zip(processes, field):
  """A federated OrderedDict of each process's `field` (state, result...)."""
  return tff.federated_zip(collections.OrderedDict(
      (name, getattr(output, field)) for name, output in processes.items()))


def _fusion_processes(fusion_aggregator, knowledge_type):
  fields = tff.structure.name_list(knowledge_type)
  if isinstance(fusion_aggregator, Mapping):
    if sorted(fusion_aggregator) != sorted(fields):
      raise ValueError(
          f'fusion_aggregator has factories for {sorted(fusion_aggregator)}; '
          f'the knowledge sent has fields {fields}.')
    factories = fusion_aggregator
  else:
    factories = {field: fusion_aggregator for field in fields}
  processes = collections.OrderedDict()
  for field in fields:
    factory = factories[field]
    if not isinstance(factory, tff.aggregators.UnweightedAggregationFactory):
      raise TypeError(
          f'The fusion aggregator of {field!r} must be a '
          f'tff.aggregators.UnweightedAggregationFactory; got {factory!r}.')
    processes[field] = factory.create(knowledge_type[field])
  return processes


def build_fusion(
    fusion_aggregator: FusionFactories, knowledge_type: tff.Type
) -> tff.templates.AggregationProcess:
  """One unweighted process over `<field: V_field>`, a part per field."""
  processes = _fusion_processes(fusion_aggregator, knowledge_type)

  @tff.federated_computation()
  def init_fn():
    return tff.federated_zip(collections.OrderedDict(
        (f, p.initialize()) for f, p in processes.items()))

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(knowledge_type, tff.CLIENTS))
  def next_fn(state, value):
    outputs = collections.OrderedDict(
        (f, p.next(state[f], value[f])) for f, p in processes.items())
    return tff.templates.MeasuredProcessOutput(
        _zip(outputs, 'state'), _zip(outputs, 'result'),
        _zip(outputs, 'measurements'))

  return tff.templates.AggregationProcess(init_fn, next_fn)


class KnowledgeFactory(tff.aggregators.WeightedAggregationFactory):
  """Model updates per prototype and fused knowledge (module docstring)."""

  def __init__(self, model_aggregator: Optional[ModelAggregator] = None,
               fusion_aggregator: Optional[FusionFactories] = None):
    """Args: model_aggregator: default `WeightedMeanFactory()`;
    fusion_aggregator: default `LogitFusionFactory()` for every field."""
    self._model_aggregator = check_model_aggregator(model_aggregator)
    self._fusion_aggregator = (logit_fusion.LogitFusionFactory()
                               if fusion_aggregator is None
                               else fusion_aggregator)

  def create(self, value_type: tff.Type,
             weight_type: tff.Type) -> tff.templates.AggregationProcess:
    if not (isinstance(value_type, tff.StructType)
            and tff.structure.name_list(value_type) == ['models', 'knowledge']):
      raise TypeError('KnowledgeFactory needs values <models=<...>, '
                      f'knowledge=<...>>; got {value_type}.')
    names = tff.structure.name_list(value_type.models)
    if names != tff.structure.name_list(weight_type):
      raise TypeError(f'The weights {weight_type} must name the prototypes '
                      f'{names} of the model updates.')
    weighted = isinstance(self._model_aggregator,
                          tff.aggregators.WeightedAggregationFactory)
    if not weighted and len(names) > 1:
      raise ValueError(
          'An unweighted model_aggregator averages every client, so it serves '
          f'one model prototype only; the process has {names}. Use a weighted '
          'factory (e.g. tff.aggregators.MeanFactory) with several.')
    models = collections.OrderedDict(
        (n, self._model_aggregator.create(value_type.models[n], weight_type[n])
         if weighted else self._model_aggregator.create(value_type.models[n]))
        for n in names)
    fusion = build_fusion(self._fusion_aggregator, value_type.knowledge)

    @tff.federated_computation()
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(
          models=tff.federated_zip(collections.OrderedDict(
              (n, p.initialize()) for n, p in models.items())),
          knowledge=fusion.initialize()))

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      outputs = collections.OrderedDict(
          (n, p.next(state.models[n], value.models[n], weight[n]) if weighted
           else p.next(state.models[n], value.models[n]))
          for n, p in models.items())
      fused = fusion.next(state.knowledge, value.knowledge)
      return tff.templates.MeasuredProcessOutput(
          tff.federated_zip(collections.OrderedDict(
              models=_zip(outputs, 'state'), knowledge=fused.state)),
          tff.federated_zip(collections.OrderedDict(
              models=_zip(outputs, 'result'), knowledge=fused.result)),
          tff.federated_zip(collections.OrderedDict(
              models=_zip(outputs, 'measurements'),
              knowledge=fused.measurements)))

    return tff.templates.AggregationProcess(init_fn, next_fn)
