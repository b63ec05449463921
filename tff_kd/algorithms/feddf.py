"""FedDF and FedAUX: server-side ensemble distillation over model prototypes.

FedDF: Lin, Kong, Stich, Jaggi, "Ensemble Distillation for Robust Model Fusion
in Federated Learning", NeurIPS 2020 (the guide's Algorithm 3; official code
`epfml/federated-learning-public-code`, codes/FedDF-code).
FedAUX: Sattler, Korjakow, Rischke, Samek, "FedAUX: Leveraging Unlabeled
Auxiliary Data in Federated Learning", IEEE TNNLS 2021.

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
   (`WeightedMeanFactory`, weights n_k by default): the fused model is the
   n_k-weighted average of that prototype's client models.
3. The logits of ALL sampled clients, every prototype, are fused by
   `LogitFusionFactory`: FedDF's AVGLOGITS (weights 1), FedAUX's
   certainty-weighted mean (weights s_k(x)).
4. Per prototype, the fused model is distilled toward the fused logits on the
   distillation inputs (`tff_kd.server_distillation`: Adam, cosine schedule,
   gradient clip, early stopping on the labelled validation split).

FedDF's server computes the clients' logits itself from the uploaded models;
here the clients compute them (the same numbers) so that the fusion is a TFF
aggregation process. That adds R x C floats (and R certainty weights) to each
client's upload, counted in the `communication` metrics.

Heterogeneous prototypes in one TFF computation: each client's data is an
`OrderedDict(prototype name -> dataset)` in which only its own prototype's
dataset is non-empty (`tff_kd.experiment` builds it from the task's client ->
prototype assignment); every client receives all prototypes' weights and
trains only its own (empty datasets take no steps and get weight 0). The
`communication` metrics count what a deployment would send: the client's own
prototype's weights down, its delta, weight and fused values up
(`client_work/communication`).

The state is `OrderedDict(prototypes=OrderedDict(name -> ModelWeights),
round=int32)`; `get_model_weights` returns the first prototype's weights.
With one prototype and `distill_steps=0` this is FedAvg exactly.

Not implemented from FedAUX: the self-supervised pre-training of the feature
extractor on the auxiliary data (the scores use the features of the current
global model instead, recomputed each round), and the differential-privacy
noise on the certainty scores' regression.
"""

import collections
from collections.abc import Callable, Mapping
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import certainty as certainty_lib
from tff_kd import communication
from tff_kd import local_training
from tff_kd import model_parts
from tff_kd import server_distillation
from tff_kd.aggregators import logit_fusion
from tff_kd.aggregators import weighted_mean

ModelFn = Callable[[], tff.learning.models.VariableModel]
CLIENT_WEIGHTINGS = ('num_examples', 'uniform')


def build_feddf(
    prototype_model_fns: Mapping[str, ModelFn],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    *,
    distillation_inputs: np.ndarray,
    validation: Optional[tuple[np.ndarray, np.ndarray]] = None,
    distill_steps: int = 100,
    distill_batch_size: int = 32,
    distill_learning_rate: float = 1e-3,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = True,
    eval_every: int = 10,
    patience: int = 3,
    client_weighting: str = 'num_examples',
    seed: int = 0,
) -> tff.learning.templates.LearningProcess:
  """Builds FedDF.

  Args:
    prototype_model_fns: prototype name -> no-arg `model_fn` returning a
      `VariableModel` (logits out). All take the same input and classes.
    client_optimizer_fn: client `tff.learning.optimizers.Optimizer`.
    distillation_inputs: [R, ...] unlabeled server inputs (the task's public
      split, out-of-domain data or noise).
    validation: labelled `(x, y)` server split for early stopping, or None
      (run all `distill_steps`).
    distill_steps: the most server distillation steps per prototype and
      round (FedDF's code: up to 10,000; 0 = FedAvg per prototype).
    distill_batch_size: distillation minibatch size, <= R.
    distill_learning_rate: peak Adam learning rate (FedDF's code: 1e-3).
    temperature: tau (FedDF's code: 1).
    scale_by_temperature_squared: multiply the KL by tau^2 (FedDF's code does
      not; no difference at tau = 1).
    eval_every: distillation steps between validation evaluations.
    patience: evaluations without improvement before stopping.
    client_weighting: `num_examples` (n_k / n) or `uniform` model averaging.
    seed: seed of the distillation minibatches.

  Returns:
    A `tff.learning.templates.LearningProcess` whose `next` takes
    `{OrderedDict(prototype -> B*)}@CLIENTS`.
  """
  return _build(
      prototype_model_fns, client_optimizer_fn,
      distillation_inputs=distillation_inputs, validation=validation,
      distill_kwargs=_distill_kwargs(
          distill_steps, distill_batch_size, distill_learning_rate,
          temperature, scale_by_temperature_squared, eval_every, patience),
      client_weighting=client_weighting, seed=seed, certainty=None,
  )


