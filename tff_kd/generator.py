"""FedGen's conditional generator and its losses, in pure TensorFlow.

Zhu, Hong, Zhou, "Data-Free Knowledge Distillation for Heterogeneous
Federated Learning", ICML 2021 (official code `zhuangdizhu/FedGen`).

The generator G(z, y) maps noise z (`noise_dim`) concatenated with one-hot y
through Linear -> BatchNorm (batch statistics) -> ReLU -> Linear to the input
size of the classifier head. Its parameters are an explicit `OrderedDict` of
tensors (no Keras model), so the same function runs on the server, where it is
trained, and on the clients, where it is a frozen regularizer.

No `tff` import here.
"""

import collections

import tensorflow as tf


def init_generator(
    *, noise_dim: int, num_classes: int, hidden: int, feature_dim: int,
    seed: int,
) -> collections.OrderedDict:
  """Glorot-uniform weights, zero biases, unit BatchNorm scale."""

  def glorot(shape, k):
    limit = tf.sqrt(6.0 / float(shape[0] + shape[1]))
    return tf.random.stateless_uniform(
        shape, seed=[seed, k], minval=-limit, maxval=limit
    )

  return collections.OrderedDict(
      w1=glorot([noise_dim + num_classes, hidden], 1),
      b1=tf.zeros([hidden]),
      gamma=tf.ones([hidden]),
      beta=tf.zeros([hidden]),
      w2=glorot([hidden, feature_dim], 2),
      b2=tf.zeros([feature_dim]),
  )


def generate(params, noise: tf.Tensor, labels_one_hot: tf.Tensor) -> tf.Tensor:
  """Features G(z, y) for a batch: [batch, feature_dim]."""
  h = tf.concat([noise, labels_one_hot], axis=1) @ params['w1'] + params['b1']
  mean, variance = tf.nn.moments(h, axes=[0])
  h = tf.nn.batch_normalization(
      h, mean, variance, params['beta'], params['gamma'], 1e-5
  )
  return tf.nn.relu(h) @ params['w2'] + params['b2']


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
  """w[k, y] = n_{k,y} / sum_k n_{k,y}: client k's share of label y."""
  return tf.math.divide_no_nan(
      counts, tf.reduce_sum(counts, axis=0, keepdims=True)
  )


def ensemble_loss(
    params, heads_kernel, heads_bias, counts, labels, noise, diversity_weight
) -> tf.Tensor:
  """The generator's objective against the sampled clients' heads.

  sum_k mean_b w[k, y_b] CE(head_k(G(z_b, y_b)), y_b) + eta * diversity.

  Args:
    params: generator parameters.
    heads_kernel: [K, feature_dim, C], the clients' head kernels (rows of
      absent clients are zero and carry zero weight).
    heads_bias: [K, C].
    counts: [K, C] label counts of the clients.
    labels: [B] int32 sampled labels.
    noise: [B, noise_dim].
    diversity_weight: eta.
  """
  num_classes = tf.shape(counts)[1]
  features = generate(params, noise, tf.one_hot(labels, num_classes))
  logits = tf.einsum('bf,kfc->kbc', features, heads_kernel)
  logits += heads_bias[:, tf.newaxis, :]
  cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.broadcast_to(labels, tf.shape(logits)[:2]), logits=logits
  )
  weights = tf.gather(label_weights(counts), labels, axis=1)  # [K, B]
  teacher_loss = tf.reduce_sum(tf.reduce_mean(weights * cross_entropy, axis=1))
  return teacher_loss + diversity_weight * diversity_loss(noise, features)


def train_generator(
    params, optimizer, optimizer_state, heads_kernel, heads_bias, counts, *,
    steps: int, batch_size: int, noise_dim: int, weight_decay: float,
    diversity_weight: float, seed,
):
  """`steps` optimizer steps on `ensemble_loss`; labels ~ labels present.

  Returns (params, optimizer_state, losses [steps]). `seed` is an int32
  tensor (the round), so each round draws its own labels and noise.
  """
  present = tf.reduce_sum(counts, axis=0) > 0
  label_logits = tf.where(present, 0.0, -1e9)[tf.newaxis]
  names = list(params)

  def step(i, params, optimizer_state, losses):
    step_seed = tf.stack([seed, i])
    labels = tf.cast(
        tf.random.stateless_categorical(label_logits, batch_size, step_seed)[0],
        tf.int32,
    )
    noise = tf.random.stateless_normal([batch_size, noise_dim], step_seed + 7)
    with tf.GradientTape() as tape:
      tape.watch(list(params.values()))
      loss = ensemble_loss(params, heads_kernel, heads_bias, counts, labels,
                           noise, diversity_weight)
    gradients = tape.gradient(loss, list(params.values()))
    # Coupled L2 weight decay, as torch.optim.Adam(weight_decay=...).
    gradients = [g + weight_decay * w for g, w in zip(gradients, params.values())]
    optimizer_state, updated = optimizer.next(
        optimizer_state, tuple(params.values()), tuple(gradients)
    )
    params = collections.OrderedDict(zip(names, updated))
    return i + 1, params, optimizer_state, losses.write(i, loss)

  _, params, optimizer_state, losses = tf.while_loop(
      lambda i, *_: i < steps,
      step,
      (tf.constant(0), params, optimizer_state,
       tf.TensorArray(tf.float32, size=steps)),
  )
  return params, optimizer_state, losses.stack()


def make_client_loss(
    head, counter: tf.Variable, *, num_classes: int, noise_dim: int,
    alpha: float, beta: float, decay: float,
):
  """FedGen's client regularizer, a `local_training.DistillationFn`.

  alpha_t * CE(head(G(z, y_hat)), y_hat) + beta_t * KL(softmax(head(G(z, y)))
  || softmax(model(x))), with y the batch labels, y_hat ~ the broadcast label
  distribution, alpha_t = max(1e-4, alpha * decay^t) (beta_t likewise), and
  no regularizer in round 0 (the generator is untrained), as in the official
  code. `extra` is the broadcast `OrderedDict(generator=..., label_probs=...,
  round=...)`; `head` is the student's head layer (gradients reach it
  through the generated features; the generator is frozen); `counter`
  numbers the batches so every batch draws fresh, seeded noise.
  """

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
    seed = tf.stack([round_num, counter.assign_add(1)])
    generator = tf.nest.map_structure(tf.stop_gradient, extra['generator'])

    noise = tf.random.stateless_normal([batch, noise_dim], seed)
    target = tf.stop_gradient(tf.nn.softmax(head(
        generate(generator, noise, tf.one_hot(labels, num_classes))
    )))
    latent_loss = tf.reduce_mean(tf.reduce_sum(
        target * (tf.math.log(target + 1e-12)
                  - tf.nn.log_softmax(student_logits)), axis=-1
    ))

    sampled = tf.cast(tf.random.stateless_categorical(
        tf.math.log(extra['label_probs'])[tf.newaxis], batch, seed + 1
    )[0], tf.int32)
    noise = tf.random.stateless_normal([batch, noise_dim], seed + 2)
    sampled_logits = head(
        generate(generator, noise, tf.one_hot(sampled, num_classes))
    )
    teacher_loss = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=sampled, logits=sampled_logits
        )
    )
    active = tf.cast(round_num > 0, tf.float32)
    return active * (alpha_t * teacher_loss + beta_t * latent_loss)

  return loss_fn
