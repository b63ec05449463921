"""FedGen's conditional generator and its losses, in pure TensorFlow.

Zhu, Hong, Zhou, "Data-Free Knowledge Distillation for Heterogeneous
Federated Learning", ICML 2021 (official code `zhuangdizhu/FedGen`, read at
commit dd5807c: `FLAlgorithms/trainmodel/generator.py`,
`servers/serverpFedGen.py`, `users/userpFedGen.py`).

The generator G(z, y) maps noise z (`noise_dim`) concatenated with one-hot y
through Linear -> BatchNorm1d -> ReLU -> Linear to the input size of the
classifier head, as the official `Generator` (no label embedding). Its state is
an explicit `OrderedDict(params=..., running_mean=..., running_var=...)` of
tensors (no Keras model), so the same function runs on the server, where G is
trained in PyTorch's `train()` mode (BatchNorm with the batch's statistics,
running statistics updated), and on the clients, where it is a frozen
regularizer in `eval()` mode (BatchNorm with the running statistics).

As the official code, z is uniform on [0, 1) (`torch.rand`): the paper says
Gaussian, but the author confirmed uniform is intended (issue #10).

`ABLATIONS` names the options that undo one faithful choice each (noise,
the clients' BatchNorm statistics, their draws, the sampled labels, the
count smoothing), for measuring what each costs (docs/CLAIMS.md); the
defaults are the official code's.

No `tff` import here.
"""

import collections

import tensorflow as tf

# BatchNorm1d's defaults in the official code.
_MOMENTUM = 0.1
_EPSILON = 1e-5
# z's distribution: the official code's (uniform on [0, 1)) or the paper's
# (standard normal).
NOISES = ('uniform', 'normal')
# The BatchNorm statistics G uses on the clients: the running ones (the
# official eval mode) or each client batch's own.
CLIENT_BATCHNORMS = ('running', 'batch')
# The clients' draws: each client its own (seeds folded with a fingerprint of
# its batch) or the same for every client of a round (seeds (round, batch)).
CLIENT_DRAWS = ('own', 'shared')
# The clients' y_hat: uniform over the classes (the official code) or from
# the label distribution of the last round's uploads (the paper's p(y)),
# broadcast with G.
SAMPLED_LABELS = ('uniform', 'label_distribution')
# Each option with its choices, default first.
ABLATIONS = dict(noise=NOISES, client_batchnorm=CLIENT_BATCHNORMS,
                 client_draws=CLIENT_DRAWS, sampled_labels=SAMPLED_LABELS)


def check_options(**options: str) -> None:
  """Raises `ValueError` naming the first of `ABLATIONS`' options given a
  value outside its choices."""
  for name, value in options.items():
    if value not in ABLATIONS[name]:
      raise ValueError(f'{name} must be one of {ABLATIONS[name]}; got '
                       f'{value!r}.')


def draw_noise(shape, seed, noise: str = 'uniform') -> tf.Tensor:
  """z: uniform on [0, 1) (`torch.rand`) or standard normal."""
  check_options(noise=noise)
  if noise == 'uniform':
    return tf.random.stateless_uniform(shape, seed)
  return tf.random.stateless_normal(shape, seed)


def init_generator(
    *, noise_dim: int, num_classes: int, hidden: int, feature_dim: int,
    seed: int,
) -> collections.OrderedDict:
  """Glorot-uniform weights, zero biases, unit BatchNorm scale.

  The running statistics start as PyTorch's: mean 0, variance 1.
  """

  def glorot(shape, k):
    limit = tf.sqrt(6.0 / float(shape[0] + shape[1]))
    return tf.random.stateless_uniform(
        shape, seed=[seed, k], minval=-limit, maxval=limit
    )

  return collections.OrderedDict(
      params=collections.OrderedDict(
          w1=glorot([noise_dim + num_classes, hidden], 1),
          b1=tf.zeros([hidden]),
          gamma=tf.ones([hidden]),
          beta=tf.zeros([hidden]),
          w2=glorot([hidden, feature_dim], 2),
          b2=tf.zeros([feature_dim]),
      ),
      running_mean=tf.zeros([hidden]),
      running_var=tf.ones([hidden]),
  )


def _pre_norm(params, noise, labels_one_hot):
  h = tf.concat([noise, labels_one_hot], axis=1)
  return h @ params['w1'] + params['b1']


