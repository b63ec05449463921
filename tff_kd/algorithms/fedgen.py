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

The process is `compose_learning_process` of TFF's parts: the generator
travels with the model in the global weights, `OrderedDict(model=ModelWeights,
generator=<params, running_mean, running_var>)`, so TFF's broadcast sends
both and the finalizer (`tff_kd.finalizers.generator_step`, its
state the generator's Adam state and the round) updates both; the client
work's state is the round. Models
must name their classifier layer `head` (a Dense layer whose input is the
feature vector), as every `tasks` model does.
"""

import collections
import dataclasses
from typing import Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import client_work as client_work_lib
from tff_kd import communication
from tff_kd import finalizers
from tff_kd import generator as generator_lib
from tff_kd import local_training
from tff_kd import model_parts
from tff_kd import optimizers
from tff_kd import privacy
from tff_kd import process as process_lib
from tff_kd import server_step as server_step_lib
from tff_kd import settings
from tff_kd.aggregators import knowledge
from tff_kd.aggregators import stack
from tff_kd.algorithms import spec as spec_lib


def _count_labels(counts, labels, logits):
  """`local_training.ObserveFn`: adds a training batch's labels to `counts`."""
  del logits
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
  return counts + tf.reduce_sum(
      tf.one_hot(labels, tf.shape(counts)[0]), axis=0)


@dataclasses.dataclass(frozen=True)
class FedGenConfig:
  alpha: float = settings.setting(
      1.0, 'FedGen: initial weight of the clients\' generated-sample CE (the'
      ' paper: 10 at client lr 0.01; 1 keeps alpha*lr at our lr 0.1).',
      **settings.at_least(0))
  beta: float = settings.setting(
      1.0, 'FedGen: initial weight of the clients\' latent KL (paper: 10 at'
      ' lr 0.01).', **settings.at_least(0))
  generator_steps: int = settings.setting(
      50, 'FedGen: generator steps per round.', **settings.count(1, 100_000))
  teacher_loss: str = settings.choice(
      generator_lib.TEACHER_LOSSES, 'FedGen: the generator\'s teacher loss,'
      ' per_sample (the paper) or official (the official code\'s broadcast:'
      ' mean weight x mean CE per client).')
  noise: str = settings.choice(
      generator_lib.NOISES, 'FedGen: the generator\'s noise, uniform on'
      ' [0, 1) (the official code) or normal (the paper).')
  client_batchnorm: str = settings.choice(
      generator_lib.CLIENT_BATCHNORMS, 'FedGen: the generator\'s BatchNorm'
      ' statistics on the clients, running (the official eval mode) or batch'
      ' (each batch\'s own).')
  client_draws: str = settings.choice(
      generator_lib.CLIENT_DRAWS, 'FedGen: the clients\' noise and labels,'
      ' own (each client its own) or shared (the same for every client of a'
      ' round).')
  sampled_labels: str = settings.choice(
      generator_lib.SAMPLED_LABELS, 'FedGen: the clients\' generated labels,'
      ' uniform (the official code) or label_distribution (the paper: the'
      ' last round\'s trained labels, broadcast).')
  smooth_counts: bool = settings.setting(
      True, 'FedGen: label counts start at 1 (the official clean_up_counts);'
      ' false: at 0.')


def build_fedgen(
    model_fn: model_parts.ModelFn,
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    *,
    num_classes: int,
    clients_per_round: int,
    server_learning_rate: float = 1.0,
    noise_dim: int = 32,
    hidden_dim: int = 256,
    generator_steps: int = FedGenConfig.generator_steps,
    generator_batch_size: int = 32,
    generator_learning_rate: float = 3e-4,
    generator_weight_decay: float = 1e-2,
    generator_lr_decay: float = 0.98,
    diversity_weight: float = 1.0,
    teacher_loss: str = FedGenConfig.teacher_loss,
    noise: str = FedGenConfig.noise,
    client_batchnorm: str = FedGenConfig.client_batchnorm,
    client_draws: str = FedGenConfig.client_draws,
    sampled_labels: str = FedGenConfig.sampled_labels,
    smooth_counts: bool = FedGenConfig.smooth_counts,
    alpha: float = FedGenConfig.alpha,
    beta: float = FedGenConfig.beta,
    regularizer_decay: float = 0.98,
    seed: int = 0,
    model_aggregator: Optional[knowledge.ModelAggregator] = None,
    fusion_aggregator: knowledge.FusionAggregator = None,
    server_step: str = server_step_lib.DEFAULT_PLACEMENT,
) -> Union[process_lib.GlobalModelsProcess, process_lib.ProgramStepProcess]:
  """Builds FedGen.

  Args:
    model_fn: no-arg function returning a Keras-backed `VariableModel` with a
      Dense layer named `head` (see `tff_kd.model_parts`); logits out.
    client_optimizer_fn: client `tff.learning.optimizers.Optimizer` (a
      `tff_kd.optimizers.RoundDecay` decays its rate per round).
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
    teacher_loss: `per_sample` (the paper's Eq. 4) or `official` (the
      official code's broadcast product; `generator.ensemble_loss`).
    noise: z's distribution, `uniform` (the official code) or `normal` (the
      paper).
    client_batchnorm: G's BatchNorm statistics on the clients, `running`
      (the official eval mode) or `batch` (each batch's own).
    client_draws: `own` (each client draws its noise and labels) or `shared`
      (every client of a round draws the same).
    sampled_labels: the clients' y_hat, `uniform` over the classes (the
      official code) or `label_distribution` (the paper's p(y): the label
      distribution of the last round's uploads, broadcast with G; uniform
      in round 0).
    smooth_counts: the uploaded label counts start at 1 (the official
      `clean_up_counts`) or, False, at 0.
    alpha: initial weight of the clients' generated-sample CE (the paper's
      10 goes with client lr 0.01; the default keeps alpha x lr at 0.1).
    beta: initial weight of the clients' latent KL (likewise).
    regularizer_decay: per-round decay of alpha and beta (0.98).
    seed: seed of the generator's initialization.
    model_aggregator: averages the model deltas (a weighted or unweighted
      `tff.aggregators` factory); default `WeightedMeanFactory` (n_k / n).
    fusion_aggregator: collects the clients' `heads`, `<kernel, bias,
      counts>`, for the generator; default `StackFactory(clients_per_round)`.
    server_step: where the server's step runs: `worker` (in the round, a
      TFF process) or `program` (a `tf.function` of the program, on its
      devices; a `ProgramStepProcess`); `tff_kd.server_step`.

  Returns:
    A `tff_kd.process.GlobalModelsProcess`: TFF's broadcast of `<model,
    generator>`, the client work (its state the round), `KnowledgeFactory`'s
    aggregation and the finalizer of `finalizers.generator_step`, composed by
    `compose_learning_process`; `get_model_weights` gives the model's.
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
  generator_lib.check_options(
      noise=noise, client_batchnorm=client_batchnorm,
      client_draws=client_draws, sampled_labels=sampled_labels)
  if teacher_loss not in generator_lib.TEACHER_LOSSES:
    raise ValueError(f'teacher_loss must be one of '
                     f'{generator_lib.TEACHER_LOSSES}; got {teacher_loss!r}.')
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
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(probe.input_spec))
  client_hparams = client_optimizer_fn.get_hparams(
      client_optimizer_fn.initialize(tf.TensorSpec((), tf.float32))
  )
  decay = optimizers.round_decay(client_optimizer_fn)
  smoothing = 1.0 if smooth_counts else 0.0

  @tff.tensorflow.computation()
  def initial_weights():
    weights = collections.OrderedDict(
        model=tff.learning.models.ModelWeights.from_model(model_fn()),
        generator=generator_lib.init_generator(
            noise_dim=noise_dim, num_classes=num_classes, hidden=hidden_dim,
            feature_dim=feature_dim, seed=seed,
        ),
    )
    if sampled_labels == 'label_distribution':
      weights['label_probs'] = tf.fill([num_classes], 1.0 / num_classes)
    return weights

  global_type = initial_weights.type_signature.result

  @tff.tensorflow.computation(np.int32, global_type, data_type)
  def client_update(round_num, broadcast, dataset):
    broadcast = collections.OrderedDict(broadcast, round=round_num)
    model = model_fn()
    head = model_parts.head_layer(model, 'FedGen')
    counter = tf.Variable(0, dtype=tf.int32)
    update = local_training.build_client_update(
        model,
        client_optimizer_fn,
        distillation_fn=generator_lib.make_client_loss(
            head, counter, num_classes=num_classes, noise_dim=noise_dim,
            alpha=alpha, beta=beta, decay=regularizer_decay, noise=noise,
            client_batchnorm=client_batchnorm, client_draws=client_draws,
            sampled_labels=sampled_labels,
        ),
        observe_fn=_count_labels,
    )

    @tf.function
    def train_and_report():
      # Counts start at 1 per label (the official `clean_up_counts`; 0
      # unsmoothed) and add the labels of every batch trained on
      # (`update_label_counts`).
      delta, weight, is_finite, metrics, counts = update(
          broadcast['model'], dataset,
          optimizers.decayed(client_hparams, decay, round_num),
          extra=broadcast,
          observed=tf.fill([num_classes], smoothing),
      )
      # A client without a usable update (non-finite, or no examples)
      # uploads zero counts: no weight in the generator's loss.
      counts *= tf.cast(weight > 0, tf.float32)
      uploaded = collections.OrderedDict(
          kernel=tf.identity(head.kernel), bias=tf.identity(head.bias),
          counts=counts,
      )
      return (
          tff.learning.templates.ClientResult(
              update=collections.OrderedDict(
                  models=collections.OrderedDict(model=delta),
                  knowledge=collections.OrderedDict(heads=uploaded)),
              update_weight=collections.OrderedDict(model=weight)),
          collections.OrderedDict(non_finite=1 - is_finite, metrics=metrics))

    return train_and_report()

  result_type = client_update.type_signature.result[0]
  bytes_fn = communication.build_bytes_counter(
      down=tff.StructType([global_type, tff.TensorType(np.int32)]),
      up=result_type)

  def measure(out):
    return tff.federated_zip(collections.OrderedDict(
        train=metrics_aggregation_fn(out.metrics),
        non_finite_clients=tff.federated_sum(out.non_finite),
        communication=bytes_fn(out.non_finite),
    ))

  aggregator = knowledge.KnowledgeFactory(
      model_aggregator,
      stack.StackFactory(clients_per_round) if fusion_aggregator is None
      else fusion_aggregator).create(
          result_type.update, result_type.update_weight)
  initial_state, step = finalizers.generator_step(
      weights_type=global_type,
      update_type=aggregator.next.type_signature.result.result.member,
      server_learning_rate=server_learning_rate,
      generator_optimizer=tff.learning.optimizers.build_adam(
          learning_rate=generator_learning_rate),
      learning_rate=generator_learning_rate, lr_decay=generator_lr_decay,
      steps=generator_steps, batch_size=generator_batch_size,
      noise_dim=noise_dim, weight_decay=generator_weight_decay,
      diversity_weight=diversity_weight, teacher_loss=teacher_loss,
      noise=noise, smoothing=smoothing)
  return process_lib.with_server_step(process_lib.GlobalModelsProcess(
      tff.learning.templates.compose_learning_process(
          initial_weights,
          tff.learning.templates.build_broadcast_process(global_type),
          client_work_lib.build_round_client_work(client_update, measure),
          aggregator,
          finalizers.build_finalizer(initial_state, step, server_step)),
      {'model': model_fn}), step, server_step)


def _build(
    task: spec_lib.Task, config: FedGenConfig, context: spec_lib.Context
) -> Union[process_lib.GlobalModelsProcess, process_lib.ProgramStepProcess]:
  return build_fedgen(
      task.model_fn, context.client_optimizer.build(),
      num_classes=task.num_classes,
      clients_per_round=context.clients_per_round,
      server_learning_rate=spec_lib.server_sgd_learning_rate('fedgen',
                                                             context),
      seed=task.seed, model_aggregator=context.model_aggregator,
      fusion_aggregator=spec_lib.fusion(context),
      server_step=context.server_step, **dataclasses.asdict(config))


SPEC = spec_lib.Spec(
    'fedgen', 'FedGen (Zhu et al. 2021): FedAvg + a server-trained'
    ' conditional generator regularizing the clients (data-free KD).',
    FedGenConfig, _build, knowledge={'heads': privacy.STACKED},
    server_step=True)
