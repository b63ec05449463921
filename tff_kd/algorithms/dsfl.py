"""DS-FL: distillation-based semi-supervised FL (Itahara et al., IEEE TMC 2021).

Itahara, Nishio, Koda, Morikura, Yamamoto, "Distillation-Based
Semi-Supervised Federated Learning for Communication-Efficient Collaborative
Training With Non-IID Private Data" (the guide's "exchanging soft labels on a
proxy dataset").

No weights travel. An unlabeled public (proxy) dataset of R inputs is known to
the server and every client; every client keeps its own model across rounds
(`tff_kd.stateful_clients`; heterogeneous architectures allowed). The five
steps of the guide, for round t:
1. The server broadcasts the global soft labels of subset S_t (made last
   round) and the indices of S_t and of the next subset S_{t+1} (each m
   inputs drawn without replacement by (seed, round); m = min(subset_size,
   R)).
2. A sampled client distills its model on (S_t, soft labels): KL(p || q_S),
   `distill_epochs` epochs of SGD minibatches (skipped in round 1: no labels
   yet).
3. It trains on its private data with CE (the task's local epochs).
4. It predicts softmax probabilities on S_{t+1} and uploads them (m x C).
5. The server averages them per input (`LogitFusionFactory`, weight 1 per
   client: SA) and, with ERA, sharpens them (`EntropyReductionFactory`,
   softmax(mean / T)); they are S_{t+1}'s global soft labels for round t+1.
Optionally the server keeps a model of the first prototype's architecture,
distilled every round on (S_{t+1}, global soft labels) with
`tff_kd.server_distillation` (from its previous weights; by the server loop
of the `--distill_*` settings, or as the clients distill:
`distillation_like_clients`) and evaluated like the clients' models.

A client that drops out of a round (no data) neither distills nor sends: its
model is unchanged. Upload per client: m x C probabilities plus the fusion's
m weights; download: m x C soft labels and 2 m indices.
"""

import collections
from collections.abc import Mapping
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import local_training
from tff_kd import model_parts
from tff_kd import optimizers
from tff_kd import privacy
from tff_kd import server_distillation as server_distillation_lib
from tff_kd import server_step as server_step_lib
from tff_kd import settings
from tff_kd import stateful_clients
from tff_kd.aggregators import entropy_reduction
from tff_kd.aggregators import knowledge
from tff_kd.aggregators import logit_fusion
from tff_kd.algorithms import spec as spec_lib


# DS-FL's fusion: entropy reduction (ERA) or simple averaging (SA).
AGGREGATIONS = ('era', 'sa')
# How the server model is distilled: by the server loop of the --distill_*
# settings, or as the clients distill (SCARLET's dsfl.py, by a co-author).
SERVER_DISTILLATIONS = ('loop', 'clients')


@dataclasses.dataclass(frozen=True)
class DSFLConfig:
  aggregation: str = settings.choice(
      AGGREGATIONS, 'DS-FL: soft-label aggregation, era (entropy reduction)'
      ' or sa (simple averaging).')
  era_temperature: float = settings.setting(
      0.1, 'DS-FL: ERA temperature T.', **settings.TEMPERATURE)
  subset_size: int = settings.setting(
      1000, 'DS-FL: public inputs per round (at most the public split).',
      **settings.count(1, 1_000_000))
  distill_epochs: int = settings.setting(
      5, 'DS-FL: client distillation epochs per round.',
      **settings.count(1, 1000))
  distill_batch_size: int = settings.setting(
      100, 'DS-FL: client distillation batch.', **settings.count(1, 100_000))
  distill_learning_rate: float = settings.setting(
      0.1, 'DS-FL: client distillation SGD learning rate.',
      **settings.POSITIVE)
  server_model: bool = settings.setting(
      True, 'DS-FL: the server distills a model of its own on the global soft'
      ' labels (evaluated as the test accuracy).')
  validation: bool = settings.setting(
      False, 'DS-FL: early stopping of the server model on the labelled'
      ' validation split (the paper uses no labelled server data).')
  server_distillation: str = settings.choice(
      SERVER_DISTILLATIONS, 'DS-FL: how the server model distills: loop (the'
      ' server loop of the --distill_* flags) or clients (as the clients:'
      ' SGD epochs of the --dsfl_distill_* flags, as SCARLET\'s dsfl.py).')


