"""Knowledge-distillation losses in pure TensorFlow.

The guide's KD loss (Hinton et al. 2015; Mora et al., "Knowledge Distillation
for Federated Learning: a Practical Guide"):

  L = (1 - lambda) CE(q_S, y) + lambda * tau^2 * KL(q_T,tau || q_S,tau),

with q_tau = softmax(z / tau). The teacher distribution q_T is the reference
distribution of the KL divergence, as in Hinton et al. and in every official
implementation (PyTorch's `KLDivLoss(log q_S, q_T)`); the guide's
`L_KL(q_S, q_T)` lists the same two arguments, not KL(q_S || q_T). The tau^2
factor keeps the gradient scale of the soft term independent of tau.

No `tff` import here: these functions run inside client and server
`tf.function`s.
"""

import tensorflow as tf


def softmax_with_temperature(logits: tf.Tensor, temperature: float) -> tf.Tensor:
  """Returns softmax(logits / temperature) along the last axis."""
  return tf.nn.softmax(logits / temperature, axis=-1)


def kl_divergence(
    teacher_logits: tf.Tensor,
    student_logits: tf.Tensor,
    temperature: float = 1.0,
) -> tf.Tensor:
  """Per-example KL(q_T,tau || q_S,tau) computed from logits.

  Args:
    teacher_logits: [batch, classes] logits of the teacher (the reference).
    student_logits: [batch, classes] logits of the student.
    temperature: softmax temperature tau > 0.

  Returns:
    A [batch] tensor: sum_c q_T,c (log q_T,c - log q_S,c).
  """
  teacher_log_probs = tf.nn.log_softmax(teacher_logits / temperature, axis=-1)
  student_log_probs = tf.nn.log_softmax(student_logits / temperature, axis=-1)
  return tf.reduce_sum(
      tf.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs),
      axis=-1,
  )


def distillation_loss(
    teacher_logits: tf.Tensor,
    student_logits: tf.Tensor,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = True,
) -> tf.Tensor:
  """Batch mean of tau^2 * KL(q_T,tau || q_S,tau) (without tau^2 if asked).

  FedDF's official code omits the tau^2 factor; pass
  `scale_by_temperature_squared=False` to match it.
  """
  kl = tf.reduce_mean(kl_divergence(teacher_logits, student_logits, temperature))
  if scale_by_temperature_squared:
    kl *= temperature**2
  return kl


def kd_loss(
    labels: tf.Tensor,
    student_logits: tf.Tensor,
    teacher_logits: tf.Tensor,
    kd_weight: float,
    temperature: float = 1.0,
) -> tf.Tensor:
  """The guide's KD loss (1 - lambda) CE + lambda tau^2 KL, averaged over the batch.

  Args:
    labels: [batch] integer labels.
    student_logits: [batch, classes].
    teacher_logits: [batch, classes].
    kd_weight: lambda in [0, 1].
    temperature: tau > 0.

  Returns:
    A scalar loss.
  """
  cross_entropy = tf.reduce_mean(
      tf.keras.losses.sparse_categorical_crossentropy(
          labels, student_logits, from_logits=True
      )
  )
  return (1.0 - kd_weight) * cross_entropy + kd_weight * distillation_loss(
      teacher_logits, student_logits, temperature
  )


