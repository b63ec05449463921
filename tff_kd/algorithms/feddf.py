"""FedDF and FedAUX: server-side ensemble distillation over model prototypes.

FedDF: Lin, Kong, Stich, Jaggi, "Ensemble Distillation for Robust Model Fusion
in Federated Learning", NeurIPS 2020 (the guide's Algorithm 3; official code
`epfml/federated-learning-public-code`, codes/FedDF-code, pcode/aggregation/
noise_knowledge_transfer.py).
FedAUX: Sattler, Korjakow, Rischke, Samek, "FedAUX: Leveraging Unlabeled
Auxiliary Data in Federated Learning", IEEE TNNLS 2021 (official code
`fedl-repo/fedaux`, code/fl_devices.py and code/federated_learning.py).

The server keeps one model per prototype (architecture); each client belongs
to one prototype. Each round:
1. Every sampled client trains its prototype's model with CE from the
   prototype's global weights (`tff_kd.local_training`, as FedAvg) and
   computes its trained model's logits on the R distillation inputs (public,
   unlabeled, held by the server and the clients). FedAUX clients also score
   every distillation input with their certainty s_k(x)
   (`tff_kd.certainty`), using the features of the global model they
   received.
2. Per prototype, the deltas of its clients are averaged
   (`WeightedMeanFactory`): the fused model is the n_k-weighted (FedDF) or
   uniform (FedAUX) average of that prototype's client models.
3. The logits of ALL sampled clients, every prototype, are fused by
   `LogitFusionFactory`: FedDF's AVGLOGITS (weights 1), FedAUX's
   certainty-weighted mean (weights s_k(x)).
4. Per prototype, the fused model is distilled toward the fused logits on the
   distillation inputs (`tff_kd.server_distillation`), with each reference's
   settings:
   - FedDF: Adam (lr 1e-3), cosine schedule over the step budget, gradient
     norm clipped to 5, KL at tau = 1 without a tau^2 factor, batches from
     shuffled epochs over the inputs (its re-iterated DataLoader), early
     stopping on the labelled validation split every `eval_every` steps
     with the best weights kept (with `validation`; the start included).
   - FedAUX (`Server.distill`, mode 'weighted_logits_precomputed'): Adam
     (lr 5e-5) at a constant rate, no clipping, KL at tau = 1,
     `distill_epochs` shuffled passes over the inputs in batches of 128 (a
     smaller set is one batch), no labelled data (with `validation`, ours
     keeps the best epoch).

FedDF's data-free variant (`distillation_inputs='noise'`): as its code, every
distillation batch is fresh Gaussian noise min-max scaled as a whole
(`server_distillation.noise_inputs`). The server does not hold the client
models here, so clients and server both generate the round's
`distill_steps x distill_batch_size` noise inputs from the stateless seed
(seed, round) (the round is broadcast: 4 more bytes down), and the server's
batch i is exactly inputs [i B, (i + 1) B).

FedDF's server computes the clients' logits itself from the uploaded models;
here the clients compute them (the same numbers) so that the fusion is a TFF
aggregation process. That adds R x C floats (and R certainty weights) to each
client's upload, counted in the `communication` metrics.

Heterogeneous prototypes in one TFF computation: each client's data is an
`OrderedDict(prototype name -> dataset)` in which only its own prototype's
dataset is non-empty (`client_input` of the `tff_kd.process.GlobalModelsProcess`
builds it from `client_prototypes`); every client receives all prototypes' weights and
trains only its own (empty datasets take no steps and get weight 0). The
`communication` metrics count what a deployment would send: the client's own
prototype's weights down (and the round, data-free), its delta, weight and
fused values up (`client_work/communication`).

FedAUX's `client_work/certainty_std`: the standard deviation of a client's
scores over the distillation inputs, averaged over the round's contributing
clients (0 without any): how much the certainty weighting departs from
FedDF's uniform one.

The process is TFF's composition of parts (`compose_learning_process`):
TFF's broadcast of the global weights `OrderedDict(name -> ModelWeights)`,
the client work above (its state the round), `KnowledgeFactory`'s
aggregation (per prototype `model_aggregator`, `fusion_aggregator` on the
logits; their states carried from round to round) and the distillation
finalizer (`tff_kd.finalizers`). `get_model_weights` returns the first
prototype's weights. With one prototype and `distill_steps=0` FedDF is
FedAvg exactly.

Deviations from the official codes:
- FedDF: our step budget is a caller's choice (the registry: 200 steps,
  evaluation every 10, patience 5; the official 10,000 / 100 / 1,000 would
  cost ~50x per round); the best weights kept include the starting model.
- FedAUX: no self-supervised pre-training of the feature extractor on the
  auxiliary data; the scores use the features of the current global model,
  recomputed each round (the official code scores once, before round 1, with
  a SimCLR-pretrained backbone). Its Adam state starts afresh every round
  (the official optimizer persists across rounds). The distillation and
  negative (held-out) auxiliary inputs are disjoint (the official code draws
  them with two independent permutations, so they overlap). The optional
  privacy noise on the regression is drawn statelessly from (seed, round)
  folded with the bits of the sum of the client's local features (TFF
  clients are anonymous), so clients draw different noise reproducibly.
  FedAUX has no data-free variant.
"""

