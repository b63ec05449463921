"""The learning processes of tff_kd: TFF's, plus what a program needs to know.

`tff_kd.experiment` runs any process that answers a small protocol:

- `client_input(client_id, dataset)`: what `next` takes for one client;
- `client_data_type`: the type of one client's dataset;
- `evaluation_models(state)`: `OrderedDict(name -> [(model_fn, ModelWeights),
  ...])`, the models to evaluate (metrics averaged over a list).

`LearningProcess` is a `tff.learning.templates.LearningProcess` (usable
wherever TFF's is) that answers it for the processes that train global models
(FedAvg, the client-side KD algorithms, FedDF, FedAUX, FedGen): it knows its
models' `model_fn`s, so it is evaluated with its own model whatever the task's
default is. Its global model weights are a `ModelWeights` (one model), or a
structure with one `ModelWeights` per prototype name (FedDF, FedAUX: one per
architecture; FedGen: `model` beside its generator); `get_model_weights`
returns the first prototype's. Over several prototypes each client trains its
own prototype's model: its data is `OrderedDict(prototype -> dataset)` with
only its own non-empty (`client_prototypes` says whose is whose).

`tff_kd.stateful_clients.StatefulClientsProcess` answers it for the
processes whose clients keep their own models.
"""

import collections
from collections.abc import Mapping
from typing import Any, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import model_parts



class LearningProcess(tff.learning.templates.LearningProcess):
  """A TFF `LearningProcess` that knows its models (module docstring)."""

  def __init__(
      self,
      process: tff.learning.templates.LearningProcess,
      prototype_model_fns: Mapping[str, model_parts.ModelFn],
      *,
      client_prototypes: Optional[Mapping[str, str]] = None,
  ):
    """Wraps `process`.

    Args:
      process: a `LearningProcess` (`compose_learning_process`'s).
      prototype_model_fns: prototype name -> `model_fn`; one entry for a
        process of one model.
      client_prototypes: client id -> prototype name; None: every client
        trains the first prototype.
    """
    self.prototype_model_fns = collections.OrderedDict(prototype_model_fns)
    self.prototypes = list(self.prototype_model_fns)
    if not self.prototypes:
      raise ValueError('prototype_model_fns is empty.')
    self.client_prototypes = client_prototypes
    if client_prototypes is None and len(self.prototypes) > 1:
      raise ValueError(
          f'A process over prototypes {self.prototypes} needs '
          'client_prototypes (client id -> prototype name).')
    if client_prototypes is not None:
      unknown = sorted(set(client_prototypes.values()) - set(self.prototypes))
      if unknown:
        raise ValueError(
            f'client_prototypes assigns prototypes {unknown} that the process '
            f'does not have (it has {self.prototypes}).')
    state_type = process.initialize.type_signature.result.member
    weights_type = state_type.global_model_weights
    self._keyed = not isinstance(weights_type,
                                 tff.learning.models.ModelWeights) and (
        'trainable' not in tff.structure.name_list(weights_type))
    if self._keyed:
      missing = sorted(set(self.prototypes)
                       - set(tff.structure.name_list(weights_type)))
      if missing:
        raise ValueError(f'The global model weights have no {missing}: '
                         f'{weights_type}.')
      first = self.prototypes[0]

      @tff.tensorflow.computation(state_type)
      def get_model_weights(state):
        return state.global_model_weights[first]

      @tff.tensorflow.computation(state_type, weights_type[first])
      def set_model_weights(state, weights):
        return tff.learning.templates.LearningAlgorithmState(
            global_model_weights=collections.OrderedDict(
                state.global_model_weights, **{first: weights}),
            distributor=state.distributor,
            client_work=state.client_work,
            aggregator=state.aggregator,
            finalizer=state.finalizer)
    else:
      get_model_weights = process.get_model_weights
      set_model_weights = process.set_model_weights
    super().__init__(
        process.initialize, process.next, get_model_weights,
        set_model_weights, get_hparams_fn=process.get_hparams,
        set_hparams_fn=process.set_hparams)

  @property
  def client_data_type(self) -> tff.Type:
    data_type = self.next.type_signature.parameter[1].member
    return data_type[0] if isinstance(data_type, tff.StructType) else data_type

  def client_input(self, client_id: str, dataset: tf.data.Dataset) -> Any:
    data_type = self.next.type_signature.parameter[1].member
    if not isinstance(data_type, tff.StructType):
      return dataset
    own = (self.prototypes[0] if self.client_prototypes is None
           else self.client_prototypes[client_id])
    return collections.OrderedDict(
        (n, dataset if n == own else dataset.take(0)) for n in self.prototypes)

  def evaluation_models(self, state: Any) -> collections.OrderedDict:
    """`test`: the first prototype's model; `test_<name>` each with several."""
    weights = state.global_model_weights
    by_name = collections.OrderedDict(
        (n, weights[n] if self._keyed else weights) for n in self.prototypes)
    models = collections.OrderedDict(test=[(
        self.prototype_model_fns[self.prototypes[0]],
        by_name[self.prototypes[0]])])
    if len(self.prototypes) > 1:
      for n in self.prototypes:
        models[f'test_{n}'] = [(self.prototype_model_fns[n], by_name[n])]
    return models
