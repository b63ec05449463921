"""Clients that keep their own models across rounds (FD, DS-FL, FedAD).

In the output-exchange algorithms no weights are averaged: every client keeps
its own model, of its own architecture (prototype), from round to round, and
only knowledge travels. `build_stateful_clients_process` is the template
these algorithms are recipes of; it takes four typed parts and composes the
round, as `tff.learning.templates.compose_learning_process` does for the
processes that average weights:

- `broadcast_fn`: `(S -> B)`, what the server sends every client of the
  round (per-label knowledge, soft labels and the next public subset; `<>`
  for nothing);
- `client_work`: `(<B, client> -> <state=<position, state>, knowledge=<field:
  V>, metrics=<prototype: M>, non_finite=int32>)`, a client's round: it
  trains its own model and computes the knowledge it sends;
- `fusion_aggregator`: a `tff.aggregators.UnweightedAggregationFactory` (one
  for every knowledge field, or one per field) that fuses the clients'
  knowledge (`tff_kd.aggregators.knowledge.build_fusion`); its state lives in
  the process state and advances every round;
- `server_update`: a `tff_kd.server_step.ServerStep` `(<S, B, fused
  knowledge> -> <S, metrics>)`, the server's step (store the knowledge,
  distill a server model), run in the round (`server_step='worker'`) or by
  `next` in the program after it (`'program'`: the round returns S as it
  was, and `<B, fused knowledge>` beside its results).

The round, with the sampled clients' states passed in as CLIENTS-placed
values and returned updated:

  round: (<<server=S, fusion=F>@SERVER, {<data, prototype, position,
          state>}@CLIENTS> -> <state=<server=S, fusion=F>@SERVER,
          metrics=<client_work, fusion, server>@SERVER,
          client_states={<position, state>}@CLIENTS>)

`data` is the client's dataset, `prototype` the index of its architecture,
`position` its place in the round's list of clients (echoed back: a runtime
over several workers need not return the clients in order) and `state` an
`OrderedDict(prototype name -> state of that prototype)`: the client's own
entry is its state, the others the prototypes' initial states (a
CLIENTS-placed value has one type for all clients). A client state is an
`OrderedDict(model=ModelWeights, ...)` plus whatever the algorithm keeps. The
optimizer state is not kept: the clients use SGD, which has none.
`client_work/communication` counts B down and the knowledge up per client.

The process's state is `OrderedDict(server=S, fusion=F, clients=Mapping(
client id -> state of its own prototype))`. By default `clients` is an
`OrderedDict` in memory (one model per client). `open_client_store(directory)`
gives a disk-backed `tff_kd.client_store.ClientStore` and
`initialize(client_store=store)` keeps the clients there instead: `clients` is
then a `ClientStates` view that loads a state when it is looked up, a round
reads only its sampled clients and writes back only the states that changed,
and a client's row holds only its own prototype's state. `tff_kd.experiment`
always runs these processes on a store under the run's checkpoint directory
and commits it with each checkpoint, so memory and checkpoints do not grow
with the number of clients and `--resume` restores every client's state.

`tff_kd.experiment` drives it like a `LearningProcess`: `initialize()`,
`next(state, [(client id, dataset), ...])`, and evaluates the models
`evaluation_models(state)` names (every client's, loaded one at a time, and
the server's). `with_client_data(data_computation)` gives the same process
with each client's dataset built on the worker from a key (client id, ...),
as TFF's `compose_dataset_computation_with_learning_process` does.
"""

import collections
from collections.abc import Callable, Mapping, Sequence
import copy
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import client_store as client_store_lib
from tff_kd import communication
from tff_kd import model_parts
from tff_kd import server_step as server_step_lib
from tff_kd.aggregators import knowledge