import collections
from collections.abc import Mapping
import dataclasses
from typing import Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import certainty as certainty_lib
from tff_kd import client_work as client_work_lib
from tff_kd import communication
from tff_kd import finalizers
from tff_kd import local_training
from tff_kd import model_parts
from tff_kd import optimizers
from tff_kd import privacy
from tff_kd import process as process_lib
from tff_kd import server_distillation
from tff_kd import server_step as server_step_lib
from tff_kd import settings
from tff_kd.aggregators import knowledge
from tff_kd.aggregators import logit_fusion
from tff_kd.algorithms import spec as spec_lib

CLIENT_WEIGHTINGS = ('num_examples', 'uniform')
NOISE = 'noise'


@dataclasses.dataclass(frozen=True)
class FedDFConfig:
  """FedDF's own settings; its distillation's are `DistillationConfig`'s."""

  validation: bool = settings.setting(
      True, 'FedDF: early stopping on the labelled validation split, best'
      ' weights kept (its code); False runs every distillation step.')


def build_feddf(
    prototype_model_fns: Mapping[str, model_parts.ModelFn],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    *,
    distillation_inputs: Union[np.ndarray, str],
    validation: Optional[tuple[np.ndarray, np.ndarray]] = None,
    distill_steps: int = server_distillation.DistillationConfig.steps,
    distill_batch_size: int = server_distillation.DistillationConfig.batch_size,
    distill_learning_rate: float = (
        server_distillation.DistillationConfig.learning_rate),
    temperature: float = server_distillation.DistillationConfig.temperature,
    scale_by_temperature_squared: bool = False,
    eval_every: int = server_distillation.DistillationConfig.eval_every,
    patience: int = server_distillation.DistillationConfig.patience,
    client_weighting: str = 'num_examples',
    seed: int = 0,
    client_prototypes: Optional[Mapping[str, str]] = None,
    model_aggregator: Optional[knowledge.ModelAggregator] = None,
    fusion_aggregator: knowledge.FusionAggregator = None,
    server_step: str = server_step_lib.DEFAULT_PLACEMENT,
) -> Union[process_lib.GlobalModelsProcess, process_lib.ProgramStepProcess]:
  """Builds FedDF.

  Args:
    prototype_model_fns: prototype name -> no-arg `model_fn` returning a
      `VariableModel` (logits out). All take the same input and classes.
    client_optimizer_fn: client `tff.learning.optimizers.Optimizer`.
    distillation_inputs: [R, ...] unlabeled server inputs (the task's public
      split or out-of-domain data), or 'noise': FedDF's data-free variant,
      fresh noise for every batch (module docstring).
    validation: labelled `(x, y)` server split for early stopping (FedDF's
      code), or None (run all `distill_steps`).
    distill_steps: the most server distillation steps per prototype and
      round (FedDF's code: up to 10,000; 0 = FedAvg per prototype).
    distill_batch_size: distillation minibatch size.
    distill_learning_rate: peak Adam learning rate (FedDF's code: 1e-3).
    temperature: tau (FedDF's code: 1).
    scale_by_temperature_squared: multiply the KL by tau^2 (FedDF's code does
      not; no difference at tau = 1).
    eval_every: distillation steps between validation evaluations.
    patience: evaluations without improvement before stopping.
    client_weighting: `num_examples` (n_k / n) or `uniform` model averaging.
    seed: seed of the distillation minibatches (and of the noise).
    client_prototypes: client id -> prototype name (None: one prototype).
    model_aggregator: averages each prototype's model deltas: a weighted
      `tff.aggregators` factory (weights: `client_weighting`), or an
      unweighted one with a single prototype; default `WeightedMeanFactory`.
    fusion_aggregator: fuses the clients' `logits`, `<logits=float32[R, C],
      weights=float32[R]>`; default `LogitFusionFactory()` (AVGLOGITS).
    server_step: where the server's step runs: `worker` (in the round, a
      TFF process) or `program` (a `tf.function` of the program, on its
      devices; a `ProgramStepProcess`); `tff_kd.server_step`.

  Returns:
    A `tff_kd.process.GlobalModelsProcess` (module docstring) whose `next` takes
    `{OrderedDict(prototype -> B*)}@CLIENTS`.
  """
  noise = isinstance(distillation_inputs, str)
  if noise and distillation_inputs != NOISE:
    raise ValueError(f'distillation_inputs must be an array or {NOISE!r}; '
                     f'got {distillation_inputs!r}.')
  if noise and distill_steps < 1:
    raise ValueError('distill_steps must be >= 1 with distillation_inputs='
                     f'{NOISE!r}; got {distill_steps}.')
  return _build(
      prototype_model_fns, client_optimizer_fn,
      distillation_inputs=None if noise else distillation_inputs,
      validation=validation,
      config=server_distillation.DistillationConfig(
          steps=distill_steps, batch_size=distill_batch_size,
          learning_rate=distill_learning_rate, schedule='cosine',
          temperature=temperature,
          scale_by_temperature_squared=scale_by_temperature_squared,
          clip_norm=5.0, sampling='ordered' if noise else 'shuffled',
          eval_every=eval_every, patience=patience),
      client_weighting=client_weighting, seed=seed, certainty=None,
      client_prototypes=client_prototypes, model_aggregator=model_aggregator,
      fusion_aggregator=fusion_aggregator, server_step=server_step,
  )