def generate(
    generator, noise: tf.Tensor, labels_one_hot: tf.Tensor, training: bool
) -> tf.Tensor:
  """Features G(z, y) for a batch: [batch, feature_dim].

  Args:
    generator: the generator state (`init_generator`).
    noise: [batch, noise_dim] z.
    labels_one_hot: [batch, num_classes] one-hot y.
    training: True on the server training G (BatchNorm normalizes with the
      batch's mean and biased variance), False on the clients (with the
      running statistics). A batch whose labels are all one class needs the
      latter: the batch mean removes constant one-hot columns.
  """
  params = generator['params']
  h = _pre_norm(params, noise, labels_one_hot)
  if training:
    mean, variance = tf.nn.moments(h, axes=[0])
  else:
    mean, variance = generator['running_mean'], generator['running_var']
  h = tf.nn.batch_normalization(
      h, mean, variance, params['beta'], params['gamma'], _EPSILON
  )
  return tf.nn.relu(h) @ params['w2'] + params['b2']


def update_statistics(generator, noise, labels_one_hot):
  """`generator` with its running statistics updated by a training batch.

  As PyTorch's BatchNorm1d in `train()` mode: r <- 0.9 r + 0.1 s, with s the
  batch mean for the running mean and the unbiased batch variance (times
  n / (n - 1)) for the running variance.
  """
  h = _pre_norm(generator['params'], noise, labels_one_hot)
  mean, variance = tf.nn.moments(h, axes=[0])
  n = tf.cast(tf.shape(h)[0], tf.float32)
  return collections.OrderedDict(
      generator,
      running_mean=(1 - _MOMENTUM) * generator['running_mean']
      + _MOMENTUM * mean,
      running_var=(1 - _MOMENTUM) * generator['running_var']
      + _MOMENTUM * variance * n / (n - 1),
  )


def diversity_loss(noise: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
  """exp(-mean_ij d_noise(i, j) * d_feature(i, j)), as the official code.

  d_noise is the mean squared difference of the noises, d_feature the mean
  absolute difference of the generated features: minimizing it spreads
  different noises to different features (mode-collapse penalty).
  """
  noise_distance = tf.reduce_mean(
      tf.square(noise[:, tf.newaxis] - noise[tf.newaxis]), axis=-1
  )
  feature_distance = tf.reduce_mean(
      tf.abs(features[:, tf.newaxis] - features[tf.newaxis]), axis=-1
  )
  return tf.exp(-tf.reduce_mean(noise_distance * feature_distance))


def label_weights(counts: tf.Tensor) -> tf.Tensor:
  """w[k, y] = n_{k,y} / sum_k n_{k,y}: client k's share of label y.

  The official `get_label_weights`. `counts` are the clients' smoothed counts
  (1 + the labels trained on, the official `clean_up_counts`); a row of zeros
  (an absent or dropped client) gets weight 0.
  """
  return tf.math.divide_no_nan(
      counts, tf.reduce_sum(counts, axis=0, keepdims=True)
  )


def sample_labels(counts: tf.Tensor, size: int, seed,
                  smoothing: float = 1.0) -> tf.Tensor:
  """[size] int32 labels, uniform over the qualified labels.

  As the official `np.random.choice(qualified_labels, batch_size)`: a label is
  qualified if some client's count exceeds `MIN_SAMPLES_PER_LABEL` = 1 in
  counts smoothed by +1 (`smoothing`), that is if some client trained on it
  this round. If none is (no client trained on anything), all labels are
  drawn, with zero weight in the loss.
  """
  qualified = tf.reduce_max(counts, axis=0) > smoothing
  logits = tf.where(qualified, 0.0, -1e9)[tf.newaxis]
  return tf.cast(tf.random.stateless_categorical(logits, size, seed)[0],
                 tf.int32)


# How the teacher loss weighs each sample by its label's client share.
TEACHER_LOSSES = ('per_sample', 'official')


def ensemble_loss(
    generator, heads_kernel, heads_bias, counts, labels, noise,
    diversity_weight, teacher_loss='per_sample',
) -> tf.Tensor:
  """The generator's objective against the sampled clients' heads.

  sum_k mean_b w[k, y_b] CE(head_k(G(z_b, y_b)), y_b) + eta * diversity, with
  G in training mode (`teacher_loss='per_sample'`, the paper's Eq. 4). With
  `teacher_loss='official'` the teacher term is the official code's:
  `torch.mean(CE * weight)` multiplies the [B] losses by a [B, 1] weight,
  which broadcasts to [B, B], so client k's term is mean_b w[k, y_b] *
  mean_b CE_kb: every head is pushed to classify every sampled label,
  scaled by the client's mean share. The official code's adversarial student
  term has weight `ensemble_beta` = 0 in all its configurations and is left
  out.

  Args:
    generator: generator state.
    heads_kernel: [K, feature_dim, C], the clients' head kernels (rows of
      absent clients are zero and carry zero weight).
    heads_bias: [K, C].
    counts: [K, C] smoothed label counts of the clients.
    labels: [B] int32 sampled labels.
    noise: [B, noise_dim].
    diversity_weight: eta.
    teacher_loss: one of `TEACHER_LOSSES`.
  """
  if teacher_loss not in TEACHER_LOSSES:
    raise ValueError(f'teacher_loss must be one of {TEACHER_LOSSES}; got '
                     f'{teacher_loss!r}.')
  num_classes = tf.shape(counts)[1]
  features = generate(
      generator, noise, tf.one_hot(labels, num_classes), training=True
  )
  logits = tf.einsum('bf,kfc->kbc', features, heads_kernel)
  logits += heads_bias[:, tf.newaxis, :]
  cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.broadcast_to(labels, tf.shape(logits)[:2]), logits=logits
  )
  weights = tf.gather(label_weights(counts), labels, axis=1)  # [K, B]
  if teacher_loss == 'per_sample':
    teacher = tf.reduce_mean(weights * cross_entropy, axis=1)
  else:
    teacher = (tf.reduce_mean(weights, axis=1)
               * tf.reduce_mean(cross_entropy, axis=1))
  return (tf.reduce_sum(teacher)
          + diversity_weight * diversity_loss(noise, features))


