"""What an algorithm declares so that the binaries can run it on any task.

Each algorithm module ends with a `Spec`: its name, its config (a frozen
dataclass of `tff_kd.settings` fields, the one source of its defaults), what
its clients send, and `build(task, config, context)`, which turns a task and
the shared settings of the run (`Context`) into the module's `build_*`
arguments. `tff_kd.algorithms.SPECS` lists them; the binaries' registry
derives its flags from them, so adding an algorithm touches its module, its
config and its tests.
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any, Optional, Protocol

import numpy as np
import tensorflow_federated as tff

from tff_kd import optimizers
from tff_kd import server_distillation
from tff_kd import server_step as server_step_lib


class Task(Protocol):
  """What `build` reads of a task (`tasks.Task` has it all)."""

  name: str
  seed: int
  num_classes: int
  input_shape: tuple[int, ...]
  prototypes: tuple[str, ...]
  client_prototypes: Mapping[str, str]
  validation: tuple[np.ndarray, np.ndarray]
  public_x: np.ndarray

  def model_fn(self) -> tff.learning.models.VariableModel:
    ...

  def model_fn_for(self, prototype: str) -> Callable[[], Any]:
    ...

  def distillation_inputs(self, source: str) -> np.ndarray:
    ...


@dataclasses.dataclass(frozen=True)
class Context:
  """The run's settings every algorithm may read.

  Attributes:
    client_optimizer: the clients' `optimizers.OptimizerConfig`.
    server_optimizer: the server's.
    clients_per_round: the most clients a round has.
    model_aggregator: averages the model updates (None: the default).
    fusion_aggregator: knowledge field -> factory (None: the defaults).
    server_step: where the server's step runs (`tff_kd.server_step`).
    distill_data: the server distillation's inputs (`Task.distillation_inputs`
      or `noise`), for the algorithms with `Spec.distill_data`.
    distillation: the shared server-distillation settings, for the
      algorithms with `Spec.distillation`.
  """

  client_optimizer: optimizers.OptimizerConfig
  server_optimizer: optimizers.OptimizerConfig
  clients_per_round: int
  model_aggregator: Any = None
  fusion_aggregator: Optional[Mapping[str, Any]] = None
  server_step: str = server_step_lib.DEFAULT_PLACEMENT
  distill_data: str = 'public'
  distillation: server_distillation.DistillationConfig = (
      server_distillation.DistillationConfig())


@dataclasses.dataclass(frozen=True)
class Spec:
  """A registered algorithm.

  Attributes:
    name: its `--algorithm` name, also its flags' prefix.
    description: one line for `--help`.
    config: its settings' frozen dataclass (`tff_kd.settings`).
    build: `(task, config, context) -> process`.
    prototypes: supports heterogeneous model prototypes.
    stateful_clients: clients keep their own models.
    models: it averages model updates.
    knowledge: what else its clients send, field -> kind
      (`tff_kd.privacy.KINDS`).
    server_step: it learns at the server (`Context.server_step` applies).
    distill_data: it reads `Context.distill_data`.
    distillation: it reads `Context.distillation`.
    labelled_server_data: `config -> bool`: whether a run uses the
      labelled validation split.
  """

  name: str
  description: str
  config: type
  build: Callable[[Task, Any, Context], Any]
  prototypes: bool = False
  stateful_clients: bool = False
  models: bool = True
  knowledge: Mapping[str, str] = dataclasses.field(default_factory=dict)
  server_step: bool = False
  distill_data: bool = False
  distillation: bool = False
  labelled_server_data: Callable[[Any], bool] = lambda config: False


@dataclasses.dataclass(frozen=True)
class NoSettings:
  """The config of an algorithm without settings of its own."""


def averaging(builder: Callable[..., Any]) -> Callable[[Task, Any, Context],
                                                     Any]:
  """`Spec.build` of a FedAvg-like builder: one global model, a server
  optimizer, averaged updates, and the config's fields as keywords
  (`builder(model_fn, client_optimizer_fn, server_optimizer_fn, *,
  model_aggregator, **config)`)."""

  def build(task: Task, config, context: Context):
    no_fusion(builder.__name__[len('build_'):], context)
    return builder(task.model_fn, context.client_optimizer.build(),
                   context.server_optimizer.build(),
                   model_aggregator=context.model_aggregator,
                   **dataclasses.asdict(config))

  return build


def prototype_model_fns(task: Task) -> dict[str, Callable[[], Any]]:
  """Prototype name -> model_fn."""
  return {name: task.model_fn_for(name) for name in task.prototypes}


def validation(task: Task, use: bool):
  """The task's labelled validation split if `use`."""
  return task.validation if use else None


def distillation_inputs(task: Task, source: str) -> np.ndarray:
  """The inputs of `--distill_data=source`; `noise`: a fixed pool.

  The pool (FedAUX, DS-FL and FedAD have no data-free reference; FedDF
  draws fresh noise instead) has as many inputs as the public split, each
  min-max scaled on its own.
  """
  if source == 'noise':
    if not len(task.public_x):
      raise ValueError(
          f'--distill_data=noise draws as many inputs as the public split, '
          f'and task {task.name!r} has none.')
    return server_distillation.noise_inputs(
        [task.seed, 3], len(task.public_x), 1, task.input_shape).numpy()
  return task.distillation_inputs(source)


def no_server_optimizer(name: str, context: Context) -> None:
  """Refuses a server optimizer where the algorithm has none."""
  server = context.server_optimizer
  if not (server.is_plain_sgd and server.learning_rate == 1.0):
    raise ValueError(
        f'{name} has no server optimizer (it averages models or exchanges'
        ' outputs); --server_optimizer must be sgd without momentum at '
        f'--server_learning_rate=1, got {server.name} '
        f'{server.all_hparams()} at {server.learning_rate}.')


def server_sgd_learning_rate(name: str, context: Context) -> float:
  """The learning rate of a server that applies its update by plain SGD."""
  server = context.server_optimizer
  if not server.is_plain_sgd:
    raise ValueError(
        f'{name} applies the averaged update by plain SGD; '
        f'--server_optimizer must be sgd without momentum, got '
        f'{server.name} {server.all_hparams()}.')
  return server.learning_rate


def no_fusion(name: str, context: Context) -> None:
  if context.fusion_aggregator:
    raise ValueError(f'{name} fuses no knowledge; got fusion_aggregator='
                     f'{context.fusion_aggregator!r}.')


def no_models(name: str, context: Context) -> None:
  if context.model_aggregator is not None:
    raise ValueError(f'{name} averages no model updates; got '
                     f'model_aggregator={context.model_aggregator!r}.')


def fusion(context: Context) -> Optional[dict[str, Any]]:
  """The builders' `fusion_aggregator` from the context's mapping.

  None when every field keeps the builder's default (a field's factory is
  None only where `privacy.build_aggregators` leaves the default: FedGen's
  stack of heads).
  """
  fused = context.fusion_aggregator
  if not fused or all(f is None for f in fused.values()):
    return None
  if any(f is None for f in fused.values()):
    raise ValueError(f'Every knowledge field needs a fusion factory; got '
                     f'{fused!r}.')
  return dict(fused)
