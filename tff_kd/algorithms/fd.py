"""FD: federated distillation by per-label mean logits (Jeong et al. 2018).

Jeong, Oh, Kim, Park, Bennis, Kim, "Communication-Efficient On-Device Machine
Learning: Federated Distillation and Augmentation under Non-IID Private
Data", NeurIPS 2018 workshop, arXiv:1811.11479 (the guide's "exchanging
per-label averaged logits").

No weights travel. Every client keeps its own model across rounds
(`tff_kd.stateful_clients`; heterogeneous architectures allowed). Each round,
as the paper's Algorithm 1:
1. The server broadcasts the global knowledge of the last round: per label y,
   the mean g[y] of the per-label output vectors of the clients that reported
   y, and how many reported it, N[y] (L x L + L floats).
2. A sampled client trains its own model on its data with
       CE(z, y) + beta * tau^2 * KL(t[y] || softmax(z / tau)),
   t[y] the global mean of label y EXCLUDING the client's own contribution
   when it reported last round (the paper's F-hat, sum over j != i / (M - 1)):
   t[y] = (N[y] g[y] - p_k[y]) / (N[y] - 1). The term is dropped for labels no
   other client reported (`losses.per_label_distillation_loss`). The paper's
   regularizer is the cross-entropy toward t[y], which has this KL's gradient.
3. While it trains, it adds up per label the output softmax(z / tau) of every
   training step's forward pass (the paper's F, "the logit vector normalized
   by the softmax function", accumulated during local training), and
   uploads the per-label means p_k[y] and the counts n_k[y] (L x L + L
   floats; counts are example visits, E per example with E epochs).
4. The server averages them per label over the clients that reported it
   (uniformly, as the paper: a client's weight does not grow with its
   count; `LogitFusionFactory`, rows = labels, weight 1 where n_k[y] > 0).

Choices where the paper is silent: the output is taken from the step's own
forward pass (before that step's update); tau (the paper has none) divides
the logits before the softmax, and tau = 1 is the paper.

A client's state: `OrderedDict(model=ModelWeights, upload=<probs, counts,
round>)`, its last upload kept to exclude it. A label no sampled client
reports in a round has N[y] = 0 next round: no distillation toward it.
"""

import collections
from collections.abc import Mapping
import dataclasses
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import local_training
from tff_kd import losses
from tff_kd import model_parts
from tff_kd import optimizers
from tff_kd import privacy
from tff_kd import server_step as server_step_lib
from tff_kd import settings
from tff_kd import stateful_clients
from tff_kd.aggregators import knowledge
from tff_kd.aggregators import logit_fusion
from tff_kd.algorithms import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class FDConfig:
  beta: float = settings.setting(
      1.0, 'FD: weight beta of the distillation term.', **settings.at_least(0))
  temperature: float = settings.setting(
      1.0, 'FD: temperature tau.', **settings.TEMPERATURE)
  exclude_own: bool = settings.setting(
      True, 'FD: distill toward the global logits without the client\'s own'
      ' last contribution (the paper).')


