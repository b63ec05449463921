"""The learning processes of tff_kd: TFF's, plus what a program needs to know.

`tff_kd.experiment` runs any process that answers `ProgramProcess`, a
protocol declared here once:

- `initialize()` and `next(state, client_inputs)`, as TFF's processes;
- `client_input(client_id, dataset)`: what `next` takes for one client;
- `client_data_type`: the type of one client's dataset;
- `client_prototypes`: client id -> prototype name, or None (one model);
- `evaluation_models(state)`: `OrderedDict(name -> [(model_fn, ModelWeights),
  ...])`, the models to evaluate (metrics averaged over a list; a sequence
  whose models are loaded when reached);
- `with_client_data(data_computation)`: the same process with each client's
  dataset built where the computation runs, by TFF's mechanism
  (`tff.simulation.compose_dataset_computation_with_learning_process`, a
  `ClientData`'s `dataset_computation`): `next` takes per client the
  computation's parameter (`client_input(client_id, key)`), e.g. a task's
  `client_data_key`, not a dataset serialized by the trainer;
- `open_client_store(directory)`: None, or, for client states kept in a
  disk-backed `tff_kd.client_store.ClientStore` (which the program commits
  with its checkpoints), the store, then passed as
  `initialize(client_store=store)`.

`GlobalModelsProcess` is a `tff.learning.templates.LearningProcess` (usable
wherever TFF's is) that answers it for the processes that train global models
(FedAvg, the client-side KD algorithms, FedDF, FedAUX, FedGen): it knows its
models' `model_fn`s, so it is evaluated with its own model whatever the task's
default is. Its global model weights are a `ModelWeights` (one model), or a
structure with one `ModelWeights` per prototype name (FedDF, FedAUX: one per
architecture; FedGen: `model` beside its generator); `get_model_weights`
returns the first prototype's. Over several prototypes each client trains its
own prototype's model: its data is `OrderedDict(prototype -> dataset)` with
only its own non-empty (`client_prototypes` says whose is whose).

`tff_kd.stateful_clients.StatefulClientsProcess` answers it, store included,
for the processes whose clients keep their own models.
"""

import collections
import copy
from collections.abc import Mapping
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import model_parts
from tff_kd import server_step as server_step_lib



def _compose_prototype_data(data_computation, process, names):
  """`process` whose `next` takes `{<key, prototype>}@CLIENTS` for its
  `{<name: B*, ...>}@CLIENTS`: `data_computation(key)` for the client's own
  prototype, empty for the others (TFF's composition, for a structure)."""
  key_type = data_computation.type_signature.parameter
  input_type = tff.StructWithPythonType(
      [('key', key_type), ('prototype', np.int32)], collections.OrderedDict)

  @tff.tensorflow.computation(input_type)
  def datasets(client):
    dataset = data_computation(client['key'])
    return collections.OrderedDict(
        (n, dataset.take(tf.where(tf.equal(client['prototype'], i),
                                  tf.constant(-1, tf.int64), 0)))
        for i, n in enumerate(names))

  state_type = process.next.type_signature.parameter[0]

  @tff.federated_computation(state_type,
                             tff.FederatedType(input_type, tff.CLIENTS))
  def next_fn(state, clients):
    return process.next(state, tff.federated_map(datasets, clients))

  return tff.learning.templates.LearningProcess(
      process.initialize, next_fn, process.get_model_weights,
      process.set_model_weights, get_hparams_fn=process.get_hparams,
      set_hparams_fn=process.set_hparams)


@runtime_checkable
class ProgramProcess(Protocol):
  """What `tff_kd.experiment` runs (module docstring)."""

  client_data_type: tff.Type
  client_prototypes: Optional[Mapping[str, str]]

  def initialize(self, *args, **kwargs) -> Any:
    ...

  def next(self, state: Any, client_inputs: Any) -> Any:
    ...

  def client_input(self, client_id: str, dataset: Any) -> Any:
    ...

  def with_client_data(self,
                       data_computation: tff.Computation) -> 'ProgramProcess':
    ...

  def evaluation_models(self, state: Any) -> Mapping[str, Any]:
    ...

  def open_client_store(self, directory: str) -> Any:
    ...