@dataclasses.dataclass(frozen=True)
class FedAUXConfig:
  """FedAUX's settings (its reference's server distillation differs from
  FedDF's)."""

  negative_fraction: float = settings.setting(
      0.2, 'FedAUX: share of the distillation source held out as the'
      ' certainty regressions\' negative class.', **settings.OPEN_UNIT)
  distill_epochs: int = settings.setting(
      1, 'FedAUX: server distillation epochs (shuffled passes over the'
      ' distillation inputs) per round (its code: 1).',
      **settings.count(1, 1000))
  distill_batch_size: int = settings.setting(
      128, 'FedAUX: server distillation batch; a smaller set is one batch'
      ' (its code: 128).', **settings.count(1, 100_000))
  distill_learning_rate: float = settings.setting(
      5e-5, 'FedAUX: constant Adam learning rate of the server distillation'
      ' (its code: 5e-5).', **settings.POSITIVE)
  validation: bool = settings.setting(
      False, 'FedAUX: keep the best epoch on the labelled validation split'
      ' (its code uses no labelled data).')
  dp_epsilon: float = settings.setting(
      0.0, 'FedAUX: epsilon of the differential-privacy noise on the'
      ' certainty regression, 0 = none (the paper: 0.1, whose noise swamps'
      ' the regression at ~100 examples).', **settings.at_least(0))
  dp_delta: float = settings.setting(
      1e-5, 'FedAUX: delta of that noise (its code: 1e-5).',
      **settings.OPEN_UNIT)


