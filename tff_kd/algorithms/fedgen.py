"""FedGen: data-free knowledge distillation with a server-side generator.

Zhu, Hong, Zhou, "Data-Free Knowledge Distillation for Heterogeneous Federated
Learning", ICML 2021; official code `zhuangdizhu/FedGen` (read at commit
dd5807c: `servers/serverpFedGen.py`, `users/userpFedGen.py`).

Each round:
1. The server broadcasts the global model, the generator G (parameters and
   BatchNorm running statistics) and the round number t.
2. Each sampled client trains its model with CE plus FedGen's regularizer
   (`tff_kd.generator.make_client_loss`, G in eval mode): the shared local
   loop of `tff_kd.local_training` with a generator instead of a teacher
   model. It uploads its model delta (weight n_k), its classifier head and
   its label counts: 1 + the labels it trained on (the official
   `clean_up_counts` smoothing and `update_label_counts`).
3. The server averages the deltas (`WeightedMeanFactory`, FedAvg), collects
   the heads and counts (`StackFactory`), and trains G for `generator_steps`
   steps (Adam, lr decayed by 0.98 per round, coupled weight decay; G in
   training mode, its running statistics updated) on labels drawn uniformly
   from those some client trained on, so that every client's head classifies
   G(z, y) as y, weighted by the client's share of y, plus the diversity loss
   (`tff_kd.generator.train_generator`). As the official code, G is trained
   against the clients' trained models before their aggregation.

Deviations from the official code: a client trains on its dataset as given
(the official one takes K batches per local epoch from a cycling iterator and
drops the regularizer after 20 local epochs); clients draw their noise and
labels from seeds (round, batch number, a fingerprint of the batch; see
`tff_kd.generator.client_seeds`), as they have no id inside a TFF
computation; a client that trained on no example, or whose update is
non-finite, uploads zero counts (no weight in G's loss).

The process does not fit `compose_learning_process` (the distributor would need
the generator, which the server updates after aggregation), so it is written
as its own `LearningProcess`; its state is an `OrderedDict` with
`global_model_weights`, `generator` (`params`, `running_mean`,
`running_var`), `generator_optimizer` and `round` (all checkpointed). Models
must name their classifier layer `head` (a Dense layer whose input is the
feature vector), as every `tasks` model does.
"""

import collections
from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import communication
from tff_kd import generator as generator_lib
from tff_kd import local_training
from tff_kd import model_parts
from tff_kd.aggregators import stack
from tff_kd.aggregators import weighted_mean


def _count_labels(counts, labels, logits):
  """`local_training.ObserveFn`: adds a training batch's labels to `counts`."""
  del logits
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
  return counts + tf.reduce_sum(
      tf.one_hot(labels, tf.shape(counts)[0]), axis=0)