def train_generator(
    generator, optimizer, optimizer_state, heads_kernel, heads_bias, counts,
    *, steps: int, batch_size: int, noise_dim: int, weight_decay: float,
    diversity_weight: float, seed, teacher_loss: str = 'per_sample',
    noise: str = 'uniform', smoothing: float = 1.0,
):
  """`steps` optimizer steps on `ensemble_loss`; labels from `sample_labels`.

  The optimizer updates `generator['params']`; every step also updates the
  running statistics with its batch (`update_statistics`, before the step, as
  PyTorch's forward pass). Returns (generator, optimizer_state, losses
  [steps]). `seed` is an int32 tensor (the round), so each round draws its
  own labels and noise (`noise`: one of `NOISES`); `smoothing` is what the
  clients added to every count (1, or 0 unsmoothed).
  """
  num_classes = tf.shape(counts)[1]
  names = list(generator['params'])

  def step(i, generator, optimizer_state, losses):
    step_seed = tf.stack([seed, i])
    labels = sample_labels(counts, batch_size, step_seed, smoothing)
    z = draw_noise([batch_size, noise_dim], step_seed + 7, noise)
    params = list(generator['params'].values())
    with tf.GradientTape() as tape:
      tape.watch(params)
      loss = ensemble_loss(generator, heads_kernel, heads_bias, counts, labels,
                           z, diversity_weight, teacher_loss)
    gradients = tape.gradient(loss, params)
    # Coupled L2 weight decay, as torch.optim.Adam(weight_decay=...).
    gradients = [g + weight_decay * w for g, w in zip(gradients, params)]
    optimizer_state, updated = optimizer.next(
        optimizer_state, tuple(params), tuple(gradients)
    )
    generator = collections.OrderedDict(
        update_statistics(generator, z, tf.one_hot(labels, num_classes)),
        params=collections.OrderedDict(zip(names, updated)),
    )
    return i + 1, generator, optimizer_state, losses.write(i, loss)

  _, generator, optimizer_state, losses = tf.while_loop(
      lambda i, *_: i < steps,
      step,
      (tf.constant(0), generator, optimizer_state,
       tf.TensorArray(tf.float32, size=steps)),
  )
  return generator, optimizer_state, losses.stack()