def distillation_like_clients(
    config: DSFLConfig, num_public: int
) -> server_distillation_lib.DistillationConfig:
  """The server loop set to distill as DS-FL's clients do.

  Plain SGD at the clients' distillation learning rate, constant, no
  clipping, over `distill_epochs` shuffled epochs of the round's subset in
  batches of `distill_batch_size` (the last one smaller), KL at tau = 1.
  """
  return server_distillation_lib.DistillationConfig(
      steps=server_distillation_lib.epoch_steps(
          min(config.subset_size, num_public), config.distill_epochs,
          config.distill_batch_size),
      batch_size=config.distill_batch_size,
      learning_rate=config.distill_learning_rate, schedule='constant',
      temperature=1.0, clip_norm=None, sampling='shuffled', optimizer='sgd')


def build_dsfl(
    prototype_model_fns: Mapping[str, model_parts.ModelFn],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    *,
    client_prototypes: Mapping[str, str],
    public_inputs: np.ndarray,
    subset_size: int = DSFLConfig.subset_size,
    distill_epochs: int = DSFLConfig.distill_epochs,
    distill_batch_size: int = DSFLConfig.distill_batch_size,
    distill_learning_rate: float = DSFLConfig.distill_learning_rate,
    server_distillation: Optional[server_distillation_lib.DistillationConfig
                                  ] = None,
    validation: Optional[tuple[np.ndarray, np.ndarray]] = None,
    seed: int = 0,
    fusion_aggregator: knowledge.FusionAggregator = None,
    server_step: str = server_step_lib.DEFAULT_PLACEMENT,
) -> stateful_clients.StatefulClientsProcess:
  """Builds DS-FL.

  Args:
    prototype_model_fns, client_optimizer_fn, client_prototypes: as
      `build_fd` (the optimizer trains on the private data).
    public_inputs: [R, ...] the unlabeled public (proxy) inputs.
    subset_size: inputs per round (the paper's code: 1,000); at most R.
    distill_epochs: the clients' distillation epochs per round (paper: 5).
    distill_batch_size: their distillation minibatch (paper: 100).
    distill_learning_rate: their distillation SGD learning rate (paper: 0.1).
    server_distillation: None for no server model, else the
      `server_distillation.DistillationConfig` of the server model's
      distillation.
    validation: labelled `(x, y)` split for the server model's early
      stopping, or None (the paper uses no labelled server data).
    seed: seed of the subsets and minibatches.
    fusion_aggregator: fuses the clients' `soft_labels`, `<logits=float32[m,
      C] (probabilities), weights=float32[m]>`; default ERA,
      `EntropyReductionFactory(temperature=0.1)` (the paper's T); SA is
      `LogitFusionFactory()`.
    server_step: where the server's step runs: `worker` (in the round) or
      `program` (a `tf.function` of the program, on its devices);
      `tff_kd.server_step`.

  Returns:
    A `StatefulClientsProcess`.
  """
  for name, value in (('subset_size', subset_size),
                      ('distill_epochs', distill_epochs),
                      ('distill_batch_size', distill_batch_size)):
    if value < 1:
      raise ValueError(f'{name} must be >= 1; got {value}.')
  if not distill_learning_rate > 0:
    raise ValueError(
        f'distill_learning_rate must be > 0; got {distill_learning_rate}.')
  server_model = server_distillation is not None

  first = next(iter(prototype_model_fns), None)

  def check(name, model):
    if server_model and name == first:  # The server model's architecture.
      server_distillation_lib.build_server_distillation(
          model, server_distillation)

  probes = model_parts.probe_prototypes(prototype_model_fns, check)
  names = list(probes)
  num_classes = probes[names[0]]['num_classes']
  public_x = model_parts.check_inputs(
      public_inputs, probes[names[0]]['input_shape'], 'public_inputs')
  num_public = len(public_x)
  m = min(subset_size, num_public)
  validation = model_parts.check_validation(validation)
  optimizers.check_no_round_decay(client_optimizer_fn, 'DS-FL')
  client_hparams = client_optimizer_fn.get_hparams(
      client_optimizer_fn.initialize(tf.TensorSpec((), tf.float32))
  )
  distill_optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=distill_learning_rate)

  def subset(round_num):
    """The m public indices of round `round_num`'s predictions."""
    order = tf.argsort(tf.random.stateless_uniform(
        [num_public], tf.stack([tf.constant(seed, tf.int32), round_num])))
    return tf.cast(order[:m], tf.int32)

  @tff.tensorflow.computation()
  def initial_client_states():
    return stateful_clients.initial_states(prototype_model_fns)

  @tff.tensorflow.computation()
  def initial_server_state():
    state = collections.OrderedDict(
        soft_labels=tf.zeros([m, num_classes]),
        has_labels=tf.constant(False),
        indices=subset(tf.constant(1, tf.int32)),
        round=tf.constant(0, tf.int32),
    )
    if server_model:
      state['model'] = tff.learning.models.ModelWeights.from_model(
          prototype_model_fns[names[0]]())
    return state

  server_state_type = initial_server_state.type_signature.result

  @tff.tensorflow.computation(server_state_type)
  def broadcast_fn(state):
    """Step 1: S_t's soft labels and indices, and S_{t+1}'s indices."""
    return collections.OrderedDict(
        soft_labels=state['soft_labels'],
        has_labels=state['has_labels'],
        indices=state['indices'],
        next_indices=subset(state['round'] + 2),
        round=state['round'],
    )

  broadcast_type = broadcast_fn.type_signature.result
  client_type = stateful_clients.client_input_type(
      probes[names[0]]['data_type'],
      initial_client_states.type_signature.result,
  )

  @tff.tensorflow.computation(broadcast_type, client_type)
  def client_work(broadcast, client):
    models = {n: fn() for n, fn in prototype_model_fns.items()}
    updates = {
        n: local_training.build_client_update(models[n], client_optimizer_fn)
        for n in names
    }
    distills = {
        n: local_training.build_distillation_epochs(
            models[n], distill_optimizer, epochs=distill_epochs,
            batch_size=distill_batch_size)
        for n in names
    }
    inputs = tf.gather(public_x, broadcast['indices'])
    # Soft labels as teacher logits: softmax(log p) = p.
    teacher = tf.math.log(tf.maximum(broadcast['soft_labels'], 1e-30))

    @tf.function
    def run():
      states, metrics = collections.OrderedDict(), collections.OrderedDict()
      probabilities = tf.zeros([m, num_classes])
      sent = tf.constant(False)
      non_finite = tf.constant(0)
      next_inputs = tf.gather(public_x, broadcast['next_indices'])
      for i, n in enumerate(names):
        own = tf.equal(client['prototype'], i)
        old = client['state'][n]['model']
        gate = tf.where(tf.logical_and(own, broadcast['has_labels']),
                        tf.constant(-1, tf.int64), 0)
        # Step 2: SGD epochs of KL(p || q_S) on S_t.
        distilled = tff.learning.models.ModelWeights(
            trainable=distills[n](
                old, inputs, teacher,
                tf.stack([tf.constant(seed, tf.int32), broadcast['round']]),
                gate),
            non_trainable=list(old.non_trainable))
        delta, num_examples, is_finite, metrics[n] = updates[n](
            distilled, stateful_clients.own_data(
                client['data'], client['prototype'], i),
            client_hparams,
        )
        with tf.control_dependencies(tf.nest.flatten(delta)):
          predicted = tf.nn.softmax(
              models[n].predict_on_batch(next_inputs, training=False))
        participated = tf.logical_and(num_examples > 0,
                                      tf.cast(is_finite, tf.bool))
        states[n] = collections.OrderedDict(model=stateful_clients.select(
            participated, stateful_clients.trained(distilled, delta), old))
        probabilities += tf.where(participated, predicted, 0.0)
        sent = tf.logical_or(sent, participated)
        non_finite += 1 - is_finite
      return stateful_clients.client_output(
          client, states,
          knowledge=collections.OrderedDict(
              soft_labels=collections.OrderedDict(
                  logits=probabilities,
                  weights=tf.fill([m], tf.cast(sent, tf.float32)))),
          metrics=metrics,
          non_finite=non_finite,
      )

    return run()

  fused_type = collections.OrderedDict(
      soft_labels=logit_fusion.value_type(m, num_classes))

  @server_step_lib.step(server_state_type, broadcast_type, fused_type)
  def server_update():
    distill = None
    if server_model:  # Its model, built once.
      distill = server_distillation_lib.build_server_distillation(
          prototype_model_fns[names[0]](), server_distillation)

    def run(state, broadcast, fused):
      fused = fused['soft_labels']
      has_labels = tf.reduce_any(fused['weights'] > 0)
      new_state = collections.OrderedDict(
          soft_labels=fused['logits'],
          has_labels=has_labels,
          indices=broadcast['next_indices'],
          round=state['round'] + 1,
      )
      metrics = collections.OrderedDict(
          soft_label_entropy=entropy_reduction.mean_entropy(
              fused['logits'], fused['weights']))
      if distill is not None:
        new_state['model'], metrics['server_distillation'] = distill(
            state['model'], tf.gather(public_x, broadcast['next_indices']),
            tf.math.log(tf.maximum(fused['logits'], 1e-30)), validation,
            tf.stack([tf.constant(seed, tf.int32), state['round']]),
            tf.where(has_labels, server_distillation.steps, 0),
        )
      return new_state, metrics

    return run

  return stateful_clients.build_stateful_clients_process(
      prototype_model_fns, client_prototypes, initial_server_state,
      initial_client_states, broadcast_fn, client_work,
      (entropy_reduction.EntropyReductionFactory() if fusion_aggregator is None
       else fusion_aggregator),
      server_update, server_step)