class StatefulClientsProcess:
  """A training process whose clients keep their own state (module docstring).

  Build it with `build_stateful_clients_process`.

  Attributes:
    prototypes: the prototype names, in the order of the `prototype` index.
    client_prototypes: client id -> prototype name, for every client.
    round: the round `tff.Computation`.
  """

  def __init__(
      self,
      *,
      initial_server_state: tff.Computation,
      initial_client_states: tff.Computation,
      round_fn: tff.Computation,
      prototype_model_fns: Mapping[str, Callable[[], Any]],
      client_prototypes: Mapping[str, str],
      server_model: bool,
      program_step: Optional[server_step_lib.ServerStep] = None,
  ):
    self._initial = initial_client_states()
    self.prototypes = list(self._initial)
    unknown = sorted(set(client_prototypes.values()) - set(self.prototypes))
    if unknown:
      raise ValueError(
          f'Clients are assigned prototypes {unknown} that the process does '
          f'not have (it has {self.prototypes}).'
      )
    if not client_prototypes:
      raise ValueError('client_prototypes is empty: no clients.')
    self.client_prototypes = dict(client_prototypes)
    self._initial_server_state = initial_server_state
    self._model_fns = dict(prototype_model_fns)
    self._server_model = server_model
    self.round = round_fn
    self._program_step = (None if program_step is None
                          else program_step.function())

  # Set by `with_client_data`: the type of a client's dataset.
  _dataset_type = None

  @property
  def client_data_type(self) -> tff.Type:
    """The type of one client's dataset."""
    if self._dataset_type is not None:
      return self._dataset_type
    return self.round.type_signature.parameter[1].member.data

  def client_input(self, client_id: str, dataset: Any):
    """What `next` takes for one client: `(client id, dataset)`, or
    `(client id, key)` after `with_client_data`."""
    return client_id, dataset

  def with_client_data(
      self, data_computation: tff.Computation) -> 'StatefulClientsProcess':
    """This process with each client's dataset built where the round runs.

    The returned process's round takes, as each client's `data`, the
    parameter K of `data_computation` (`(K -> B*)`, e.g.
    `tasks.Task.client_data_computation`) and maps the computation over the
    clients before their work, as TFF's
    `tff.simulation.compose_dataset_computation_with_learning_process` does:

      (<S@SERVER, {<data=K, prototype, position, state>}@CLIENTS> -> ...)

    `next` then takes `(client id, key)` pairs. Everything else is shared.
    """
    if self._dataset_type is not None:
      raise ValueError('This process already builds its client data.')
    state_type, clients_type = self.round.type_signature.parameter
    client_type = clients_type.member
    result_type = data_computation.type_signature.result
    if not client_type.data.is_assignable_from(result_type):
      raise TypeError(
          f'data_computation returns {result_type}; the round takes client '
          f'datasets of type {client_type.data}.')
    keyed_type = client_input_type(data_computation.type_signature.parameter,
                                   client_type.state)
    round_fn = self.round

    @tff.federated_computation(state_type,
                               tff.FederatedType(keyed_type, tff.CLIENTS))
    def keyed_round(state, clients):
      data = tff.federated_map(data_computation, clients.data)
      return round_fn(state, tff.federated_zip(collections.OrderedDict(
          data=data, prototype=clients.prototype, position=clients.position,
          state=clients.state)))

    new = copy.copy(self)
    new.round = keyed_round
    new._dataset_type = client_type.data  # pylint: disable=protected-access
    return new

  def open_client_store(self, directory: str) -> client_store_lib.ClientStore:
    """A disk-backed store of this process's client states in `directory`.

    Pass it to `initialize(client_store=...)`; an existing store of the same
    clients and states is reopened (`restore` a version to continue it).
    """
    return client_store_lib.ClientStore(
        directory, initial_states=self._initial,
        client_prototypes=self.client_prototypes)

  def initialize(
      self, client_store: Optional[client_store_lib.ClientStore] = None
  ) -> collections.OrderedDict:
    """The initial state; the clients in `client_store` when one is given."""
    server = self._initial_server_state()
    if client_store is not None:
      clients = client_store.initial()
    else:
      clients = collections.OrderedDict(
          (client_id, self._initial[prototype])
          for client_id, prototype in self.client_prototypes.items())
    return collections.OrderedDict(
        server=server['server'], fusion=server['fusion'], clients=clients)

  def next(
      self, state: Mapping[str, Any], client_data: Sequence[tuple[str, Any]]
  ) -> tff.learning.templates.LearningProcessOutput:
    """Runs a round on `client_data`, `(client id, dataset)` pairs."""
    inputs = []
    own_states = {}
    for position, (client_id, dataset) in enumerate(client_data):
      own = self.client_prototypes[client_id]
      own_states[client_id] = state['clients'][client_id]
      inputs.append(collections.OrderedDict(
          data=dataset,
          prototype=np.int32(self.prototypes.index(own)),
          position=np.int32(position),
          state=collections.OrderedDict(
              (n, own_states[client_id] if n == own else self._initial[n])
              for n in self.prototypes
          ),
      ))
    server, metrics, outputs, *held = self.round(
        collections.OrderedDict(server=state['server'],
                                fusion=state['fusion']), inputs)
    if self._program_step is not None:
      server = collections.OrderedDict(server)
      server['server'], server_metrics = self._program_step(
          server['server'], *held[0].values())
      metrics = collections.OrderedDict(metrics, server=server_metrics)
    positions = sorted(int(output['position']) for output in outputs)
    if positions != list(range(len(client_data))):
      raise RuntimeError(
          f'The round returned client states at positions {positions}; '
          f'expected each of the {len(client_data)} clients once.')
    changes = collections.OrderedDict()
    for output in sorted(outputs, key=lambda o: int(o['position'])):
      client_id, _ = client_data[int(output['position'])]
      new = output['state'][self.client_prototypes[client_id]]
      if not _same(new, own_states[client_id]):
        changes[client_id] = new
    return tff.learning.templates.LearningProcessOutput(
        collections.OrderedDict(
            server=server['server'], fusion=server['fusion'],
            clients=client_store_lib.updated(state['clients'], changes)),
        metrics)

  def evaluation_models(self, state: Mapping[str, Any]):
    """`tff_kd.experiment`'s protocol: name -> [(model_fn, weights), ...].

    `clients`: every client's own model (metrics averaged over clients);
    with several prototypes also `clients_<prototype>`; `test`: the server's
    model if it trains one, else the clients'.
    """
    clients = state['clients']
    models = collections.OrderedDict(
        clients=_ClientModels(self._model_fns, self.client_prototypes,
                              clients, list(self.client_prototypes)))
    if len(self.prototypes) > 1:
      for n in self.prototypes:
        models[f'clients_{n}'] = _ClientModels(
            self._model_fns, self.client_prototypes, clients,
            [c for c, p in self.client_prototypes.items() if p == n])
    models['test'] = (
        [(self._model_fns[self.prototypes[0]], state['server']['model'])]
        if self._server_model else models['clients'])
    return models