def client_seeds(round_num, batch_number, student_logits,
                 client_draws: str = 'own') -> tf.Tensor:
  """[3, 2] seeds for a client batch's draws.

  (round, batch number) folded with a fingerprint of the batch: clients have
  no id inside a TFF computation, so the fingerprint makes clients with
  different data draw differently, while the same flags still give the same
  numbers. The fingerprint is of the student's logits, a function of the
  batch's inputs and the client's weights (a `DistillationFn` does not see
  the inputs). With `client_draws='shared'`, (round, batch number) alone:
  every client's n-th batch of a round draws the same.
  """
  if client_draws == 'shared':
    return tf.random.experimental.stateless_split(
        tf.cast(tf.stack([round_num, batch_number]), tf.int64), 3)
  fingerprint = tf.fingerprint(
      tf.reshape(tf.stop_gradient(student_logits), [1, -1])
  )[0]
  seed = tf.random.experimental.stateless_fold_in(
      tf.stack([round_num, batch_number]), tf.bitcast(fingerprint, tf.int64)
  )
  return tf.random.experimental.stateless_split(seed, 3)


def make_client_loss(
    head, counter: tf.Variable, *, num_classes: int, noise_dim: int,
    alpha: float, beta: float, decay: float, noise: str = 'uniform',
    client_batchnorm: str = 'running', client_draws: str = 'own',
    sampled_labels: str = 'uniform',
):
  """FedGen's client regularizer, a `local_training.DistillationFn`.

  alpha_t * CE(head(G(z', y_hat)), y_hat) + beta_t * KL(softmax(head(G(z, y)))
  || softmax(model(x))), with y the batch labels, y_hat uniform over all
  labels (the official `np.random.choice(available_labels, ...)`: every
  label of the federation's data), z, z' uniform on [0, 1), G in eval mode
  (running statistics), alpha_t = max(1e-4, alpha * decay^t) (beta_t
  likewise), and no regularizer in round 0 (the generator is untrained), as
  in the official code. The official code draws `gen_batch_size` y_hat and
  scales their CE by gen_batch_size / batch_size; we draw as many as the
  batch has (the same at its defaults, 32 and 32). `extra` is the broadcast
  (`generator` and `round` are used); `head` is the student's head layer
  (gradients reach it through the generated features; the generator is
  frozen); `counter` numbers the batches, which `client_seeds` folds with the
  batch's fingerprint. `noise`, `client_batchnorm`, `client_draws` and
  `sampled_labels` are the `ABLATIONS`; with `sampled_labels=
  'label_distribution'`, `extra['label_probs']` is the broadcast p(y).
  """
  check_options(noise=noise, client_batchnorm=client_batchnorm,
                client_draws=client_draws, sampled_labels=sampled_labels)
  batch_statistics = client_batchnorm == 'batch'

  def loss_fn(labels, student_logits, teacher_logits, extra):
    del teacher_logits  # FedGen distills from the generator, not a model.
    round_num = extra['round']
    t = tf.cast(round_num, tf.float32)
    # The official floor of 1e-4 applies to positive weights; 0 switches a
    # term off (alpha = beta = 0 is FedAvg).
    alpha_t = tf.maximum(1e-4, alpha * decay**t) if alpha > 0 else 0.0
    beta_t = tf.maximum(1e-4, beta * decay**t) if beta > 0 else 0.0
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    batch = tf.shape(labels)[0]
    seeds = client_seeds(round_num, counter.assign_add(1), student_logits,
                         client_draws)
    generator = tf.nest.map_structure(tf.stop_gradient, extra['generator'])

    z = draw_noise([batch, noise_dim], seeds[0], noise)
    target = tf.stop_gradient(tf.nn.softmax(head(generate(
        generator, z, tf.one_hot(labels, num_classes),
        training=batch_statistics
    ))))
    latent_loss = tf.reduce_mean(tf.reduce_sum(
        target * (tf.math.log(target + 1e-12)
                  - tf.nn.log_softmax(student_logits)), axis=-1
    ))

    if sampled_labels == 'uniform':
      sampled = tf.random.stateless_uniform(
          [batch], seeds[1], maxval=num_classes, dtype=tf.int32
      )
    else:
      sampled = tf.cast(tf.random.stateless_categorical(
          tf.math.log(extra['label_probs'])[tf.newaxis], batch, seeds[1]
      )[0], tf.int32)
    z = draw_noise([batch, noise_dim], seeds[2], noise)
    sampled_logits = head(generate(
        generator, z, tf.one_hot(sampled, num_classes),
        training=batch_statistics
    ))
    teacher_loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=sampled, logits=sampled_logits
        )
    )
    active = tf.cast(round_num > 0, tf.float32)
    return active * (alpha_t * teacher_loss + beta_t * latent_loss)

  return loss_fn
