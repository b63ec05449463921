"""Every algorithm by name, with its flags: derived from the algorithms' specs.

The binaries' registry: each algorithm module's `Spec` (`tff_kd.algorithms.
SPECS`) becomes an `Algorithm` here, whose flags come from its config's
fields (`--{algorithm}_{field}`, with the field's default, help and range:
`tff_kd.settings`), plus the shared ones it reads: `--distill_data` and the
server distillation's `--distill_{field}` (`server_distillation.
DistillationConfig`). An algorithm added to `SPECS` gets its flags in
`binaries/train.py` and joins `binaries/compare.py` without editing them.
`Algorithm.build(task, *, client_optimizer, server_optimizer,
clients_per_round, model_aggregator=None, fusion_aggregator=None,
server_step=..., **hparams)` (the optimizers: `tff_kd.optimizers.
OptimizerConfig`s; `hparams`: its flags' values) returns its process for the
task. `model_aggregator` and `fusion_aggregator` (knowledge field ->
factory; None: the algorithm's default) are `tff_kd.privacy.
build_aggregators`'s for the spec's `models` and `knowledge`: whether model
updates are averaged, and each knowledge field with its kind
(`tff_kd.privacy.KINDS`). `build_aggregators(...)` builds them for
`--aggregator` and checks the combination (`check_aggregator`), naming the
flags.
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any, Optional

import tasks

from tff_kd import algorithms
from tff_kd import privacy
from tff_kd import server_distillation
from tff_kd import server_step as server_step_lib
from tff_kd.algorithms import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class Hparam:
  """A flag: its default, help, and the check it gets."""

  default: Any
  help: str
  check: Optional[Callable[[Any], bool]] = None
  requirement: str = ''  # What `check` requires, for the error message.


DISTILL_SOURCES = ('public', 'noise') + tuple(tasks.data.SPECS)


def _distill_source(value):
  return value in DISTILL_SOURCES or (
      value.startswith(tasks.NPZ_PREFIX) and len(value) > len(tasks.NPZ_PREFIX))


DISTILL_DATA = Hparam(
    'public', 'FedDF/FedAUX/FedAD/DS-FL: server distillation inputs (DS-FL,'
    ' FedAD: the public data the clients predict on): public (the task\'s'
    ' unlabeled split: held-out examples, or held-out clients\' examples),'
    ' noise (data-free: FedDF draws fresh noise for every batch, as its code;'
    ' the others use a fixed pool the size of the public split), or a second'
    ' dataset: another task\'s name or npz:PATH (its x_train; out-of-domain,'
    ' images resized).',
    check=_distill_source,
    requirement=f'one of {DISTILL_SOURCES} or npz:PATH')
# The prefix of the shared server-distillation flags.
_DISTILLATION = 'distill'


def _flags_of(prefix: str, config: type) -> dict[str, Hparam]:
  """`--{prefix}_{field}` for every field of `config` that has help."""
  return {f'{prefix}_{f.name}': Hparam(f.default, f.metadata['help'],
                                       f.metadata['check'],
                                       f.metadata['requirement'])
          for f in dataclasses.fields(config) if 'help' in f.metadata}


def _values(prefix: str, config: type, hparams: Mapping[str, Any]) -> Any:
  """`config` from the flags' values."""
  names = _flags_of(prefix, config)
  return config(**{name[len(prefix) + 1:]: value
                   for name, value in hparams.items() if name in names})