def build_fd(
    prototype_model_fns: Mapping[str, model_parts.ModelFn],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    *,
    client_prototypes: Mapping[str, str],
    beta: float = FDConfig.beta,
    temperature: float = FDConfig.temperature,
    exclude_own: bool = FDConfig.exclude_own,
    fusion_aggregator: knowledge.FusionAggregator = None,
) -> stateful_clients.StatefulClientsProcess:
  """Builds FD.

  Args:
    prototype_model_fns: prototype name -> no-arg `model_fn` returning a
      `VariableModel` (logits out); all take the same inputs and classes.
    client_optimizer_fn: the clients' `tff.learning.optimizers.Optimizer`
      (stateless, e.g. SGD: client optimizer state is not kept).
    client_prototypes: client id -> prototype name, every client.
    beta: weight of the distillation term (the paper: 1).
    temperature: tau > 0.
    exclude_own: distill toward the other clients' knowledge only.
    fusion_aggregator: fuses the clients' `per_label` knowledge,
      `<logits=float32[L, L], weights=float32[L]>` (rows = labels, weight 1
      where the client reported the label); default `LogitFusionFactory()`,
      the per-label mean. Any `tff.aggregators` unweighted factory whose
      result has the same type (e.g. wrapping a DP or secure sum).

  Returns:
    A `StatefulClientsProcess`.
  """
  if not beta >= 0:
    raise ValueError(f'beta must be >= 0; got {beta}.')
  if not temperature > 0:
    raise ValueError(f'temperature must be > 0; got {temperature}.')
  probes = model_parts.probe_prototypes(prototype_model_fns)
  names = list(probes)
  num_classes = probes[names[0]]['num_classes']
  optimizers.check_no_round_decay(client_optimizer_fn, 'FD')
  client_hparams = client_optimizer_fn.get_hparams(
      client_optimizer_fn.initialize(tf.TensorSpec((), tf.float32))
  )

  def knowledge(round_num, count_name):
    return collections.OrderedDict(
        [('probs', tf.zeros([num_classes, num_classes])),
         (count_name, tf.zeros([num_classes])),
         ('round', tf.constant(round_num, tf.int32))])

  @tff.tensorflow.computation()
  def initial_client_states():
    return stateful_clients.initial_states(prototype_model_fns,
                                           upload=knowledge(-1, 'counts'))

  @tff.tensorflow.computation()
  def initial_server_state():
    # The knowledge made in round `round` (none yet).
    return knowledge(0, 'reports')

  server_state_type = initial_server_state.type_signature.result

  @tff.tensorflow.computation(server_state_type)
  def broadcast_fn(state):
    return state

  client_type = stateful_clients.client_input_type(
      probes[names[0]]['data_type'],
      initial_client_states.type_signature.result,
  )

  def distillation_fn(labels, student_logits, teacher_logits, extra):
    del teacher_logits  # The teacher is the per-label knowledge in `extra`.
    return beta * losses.per_label_distillation_loss(
        labels, student_logits, extra['probs'], extra['mask'], temperature)

  def observe_fn(totals, labels, logits):
    return losses.add_per_label_outputs(totals, labels, logits, temperature)

  @tff.tensorflow.computation(server_state_type, client_type)
  def client_work(global_knowledge, client):
    models = {n: fn() for n, fn in prototype_model_fns.items()}
    updates = {
        n: local_training.build_client_update(
            models[n], client_optimizer_fn, distillation_fn=distillation_fn,
            observe_fn=observe_fn)
        for n in names
    }

    @tf.function
    def run():
      states, metrics = collections.OrderedDict(), collections.OrderedDict()
      sums = tf.zeros([num_classes, num_classes])
      reports = tf.zeros([num_classes])
      non_finite = tf.constant(0)
      for i, n in enumerate(names):
        state = client['state'][n]
        dataset = stateful_clients.own_data(client['data'],
                                            client['prototype'], i)
        upload = state['upload']
        teacher, mask = losses.per_label_teacher(
            global_knowledge['probs'], global_knowledge['reports'],
            upload['probs'], upload['counts'],
            tf.logical_and(exclude_own, tf.equal(upload['round'],
                                                 global_knowledge['round'])))
        delta, _, is_finite, metrics[n], (own_sums, own_counts) = updates[n](
            state['model'], dataset, client_hparams,
            extra=collections.OrderedDict(probs=teacher, mask=mask),
            observed=(tf.zeros([num_classes, num_classes]),
                      tf.zeros([num_classes])),
        )
        finite = tf.cast(is_finite, tf.bool)
        own_counts = tf.where(finite, own_counts, 0.0)
        own_probs = tf.where(
            finite, tf.math.divide_no_nan(own_sums, own_counts[:, None]), 0.0)
        sent = tf.reduce_sum(own_counts) > 0
        states[n] = collections.OrderedDict(
            model=stateful_clients.trained(state['model'], delta),
            upload=stateful_clients.select(
                sent,
                collections.OrderedDict(
                    probs=own_probs, counts=own_counts,
                    round=global_knowledge['round'] + 1),
                upload,
            ),
        )
        # A client runs one prototype: the others add zeros.
        sums += own_probs
        reports += tf.cast(own_counts > 0, tf.float32)
        non_finite += 1 - is_finite
      return stateful_clients.client_output(
          client, states,
          knowledge=collections.OrderedDict(per_label=collections.OrderedDict(
              logits=sums, weights=reports)),
          metrics=metrics,
          non_finite=non_finite,
      )

    return run()

  value_type = logit_fusion.value_type(num_classes, num_classes)

  def server_update(state, broadcast, fused):
    del broadcast  # The state itself.
    fused = fused['per_label']
    new_state = collections.OrderedDict(
        probs=fused['logits'], reports=fused['weights'],
        round=state['round'] + 1)
    # What the teacher carries: per reported label y, the entropy of g[y]
    # (0: one-hot, no dark knowledge) and g[y][y], averaged over the labels.
    reported = tf.cast(fused['weights'] > 0.5, tf.float32)
    probs = fused['logits']
    entropy = -tf.reduce_sum(
        probs * tf.math.log(tf.maximum(probs, 1e-12)), axis=1)
    def mean_reported(values):
      return tf.math.divide_no_nan(tf.reduce_sum(values * reported),
                                   tf.reduce_sum(reported))
    return new_state, collections.OrderedDict(
        labels_reported=tf.reduce_sum(tf.cast(reported, tf.int32)),
        knowledge_entropy=mean_reported(entropy),
        knowledge_true_label_probability=mean_reported(
            tf.linalg.diag_part(probs)))

  return stateful_clients.build_stateful_clients_process(
      prototype_model_fns, client_prototypes, initial_server_state,
      initial_client_states, broadcast_fn, client_work,
      (logit_fusion.LogitFusionFactory() if fusion_aggregator is None
       else fusion_aggregator),
      server_step_lib.ServerStep(
          lambda: server_update,
          (server_state_type, server_state_type,
           collections.OrderedDict(per_label=value_type))))


def _build(
    task: spec_lib.Task, config: FDConfig,
    context: spec_lib.Context) -> stateful_clients.StatefulClientsProcess:
  spec_lib.no_models('fd', context)
  spec_lib.no_server_optimizer('fd', context)
  return build_fd(
      spec_lib.prototype_model_fns(task), context.client_optimizer.build(),
      client_prototypes=task.client_prototypes,
      fusion_aggregator=spec_lib.fusion(context), **dataclasses.asdict(config))


SPEC = spec_lib.Spec(
    'fd', 'FD (Jeong et al. 2018): clients keep their models and exchange'
    ' per-label mean outputs; distillation toward the others\' ones.',
    FDConfig, _build, prototypes=True, stateful_clients=True, models=False,
    knowledge={'per_label': privacy.PROBABILITIES})
