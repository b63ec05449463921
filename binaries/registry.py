"""Every algorithm by name, with its own hyperparameters and their defaults.

The binaries' registry: an algorithm added here gets its flags in
`binaries/train.py` and joins `binaries/compare.py` without editing them. It
sits beside the binaries, not in the library: it knows our tasks
(`tasks.Task`: every task, ours, TFF's federated datasets and yours, has
the server splits, prototypes and distillation inputs) and turns them into
the explicit arguments of the library's `tff_kd.algorithms.build_*`
functions.
Each entry's `build(task, *, client_optimizer, server_optimizer,
clients_per_round, model_aggregator=None, fusion_aggregator=None, **hparams)`
(the optimizers: `tff_kd.optimizers.OptimizerConfig`s; an algorithm that
learns at the server also takes `server_step`, `tff_kd.server_step`'s
placement) returns a
`tff.learning.templates.LearningProcess` for the task, or for the
algorithms whose clients keep their own models (FD, DS-FL, FedAD) a
`tff_kd.stateful_clients.StatefulClientsProcess`. `model_aggregator` and
`fusion_aggregator` (a mapping knowledge field -> factory; None: the
algorithm's default) are `tff_kd.privacy.build_aggregators`'s for the
entry's `models` and `knowledge`, which say what its clients send: whether
model updates are averaged, and each knowledge field with its kind
(`tff_kd.privacy.KINDS`: unbounded logits, bounded rows, client-weighted,
collected client by client). `build_aggregators(...)` builds them for
`--aggregator` and checks the combination (`check_aggregator`), naming the
flags. Algorithms may share a hyperparameter (the
same `Hparam` object, one flag): FedDF, DS-FL and FedAD share the
server-distillation ones; FedAUX has its own (its reference's settings
differ) and shares `distill_data`.
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff

import tasks

from tff_kd import aggregators
from tff_kd import generator as generator_lib
from tff_kd import optimizers
from tff_kd import privacy
from tff_kd import server_distillation
from tff_kd import server_step as server_step_lib
from tff_kd.algorithms import dsfl
from tff_kd.algorithms import fd
from tff_kd.algorithms import fedad
from tff_kd.algorithms import fedavg
from tff_kd.algorithms import feddf
from tff_kd.algorithms import fedgen
from tff_kd.algorithms import fedgkd
from tff_kd.algorithms import fedntd
from tff_kd.algorithms import fedssd


@dataclasses.dataclass(frozen=True)
class Hparam:
  """A hyperparameter: its default, help, and the check its flag gets."""

  default: Any
  help: str
  check: Optional[Callable[[Any], bool]] = None
  requirement: str = ''  # What `check` requires, for the error message.


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """A registered algorithm: how to build it and its own hyperparameters."""

  name: str
  description: str
  build: Callable[..., tff.learning.templates.LearningProcess]
  hparams: Mapping[str, Hparam] = dataclasses.field(default_factory=dict)
  prototypes: bool = False  # Supports heterogeneous model prototypes.
  stateful_clients: bool = False  # Clients keep their own models.
  # What the clients send (tff_kd.privacy.build_aggregators): model updates
  # to average, and knowledge field -> kind (tff_kd.privacy.KINDS).
  models: bool = True
  knowledge: Mapping[str, str] = dataclasses.field(default_factory=dict)
  # Whether it learns at the server (`tff_kd.server_step`: its build takes
  # `server_step`, --server_step).
  server_step: bool = False
  # Whether a run with these hparams uses the labelled validation split.
  labelled_server_data: Callable[[Mapping[str, Any]], bool] = (
      lambda hparams: False)


def _build_fedavg(
    task, *, client_optimizer, server_optimizer, clients_per_round,
    model_aggregator=None, fusion_aggregator=None,
):
  del clients_per_round
  _no_fusion('fedavg', fusion_aggregator)
  return fedavg.build_fedavg(
      task.model_fn, client_optimizer.build(), server_optimizer.build(),
      model_aggregator=model_aggregator,
  )


def _build_fedntd(
    task, *, client_optimizer, server_optimizer, clients_per_round,
    ntd_beta, ntd_temperature, model_aggregator=None, fusion_aggregator=None,
):
  del clients_per_round
  _no_fusion('fedntd', fusion_aggregator)
  return fedntd.build_fedntd(
      task.model_fn,
      client_optimizer.build(), server_optimizer.build(),
      beta=ntd_beta,
      temperature=ntd_temperature,
      model_aggregator=model_aggregator,
  )


def _build_fedgkd(
    task, *, client_optimizer, server_optimizer, clients_per_round,
    gkd_buffer_size, gkd_gamma, gkd_temperature, model_aggregator=None,
    fusion_aggregator=None,
):
  del clients_per_round
  _no_fusion('fedgkd', fusion_aggregator)
  return fedgkd.build_fedgkd(
      task.model_fn,
      client_optimizer.build(), server_optimizer.build(),
      buffer_size=gkd_buffer_size,
      gamma=gkd_gamma,
      temperature=gkd_temperature,
      model_aggregator=model_aggregator,
  )


def _build_fedssd(
    task, *, client_optimizer, server_optimizer, clients_per_round,
    ssd_kd_weight, ssd_temperature, model_aggregator=None,
    fusion_aggregator=None,
):
  del clients_per_round
  _no_fusion('fedssd', fusion_aggregator)
  if not len(task.validation[1]):
    raise ValueError(
        'fedssd measures its class credibility on the labelled validation '
        f'split, and task {task.name!r} has none.')
  return fedssd.build_fedssd(
      task.model_fn,
      client_optimizer.build(), server_optimizer.build(),
      validation_x=task.validation[0],
      validation_y=task.validation[1],
      num_classes=task.num_classes,
      kd_weight=ssd_kd_weight,
      temperature=ssd_temperature,
      model_aggregator=model_aggregator,
  )


def _build_fedgen(
    task, *, client_optimizer, server_optimizer, clients_per_round,
    gen_alpha, gen_beta, gen_steps, gen_teacher_loss, gen_noise,
    gen_client_batchnorm, gen_client_draws, gen_sampled_labels,
    gen_smooth_counts, server_step=server_step_lib.DEFAULT_PLACEMENT,
    model_aggregator=None, fusion_aggregator=None,
):
  return fedgen.build_fedgen(
      task.model_fn,
      client_optimizer.build(),
      num_classes=task.num_classes,
      clients_per_round=clients_per_round,
      server_learning_rate=_server_sgd_learning_rate('fedgen',
                                                     server_optimizer),
      alpha=gen_alpha,
      beta=gen_beta,
      generator_steps=gen_steps,
      teacher_loss=gen_teacher_loss,
      noise=gen_noise,
      client_batchnorm=gen_client_batchnorm,
      client_draws=gen_client_draws,
      sampled_labels=gen_sampled_labels,
      smooth_counts=gen_smooth_counts,
      seed=task.seed,
      model_aggregator=model_aggregator,
      fusion_aggregator=_fusion(fusion_aggregator),
      server_step=server_step,
  )


def _prototype_model_fns(task):
  """Prototype name -> model_fn."""
  return {name: task.model_fn_for(name) for name in task.prototypes}


def _check_no_server_optimizer(name, server_optimizer):
  if not (server_optimizer.is_plain_sgd
          and server_optimizer.learning_rate == 1.0):
    raise ValueError(
        f'{name} has no server optimizer (it averages models or exchanges'
        ' outputs); --server_optimizer must be sgd without momentum at '
        f'--server_learning_rate=1, got {server_optimizer.name} '
        f'{server_optimizer.all_hparams()} at '
        f'{server_optimizer.learning_rate}.'
    )


def _server_sgd_learning_rate(name, server_optimizer):
  """The learning rate of a server that applies its update by plain SGD."""
  if not server_optimizer.is_plain_sgd:
    raise ValueError(
        f'{name} applies the averaged update by plain SGD; '
        f'--server_optimizer must be sgd without momentum, got '
        f'{server_optimizer.name} {server_optimizer.all_hparams()}.')
  return server_optimizer.learning_rate


def _distillation_kwargs(distill_steps, distill_batch_size,
                         distill_learning_rate, distill_temperature,
                         distill_eval_every, distill_patience):
  return dict(
      distill_steps=distill_steps, distill_batch_size=distill_batch_size,
      distill_learning_rate=distill_learning_rate,
      temperature=distill_temperature, eval_every=distill_eval_every,
      patience=distill_patience,
  )


def _server_distillation(distill_steps, distill_batch_size,
                         distill_learning_rate, distill_temperature,
                         distill_eval_every, distill_patience):
  """The `server_distillation.DistillationConfig` of the shared flags."""
  return server_distillation.DistillationConfig(
      steps=distill_steps, batch_size=distill_batch_size,
      learning_rate=distill_learning_rate, temperature=distill_temperature,
      eval_every=distill_eval_every, patience=distill_patience)


def _build_fd(
    task, *, client_optimizer, server_optimizer, clients_per_round,
    fd_beta, fd_temperature, fd_exclude_own, model_aggregator=None,
    fusion_aggregator=None,
):
  del clients_per_round
  _no_models('fd', model_aggregator)
  _check_no_server_optimizer('fd', server_optimizer)
  return fd.build_fd(
      _prototype_model_fns(task),
      client_optimizer.build(),
      client_prototypes=task.client_prototypes,
      beta=fd_beta, temperature=fd_temperature, exclude_own=fd_exclude_own,
      fusion_aggregator=_fusion(fusion_aggregator),
  )


def _build_dsfl(
    task, *, client_optimizer, server_optimizer, clients_per_round,
    distill_data, dsfl_aggregation, dsfl_era_temperature, dsfl_subset_size,
    dsfl_distill_epochs, dsfl_distill_batch_size, dsfl_distill_learning_rate,
    dsfl_server_model, dsfl_validation,
    server_step=server_step_lib.DEFAULT_PLACEMENT,
    model_aggregator=None, fusion_aggregator=None, **distillation,
):
  del clients_per_round
  _no_models('dsfl', model_aggregator)
  _check_no_server_optimizer('dsfl', server_optimizer)
  # ERA sharpens what the soft labels' aggregator (mean, DP, secure,
  # compressed) fused; SA is that aggregator alone.
  fused = (fusion_aggregator or {}).get('soft_labels')
  return dsfl.build_dsfl(
      _prototype_model_fns(task),
      client_optimizer.build(),
      client_prototypes=task.client_prototypes,
      public_inputs=_distillation_inputs(task, distill_data),
      subset_size=dsfl_subset_size,
      fusion_aggregator=(
          aggregators.EntropyReductionFactory(dsfl_era_temperature,
                                              inner=fused)
          if dsfl_aggregation == 'era'
          else fused or aggregators.LogitFusionFactory()),
      distill_epochs=dsfl_distill_epochs,
      distill_batch_size=dsfl_distill_batch_size,
      distill_learning_rate=dsfl_distill_learning_rate,
      server_distillation=(_server_distillation(**distillation)
                           if dsfl_server_model else None),
      validation=_validation(task, dsfl_validation),
      seed=task.seed,
      server_step=server_step,
  )


def _build_fedad(
    task, *, client_optimizer, server_optimizer, clients_per_round,
    distill_data, fedad_beta, fedad_validation,
    server_step=server_step_lib.DEFAULT_PLACEMENT,
    model_aggregator=None, fusion_aggregator=None, **distillation,
):
  del clients_per_round
  _no_models('fedad', model_aggregator)
  _check_no_server_optimizer('fedad', server_optimizer)
  return fedad.build_fedad(
      _prototype_model_fns(task),
      client_optimizer.build(),
      client_prototypes=task.client_prototypes,
      public_inputs=_distillation_inputs(task, distill_data),
      attention_weight=fedad_beta,
      server_distillation=_server_distillation(**distillation),
      validation=_validation(task, fedad_validation),
      seed=task.seed,
      fusion_aggregator=_fusion(fusion_aggregator),
      server_step=server_step,
  )


def _build_feddf(
    task, *, client_optimizer, server_optimizer, clients_per_round,
    distill_data, feddf_validation,
    server_step=server_step_lib.DEFAULT_PLACEMENT,
    model_aggregator=None,
    fusion_aggregator=None, **distillation,
):
  del clients_per_round
  _check_no_server_optimizer('feddf', server_optimizer)
  return feddf.build_feddf(
      _prototype_model_fns(task),
      client_optimizer.build(),
      # Data-free: fresh noise for every batch, as FedDF's code.
      distillation_inputs=(feddf.NOISE if distill_data == 'noise'
                           else _distillation_inputs(task, distill_data)),
      validation=_validation(task, feddf_validation),
      seed=task.seed,
      client_prototypes=task.client_prototypes,
      model_aggregator=model_aggregator,
      fusion_aggregator=_fusion(fusion_aggregator),
      **_distillation_kwargs(**distillation),
      server_step=server_step,
  )


def _build_fedaux(
    task, *, client_optimizer, server_optimizer, clients_per_round,
    distill_data, aux_negative_fraction, aux_distill_epochs,
    aux_distill_batch_size, aux_distill_learning_rate, aux_validation,
    aux_dp_epsilon, aux_dp_delta, server_step=server_step_lib.DEFAULT_PLACEMENT,
    model_aggregator=None,
    fusion_aggregator=None,
):
  del clients_per_round
  _check_no_server_optimizer('fedaux', server_optimizer)
  inputs = _distillation_inputs(task, distill_data)
  order = np.random.default_rng([task.seed, 4]).permutation(
      len(inputs))
  num_negative = max(1, int(round(aux_negative_fraction * len(inputs))))
  if num_negative >= len(inputs):
    raise ValueError(
        f'--aux_negative_fraction={aux_negative_fraction} holds out '
        f'{num_negative} of the {len(inputs)} distillation inputs '
        f'(--distill_data={distill_data}) as negatives, leaving none to '
        'distill on: lower it, or give more server data.')
  return feddf.build_fedaux(
      _prototype_model_fns(task),
      client_optimizer.build(),
      distillation_inputs=inputs[np.sort(order[num_negative:])],
      negative_inputs=inputs[np.sort(order[:num_negative])],
      validation=_validation(task, aux_validation),
      certainty_epsilon=aux_dp_epsilon or None,
      certainty_delta=aux_dp_delta,
      distill_epochs=aux_distill_epochs,
      distill_batch_size=aux_distill_batch_size,
      distill_learning_rate=aux_distill_learning_rate,
      seed=task.seed,
      client_prototypes=task.client_prototypes,
      model_aggregator=model_aggregator,
      fusion_aggregator=_fusion(fusion_aggregator),
      server_step=server_step,
  )


def _no_fusion(name, fusion_aggregator):
  if fusion_aggregator:
    raise ValueError(f'{name} fuses no knowledge; got fusion_aggregator='
                     f'{fusion_aggregator!r}.')


def _no_models(name, model_aggregator):
  if model_aggregator is not None:
    raise ValueError(f'{name} averages no model updates; got '
                     f'model_aggregator={model_aggregator!r}.')


def _fusion(fusion_aggregator):
  """The builder's `fusion_aggregator` from a mapping field -> factory.

  None when every field keeps the builder's default (a field's factory is
  None only where `privacy.build_aggregators` leaves the default: FedGen's
  stack of heads).
  """
  if not fusion_aggregator or all(
      f is None for f in fusion_aggregator.values()):
    return None
  if any(f is None for f in fusion_aggregator.values()):
    raise ValueError('Every knowledge field needs a fusion factory; got '
                     f'{fusion_aggregator!r}.')
  return dict(fusion_aggregator)


def _validation(task, use):
  """The task's labelled validation split if `use`."""
  return task.validation if use else None


