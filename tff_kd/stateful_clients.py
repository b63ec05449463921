"""Clients that keep their own models across rounds (FD, DS-FL, FedAD).

In the output-exchange algorithms no weights are averaged: every client keeps
its own model, of its own architecture (prototype), from round to round, and
only outputs travel. In a TFF simulation the clients are stateless, so their
states live with the program: `StatefulClientsProcess` keeps every client's
state in its own program state and passes the sampled clients' states into
the round computation as CLIENTS-placed values, which returns them updated:

  round: (<server_state@SERVER, {<data, prototype, position, state>}@CLIENTS>
          -> <state=server_state@SERVER, metrics@SERVER,
              client_states={<position, state>}@CLIENTS>)

`data` is the client's dataset, `prototype` the index of its architecture,
`position` its place in the round's list of clients (echoed back: a runtime
over several workers need not return the clients in order) and `state` an
`OrderedDict(prototype name -> state of that prototype)`: the client's own
entry is its state, the others the prototypes' initial states (a
CLIENTS-placed value has one type for all clients). A client state is an
`OrderedDict(model=ModelWeights, ...)` plus whatever the algorithm keeps. The
optimizer state is not kept: the clients use SGD, which has none.

The process's state, `OrderedDict(server=..., clients=OrderedDict(client id ->
state of its prototype))`, is what `tff_kd.experiment` checkpoints, so
`--resume` restores every client's model. It holds one model per client:
memory and checkpoints grow with the number of clients (20 clients of a 34k
parameter CNN: 2.7 MB), which is why these algorithms suit the cross-silo
populations of their papers, not TFF's 3,400-client EMNIST.

`run_training_process` drives it like a `LearningProcess`: `initialize()`,
and `next(state, [(client id, dataset), ...])`.
"""

import collections
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


class StatefulClientsProcess:
  """A training process whose clients keep their own state (module docstring).

  Attributes:
    prototypes: the prototype names, in the order of the `prototype` index.
    client_prototypes: client id -> prototype name, for every client.
    round: the round `tff.Computation`.
    has_server_model: whether the server trains a model of its own, its
      state's `model` (`server_model_weights`).
  """

  def __init__(
      self,
      *,
      initial_server_state: tff.Computation,
      initial_client_states: tff.Computation,
      round_fn: tff.Computation,
      client_prototypes: Mapping[str, str],
      has_server_model: bool = False,
  ):
    """Builds the process.

    Args:
      initial_server_state: `( -> server_state)`, a
        `tff.tensorflow.computation`.
      initial_client_states: `( -> OrderedDict(prototype -> state))`, a
        `tff.tensorflow.computation`: the state every client of a prototype
        starts from.
      round_fn: the round (module docstring).
      client_prototypes: client id -> prototype name, every client that may
        be sampled.
      has_server_model: whether the server state (a mapping) has a `model`,
        the `ModelWeights` of a model the server trains.
    """
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
    self.round = round_fn
    self.has_server_model = has_server_model

  @property
  def client_data_type(self) -> tff.Type:
    """The type of one client's dataset."""
    return self.round.type_signature.parameter[1].member.data

  def initialize(self) -> collections.OrderedDict:
    return collections.OrderedDict(
        server=self._initial_server_state(),
        clients=collections.OrderedDict(
            (client_id, self._initial[prototype])
            for client_id, prototype in self.client_prototypes.items()
        ),
    )

  def next(
      self, state: Mapping[str, Any], client_data: Sequence[tuple[str, Any]]
  ) -> tff.learning.templates.LearningProcessOutput:
    """Runs a round on `client_data`, `(client id, dataset)` pairs."""
    inputs = []
    for position, (client_id, dataset) in enumerate(client_data):
      own = self.client_prototypes[client_id]
      inputs.append(collections.OrderedDict(
          data=dataset,
          prototype=np.int32(self.prototypes.index(own)),
          position=np.int32(position),
          state=collections.OrderedDict(
              (n, state['clients'][client_id] if n == own else self._initial[n])
              for n in self.prototypes
          ),
      ))
    server, metrics, outputs = self.round(state['server'], inputs)
    positions = sorted(int(output['position']) for output in outputs)
    if positions != list(range(len(client_data))):
      raise RuntimeError(
          f'The round returned client states at positions {positions}; '
          f'expected each of the {len(client_data)} clients once.')
    clients = collections.OrderedDict(state['clients'])
    for output in outputs:
      client_id, _ = client_data[int(output['position'])]
      clients[client_id] = output['state'][self.client_prototypes[client_id]]
    return tff.learning.templates.LearningProcessOutput(
        collections.OrderedDict(server=server, clients=clients), metrics
    )

  def client_model_weights(
      self, state: Mapping[str, Any], client_id: str
  ) -> tff.learning.models.ModelWeights:
    return state['clients'][client_id]['model']

  def server_model_weights(
      self, state: Mapping[str, Any]
  ) -> tff.learning.models.ModelWeights:
    if not self.has_server_model:
      raise ValueError('This process has no server model.')
    return state['server']['model']


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


def client_work_metrics(probes, out, count_bytes):
  """The `client_work` metrics of a round: per prototype its clients'
  training metrics (summed then finalized), the non-finite clients and the
  bytes (`communication.build_bytes_counter`). `out` is the clients' results,
  with `metrics` (per prototype) and `non_finite`."""
  return tff.federated_zip(collections.OrderedDict(
      train=tff.federated_zip(collections.OrderedDict(
          (n, probe['metrics_aggregation_fn'](out.metrics[n]))
          for n, probe in probes.items())),
      non_finite_clients=tff.federated_sum(out.non_finite),
      communication=count_bytes(out.non_finite),
  ))
