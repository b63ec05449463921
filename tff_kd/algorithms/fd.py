"""FD: federated distillation by per-label mean logits (Jeong et al. 2018).

Jeong, Oh, Kim, Bennis, Kim, "Communication-Efficient On-Device Machine
Learning: Federated Distillation and Augmentation under Non-IID Private
Data", NeurIPS 2018 workshop (the guide's "exchanging per-label averaged
logits").

No weights travel. Every client keeps its own model across rounds
(`tff_kd.stateful_clients`; heterogeneous architectures allowed). Each round:
1. The server broadcasts the global knowledge of the last round: per label y,
   the mean logit vector g[y] of the clients that reported y, and their
   example counts N[y] (L x L + L floats).
2. A sampled client trains its own model on its data with
       CE(z, y) + beta * tau^2 * KL(softmax(t[y] / tau) || softmax(z / tau)),
   t[y] the global mean logits of label y EXCLUDING the client's own
   contribution when it reported last round (the paper's choice,
   `exclude_own`): t[y] = (N[y] g[y] - n_k[y] m_k[y]) / (N[y] - n_k[y]). The
   term is dropped for labels no other client reported (`losses.
   per_label_distillation_loss`).
3. It then computes, with its trained model (inference mode), the mean logit
   vector m_k[y] of each label over its training data, and uploads m_k and
   the counts n_k (L x L + L floats). The paper averages the logits seen
   during training instead; ours are those of the model the client keeps,
   which others then distill toward. The counts are example visits: with E
   local epochs each example counts E times (the same factor for every
   client, so the means are unaffected).
4. The server fuses them per label, count-weighted (`LogitFusionFactory`,
   rows = labels, weights = counts): g[y] = sum_k n_k[y] m_k[y] / N[y].

A client's state: `OrderedDict(model=ModelWeights, upload=<logits, counts,
round>)`, its last upload kept to exclude it. A label no sampled client
reports in a round has N[y] = 0 next round: no distillation toward it.
"""

import collections
from collections.abc import Callable, Mapping

import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import communication
from tff_kd import local_training
from tff_kd import losses
from tff_kd import model_parts
from tff_kd import stateful_clients
from tff_kd.aggregators import logit_fusion

ModelFn = Callable[[], tff.learning.models.VariableModel]


