"""FedAUX's certainty scores: how close each distillation input is to a client.

Sattler et al., "FedAUX: Leveraging Unlabeled Auxiliary Data in Federated
Learning", IEEE TNNLS 2021; official code `fedl-repo/fedaux`
(code/fl_devices.py, `Client.extract_features_and_compute_scores`). Each
client fits an L2-regularized logistic regression separating the features of
its own data from the features of held-out auxiliary data, all divided by ONE
scalar, the largest row norm over both (the queries are divided by the same
scalar, not clipped), and scores every distillation input x with
s(x) = P(local | x) + 1e-8. The server's teacher is the s-weighted mean of
the clients' logits (`tff_kd.aggregators.LogitFusionFactory`).

As the official `LogisticRegression(penalty='l2', C=1 / lambda,
max_iter=1000)` (scikit-learn, with an unpenalized intercept), the regression
minimizes the SUM of the n per-example log losses + (lambda / 2) ||w||^2,
lambda = 0.01. We solve it by Newton's method with a backtracking line
search in float64, in one `tf.while_loop` (about 10 steps to 1e-6; the weak
regularization makes first-order methods need thousands). The official
L-BFGS stops at scikit-learn's default tolerance 1e-4, so its coefficients
are a few percent off the exact optimum we reach.

Optional differential privacy, as the official code: after fitting, Gaussian
noise of variance sigma^2 = 2 ln(1.25 / delta) s^2 / epsilon^2, with
sensitivity s = 2 / (n lambda), on every weight and the intercept (n: local
plus auxiliary examples). The official code draws it from NumPy's global
generator; we draw it statelessly from a seed. Off by default: at our data
sizes (n ~ 100) and the paper's epsilon = 0.1, delta = 1e-5, sigma ~ 100
swamps the regression (||w|| ~ 10-30), and the scores become noise.
"""

import math
from typing import Optional

import tensorflow as tf

# Added to every score, as the official code (no input has weight 0).
SCORE_OFFSET = 1e-8


def fit_logistic_regression(
    features: tf.Tensor,
    labels: tf.Tensor,
    *,
    l2: float,
    steps: int,
    epsilon: Optional[float] = None,
    delta: float = 1e-5,
    seed: Optional[tf.Tensor] = None,
) -> tuple[tf.Tensor, tf.Tensor]:
  """Weights [d] and intercept of the L2-regularized logistic regression.

  Minimizes sum_i log-loss_i + (l2 / 2) ||w||^2 (scikit-learn's
  `LogisticRegression(C=1 / l2)`).

  Args:
    features: [n, d] float32 with every row norm <= 1.
    labels: [n] float32 in {0, 1}.
    l2: the L2 weight lambda > 0 (FedAUX: 0.01).
    steps: the most Newton steps (>= 1); it stops earlier once converged.
    epsilon: with a value > 0, adds the Gaussian mechanism's noise for
      (epsilon, delta)-differential privacy to the weights and intercept.
    delta: in (0, 1), with `epsilon`.
    seed: int32 [2] stateless seed of the noise, needed with `epsilon`.
  """
  if not l2 > 0:
    raise ValueError(f'l2 must be > 0; got {l2}.')
  if steps < 1:
    raise ValueError(f'steps must be >= 1; got {steps}.')
  if epsilon is not None:
    if not epsilon > 0:
      raise ValueError(f'epsilon must be > 0 or None; got {epsilon}.')
    if not 0 < delta < 1:
      raise ValueError(f'delta must be in (0, 1); got {delta}.')
    if seed is None:
      raise ValueError('seed must be given with epsilon; got None.')
  x = tf.cast(features, tf.float64)
  y = tf.cast(labels, tf.float64)
  n = tf.shape(x)[0]
  d = tf.shape(x)[1]
  x = tf.concat([x, tf.ones([n, 1], tf.float64)], 1)  # The intercept.
  penalty = tf.concat(
      [tf.fill([d], tf.constant(l2, tf.float64)), tf.zeros([1], tf.float64)],
      0)
  # Keeps the Hessian's Cholesky factor defined when every example is
  # saturated (p(1 - p) = 0); the fixed point is unchanged.
  jitter = 1e-8 * tf.eye(d + 1, dtype=tf.float64)

  def objective(theta):
    z = tf.linalg.matvec(x, theta)
    return (tf.reduce_sum(tf.nn.softplus(z) - y * z)
            + 0.5 * tf.reduce_sum(penalty * tf.square(theta)))

  def step(i, theta, converged):
    del converged
    p = tf.sigmoid(tf.linalg.matvec(x, theta))
    gradient = tf.linalg.matvec(x, p - y, transpose_a=True) + penalty * theta
    hessian = (tf.matmul(x * (p * (1 - p))[:, tf.newaxis], x, transpose_a=True)
               + tf.linalg.diag(penalty) + jitter)
    direction = -tf.linalg.cholesky_solve(
        tf.linalg.cholesky(hessian), gradient[:, tf.newaxis])[:, 0]
    decrement = -tf.reduce_sum(gradient * direction)  # Newton decrement^2.
    start = objective(theta)
    # Backtracking (Armijo): halve the step until the objective falls enough.
    t = tf.while_loop(
        lambda t: tf.logical_and(
            objective(theta + t * direction) > start - 0.25 * t * decrement,
            t > 1e-10),
        lambda t: (t / 2,), (tf.constant(1.0, tf.float64),))[0]
    return i + 1, theta + t * direction, decrement < 1e-10

  _, theta, _ = tf.while_loop(
      lambda i, _, converged: tf.logical_and(
          i < steps, tf.logical_not(converged)),
      step,
      (tf.constant(0), tf.zeros([d + 1], tf.float64), tf.constant(False)))
  theta = tf.cast(theta, tf.float32)
  if epsilon is not None:
    sensitivity = 2.0 / (tf.cast(n, tf.float32) * l2)
    sigma = math.sqrt(2 * math.log(1.25 / delta)) * sensitivity / epsilon
    theta += sigma * tf.random.stateless_normal([d + 1], seed)
  return theta[:-1], theta[-1]


def certainty_scores(
    local_features: tf.Tensor,
    auxiliary_features: tf.Tensor,
    query_features: tf.Tensor,
    *,
    l2: float = 0.01,
    steps: int = 50,
    epsilon: Optional[float] = None,
    delta: float = 1e-5,
    seed: Optional[tf.Tensor] = None,
) -> tf.Tensor:
  """P(local | x) + 1e-8 for each query row: FedAUX's s_k(x), [num_queries].

  Args:
    local_features: [n_local, d] features of the client's data.
    auxiliary_features: [n_aux, d] features of the held-out auxiliary data.
    query_features: [num_queries, d] features of the distillation inputs.
    l2, steps, epsilon, delta, seed: as `fit_logistic_regression` (the
      official defaults with privacy: epsilon = 0.1, delta = 1e-5).
  """
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
  w, b = fit_logistic_regression(features, labels, l2=l2, steps=steps,
                                 epsilon=epsilon, delta=delta, seed=seed)
  return tf.sigmoid(tf.linalg.matvec(query_features / scale, w) + b) + (
      SCORE_OFFSET)