def build_fedaux(
    prototype_model_fns: Mapping[str, ModelFn],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    *,
    distillation_inputs: np.ndarray,
    negative_inputs: np.ndarray,
    validation: Optional[tuple[np.ndarray, np.ndarray]] = None,
    certainty_l2: float = 0.01,
    certainty_steps: int = 300,
    distill_steps: int = 100,
    distill_batch_size: int = 32,
    distill_learning_rate: float = 1e-3,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = True,
    eval_every: int = 10,
    patience: int = 3,
    client_weighting: str = 'uniform',
    seed: int = 0,
) -> tff.learning.templates.LearningProcess:
  """Builds FedAUX: FedDF with a certainty-weighted ensemble teacher.

  Args:
    prototype_model_fns, client_optimizer_fn, validation, distill_*,
      temperature, scale_by_temperature_squared, eval_every, patience, seed:
      as `build_feddf`. Every model needs a Dense layer named `head` (its
      input is the feature vector the certainty scores use).
    distillation_inputs: [R, ...] the auxiliary inputs distilled on (the
      paper: 80% of the auxiliary data).
    negative_inputs: [M, ...] held-out auxiliary inputs, the negative class
      of each client's certainty regression (the paper: the other 20%).
    certainty_l2: the regression's L2 weight lambda (paper: 0.01).
    certainty_steps: accelerated gradient steps of the regression.
    client_weighting: model averaging; the paper averages uniformly.

  Returns:
    A `tff.learning.templates.LearningProcess`, as `build_feddf`. With all
    certainty scores equal it is FedDF.
  """
  if not certainty_l2 > 0:
    raise ValueError(f'certainty_l2 must be > 0; got {certainty_l2}.')
  if certainty_steps < 1:
    raise ValueError(f'certainty_steps must be >= 1; got {certainty_steps}.')
  negative_inputs = np.asarray(negative_inputs, np.float32)
  if not len(negative_inputs):
    raise ValueError('negative_inputs is empty: FedAUX needs held-out '
                     'auxiliary inputs for its certainty scores.')
  return _build(
      prototype_model_fns, client_optimizer_fn,
      distillation_inputs=distillation_inputs, validation=validation,
      distill_kwargs=_distill_kwargs(
          distill_steps, distill_batch_size, distill_learning_rate,
          temperature, scale_by_temperature_squared, eval_every, patience),
      client_weighting=client_weighting, seed=seed,
      certainty=dict(negative_inputs=negative_inputs, l2=certainty_l2,
                     steps=certainty_steps),
  )


def _distill_kwargs(steps, batch_size, learning_rate, temperature,
                    scale_by_temperature_squared, eval_every, patience):
  """`server_distillation.build_server_distillation`'s arguments."""
  return dict(
      steps=steps, batch_size=batch_size, learning_rate=learning_rate,
      temperature=temperature,
      scale_by_temperature_squared=scale_by_temperature_squared,
      eval_every=eval_every, patience=patience,
  )