def build_fedaux(
    prototype_model_fns: Mapping[str, model_parts.ModelFn],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    *,
    distillation_inputs: np.ndarray,
    negative_inputs: np.ndarray,
    validation: Optional[tuple[np.ndarray, np.ndarray]] = None,
    certainty_l2: float = 0.01,
    certainty_steps: int = 50,
    certainty_epsilon: Optional[float] = None,
    certainty_delta: float = FedAUXConfig.dp_delta,
    distill_epochs: int = FedAUXConfig.distill_epochs,
    distill_batch_size: int = FedAUXConfig.distill_batch_size,
    distill_learning_rate: float = FedAUXConfig.distill_learning_rate,
    client_weighting: str = 'uniform',
    seed: int = 0,
    client_prototypes: Optional[Mapping[str, str]] = None,
    model_aggregator: Optional[knowledge.ModelAggregator] = None,
    fusion_aggregator: knowledge.FusionAggregator = None,
    server_step: str = server_step_lib.DEFAULT_PLACEMENT,
) -> Union[process_lib.GlobalModelsProcess, process_lib.ProgramStepProcess]:
  """Builds FedAUX: FedDF with a certainty-weighted ensemble teacher.

  The defaults are the official code's (fl_devices.py, exec.sh).

  Args:
    prototype_model_fns, client_optimizer_fn, seed: as `build_feddf`. Every
      model needs a Dense layer named `head` (its input is the feature vector
      the certainty scores use).
    distillation_inputs: [R, ...] the auxiliary inputs distilled on (the
      paper: 80% of the auxiliary data).
    negative_inputs: [M, ...] held-out auxiliary inputs, the negative class
      of each client's certainty regression (the paper: the other 20%).
    validation: None (the reference: no labelled server data), or a labelled
      `(x, y)` split: the student is evaluated after every epoch and the best
      weights (the start included) are kept.
    certainty_l2: the regression's L2 weight lambda (official: 0.01).
    certainty_steps: the most Newton steps of the regression.
    certainty_epsilon: None (default) or the epsilon of the regression's
      differential-privacy noise (the paper's experiments: 0.1; at n ~ 100
      examples its noise swamps the regression, see `tff_kd.certainty`).
    certainty_delta: its delta (official: 1e-5).
    distill_epochs: passes over the distillation inputs per round (official:
      1).
    distill_batch_size: distillation minibatch size (official: 128).
    distill_learning_rate: constant Adam learning rate (official: 5e-5).
    client_weighting: model averaging; the official code averages uniformly.
    client_prototypes, model_aggregator: as `build_feddf`.
    fusion_aggregator: fuses the clients' certainty-weighted `logits`
      (`<logits, weights=s_k(x)>`); default `LogitFusionFactory()`.
    server_step: where the server's step runs: `worker` (in the round, a
      TFF process) or `program` (a `tf.function` of the program, on its
      devices; a `ProgramStepProcess`); `tff_kd.server_step`.

  Returns:
    A `tff.learning.templates.LearningProcess`, as `build_feddf`. With all
    certainty scores equal its teacher is FedDF's.
  """
  if isinstance(distillation_inputs, str):
    raise ValueError(
        'FedAUX has no data-free variant: distillation_inputs must be an '
        f'array (for noise, a fixed pool); got {distillation_inputs!r}.')
  if not certainty_l2 > 0:
    raise ValueError(f'certainty_l2 must be > 0; got {certainty_l2}.')
  if certainty_steps < 1:
    raise ValueError(f'certainty_steps must be >= 1; got {certainty_steps}.')
  if certainty_epsilon is not None and not certainty_epsilon > 0:
    raise ValueError('certainty_epsilon must be > 0 or None; got '
                     f'{certainty_epsilon}.')
  if not 0 < certainty_delta < 1:
    raise ValueError(
        f'certainty_delta must be in (0, 1); got {certainty_delta}.')
  for name, value in (('distill_epochs', distill_epochs),
                      ('distill_batch_size', distill_batch_size)):
    if value < 1:
      raise ValueError(f'{name} must be >= 1; got {value}.')
  negative_inputs = np.asarray(negative_inputs, np.float32)
  if not len(negative_inputs):
    raise ValueError('negative_inputs is empty: FedAUX needs held-out '
                     'auxiliary inputs for its certainty scores.')
  num_inputs = len(distillation_inputs)
  if not num_inputs:
    raise ValueError('distillation_inputs is empty.')
  steps_per_epoch = server_distillation.epoch_steps(
      num_inputs, 1, distill_batch_size)
  return _build(
      prototype_model_fns, client_optimizer_fn,
      distillation_inputs=distillation_inputs, validation=validation,
      config=server_distillation.DistillationConfig(
          steps=distill_epochs * steps_per_epoch,
          batch_size=distill_batch_size,
          learning_rate=distill_learning_rate, schedule='constant',
          temperature=1.0, scale_by_temperature_squared=False,
          clip_norm=None, sampling='shuffled', eval_every=steps_per_epoch,
          patience=distill_epochs),
      client_weighting=client_weighting, seed=seed,
      certainty=dict(negative_inputs=negative_inputs, l2=certainty_l2,
                     steps=certainty_steps, epsilon=certainty_epsilon,
                     delta=certainty_delta),
      client_prototypes=client_prototypes, model_aggregator=model_aggregator,
      fusion_aggregator=fusion_aggregator, server_step=server_step,
  )