class Algorithm:
  """A registered algorithm: its spec and its flags (`hparams`)."""

  def __init__(self, spec: spec_lib.Spec):
    self.spec = spec
    self.hparams: dict[str, Hparam] = {}
    if spec.distill_data:
      self.hparams['distill_data'] = DISTILL_DATA
    if spec.distillation:
      self.hparams.update(_flags_of(
          _DISTILLATION, server_distillation.DistillationConfig))
    self.hparams.update(_flags_of(spec.name, spec.config))

  name = property(lambda self: self.spec.name)
  description = property(lambda self: self.spec.description)
  prototypes = property(lambda self: self.spec.prototypes)
  stateful_clients = property(lambda self: self.spec.stateful_clients)
  models = property(lambda self: self.spec.models)
  knowledge = property(lambda self: self.spec.knowledge)
  server_step = property(lambda self: self.spec.server_step)

  def config(self, hparams: Mapping[str, Any]) -> Any:
    """The spec's config from its flags' values."""
    return _values(self.name, self.spec.config, hparams)

  def labelled_server_data(self, hparams: Mapping[str, Any]) -> bool:
    """Whether a run with these flags uses the labelled validation split."""
    return self.spec.labelled_server_data(self.config(hparams))

  def build(self, task: tasks.Task, *, client_optimizer, server_optimizer,
            clients_per_round: int, model_aggregator=None,
            fusion_aggregator=None,
            server_step: str = server_step_lib.DEFAULT_PLACEMENT,
            **hparams):
    """The algorithm's process for `task`; `hparams`: its flags' values."""
    unknown = sorted(set(hparams) - set(self.hparams))
    if unknown:
      raise TypeError(f'{self.name} takes no {unknown}; its flags: '
                      f'{sorted(self.hparams)}.')
    context = spec_lib.Context(
        client_optimizer=client_optimizer, server_optimizer=server_optimizer,
        clients_per_round=clients_per_round,
        model_aggregator=model_aggregator,
        fusion_aggregator=fusion_aggregator, server_step=server_step,
        distill_data=hparams.get('distill_data', DISTILL_DATA.default),
        distillation=_values(_DISTILLATION,
                             server_distillation.DistillationConfig, hparams))
    return self.spec.build(task, self.config(hparams), context)


ALGORITHMS: dict[str, Algorithm] = {
    spec.name: Algorithm(spec) for spec in algorithms.SPECS}


def check_aggregator(algorithm: Algorithm, aggregator: str,
                     prototypes: tuple[str, ...] = ()) -> None:
  """Raises `ValueError` naming the flags when `--aggregator` does not apply.

  Args:
    algorithm: the registered algorithm.
    aggregator: `--aggregator`, one of `privacy.AGGREGATORS`.
    prototypes: `--prototypes`.
  """
  name = algorithm.name
  kinds = set(algorithm.knowledge.values())
  if aggregator == 'dp' and privacy.WEIGHTED in kinds:
    raise ValueError(
        f'--aggregator=dp does not apply to --algorithm={name}: its teacher '
        'weighs each client\'s logits by the client\'s own certainty, and a '
        'differentially private mean weighs every client 1/m (the weights '
        'would be released unprotected). Use --aggregator=mean, secure or '
        'compression.')
  if aggregator in ('dp', 'secure') and privacy.STACKED in kinds:
    raise ValueError(
        f'--aggregator={aggregator} does not apply to --algorithm={name}: its '
        'server trains on every client\'s classifier head, one by one, and '
        + ('a differentially private sum' if aggregator == 'dp'
           else 'secure aggregation')
        + ' reveals only the sum. Use --aggregator=mean or compression.')
  if aggregator == 'dp' and algorithm.models and len(prototypes) > 1:
    raise ValueError(
        '--aggregator=dp averages every client\'s update with weight 1/m, '
        f'so it serves one model prototype; --prototypes={",".join(prototypes)}'
        f' gives {name} {len(prototypes)}.')


def build_aggregators(algorithm: Algorithm, config: privacy.AggregatorConfig, *,
                clients_per_round: int, num_clients: int, total_rounds: int,
                prototypes: tuple[str, ...] = ()) -> privacy.Aggregators:
  """The algorithm's aggregators under `config` (`--aggregator` and its flags).

  Raises `ValueError` naming the flags for a combination that does not apply
  (`check_aggregator`).
  """
  check_aggregator(algorithm, config.aggregator, prototypes)
  return privacy.build_aggregators(
      config, models=algorithm.models, knowledge=algorithm.knowledge,
      clients_per_round=clients_per_round, num_clients=num_clients,
      total_rounds=total_rounds)


def get(name: str) -> Algorithm:
  if name not in ALGORITHMS:
    raise ValueError(
        f'Unknown algorithm {name!r}; choose one of {sorted(ALGORITHMS)}.'
    )
  return ALGORITHMS[name]
