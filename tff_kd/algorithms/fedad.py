"""FedAD: ensemble attention distillation (Gong et al., ICCV 2021).

Gong, Sharma, Karanam, Wu, Chen, Doermann, Innanje, "Ensemble Attention
Distillation for Privacy-Preserving Federated Learning", ICCV 2021 (the
guide's intermediate-feature / attention distillation). No official code;
our choices are stated here.

No weights travel up. Every client keeps its own model across rounds
(`tff_kd.stateful_clients`; heterogeneous CNN architectures allowed), and
the server trains a global model (of the first prototype's architecture) by
distillation only. Each round:
1. A sampled client trains its model on its private data with CE (the
   task's local epochs), continuing from its own last weights. (The paper
   distills once from clients trained to convergence; the rounds here let the
   ensemble improve over time, and one round of many local epochs is the
   paper's one-shot setting.)
2. On the R public unlabeled inputs it computes its logits and the attention
   map of its layer `feature_map` (`model_parts.attention_maps`: channel-wise
   mean of squared activations, resized to the server model's grid,
   flattened, L2-normalized) and uploads both (R x C + R x H W floats).
3. The server averages the logits and the attention maps over the clients
   (two `LogitFusionFactory` aggregations, weight 1 per client).
4. It distills its global model, from its previous weights, on the public
   inputs (`tff_kd.server_distillation`, a `tf.function`):
       tau^2 KL(softmax(mean_k z_k / tau) || softmax(z_S / tau))
         + beta * ||a_S - mean_k a_k||^2,
   with Adam and a cosine schedule, all `steps` (the paper uses no labelled
   server data; `validation=` adds early stopping on a labelled split).
The paper's diversity term (a weighted choice among the ensemble's members)
is not implemented: the teacher is the ensemble's consensus, as in FedDF.
Nothing is broadcast (0 bytes down).
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
from tff_kd.aggregators import knowledge
from tff_kd.aggregators import logit_fusion
from tff_kd.algorithms import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class FedADConfig:
  attention_weight: float = settings.setting(
      1.0, 'FedAD: weight beta of the attention term.',
      **settings.at_least(0))
  validation: bool = settings.setting(
      False, 'FedAD: early stopping on the labelled validation split (the'
      ' paper uses no labelled server data).')


def build_fedad(
    prototype_model_fns: Mapping[str, model_parts.ModelFn],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    *,
    client_prototypes: Mapping[str, str],
    public_inputs: np.ndarray,
    attention_weight: float = FedADConfig.attention_weight,
    server_distillation: server_distillation_lib.DistillationConfig,
    validation: Optional[tuple[np.ndarray, np.ndarray]] = None,
    seed: int = 0,
    fusion_aggregator: knowledge.FusionAggregator = None,
    server_step: str = server_step_lib.DEFAULT_PLACEMENT,
) -> stateful_clients.StatefulClientsProcess:
  """Builds FedAD.

  Args:
    prototype_model_fns, client_optimizer_fn, client_prototypes: as
      `build_fd`; each model has a convolutional layer named `feature_map`,
      and the server model has the first one's architecture.
    public_inputs: [R, ...] the unlabeled public inputs.
    attention_weight: beta of the attention term (>= 0).
    server_distillation: the `server_distillation.DistillationConfig` of
      the server model's distillation.
    validation: labelled `(x, y)` split for early stopping, or None (the
      paper: no labelled server data).
    seed: seed of the distillation minibatches.
    fusion_aggregator: fuses the clients' knowledge, `logits` and
      `attention` (both `<logits=float32[R, k], weights=float32[R]>`): one
      unweighted factory for both, or a mapping of each to its own; default
      `LogitFusionFactory()` (the per-input mean).
    server_step: where the server's step runs: `worker` (in the round) or
      `program` (a `tf.function` of the program, on its devices);
      `tff_kd.server_step`.

  Returns:
    A `StatefulClientsProcess` with a server model.
  """
  if not attention_weight >= 0:
    raise ValueError(f'attention_weight must be >= 0; got {attention_weight}.')
  grids = {}
  first = next(iter(prototype_model_fns), None)

  def check(name, model):
    grids[name] = model_parts.attention_grid(
        model, f'FedAD (prototype {name!r})')
    if name == first:  # The server model's architecture.
      server_distillation_lib.build_server_distillation(
          model, server_distillation, attention_weight=attention_weight)

  probes = model_parts.probe_prototypes(prototype_model_fns, check)
  names = list(probes)
  num_classes = probes[names[0]]['num_classes']
  grid = grids[names[0]]
  public_x = model_parts.check_inputs(
      public_inputs, probes[names[0]]['input_shape'], 'public_inputs')
  num_public = len(public_x)
  validation = model_parts.check_validation(validation)
  optimizers.check_no_round_decay(client_optimizer_fn, 'FedAD')
  client_hparams = client_optimizer_fn.get_hparams(
      client_optimizer_fn.initialize(tf.TensorSpec((), tf.float32))
  )

  @tff.tensorflow.computation()
  def initial_client_states():
    return stateful_clients.initial_states(prototype_model_fns)

  @tff.tensorflow.computation()
  def initial_server_state():
    return collections.OrderedDict(
        model=tff.learning.models.ModelWeights.from_model(
            prototype_model_fns[names[0]]()),
        round=tf.constant(0, tf.int32),
    )

  server_state_type = initial_server_state.type_signature.result

  logits_type = logit_fusion.value_type(num_public, num_classes)
  attention_type = logit_fusion.value_type(num_public, grid[0] * grid[1])
  client_type = stateful_clients.client_input_type(
      probes[names[0]]['data_type'],
      initial_client_states.type_signature.result,
  )

  @tff.tensorflow.computation(server_state_type)
  def broadcast_fn(state):
    del state  # FedAD's server sends nothing.
    return collections.OrderedDict()

  @tff.tensorflow.computation(broadcast_fn.type_signature.result,
                              client_type)
  def client_work(nothing, client):
    del nothing
    models = {n: fn() for n, fn in prototype_model_fns.items()}
    updates = {
        n: local_training.build_client_update(models[n], client_optimizer_fn)
        for n in names
    }
    two_outputs = {
        n: model_parts.logits_and_feature_map(models[n], 'FedAD')
        for n in names
    }

    @tf.function
    def run():
      states, metrics = collections.OrderedDict(), collections.OrderedDict()
      logits = tf.zeros([num_public, num_classes])
      attention = tf.zeros([num_public, grid[0] * grid[1]])
      sent = tf.constant(False)
      non_finite = tf.constant(0)
      for i, n in enumerate(names):
        old = client['state'][n]['model']
        delta, num_examples, is_finite, metrics[n] = updates[n](
            old, stateful_clients.own_data(
                client['data'], client['prototype'], i),
            client_hparams,
        )
        with tf.control_dependencies(tf.nest.flatten(delta)):
          own_logits, feature_maps = two_outputs[n](public_x, training=False)
        participated = tf.logical_and(num_examples > 0,
                                      tf.cast(is_finite, tf.bool))
        states[n] = collections.OrderedDict(
            model=stateful_clients.trained(old, delta))
        logits += tf.where(participated, own_logits, 0.0)
        attention += tf.where(
            participated, model_parts.attention_maps(feature_maps, grid), 0.0)
        sent = tf.logical_or(sent, participated)
        non_finite += 1 - is_finite
      weights = tf.fill([num_public], tf.cast(sent, tf.float32))
      return stateful_clients.client_output(
          client, states,
          knowledge=collections.OrderedDict(
              logits=collections.OrderedDict(logits=logits, weights=weights),
              attention=collections.OrderedDict(logits=attention,
                                                weights=weights)),
          metrics=metrics,
          non_finite=non_finite,
      )

    return run()

  @server_step_lib.step(
      server_state_type, broadcast_fn.type_signature.result,
      collections.OrderedDict(logits=logits_type, attention=attention_type))
  def server_update():
    distill = server_distillation_lib.build_server_distillation(
        prototype_model_fns[names[0]](), server_distillation,
        attention_weight=attention_weight, attention_grid=grid)

    def run(state, nothing, fused):
      del nothing
      fused_logits, fused_attention = fused['logits'], fused['attention']
      any_sent = tf.reduce_any(fused_logits['weights'] > 0)
      model, metrics = distill(
          state['model'], public_x, fused_logits['logits'], validation,
          tf.stack([tf.constant(seed, tf.int32), state['round']]),
          tf.where(any_sent, server_distillation.steps, 0),
          attention_targets=fused_attention['logits'],
      )
      return (collections.OrderedDict(model=model, round=state['round'] + 1),
              metrics)

    return run

  return stateful_clients.build_stateful_clients_process(
      prototype_model_fns, client_prototypes, initial_server_state,
      initial_client_states, broadcast_fn, client_work,
      (logit_fusion.LogitFusionFactory() if fusion_aggregator is None
       else fusion_aggregator), server_update, server_step)


def _build(
    task: spec_lib.Task, config: FedADConfig,
    context: spec_lib.Context) -> stateful_clients.StatefulClientsProcess:
  spec_lib.no_models('fedad', context)
  spec_lib.no_server_optimizer('fedad', context)
  return build_fedad(
      spec_lib.prototype_model_fns(task), context.client_optimizer.build(),
      client_prototypes=task.client_prototypes,
      public_inputs=spec_lib.distillation_inputs(task, context.distill_data),
      attention_weight=config.attention_weight,
      server_distillation=context.distillation,
      validation=spec_lib.validation(task, config.validation),
      seed=task.seed, fusion_aggregator=spec_lib.fusion(context),
      server_step=context.server_step)


SPEC = spec_lib.Spec(
    'fedad', 'FedAD (Gong et al. 2021): clients keep their models; the server'
    ' distills its model from their logits and attention maps.', FedADConfig,
    _build, prototypes=True, stateful_clients=True, models=False,
    knowledge={'logits': privacy.LOGITS, 'attention': privacy.BOUNDED},
    server_step=True, distill_data=True, distillation=True,
    labelled_server_data=lambda config: config.validation)