def _build(
    prototype_model_fns, client_optimizer_fn, *, distillation_inputs,
    validation, distill_kwargs, client_weighting, seed, certainty,
):
  """The process of `build_feddf` (certainty None) and `build_fedaux`."""
  if client_weighting not in CLIENT_WEIGHTINGS:
    raise ValueError(f'client_weighting must be one of {CLIENT_WEIGHTINGS}; '
                     f'got {client_weighting!r}.')

  def check(name, model):
    if certainty is not None:
      model_parts.head_layer(model, f'FedAUX (prototype {name!r})')
    server_distillation.build_server_distillation(model, **distill_kwargs)

  probes = model_parts.probe_prototypes(prototype_model_fns, check)
  names = list(probes)
  data_type = probes[names[0]]['data_type']
  num_classes = probes[names[0]]['num_classes']
  distill_x = model_parts.check_inputs(
      distillation_inputs, probes[names[0]]['input_shape'],
      'distillation_inputs')
  if len(distill_x) < distill_kwargs['batch_size']:
    raise ValueError(
        f'The distillation set has {len(distill_x)} inputs, fewer than the '
        f'distillation batch size {distill_kwargs["batch_size"]}.'
    )
  validation = model_parts.check_validation(validation)
  client_hparams = client_optimizer_fn.get_hparams(
      client_optimizer_fn.initialize(tf.TensorSpec((), tf.float32))
  )
  num_inputs = len(distill_x)

  @tff.tensorflow.computation()
  def initial_state():
    return collections.OrderedDict(
        prototypes=collections.OrderedDict(
            (n, tff.learning.models.ModelWeights.from_model(
                prototype_model_fns[n]()))
            for n in names
        ),
        round=tf.constant(0, tf.int32),
    )

  state_type = initial_state.type_signature.result
  prototypes_type = state_type.prototypes
  fusion_value_type = logit_fusion.value_type(num_inputs, num_classes)
  # What a deployment sends per client of prototype n (see docstring).
  bytes_down = {n: communication.type_bytes(prototypes_type[n]) for n in names}
  bytes_up = {
      n: communication.type_bytes(prototypes_type[n].trainable) + 4
      + communication.type_bytes(fusion_value_type)
      for n in names
  }
  client_data_type = tff.StructWithPythonType(
      collections.OrderedDict((n, data_type) for n in names),
      collections.OrderedDict,
  )

  @tff.tensorflow.computation(prototypes_type, client_data_type)
  def client_update(global_models, datasets):
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
      return certainty_lib.certainty_scores(
          local.concat(),
          extractor(certainty['negative_inputs'], training=False),
          extractor(distill_x, training=False),
          l2=certainty['l2'], steps=certainty['steps'],
      )

    @tf.function
    def run():
      deltas, weights, metrics = {}, {}, {}
      logits = tf.zeros([num_inputs, num_classes])
      fusion_weights = tf.zeros([num_inputs])
      non_finite = tf.constant(0)
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
          trained = models[n].predict_on_batch(distill_x, training=False)
        row_weights = tf.ones([num_inputs])
        if certainty is not None:
          with tf.control_dependencies([trained]):
            if own:
              row_weights = scores(n)
            else:
              row_weights = tf.zeros([num_inputs])
        contributes = tf.logical_and(own, tf.cast(is_finite, tf.bool))
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
      return collections.OrderedDict(
          deltas=collections.OrderedDict((n, deltas[n]) for n in names),
          weights=collections.OrderedDict((n, weights[n]) for n in names),
          fusion=collections.OrderedDict(logits=logits,
                                         weights=fusion_weights),
          non_finite=non_finite,
          metrics=collections.OrderedDict((n, metrics[n]) for n in names),
          bytes_uploaded=up,
          bytes_downloaded=down,
      )

    return run()

  client_result_type = client_update.type_signature.result
  mean_processes = {
      n: weighted_mean.WeightedMeanFactory().create(
          client_result_type.deltas[n], client_result_type.weights[n]
      )
      for n in names
  }
  fusion_process = logit_fusion.LogitFusionFactory().create(fusion_value_type)
  mean_delta_type = tff.StructWithPythonType(
      collections.OrderedDict(
          (n, mean_processes[n].next.type_signature.result.result.member)
          for n in names
      ),
      collections.OrderedDict,
  )

  @tff.tensorflow.computation(
      state_type, mean_delta_type,
      fusion_process.next.type_signature.result.result.member,
  )
  def server_update(state, mean_deltas, fused):
    round_num = state['round']
    fused_any = tf.reduce_any(fused['weights'] > 0)
    max_steps = tf.where(fused_any, distill_kwargs['steps'], 0)
    new_models, distill_metrics = collections.OrderedDict(), {}
    for n in names:
      weights = state['prototypes'][n]
      start = tff.learning.models.ModelWeights(
          trainable=[w - d for w, d in zip(weights.trainable, mean_deltas[n])],
          non_trainable=list(weights.non_trainable),
      )
      distill = server_distillation.build_server_distillation(
          prototype_model_fns[n](), **distill_kwargs
      )
      new_models[n], distill_metrics[n] = distill(
          start, distill_x, fused['logits'], validation,
          tf.stack([tf.constant(seed, tf.int32), round_num]), max_steps,
      )
    return (
        collections.OrderedDict(prototypes=new_models, round=round_num + 1),
        collections.OrderedDict((n, distill_metrics[n]) for n in names),
    )

  @tff.tensorflow.computation(state_type)
  def prototypes_of(state):
    return state['prototypes']

  @tff.federated_computation()
  def init_fn():
    return tff.federated_eval(initial_state, tff.SERVER)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(client_data_type, tff.CLIENTS),
  )
  def next_fn(state, client_data):
    broadcast = tff.federated_broadcast(tff.federated_map(prototypes_of, state))
    out = tff.federated_map(client_update, (broadcast, client_data))
    means = collections.OrderedDict(
        (n, mean_processes[n].next(
            mean_processes[n].initialize(), out.deltas[n], out.weights[n]))
        for n in names
    )
    fused = fusion_process.next(fusion_process.initialize(), out.fusion)
    new_state, distill_metrics = tff.federated_map(
        server_update,
        (state,
         tff.federated_zip(collections.OrderedDict(
             (n, means[n].result) for n in names)),
         fused.result),
    )
    measurements = tff.federated_zip(collections.OrderedDict(
        client_work=tff.federated_zip(collections.OrderedDict(
            train=tff.federated_zip(collections.OrderedDict(
                (n, probes[n]['metrics_aggregation_fn'](out.metrics[n]))
                for n in names)),
            non_finite_clients=tff.federated_sum(out.non_finite),
            communication=communication.summarize(
                out.bytes_uploaded, out.bytes_downloaded),
        )),
        aggregator=tff.federated_zip(collections.OrderedDict(
            (n, means[n].measurements) for n in names)),
        fusion=fused.measurements,
        distillation=distill_metrics,
    ))
    return tff.learning.templates.LearningProcessOutput(new_state, measurements)

  weights_type = prototypes_type[names[0]]

  @tff.tensorflow.computation(state_type)
  def get_model_weights(state):
    return state['prototypes'][names[0]]

  @tff.tensorflow.computation(state_type, weights_type)
  def set_model_weights(state, weights):
    return collections.OrderedDict(
        state,
        prototypes=collections.OrderedDict(
            state['prototypes'], **{names[0]: weights}
        ),
    )

  return tff.learning.templates.LearningProcess(
      init_fn, next_fn, get_model_weights, set_model_weights
  )