def _distillation_inputs(task, source):
  if source == 'noise':
    # A fixed pool (FedAUX, DS-FL, FedAD have no data-free reference; FedDF
    # draws fresh noise instead): as many as the public split, each input
    # min-max scaled on its own.
    if not len(task.public_x):
      raise ValueError(
          f'--distill_data=noise draws as many inputs as the public split, '
          f'and task {task.name!r} has none.')
    return server_distillation.noise_inputs(
        [task.seed, 3], len(task.public_x), 1,
        task.input_shape).numpy()
  return task.distillation_inputs(source)


# DS-FL's fusion: entropy reduction (ERA) or simple averaging (SA).
DSFL_AGGREGATIONS = ('era', 'sa')
DISTILL_SOURCES = ('public', 'noise') + tuple(tasks.data.SPECS)


def _distill_source(value):
  return value in DISTILL_SOURCES or (
      value.startswith(tasks.NPZ_PREFIX) and len(value) > len(tasks.NPZ_PREFIX))

# Ranges of the hyperparameter flags (a float flag must also be finite).
# Weights and learning rates are capped only where a larger value cannot be
# meaningful; counts are capped where a larger one hangs or exhausts memory.
_AT_LEAST_0 = dict(check=lambda v: v >= 0, requirement='>= 0')
_AT_LEAST_1 = dict(check=lambda v: v >= 1, requirement='>= 1')
_POSITIVE = dict(check=lambda v: v > 0, requirement='> 0')
_TEMPERATURE = dict(check=lambda v: 1e-3 <= v <= 1e3,
                    requirement='in [0.001, 1000]')