def not_true_logits(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
  """Drops the true-class column: [batch, C] logits -> [batch, C - 1]."""
  num_classes = tf.shape(logits)[-1]
  keep = tf.not_equal(tf.one_hot(labels, num_classes), 1.0)
  return tf.reshape(tf.boolean_mask(logits, keep), [-1, num_classes - 1])


def not_true_distillation_loss(
    labels: tf.Tensor,
    student_logits: tf.Tensor,
    teacher_logits: tf.Tensor,
    temperature: float = 1.0,
) -> tf.Tensor:
  """FedNTD's not-true distillation (Lee et al., NeurIPS 2022).

  tau^2 * mean_batch KL(q_T,tau || q_S,tau), both softmaxes taken over the
  not-true classes only (the true-class logit removed from teacher and
  student), as in the official code's `NTD_Loss._ntd_loss`.
  """
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
  return distillation_loss(
      not_true_logits(teacher_logits, labels),
      not_true_logits(student_logits, labels),
      temperature,
  )


def selective_distillation_loss(
    labels: tf.Tensor,
    student_logits: tf.Tensor,
    teacher_logits: tf.Tensor,
    class_credibility: tf.Tensor,
    temperature: float = 1.0,
) -> tf.Tensor:
  """FedSSD's credibility-weighted self-distillation term.

  tau^2 * mean_i w_i KL(q_T,tau(x_i) || q_S,tau(x_i)) with the sample weight
  w_i = c[y_i] * q_T(y_i | x_i): c is the class-wise credibility of the global
  (teacher) model (its per-class accuracy on the server's validation split)
  and q_T(y_i | x_i) (at tau = 1) its confidence in the true label, so
  knowledge of classes, and of samples, the global model gets wrong is
  distilled less (He, Chen, Yang, Yu, Huang, Gu, "Learning Critically:
  Selective Self Distillation in Federated Learning on Non-IID Data"; no
  official code: this is our reading of the paper's abstract and of FedCAD,
  see docs/FIDELITY.md).
  """
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
  true_class_confidence = tf.gather(
      tf.nn.softmax(teacher_logits, axis=-1), labels, batch_dims=1
  )
  weights = tf.gather(class_credibility, labels) * true_class_confidence
  kl = kl_divergence(teacher_logits, student_logits, temperature)
  return temperature**2 * tf.reduce_mean(tf.stop_gradient(weights) * kl)


def per_label_distillation_loss(
    labels: tf.Tensor,
    student_logits: tf.Tensor,
    label_probs: tf.Tensor,
    label_mask: tf.Tensor,
    temperature: float = 1.0,
) -> tf.Tensor:
  """FD's term: distillation toward the global mean output of each label.

  tau^2 * mean_i m[y_i] KL(p[y_i] || softmax(z_i / tau)), p [C, C] the
  per-label teacher distributions (FD averages softmax outputs, not logits)
  and m [C] 1 for labels with a teacher, 0 for the others (their examples add
  nothing). The paper's regularizer is the cross-entropy of the student's
  output against p[y_i], whose gradient this KL shares.
  """
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
  teacher = tf.gather(label_probs, labels)
  student_log_probs = tf.nn.log_softmax(student_logits / temperature, axis=-1)
  kl = tf.reduce_sum(
      teacher * (tf.math.log(tf.maximum(teacher, 1e-12)) - student_log_probs),
      axis=-1)
  return temperature**2 * tf.reduce_mean(tf.gather(label_mask, labels) * kl)


def add_per_label_outputs(
    totals: tuple[tf.Tensor, tf.Tensor], labels: tf.Tensor,
    logits: tf.Tensor, temperature: float = 1.0,
) -> tuple[tf.Tensor, tf.Tensor]:
  """FD's per-label statistics of a training batch, added to `totals`.

  `totals` is `(sums [L, L], counts [L])`: per label y the sum of the
  outputs softmax(z / tau) of the examples labelled y, and their number.
  `local_training`'s `observe_fn` for FD (the outputs of each step's own
  forward pass).
  """
  sums, counts = totals
  num_classes = sums.shape[0]
  labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
  return (
      sums + tf.math.unsorted_segment_sum(
          tf.nn.softmax(logits / temperature), labels, num_classes),
      counts + tf.math.unsorted_segment_sum(
          tf.ones_like(labels, tf.float32), labels, num_classes),
  )


def per_label_teacher(
    means: tf.Tensor, reports: tf.Tensor, own_means: tf.Tensor,
    own_counts: tf.Tensor, exclude_own: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
  """FD's teacher t[y] from the global per-label means (Jeong et al.).

  Args:
    means: [L, L], per label the mean of the clients' per-label outputs.
    reports: [L], how many clients reported each label.
    own_means: [L, L], the client's own upload of that round.
    own_counts: [L], its counts (> 0: it reported the label).
    exclude_own: scalar bool: remove the client's own contribution (the
      paper's F-hat, the other clients' mean).

  Returns:
    `(teacher [L, L], mask [L])`: t[y] = (N[y] g[y] - p[y]) / (N[y] - 1) when
    excluding, else g[y]; `mask` 1 for labels some (other) client reported,
    whose rows are the teacher, 0 (and a zero row) for the others.
  """
  total = means * reports[:, None]
  total_reports = reports
  reported = tf.cast(own_counts > 0, tf.float32) * tf.cast(
      exclude_own, tf.float32)
  total -= own_means * reported[:, None]
  total_reports -= reported
  # Reports are sums of whole numbers: > 0.5 means at least one.
  mask = tf.cast(total_reports > 0.5, tf.float32)
  teacher = tf.math.divide_no_nan(
      total, tf.maximum(total_reports, 0.0)[:, None]) * mask[:, None]
  return teacher, mask