def build_fd(
    prototype_model_fns: Mapping[str, ModelFn],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    *,
    client_prototypes: Mapping[str, str],
    beta: float = 1.0,
    temperature: float = 1.0,
    exclude_own: bool = True,
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
  client_hparams = client_optimizer_fn.get_hparams(
      client_optimizer_fn.initialize(tf.TensorSpec((), tf.float32))
  )

  def knowledge(round_num):
    return collections.OrderedDict(
        logits=tf.zeros([num_classes, num_classes]),
        counts=tf.zeros([num_classes]),
        round=tf.constant(round_num, tf.int32),
    )

  @tff.tensorflow.computation()
  def initial_client_states():
    return stateful_clients.initial_states(prototype_model_fns,
                                           upload=knowledge(-1))

  @tff.tensorflow.computation()
  def initial_server_state():
    # The knowledge made in round `round` (none yet).
    return knowledge(0)

  server_state_type = initial_server_state.type_signature.result
  fusion_value_type = logit_fusion.value_type(num_classes, num_classes)
  client_type = stateful_clients.client_input_type(
      probes[names[0]]['data_type'],
      initial_client_states.type_signature.result,
  )

  def distillation_fn(labels, student_logits, teacher_logits, extra):
    del teacher_logits  # The teacher is the per-label knowledge in `extra`.
    return beta * losses.per_label_distillation_loss(
        labels, student_logits, extra['logits'], extra['mask'], temperature)

  @tff.tensorflow.computation(server_state_type, client_type)
  def client_round(global_knowledge, client):
    models = {n: fn() for n, fn in prototype_model_fns.items()}
    updates = {
        n: local_training.build_client_update(
            models[n], client_optimizer_fn, distillation_fn=distillation_fn)
        for n in names
    }

    def label_means(model, dataset):
      def add(totals, batch):
        sums, counts = totals
        logits = model.predict_on_batch(
            local_training.batch_inputs(batch), training=False)
        labels = tf.reshape(
            tf.cast(local_training.batch_labels(batch), tf.int32), [-1])
        return (
            sums + tf.math.unsorted_segment_sum(logits, labels, num_classes),
            counts + tf.math.unsorted_segment_sum(
                tf.ones_like(labels, tf.float32), labels, num_classes),
        )
      return local_training.dataset_reduce(
          dataset,
          (tf.zeros([num_classes, num_classes]), tf.zeros([num_classes])),
          add)

    @tf.function
    def run():
      states, metrics = collections.OrderedDict(), collections.OrderedDict()
      sums = tf.zeros([num_classes, num_classes])
      counts = tf.zeros([num_classes])
      non_finite = tf.constant(0)
      for i, n in enumerate(names):
        state = client['state'][n]
        dataset = stateful_clients.own_data(client['data'],
                                            client['prototype'], i)
        total = global_knowledge['logits'] * global_knowledge['counts'][:, None]
        total_counts = global_knowledge['counts']
        upload = state['upload']
        if exclude_own and tf.equal(upload['round'],
                                    global_knowledge['round']):
          total -= upload['logits'] * upload['counts'][:, None]
          total_counts -= upload['counts']
        # Counts are sums of whole numbers: > 0.5 means at least one.
        mask = tf.cast(total_counts > 0.5, tf.float32)
        teacher = tf.math.divide_no_nan(
            total, tf.maximum(total_counts, 0.0)[:, None]) * mask[:, None]
        delta, _, is_finite, metrics[n] = updates[n](
            state['model'], dataset, client_hparams,
            extra=collections.OrderedDict(logits=teacher, mask=mask),
        )
        # Training made the first pass over the dataset; this one follows.
        with tf.control_dependencies(tf.nest.flatten(delta)):
          own_sums, own_counts = label_means(models[n], dataset)
        finite = tf.cast(is_finite, tf.bool)
        own_sums = tf.where(finite, own_sums, 0.0)
        own_counts = tf.where(finite, own_counts, 0.0)
        own_logits = tf.math.divide_no_nan(own_sums, own_counts[:, None])
        sent = tf.reduce_sum(own_counts) > 0
        states[n] = collections.OrderedDict(
            model=stateful_clients.trained(state['model'], delta),
            upload=stateful_clients.select(
                sent,
                collections.OrderedDict(
                    logits=own_logits, counts=own_counts,
                    round=global_knowledge['round'] + 1),
                upload,
            ),
        )
        sums += own_sums
        counts += own_counts
        non_finite += 1 - is_finite
      return stateful_clients.client_output(
          client, states,
          fusion=collections.OrderedDict(
              logits=tf.math.divide_no_nan(sums, counts[:, None]),
              weights=counts),
          metrics=metrics,
          non_finite=non_finite,
      )

    return run()

  fusion = logit_fusion.LogitFusionFactory().create(fusion_value_type)
  count_bytes = communication.build_bytes_counter(
      down=server_state_type, up=fusion_value_type)

  @tff.tensorflow.computation(server_state_type,
                              fusion.next.type_signature.result.result.member)
  def server_update(state, fused):
    new_state = collections.OrderedDict(
        logits=fused['logits'], counts=fused['weights'],
        round=state['round'] + 1)
    return new_state, collections.OrderedDict(
        labels_reported=tf.reduce_sum(
            tf.cast(fused['weights'] > 0.5, tf.int32)))

  @tff.federated_computation(
      tff.FederatedType(server_state_type, tff.SERVER),
      tff.FederatedType(client_type, tff.CLIENTS),
  )
  def round_fn(state, clients):
    out = tff.federated_map(
        client_round, (tff.federated_broadcast(state), clients))
    fused = fusion.next(fusion.initialize(), out.fusion)
    new_state, knowledge_metrics = tff.federated_map(
        server_update, (state, fused.result))
    metrics = tff.federated_zip(collections.OrderedDict(
        client_work=stateful_clients.client_work_metrics(
            probes, out, count_bytes),
        fusion=fused.measurements,
        knowledge=knowledge_metrics,
    ))
    return new_state, metrics, out.state

  return stateful_clients.StatefulClientsProcess(
      initial_server_state=initial_server_state,
      initial_client_states=initial_client_states,
      round_fn=round_fn,
      client_prototypes=client_prototypes,
  )