def _build(
    prototype_model_fns, client_optimizer_fn, *, distillation_inputs,
    validation, config, client_weighting, seed, certainty, client_prototypes,
    model_aggregator, fusion_aggregator, server_step,
):
  """The process of `build_feddf` (certainty None) and `build_fedaux`.

  `distillation_inputs` None: the data-free variant.
  """
  if client_weighting not in CLIENT_WEIGHTINGS:
    raise ValueError(f'client_weighting must be one of {CLIENT_WEIGHTINGS}; '
                     f'got {client_weighting!r}.')

  def check(name, model):
    if certainty is not None:
      model_parts.head_layer(model, f'FedAUX (prototype {name!r})')

  probes = model_parts.probe_prototypes(prototype_model_fns, check)
  names = list(probes)
  data_type = probes[names[0]]['data_type']
  num_classes = probes[names[0]]['num_classes']
  input_shape = probes[names[0]]['input_shape']
  noise = distillation_inputs is None
  if noise:
    num_inputs = config.steps * config.batch_size
  else:
    distill_x = model_parts.check_inputs(
        distillation_inputs, input_shape, 'distillation_inputs')
    num_inputs = len(distill_x)

  def distillation_set(round_num):
    """The round's [num_inputs, ...] distillation inputs."""
    if not noise:
      return tf.constant(distill_x)
    return server_distillation.noise_inputs(
        tf.stack([tf.constant(seed, tf.int32), round_num]),
        config.steps, config.batch_size, input_shape)

  validation = model_parts.check_validation(validation)
  optimizers.check_no_round_decay(client_optimizer_fn, 'FedDF/FedAUX')
  client_hparams = client_optimizer_fn.get_hparams(
      client_optimizer_fn.initialize(tf.TensorSpec((), tf.float32))
  )

  @tff.tensorflow.computation()
  def initial_weights():
    return collections.OrderedDict(
        (n, tff.learning.models.ModelWeights.from_model(
            prototype_model_fns[n]()))
        for n in names
    )

  weights_type = initial_weights.type_signature.result
  fusion_value_type = logit_fusion.value_type(num_inputs, num_classes)
  # What a deployment sends per client of prototype n (see docstring): its
  # prototype's weights (and, data-free, the round) down.
  bytes_down = {
      n: communication.type_bytes(weights_type[n]) + (4 if noise else 0)
      for n in names
  }
  bytes_up = {
      n: communication.type_bytes(weights_type[n].trainable) + 4
      + communication.type_bytes(fusion_value_type)
      for n in names
  }
  client_data_type = tff.StructWithPythonType(
      collections.OrderedDict((n, data_type) for n in names),
      collections.OrderedDict,
  )

  @tff.tensorflow.computation(np.int32, weights_type, client_data_type)
  def client_update(round_num, global_models, datasets):
    distill_inputs = distillation_set(round_num)
    models = {n: prototype_model_fns[n]() for n in names}
    updates = {
        n: local_training.build_client_update(models[n], client_optimizer_fn)
        for n in names
    }
    features = (
        {n: model_parts.feature_extractor(models[n], 'FedAUX') for n in names}
        if certainty is not None else None
    )

    def scores(name):
      """FedAUX's s(x) of the distillation inputs, global model features.

      Called after training: it puts the global weights back in the model.
      """
      model = models[name]
      local_training.assign(model.trainable_variables,
                            global_models[name].trainable)
      local_training.assign(model.non_trainable_variables,
                            global_models[name].non_trainable)
      extractor = features[name]
      local = tf.TensorArray(tf.float32, size=0, dynamic_size=True,
                             infer_shape=False)
      for batch in datasets[name]:
        local = local.write(
            local.size(),
            extractor(local_training.batch_inputs(batch), training=False),
        )
      local = local.concat()
      # The privacy noise's seed: the round's, folded with this client's
      # own (anonymous clients: the bits of its features' sum).
      noise_seed = tf.random.experimental.stateless_fold_in(
          tf.stack([tf.constant(seed, tf.int32), round_num]),
          tf.bitcast(tf.reduce_sum(local), tf.int32))
      return certainty_lib.certainty_scores(
          local,
          extractor(certainty['negative_inputs'], training=False),
          extractor(distill_inputs, training=False),
          l2=certainty['l2'], steps=certainty['steps'],
          epsilon=certainty['epsilon'], delta=certainty['delta'],
          seed=noise_seed,
      )

    @tf.function
    def run():
      deltas, weights, metrics = {}, {}, {}
      logits = tf.zeros([num_inputs, num_classes])
      fusion_weights = tf.zeros([num_inputs])
      non_finite = tf.constant(0)
      certainty_std = tf.constant(0.0)
      certainty_clients = tf.constant(0)
      up = tf.constant(0, tf.int64)
      down = tf.constant(0, tf.int64)
      for n in names:
        # Training makes the first pass over the dataset (the order FedAvg
        # trains on: a dataset shuffled with reshuffle_each_iteration gives
        # each pass its own order); everything else comes after it.
        delta, num_examples, is_finite, metrics[n] = updates[n](
            global_models[n], datasets[n], client_hparams
        )
        # A client of prototype n trained on data (a non-finite one too).
        own = tf.logical_or(num_examples > 0, tf.equal(is_finite, 0))
        with tf.control_dependencies(tf.nest.flatten(delta)):
          trained = models[n].predict_on_batch(distill_inputs,
                                               training=False)
        row_weights = tf.ones([num_inputs])
        contributes = tf.logical_and(own, tf.cast(is_finite, tf.bool))
        if certainty is not None:
          with tf.control_dependencies([trained]):
            if own:
              row_weights = scores(n)
            else:
              row_weights = tf.zeros([num_inputs])
          certainty_std += tf.where(
              contributes, tf.math.reduce_std(row_weights), 0.0)
          certainty_clients += tf.cast(contributes, tf.int32)
        logits += tf.where(contributes, trained, tf.zeros_like(trained))
        fusion_weights += tf.where(contributes, row_weights, 0.0)
        deltas[n] = delta
        weights[n] = (
            num_examples if client_weighting == 'num_examples'
            else tf.cast(contributes, tf.float32)
        )
        non_finite += 1 - is_finite
        up += tf.cast(own, tf.int64) * bytes_up[n]
        down += tf.cast(own, tf.int64) * bytes_down[n]
      result = tff.learning.templates.ClientResult(
          update=collections.OrderedDict(
              models=collections.OrderedDict((n, deltas[n]) for n in names),
              knowledge=collections.OrderedDict(
                  logits=collections.OrderedDict(logits=logits,
                                                 weights=fusion_weights))),
          update_weight=collections.OrderedDict(
              (n, weights[n]) for n in names))
      per_client = collections.OrderedDict(
          non_finite=non_finite,
          metrics=collections.OrderedDict((n, metrics[n]) for n in names),
          bytes_uploaded=up,
          bytes_downloaded=down,
      )
      if certainty is not None:
        per_client['certainty_std'] = certainty_std
        per_client['certainty_clients'] = certainty_clients
      return result, per_client

    return run()

  @tff.tensorflow.computation(np.float32, np.int32)
  def mean_over_clients(total, clients):
    return tf.math.divide_no_nan(total, tf.cast(clients, tf.float32))

  def measure(out):
    measurements = collections.OrderedDict(
        train=tff.federated_zip(collections.OrderedDict(
            (n, probes[n]['metrics_aggregation_fn'](out.metrics[n]))
            for n in names)),
        non_finite_clients=tff.federated_sum(out.non_finite),
        communication=communication.summarize(
            out.bytes_uploaded, out.bytes_downloaded),
    )
    if certainty is not None:
      measurements['certainty_std'] = tff.federated_map(
          mean_over_clients,
          (tff.federated_sum(out.certainty_std),
           tff.federated_sum(out.certainty_clients)))
    return tff.federated_zip(measurements)

  client_work = client_work_lib.build_round_client_work(client_update,
                                                       measure)
  result_type = client_update.type_signature.result[0]
  aggregator = knowledge.KnowledgeFactory(
      model_aggregator, fusion_aggregator).create(
          result_type.update, result_type.update_weight)
  initial_state, step = finalizers.distillation_step(
      prototype_model_fns, config, weights_type=weights_type,
      update_type=aggregator.next.type_signature.result.result.member,
      inputs_fn=distillation_set, validation=validation, seed=seed)
  return process_lib.with_server_step(process_lib.GlobalModelsProcess(
      tff.learning.templates.compose_learning_process(
          initial_weights,
          tff.learning.templates.build_broadcast_process(weights_type),
          client_work, aggregator,
          finalizers.build_finalizer(initial_state, step, server_step)),
      prototype_model_fns, client_prototypes=client_prototypes),
                                      step, server_step)