def _build(
    task: spec_lib.Task, config: DSFLConfig,
    context: spec_lib.Context) -> stateful_clients.StatefulClientsProcess:
  spec_lib.no_models('dsfl', context)
  spec_lib.no_server_optimizer('dsfl', context)
  # ERA sharpens what the soft labels' aggregator (mean, DP, secure,
  # compressed) fused; SA is that aggregator alone.
  fused = (context.fusion_aggregator or {}).get('soft_labels')
  public_inputs = spec_lib.distillation_inputs(task, context.distill_data)
  distillation = (
      context.distillation if config.server_distillation == 'loop'
      else distillation_like_clients(config, len(public_inputs)))
  return build_dsfl(
      spec_lib.prototype_model_fns(task), context.client_optimizer.build(),
      client_prototypes=task.client_prototypes,
      public_inputs=public_inputs,
      subset_size=config.subset_size,
      fusion_aggregator=(
          entropy_reduction.EntropyReductionFactory(config.era_temperature,
                                                    inner=fused)
          if config.aggregation == 'era'
          else fused or logit_fusion.LogitFusionFactory()),
      distill_epochs=config.distill_epochs,
      distill_batch_size=config.distill_batch_size,
      distill_learning_rate=config.distill_learning_rate,
      server_distillation=distillation if config.server_model else None,
      validation=spec_lib.validation(task, config.validation),
      seed=task.seed, server_step=context.server_step)


SPEC = spec_lib.Spec(
    'dsfl', 'DS-FL (Itahara et al. 2021): clients keep their models and'
    ' exchange soft labels on public data, fused by ERA or SA.', DSFLConfig,
    _build, prototypes=True, stateful_clients=True, models=False,
    knowledge={'soft_labels': privacy.PROBABILITIES}, server_step=True,
    distill_data=True, distillation=True,
    labelled_server_data=lambda config: (config.server_model
                                         and config.validation))