class GlobalModelsProcess(tff.learning.templates.LearningProcess):
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

  # Set by `with_client_data`: the type of a client's dataset (what `next`
  # took before), and whether `next` takes per client `<key, prototype>`.
  _dataset_type = None
  _keyed_prototypes = False

  @property
  def client_data_type(self) -> tff.Type:
    """The type of one client's dataset."""
    if self._dataset_type is not None:
      return self._dataset_type
    data_type = self.next.type_signature.parameter[1].member
    return data_type[0] if isinstance(data_type, tff.StructType) else data_type

  def client_input(self, client_id: str, dataset: Any) -> Any:
    """What `next` takes for a client: its dataset, or (`with_client_data`)
    the key its dataset is built from."""
    own = (self.prototypes[0] if self.client_prototypes is None
           else self.client_prototypes[client_id])
    if self._dataset_type is not None:
      if not self._keyed_prototypes:
        return dataset
      return collections.OrderedDict(
          key=dataset, prototype=np.int32(self.prototypes.index(own)))
    data_type = self.next.type_signature.parameter[1].member
    if not isinstance(data_type, tff.StructType):
      return dataset
    return collections.OrderedDict(
        (n, dataset if n == own else dataset.take(0)) for n in self.prototypes)

  def with_client_data(
      self, data_computation: tff.Computation) -> 'GlobalModelsProcess':
    """This process with each client's dataset built where it runs.

    The returned process's `next` takes, per client, the parameter of
    `data_computation` (`(K -> B*)`, e.g. a client id, or
    `tasks.Task.client_data_computation`'s key) instead of its dataset:
    `{K}@CLIENTS`, composed by TFF's
    `tff.simulation.compose_dataset_computation_with_learning_process`. Over
    several prototypes `next` takes `{<key=K, prototype=int32>}@CLIENTS` (the
    same composition, for a client's structure of datasets: its own
    prototype's dataset, the others' empty); `client_input` builds it.
    """
    if self._dataset_type is not None:
      raise ValueError('This process already builds its client data.')
    data_type = self.next.type_signature.parameter[1].member
    dataset_type = self.client_data_type
    result_type = data_computation.type_signature.result
    if not dataset_type.is_assignable_from(result_type):
      raise TypeError(
          f'data_computation returns {result_type}; the process takes client '
          f'datasets of type {dataset_type}.')
    if not isinstance(data_type, tff.StructType):
      composed = tff.simulation.compose_dataset_computation_with_learning_process(
          data_computation, self)
      keyed_prototypes = False
    else:
      composed = _compose_prototype_data(data_computation, self,
                                         list(tff.structure.name_list(data_type)))
      keyed_prototypes = True
    new = GlobalModelsProcess(composed, self.prototype_model_fns,
                          client_prototypes=self.client_prototypes)
    new._dataset_type = dataset_type  # pylint: disable=protected-access
    new._keyed_prototypes = keyed_prototypes  # pylint: disable=protected-access
    return new

  def open_client_store(self, directory: str) -> None:
    """None: the clients keep no state between rounds."""
    del directory

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


class ProgramStepProcess:
  """A `GlobalModelsProcess` whose server step runs in the program.

  `process`'s finalizer is `tff_kd.finalizers.build_finalizer(..., 'program')`:
  its round leaves the state and weights to the step and reports the update
  as the finalizer's measurements. `next` runs the round, then `step` as a
  `tf.function` of this process (`tff_kd.server_step`), and returns what the
  `worker` finalizer's round returns: the same state (the step's state and
  weights in it) and metrics (the step's measurements as the finalizer's).
  It answers `ProgramProcess` by `process`'s answers; it is not a TFF
  process (its `next` is the program's).
  """

  def __init__(self, process: GlobalModelsProcess,
               step: server_step_lib.ServerStep):
    self._process = process
    self._run_step = step.function()
    self.client_prototypes = process.client_prototypes
    self.prototype_model_fns = process.prototype_model_fns

  @property
  def client_data_type(self) -> tff.Type:
    return self._process.client_data_type

  def initialize(self) -> Any:
    return self._process.initialize()

  def next(self, state: Any, client_inputs: Any
           ) -> tff.learning.templates.LearningProcessOutput:
    """The round, then the server step here (class docstring)."""
    output = self._process.next(state, client_inputs)
    state = output.state
    step_state, weights, measurements = self._run_step(
        state.finalizer, state.global_model_weights,
        output.metrics['finalizer'])
    return tff.learning.templates.LearningProcessOutput(
        tff.learning.templates.LearningAlgorithmState(
            global_model_weights=weights,
            distributor=state.distributor,
            client_work=state.client_work,
            aggregator=state.aggregator,
            finalizer=step_state),
        collections.OrderedDict(output.metrics, finalizer=measurements))

  def get_model_weights(self, state: Any) -> Any:
    return self._process.get_model_weights(state)

  def client_input(self, client_id: str, dataset: Any) -> Any:
    return self._process.client_input(client_id, dataset)

  def with_client_data(
      self, data_computation: tff.Computation) -> 'ProgramStepProcess':
    """`process.with_client_data(data_computation)`, the same step."""
    new = copy.copy(self)
    new._process = self._process.with_client_data(data_computation)  # pylint: disable=protected-access
    return new

  def open_client_store(self, directory: str) -> None:
    return self._process.open_client_store(directory)

  def evaluation_models(self, state: Any) -> collections.OrderedDict:
    return self._process.evaluation_models(state)


def with_server_step(process: GlobalModelsProcess,
                     step: server_step_lib.ServerStep, where: str):
  """`process` (`where` = `worker`) or `ProgramStepProcess(process, step)`."""
  return process if where == 'worker' else ProgramStepProcess(process, step)