def _build_feddf(
    task: spec_lib.Task, config: FedDFConfig, context: spec_lib.Context
) -> Union[process_lib.GlobalModelsProcess, process_lib.ProgramStepProcess]:
  spec_lib.no_server_optimizer('feddf', context)
  distillation = context.distillation
  return build_feddf(
      spec_lib.prototype_model_fns(task), context.client_optimizer.build(),
      # Data-free: fresh noise for every batch, as FedDF's code.
      distillation_inputs=(
          NOISE if context.distill_data == 'noise'
          else spec_lib.distillation_inputs(task, context.distill_data)),
      validation=spec_lib.validation(task, config.validation),
      distill_steps=distillation.steps,
      distill_batch_size=distillation.batch_size,
      distill_learning_rate=distillation.learning_rate,
      temperature=distillation.temperature,
      eval_every=distillation.eval_every, patience=distillation.patience,
      seed=task.seed, client_prototypes=task.client_prototypes,
      model_aggregator=context.model_aggregator,
      fusion_aggregator=spec_lib.fusion(context),
      server_step=context.server_step)


def split_auxiliary(inputs: np.ndarray, negative_fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
  """FedAUX's (distillation inputs, negatives): a seeded split of `inputs`.

  The negatives are the certainty regressions' negative class, held out of
  the distillation (their order kept).
  """
  order = np.random.default_rng([seed, 4]).permutation(len(inputs))
  num_negative = max(1, int(round(negative_fraction * len(inputs))))
  if num_negative >= len(inputs):
    raise ValueError(
        f'--fedaux_negative_fraction={negative_fraction} holds out '
        f'{num_negative} of the {len(inputs)} distillation inputs as '
        'negatives, leaving none to distill on: lower it, or give more '
        'server data (--distill_data).')
  return (inputs[np.sort(order[num_negative:])],
          inputs[np.sort(order[:num_negative])])


def _build_fedaux(
    task: spec_lib.Task, config: FedAUXConfig, context: spec_lib.Context
) -> Union[process_lib.GlobalModelsProcess, process_lib.ProgramStepProcess]:
  spec_lib.no_server_optimizer('fedaux', context)
  distillation_inputs, negative_inputs = split_auxiliary(
      spec_lib.distillation_inputs(task, context.distill_data),
      config.negative_fraction, task.seed)
  return build_fedaux(
      spec_lib.prototype_model_fns(task), context.client_optimizer.build(),
      distillation_inputs=distillation_inputs,
      negative_inputs=negative_inputs,
      validation=spec_lib.validation(task, config.validation),
      certainty_epsilon=config.dp_epsilon or None,
      certainty_delta=config.dp_delta,
      distill_epochs=config.distill_epochs,
      distill_batch_size=config.distill_batch_size,
      distill_learning_rate=config.distill_learning_rate,
      seed=task.seed, client_prototypes=task.client_prototypes,
      model_aggregator=context.model_aggregator,
      fusion_aggregator=spec_lib.fusion(context),
      server_step=context.server_step)


SPEC = spec_lib.Spec(
    'feddf', 'FedDF (Lin et al. 2020): per-prototype averaging, then server'
    ' distillation from the average logits of all client models.',
    FedDFConfig, _build_feddf, prototypes=True,
    knowledge={'logits': privacy.LOGITS}, server_step=True,
    distill_data=True, distillation=True,
    labelled_server_data=lambda config: config.validation)

FEDAUX_SPEC = spec_lib.Spec(
    'fedaux', 'FedAUX (Sattler et al. 2021): FedDF with a teacher weighted by'
    ' each client\'s certainty on each distillation input.', FedAUXConfig,
    _build_fedaux, prototypes=True, knowledge={'logits': privacy.WEIGHTED},
    server_step=True, distill_data=True,
    labelled_server_data=lambda config: config.validation)