def _count(low, high):
  return dict(check=lambda v: low <= v <= high,
              requirement=f'in [{low}, {high}]')


def _choice(option, text):
  """A FedGen `generator.ABLATIONS` option: its default is the first."""
  choices = generator_lib.ABLATIONS[option]
  return Hparam(choices[0], text, lambda v: v in choices,
                f'one of {", ".join(choices)}')

_DISTILLATION_HPARAMS = {
    'distill_data': Hparam(
        'public', 'FedDF/FedAUX/FedAD/DS-FL: server distillation inputs (DS-FL,'
        ' FedAD: the public data the clients predict on): public (the'
        ' task\'s unlabeled split: held-out examples, or held-out clients\''
        ' examples), noise (data-free: FedDF draws fresh noise for every'
        ' batch, as its code; the others use a fixed pool the size of the'
        ' public split), or a second dataset: another task\'s name or'
        ' npz:PATH (its x_train; out-of-domain, images resized).',
        check=_distill_source,
        requirement=f'one of {DISTILL_SOURCES} or npz:PATH'),
    'distill_steps': Hparam(200, 'Server distillation (FedDF, DS-FL\'s server'
                            ' model, FedAD; FedAUX has its aux_distill_ flags):'
                            ' most steps per round (0 = no distillation).',
                            **_count(0, 1_000_000)),
    'distill_batch_size': Hparam(32, 'Server distillation: distillation batch.',
                                 **_count(1, 100_000)),
    'distill_learning_rate': Hparam(
        1e-3, 'Server distillation: peak Adam learning rate, cosine-decayed '
        '(FedDF\'s code: 1e-3).', **_POSITIVE),
    'distill_temperature': Hparam(1.0, 'Server distillation: temperature tau.',
                                  **_TEMPERATURE),
    'distill_eval_every': Hparam(10, 'Server distillation: steps between '
                                 'validation evaluations (early stopping, with'
                                 ' the algorithm\'s *_validation flag).',
                                 **_count(1, 1_000_000)),
    'distill_patience': Hparam(5, 'Server distillation: evaluations without '
                               'improvement before distillation stops.',
                               **_count(1, 1_000_000)),
}


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in [
        Algorithm(
            'fedavg',
            'FedAvg (McMahan et al. 2017): n_k/n weighted model averaging.',
            _build_fedavg,
        ),
        Algorithm(
            'fedntd',
            'FedNTD (Lee et al. 2022): FedAvg + not-true distillation from'
            ' the global model on the client.',
            _build_fedntd,
            hparams={
                'ntd_beta': Hparam(1.0, 'FedNTD: weight beta of the not-true'
                                   ' distillation term.', **_AT_LEAST_0),
                'ntd_temperature': Hparam(1.0, 'FedNTD: temperature tau.',
                                          **_TEMPERATURE),
            },
        ),
        Algorithm(
            'fedgkd',
            'FedGKD (Yao et al. 2023): FedAvg + distillation from the average'
            ' of the last M global models on the client.',
            _build_fedgkd,
            hparams={
                'gkd_buffer_size': Hparam(5, 'FedGKD: M, past global models'
                                          ' averaged into the teacher (each'
                                          ' is kept on the server).',
                                          **_count(1, 100)),
                'gkd_gamma': Hparam(0.1, 'FedGKD: weight gamma of the KD'
                                    ' term.', **_AT_LEAST_0),
                'gkd_temperature': Hparam(1.0, 'FedGKD: temperature tau.',
                                          **_TEMPERATURE),
            },
        ),
        Algorithm(
            'fedssd',
            'FedSSD (He et al. 2022): FedAvg + self-distillation from the'
            ' global model weighted by its class and sample credibility.',
            _build_fedssd,
            hparams={
                'ssd_kd_weight': Hparam(1.0, 'FedSSD: weight lambda of the'
                                        ' KD term.', **_AT_LEAST_0),
                'ssd_temperature': Hparam(1.0, 'FedSSD: temperature tau.',
                                          **_TEMPERATURE),
            },
            # Its class credibility is measured on the validation split.
            labelled_server_data=lambda hparams: True,
        ),
        Algorithm(
            'fedgen',
            'FedGen (Zhu et al. 2021): FedAvg + a server-trained conditional'
            ' generator regularizing the clients (data-free KD).',
            _build_fedgen,
            server_step=True,
            knowledge={'heads': privacy.STACKED},
            hparams={
                'gen_alpha': Hparam(1.0, 'FedGen: initial weight of the'
                                    ' clients\' generated-sample CE (the'
                                    ' paper: 10 at client lr 0.01; 1 keeps'
                                    ' alpha*lr at our lr 0.1).',
                                    **_AT_LEAST_0),
                'gen_beta': Hparam(1.0, 'FedGen: initial weight of the'
                                   ' clients\' latent KL (paper: 10 at lr'
                                   ' 0.01).', **_AT_LEAST_0),
                'gen_steps': Hparam(50, 'FedGen: generator steps per round.',
                                    **_count(1, 100_000)),
                'gen_teacher_loss': Hparam(
                    'per_sample', 'FedGen: the generator\'s teacher loss, '
                    'per_sample (the paper) or official (the official '
                    'code\'s broadcast: mean weight x mean CE per client).',
                    lambda v: v in generator_lib.TEACHER_LOSSES,
                    f'one of {", ".join(generator_lib.TEACHER_LOSSES)}'),
                'gen_noise': _choice(
                    'noise', 'FedGen: the generator\'s noise, uniform on '
                    '[0, 1) (the official code) or normal (the paper).'),
                'gen_client_batchnorm': _choice(
                    'client_batchnorm', 'FedGen: the generator\'s BatchNorm'
                    ' statistics on the clients, running (the official eval'
                    ' mode) or batch (each batch\'s own).'),
                'gen_client_draws': _choice(
                    'client_draws', 'FedGen: the clients\' noise and'
                    ' labels, own (each client its own) or shared (the'
                    ' same for every client of a round).'),
                'gen_sampled_labels': _choice(
                    'sampled_labels', 'FedGen: the clients\' generated'
                    ' labels, uniform (the official code) or'
                    ' label_distribution (the paper: the last round\'s'
                    ' trained labels, broadcast).'),
                'gen_smooth_counts': Hparam(
                    True, 'FedGen: label counts start at 1 (the official'
                    ' clean_up_counts); false: at 0.'),
            },
        ),
        Algorithm(
            'feddf',
            'FedDF (Lin et al. 2020): per-prototype averaging, then server'
            ' distillation from the average logits of all client models.',
            _build_feddf,
            server_step=True,
            knowledge={'logits': privacy.LOGITS},
            hparams=dict(
                _DISTILLATION_HPARAMS,
                feddf_validation=Hparam(
                    True, 'FedDF: early stopping on the labelled validation'
                    ' split, best weights kept (its code); False runs every'
                    ' distillation step.'),
            ),
            prototypes=True,
            labelled_server_data=lambda hparams: hparams['feddf_validation'],
        ),
        Algorithm(
            'fedaux',
            'FedAUX (Sattler et al. 2021): FedDF with a teacher weighted by'
            ' each client\'s certainty on each distillation input.',
            _build_fedaux,
            server_step=True,
            knowledge={'logits': privacy.WEIGHTED},
            hparams=dict(
                distill_data=_DISTILLATION_HPARAMS['distill_data'],
                aux_negative_fraction=Hparam(
                    0.2, 'FedAUX: share of the distillation source held out'
                    ' as the certainty regressions\' negative class.',
                    check=lambda v: 0 < v < 1, requirement='in (0, 1)'),
                aux_distill_epochs=Hparam(
                    1, 'FedAUX: server distillation epochs (shuffled passes'
                    ' over the distillation inputs) per round (its code: 1).',
                    **_count(1, 1000)),
                aux_distill_batch_size=Hparam(
                    128, 'FedAUX: server distillation batch; a smaller set is'
                    ' one batch (its code: 128).', **_count(1, 100_000)),
                aux_distill_learning_rate=Hparam(
                    5e-5, 'FedAUX: constant Adam learning rate of the server'
                    ' distillation (its code: 5e-5).', **_POSITIVE),
                aux_validation=Hparam(
                    False, 'FedAUX: keep the best epoch on the labelled'
                    ' validation split (its code uses no labelled data).'),
                aux_dp_epsilon=Hparam(
                    0.0, 'FedAUX: epsilon of the differential-privacy noise on'
                    ' the certainty regression, 0 = none (the paper: 0.1,'
                    ' whose noise swamps the regression at ~100 examples).',
                    **_AT_LEAST_0),
                aux_dp_delta=Hparam(
                    1e-5, 'FedAUX: delta of that noise (its code: 1e-5).',
                    check=lambda v: 0 < v < 1, requirement='in (0, 1)'),
            ),
            prototypes=True,
            labelled_server_data=lambda hparams: hparams['aux_validation'],
        ),
        Algorithm(
            'fd',
            'FD (Jeong et al. 2018): clients keep their models and exchange'
            ' per-label mean outputs; distillation toward the others\' ones.',
            _build_fd,
            models=False,
            knowledge={'per_label': privacy.PROBABILITIES},
            hparams={
                'fd_beta': Hparam(1.0, 'FD: weight beta of the distillation'
                                  ' term.', **_AT_LEAST_0),
                'fd_temperature': Hparam(1.0, 'FD: temperature tau.',
                                         **_TEMPERATURE),
                'fd_exclude_own': Hparam(True, 'FD: distill toward the global'
                                         ' logits without the client\'s own'
                                         ' last contribution (the paper).'),
            },
            prototypes=True,
            stateful_clients=True,
        ),
        Algorithm(
            'dsfl',
            'DS-FL (Itahara et al. 2021): clients keep their models and'
            ' exchange soft labels on public data, fused by ERA or SA.',
            _build_dsfl,
            server_step=True,
            models=False,
            knowledge={'soft_labels': privacy.PROBABILITIES},
            hparams=dict(
                _DISTILLATION_HPARAMS,
                dsfl_aggregation=Hparam(
                    'era', 'DS-FL: soft-label aggregation, era (entropy'
                    ' reduction) or sa (simple averaging).',
                    check=lambda v: v in DSFL_AGGREGATIONS,
                    requirement=f'one of {DSFL_AGGREGATIONS}'),
                dsfl_era_temperature=Hparam(0.1, 'DS-FL: ERA temperature T.',
                                            **_TEMPERATURE),
                dsfl_subset_size=Hparam(1000, 'DS-FL: public inputs per round'
                                        ' (at most the public split).',
                                        **_count(1, 1_000_000)),
                dsfl_distill_epochs=Hparam(5, 'DS-FL: client distillation'
                                           ' epochs per round.', **_count(1, 1000)),
                dsfl_distill_batch_size=Hparam(100, 'DS-FL: client'
                                               ' distillation batch.',
                                               **_count(1, 100_000)),
                dsfl_distill_learning_rate=Hparam(0.1, 'DS-FL: client'
                                                  ' distillation SGD learning'
                                                  ' rate.', **_POSITIVE),
                dsfl_server_model=Hparam(True, 'DS-FL: the server distills a'
                                         ' model of its own on the global soft'
                                         ' labels (evaluated as the test'
                                         ' accuracy).'),
                dsfl_validation=Hparam(False, 'DS-FL: early stopping of the'
                                       ' server model on the labelled'
                                       ' validation split (the paper uses no'
                                       ' labelled server data).'),
            ),
            prototypes=True,
            stateful_clients=True,
            labelled_server_data=lambda hparams: (
                hparams['dsfl_server_model'] and hparams['dsfl_validation']),
        ),
        Algorithm(
            'fedad',
            'FedAD (Gong et al. 2021): clients keep their models; the server'
            ' distills its model from their logits and attention maps.',
            _build_fedad,
            server_step=True,
            models=False,
            knowledge={'logits': privacy.LOGITS,
                       'attention': privacy.BOUNDED},
            hparams=dict(
                _DISTILLATION_HPARAMS,
                fedad_beta=Hparam(1.0, 'FedAD: weight beta of the attention'
                                  ' term.', **_AT_LEAST_0),
                fedad_validation=Hparam(False, 'FedAD: early stopping on the'
                                        ' labelled validation split (the'
                                        ' paper uses no labelled server'
                                        ' data).'),
            ),
            prototypes=True,
            stateful_clients=True,
            labelled_server_data=lambda hparams: hparams['fedad_validation'],
        ),
    ]
}


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
