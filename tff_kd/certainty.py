"""FedAUX's certainty scores: how close each distillation input is to a client.

Sattler et al., "FedAUX: Leveraging Unlabeled Auxiliary Data in Federated
Learning", IEEE TNNLS 2021. Each client fits an L2-regularized logistic
regression separating the features of its own data (label 1) from the features
of held-out auxiliary data (label 0), with features normalized by their largest
norm, and scores every distillation input x with s(x) = P(local | x). The
server's teacher is the s-weighted mean of the clients' logits
(`tff_kd.aggregators.LogitFusionFactory`).

The regression minimizes mean binary cross-entropy + (l2 / 2) ||w||^2 (the
intercept is not penalized; scikit-learn's `LogisticRegression(C=1 / (l2 *
n))` minimizes the same objective) by Nesterov's accelerated gradient descent
with the step 1 / L of the objective's smoothness bound, in one `tf.while_loop`.
The paper's optional differential-privacy noise on the regression weights is
not implemented.
"""

import math

import tensorflow as tf


def fit_logistic_regression(
    features: tf.Tensor, labels: tf.Tensor, *, l2: float, steps: int
) -> tuple[tf.Tensor, tf.Tensor]:
  """Weights [d] and intercept of the L2-regularized logistic regression.

  Args:
    features: [n, d] float32 with every row norm <= 1.
    labels: [n] float32 in {0, 1}.
    l2: the L2 weight lambda > 0 (FedAUX: 0.01).
    steps: accelerated gradient steps.
  """
  features = tf.convert_to_tensor(features, tf.float32)
  labels = tf.convert_to_tensor(labels, tf.float32)
  # Smoothness of the mean logistic loss for rows of norm <= 1 with an
  # intercept: 0.25 * max ||(x, 1)||^2 <= 0.5; plus l2.
  smoothness = 0.5 + l2
  momentum = (math.sqrt(smoothness) - math.sqrt(l2)) / (
      math.sqrt(smoothness) + math.sqrt(l2)
  )
  n = tf.cast(tf.shape(features)[0], tf.float32)

  def gradient(w, b):
    error = tf.sigmoid(tf.linalg.matvec(features, w) + b) - labels
    return (
        tf.linalg.matvec(features, error, transpose_a=True) / n + l2 * w,
        tf.reduce_sum(error) / n,
    )

  def step(i, w, b, w_prev, b_prev):
    # Nesterov: gradient at the extrapolated point.
    w_look = w + momentum * (w - w_prev)
    b_look = b + momentum * (b - b_prev)
    grad_w, grad_b = gradient(w_look, b_look)
    return (i + 1, w_look - grad_w / smoothness, b_look - grad_b / smoothness,
            w, b)

  w0 = tf.zeros([tf.shape(features)[1]])
  b0 = tf.constant(0.0)
  _, w, b, _, _ = tf.while_loop(
      lambda i, *_: i < steps, step, (tf.constant(0), w0, b0, w0, b0)
  )
  return w, b


def certainty_scores(
    local_features: tf.Tensor,
    auxiliary_features: tf.Tensor,
    query_features: tf.Tensor,
    *,
    l2: float = 0.01,
    steps: int = 300,
) -> tf.Tensor:
  """P(local | x) for each query row: FedAUX's s_k(x), [num_queries]."""
  scale = tf.maximum(
      tf.reduce_max(tf.norm(local_features, axis=1)),
      tf.reduce_max(tf.norm(auxiliary_features, axis=1)),
  )
  scale = tf.maximum(scale, 1e-12)
  features = tf.concat([local_features, auxiliary_features], 0) / scale
  labels = tf.concat(
      [tf.ones(tf.shape(local_features)[:1]),
       tf.zeros(tf.shape(auxiliary_features)[:1])], 0
  )
  w, b = fit_logistic_regression(features, labels, l2=l2, steps=steps)
  return tf.sigmoid(tf.linalg.matvec(query_features / scale, w) + b)