class _ClientModels(Sequence):
  """`[(model_fn, client's model weights), ...]`, each loaded when reached."""

  def __init__(self, model_fns, client_prototypes, clients, ids):
    self._model_fns = model_fns
    self._client_prototypes = client_prototypes
    self._clients = clients
    self._ids = ids

  def __len__(self) -> int:
    return len(self._ids)

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[j] for j in range(*i.indices(len(self)))]
    client_id = self._ids[i]
    return (self._model_fns[self._client_prototypes[client_id]],
            self._clients[client_id]['model'])


def _same(a: Any, b: Any) -> bool:
  """Whether two states are equal bit for bit (same structure assumed)."""
  a, b = tf.nest.flatten(a), tf.nest.flatten(b)
  return len(a) == len(b) and all(
      np.asarray(x).dtype == np.asarray(y).dtype
      and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def build_stateful_clients_process(
    prototype_model_fns: Mapping[str, Callable[[], Any]],
    client_prototypes: Mapping[str, str],
    initial_server_state: tff.Computation,
    initial_client_states: tff.Computation,
    broadcast_fn: tff.Computation,
    client_work: tff.Computation,
    fusion_aggregator: knowledge.FusionFactories,
    server_update: server_step_lib.ServerStep,
    server_step: str = server_step_lib.DEFAULT_PLACEMENT,
) -> StatefulClientsProcess:
  """Composes the round from its parts (module docstring).

  Args:
    prototype_model_fns: prototype name -> `model_fn` of the clients' models
      (the first is the server model's architecture).
    client_prototypes: client id -> prototype name, every client.
    initial_server_state: `( -> S)`; an `S` with a `model` (`ModelWeights`)
      is a server model, evaluated as `test`.
    initial_client_states: `( -> OrderedDict(prototype -> state))`, the
      state every client of a prototype starts from (`initial_states`).
    broadcast_fn: `(S -> B)`.
    client_work: `(<B, client input> -> <state, knowledge, metrics,
      non_finite>)` (module docstring; `client_output` builds its result).
    fusion_aggregator: an unweighted factory for every knowledge field, or a
      mapping field -> factory.
    server_update: a `ServerStep` `(<S, B, fused knowledge> -> <S,
      metrics>)`.
    server_step: where `server_update` runs: `worker` or `program`.

  Returns:
    A `StatefulClientsProcess`.

  Raises:
    TypeError: when the parts do not fit together, naming the part.
  """
  metrics_aggregation_fns = {
      n: probe['metrics_aggregation_fn']
      for n, probe in model_parts.probe_prototypes(prototype_model_fns).items()
  }
  server_type = initial_server_state.type_signature.result
  broadcast_type = broadcast_fn.type_signature.result
  _check_fits('broadcast_fn', broadcast_fn.type_signature.parameter,
              server_type)
  work_type = client_work.type_signature
  _check_fits('client_work (its first argument)', work_type.parameter[0],
              broadcast_type)
  client_type = work_type.parameter[1]
  if (not isinstance(work_type.result, tff.StructType) or sorted(
      tff.structure.name_list(work_type.result)) != sorted(
          ['state', 'knowledge', 'metrics', 'non_finite'])):
    raise TypeError('client_work must return <state, knowledge, metrics, '
                    f'non_finite>; it returns {work_type.result}.')
  knowledge_type = work_type.result.knowledge
  fusion = knowledge.build_fusion(fusion_aggregator, knowledge_type)
  fused_type = fusion.next.type_signature.result.result.member
  server_step_lib.check_placement(server_step)
  update = server_update.computation()
  update_type = update.type_signature
  for i, (what, value_type) in enumerate((
      ('S', server_type), ('B', broadcast_type), ('the fused knowledge',
                                                  fused_type))):
    _check_fits(f'server_update (argument {i + 1}, {what})',
                update_type.parameter[i], value_type)
  if not server_type.is_assignable_from(update_type.result[0]):
    raise TypeError(
        'The parts do not fit: server_update (its new state) returns '
        f'{update_type.result[0]} but the state is {server_type}.')
  count_bytes = communication.build_bytes_counter(down=broadcast_type,
                                                  up=knowledge_type)

  @tff.federated_computation()
  def initial_state():
    return tff.federated_zip(collections.OrderedDict(
        server=tff.federated_eval(initial_server_state, tff.SERVER),
        fusion=fusion.initialize()))

  @tff.federated_computation(initial_state.type_signature.result,
                             tff.FederatedType(client_type, tff.CLIENTS))
  def round_fn(state, clients):
    broadcast = tff.federated_map(broadcast_fn, state.server)
    out = tff.federated_map(
        client_work, (tff.federated_broadcast(broadcast), clients))
    fused = fusion.next(state.fusion, out.knowledge)
    metrics = collections.OrderedDict(
        client_work=tff.federated_zip(collections.OrderedDict(
            train=tff.federated_zip(collections.OrderedDict(
                (n, fn(out.metrics[n]))
                for n, fn in metrics_aggregation_fns.items())),
            non_finite_clients=tff.federated_sum(out.non_finite),
            communication=count_bytes(out.non_finite),
        )),
        fusion=fused.measurements,
    )
    if server_step == 'program':
      new_state = tff.federated_zip(collections.OrderedDict(
          server=state.server, fusion=fused.state))
      held = tff.federated_zip(collections.OrderedDict(
          broadcast=broadcast, fused=fused.result))
      return new_state, tff.federated_zip(metrics), out.state, held
    new_server, metrics['server'] = tff.federated_map(
        update, (state.server, broadcast, fused.result))
    new_state = tff.federated_zip(collections.OrderedDict(
        server=new_server, fusion=fused.state))
    return new_state, tff.federated_zip(metrics), out.state

  return StatefulClientsProcess(
      initial_server_state=initial_state,
      initial_client_states=initial_client_states,
      round_fn=round_fn,
      prototype_model_fns=prototype_model_fns,
      client_prototypes=client_prototypes,
      server_model=(isinstance(server_type, tff.StructType)
                    and 'model' in tff.structure.name_list(server_type)),
      program_step=server_update if server_step == 'program' else None,
  )


def _check_fits(part: str, parameter: tff.Type, value_type: tff.Type):
  if not parameter.is_assignable_from(value_type):
    raise TypeError(f'The parts do not fit: {part} takes {parameter} but is '
                    f'given {value_type}.')


def client_input_type(
    data_type: tff.Type, client_state_type: tff.Type
) -> tff.Type:
  """The type of one client's input to the round (module docstring)."""
  return tff.StructWithPythonType(
      collections.OrderedDict(
          data=data_type,
          prototype=tff.TensorType(np.int32),
          position=tff.TensorType(np.int32),
          state=client_state_type,
      ),
      collections.OrderedDict,
  )


def trained(
    weights: tff.learning.models.ModelWeights, delta: Sequence[tf.Tensor]
) -> tff.learning.models.ModelWeights:
  """The weights after local training, from `local_training`'s delta."""
  return tff.learning.models.ModelWeights(
      trainable=[w - d for w, d in zip(weights.trainable, delta)],
      non_trainable=list(weights.non_trainable),
  )


def select(condition: tf.Tensor, new: Any, old: Any) -> Any:
  """`new` where `condition` (a scalar bool), else `old`, for structures."""
  return tf.nest.map_structure(
      lambda a, b: tf.where(condition, a, b), new, old)


def own_data(dataset: tf.data.Dataset, prototype: tf.Tensor,
             index: int) -> tf.data.Dataset:
  """`dataset` for the client's own prototype `index`, else empty.

  Every prototype's model is traced for every client (one type for all); a
  prototype that is not the client's trains on nothing and sends nothing.
  """
  return dataset.take(
      tf.where(tf.equal(prototype, index), tf.constant(-1, tf.int64), 0))


def initial_states(prototype_model_fns, **extra):
  """`OrderedDict(prototype -> OrderedDict(model=new ModelWeights, **extra))`.

  Call in a trace (`tff.tensorflow.computation`).
  """
  return collections.OrderedDict(
      (n, collections.OrderedDict(
          model=tff.learning.models.ModelWeights.from_model(fn()), **extra))
      for n, fn in prototype_model_fns.items()
  )


def client_output(client, states, **values):
  """A client's result: `<position, state>` for the round, and `values`."""
  return collections.OrderedDict(
      state=collections.OrderedDict(position=client['position'], state=states),
      **values)