def build_fedgen(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    *,
    num_classes: int,
    clients_per_round: int,
    server_learning_rate: float = 1.0,
    noise_dim: int = 32,
    hidden_dim: int = 256,
    generator_steps: int = 50,
    generator_batch_size: int = 32,
    generator_learning_rate: float = 3e-4,
    generator_weight_decay: float = 1e-2,
    generator_lr_decay: float = 0.98,
    diversity_weight: float = 1.0,
    alpha: float = 10.0,
    beta: float = 10.0,
    regularizer_decay: float = 0.98,
    seed: int = 0,
) -> tff.learning.templates.LearningProcess:
  """Builds FedGen.

  Args:
    model_fn: no-arg function returning a Keras-backed `VariableModel` with a
      Dense layer named `head` (see `tff_kd.model_parts`); logits out.
    client_optimizer_fn: client `tff.learning.optimizers.Optimizer`.
    num_classes: C.
    clients_per_round: the most clients a round may have (the capacity of the
      collected heads).
    server_learning_rate: server SGD learning rate on the averaged delta
      (1 = FedAvg).
    noise_dim: size of z (32 in the paper).
    hidden_dim: generator hidden width (256 for MNIST/EMNIST).
    generator_steps: generator steps per round (50 in the official code).
    generator_batch_size: generator batch (32; at least 2, for BatchNorm).
    generator_learning_rate: Adam learning rate (3e-4).
    generator_weight_decay: Adam (coupled L2) weight decay (1e-2).
    generator_lr_decay: per-round decay of the generator learning rate (0.98).
    diversity_weight: eta of the diversity loss (1).
    alpha: initial weight of the clients' generated-sample CE (10).
    beta: initial weight of the clients' latent KL (10 for MNIST).
    regularizer_decay: per-round decay of alpha and beta (0.98).
    seed: seed of the generator's initialization.

  Returns:
    A `tff.learning.templates.LearningProcess`.
  """
  for name, value in (('num_classes', num_classes),
                      ('clients_per_round', clients_per_round),
                      ('noise_dim', noise_dim), ('hidden_dim', hidden_dim),
                      ('generator_steps', generator_steps)):
    if value < 1:
      raise ValueError(f'{name} must be >= 1; got {value}.')
  for name, value in (('alpha', alpha), ('beta', beta),
                      ('diversity_weight', diversity_weight),
                      ('generator_weight_decay', generator_weight_decay)):
    if value < 0:
      raise ValueError(f'{name} must be >= 0; got {value}.')
  if generator_batch_size < 2:
    raise ValueError('generator_batch_size must be >= 2 (BatchNorm); got '
                     f'{generator_batch_size}.')
  with tf.Graph().as_default():
    probe = model_fn()
    head = model_parts.head_layer(probe, 'FedGen')
    feature_dim = int(head.kernel.shape[0])
    if int(head.kernel.shape[1]) != num_classes:
      raise ValueError(
          f'num_classes={num_classes} but the head has '
          f'{int(head.kernel.shape[1])} outputs.'
      )
    metrics_aggregation_fn = tff.learning.metrics.sum_then_finalize(
        probe.metric_finalizers()
    )
    weights_type = tff.learning.models.weights_type_from_model(probe)
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(probe.input_spec))
  client_hparams = client_optimizer_fn.get_hparams(
      client_optimizer_fn.initialize(tf.TensorSpec((), tf.float32))
  )
  generator_optimizer = tff.learning.optimizers.build_adam(
      learning_rate=generator_learning_rate
  )

  @tff.tensorflow.computation()
  def initial_state():
    generator = generator_lib.init_generator(
        noise_dim=noise_dim, num_classes=num_classes, hidden=hidden_dim,
        feature_dim=feature_dim, seed=seed,
    )
    specs = tuple(
        tf.TensorSpec(v.shape, v.dtype) for v in generator['params'].values()
    )
    return collections.OrderedDict(
        global_model_weights=tff.learning.models.ModelWeights.from_model(
            model_fn()
        ),
        generator=generator,
        generator_optimizer=generator_optimizer.initialize(specs),
        round=tf.constant(0, tf.int32),
    )

  state_type = initial_state.type_signature.result

  @tff.tensorflow.computation(state_type)
  def to_broadcast(state):
    return collections.OrderedDict(
        model=state['global_model_weights'],
        generator=state['generator'],
        round=state['round'],
    )

  broadcast_type = to_broadcast.type_signature.result

  @tff.tensorflow.computation(broadcast_type, data_type)
  def client_update(broadcast, dataset):
    model = model_fn()
    head = model_parts.head_layer(model, 'FedGen')
    counter = tf.Variable(0, dtype=tf.int32)
    update = local_training.build_client_update(
        model,
        client_optimizer_fn,
        distillation_fn=generator_lib.make_client_loss(
            head, counter, num_classes=num_classes, noise_dim=noise_dim,
            alpha=alpha, beta=beta, decay=regularizer_decay,
        ),
        observe_fn=_count_labels,
    )

    @tf.function
    def train_and_report():
      # Counts start at 1 per label (the official `clean_up_counts`) and add
      # the labels of every batch trained on (`update_label_counts`).
      delta, weight, is_finite, metrics, counts = update(
          broadcast['model'], dataset, client_hparams, extra=broadcast,
          observed=tf.ones([num_classes]),
      )
      # A client without a usable update (non-finite, or no examples)
      # uploads zero counts: no weight in the generator's loss.
      counts *= tf.cast(weight > 0, tf.float32)
      uploaded = collections.OrderedDict(
          kernel=tf.identity(head.kernel), bias=tf.identity(head.bias),
          counts=counts,
      )
      return delta, weight, 1 - is_finite, metrics, uploaded

    return train_and_report()

  client_result_type = client_update.type_signature.result
  mean_process = weighted_mean.WeightedMeanFactory().create(
      client_result_type[0], client_result_type[1]
  )
  stack_process = stack.StackFactory(clients_per_round).create(
      client_result_type[4]
  )
  bytes_fn = communication.build_bytes_counter(
      down=broadcast_type,
      up=tff.StructType([client_result_type[i] for i in (0, 1, 4)]),
  )

  @tff.tensorflow.computation(
      state_type, mean_process.next.type_signature.result.result.member,
      stack_process.next.type_signature.result.result.member,
  )
  def server_update(state, mean_delta, collected):
    round_num = state['round']
    weights = state['global_model_weights']
    # A list, as ModelWeights.from_model gives: checkpoints restore into the
    # structure of the initial state.
    trainable = [
        w - server_learning_rate * d
        for w, d in zip(weights.trainable, mean_delta)
    ]
    optimizer_state = generator_optimizer.set_hparams(
        state['generator_optimizer'],
        collections.OrderedDict(
            generator_optimizer.get_hparams(state['generator_optimizer']),
            learning_rate=generator_learning_rate
            * generator_lr_decay ** tf.cast(round_num, tf.float32),
        ),
    )
    uploads = collected['values']
    generator, optimizer_state, losses = generator_lib.train_generator(
        state['generator'], generator_optimizer, optimizer_state,
        uploads['kernel'], uploads['bias'], uploads['counts'],
        steps=generator_steps, batch_size=generator_batch_size,
        noise_dim=noise_dim, weight_decay=generator_weight_decay,
        diversity_weight=diversity_weight, seed=round_num,
    )
    new_state = collections.OrderedDict(
        global_model_weights=tff.learning.models.ModelWeights(
            trainable=trainable, non_trainable=weights.non_trainable
        ),
        generator=generator,
        generator_optimizer=optimizer_state,
        round=round_num + 1,
    )
    return new_state, collections.OrderedDict(
        loss_first_step=losses[0], loss_last_step=losses[-1],
        clients_collected=collected['count'],
    )

  @tff.federated_computation()
  def init_fn():
    return tff.federated_eval(initial_state, tff.SERVER)

  @tff.federated_computation(
      init_fn.type_signature.result, tff.FederatedType(data_type, tff.CLIENTS)
  )
  def next_fn(state, client_data):
    broadcast = tff.federated_broadcast(tff.federated_map(to_broadcast, state))
    delta, weight, non_finite, metrics, uploaded = tff.federated_map(
        client_update, (broadcast, client_data)
    )
    mean_delta = mean_process.next(mean_process.initialize(), delta, weight)
    collected = stack_process.next(stack_process.initialize(), uploaded)
    new_state, generator_metrics = tff.federated_map(
        server_update, (state, mean_delta.result, collected.result)
    )
    measurements = tff.federated_zip(collections.OrderedDict(
        client_work=collections.OrderedDict(
            train=metrics_aggregation_fn(metrics),
            non_finite_clients=tff.federated_sum(non_finite),
            communication=bytes_fn(non_finite),
        ),
        aggregator=mean_delta.measurements,
        generator=generator_metrics,
    ))
    return tff.learning.templates.LearningProcessOutput(new_state, measurements)

  @tff.tensorflow.computation(state_type)
  def get_model_weights(state):
    return state['global_model_weights']

  @tff.tensorflow.computation(state_type, weights_type)
  def set_model_weights(state, weights):
    return collections.OrderedDict(state, global_model_weights=weights)

  return tff.learning.templates.LearningProcess(
      init_fn, next_fn, get_model_weights, set_model_weights
  )
