"""FedAUX's certainty scores: the regression matches scikit-learn's, the
privacy noise matches the Gaussian mechanism's formula."""

import math

import numpy as np
from sklearn import linear_model
import tensorflow as tf

from tff_kd import certainty


def _data(n=60, d=5, seed=0):
  """Two overlapping classes, rows of norm <= 1 (the largest exactly 1)."""
  rng = np.random.default_rng(seed)
  y = (rng.uniform(size=n) < 0.5).astype(np.float32)
  x = rng.normal(size=(n, d)) + 1.5 * (2 * y[:, None] - 1) * rng.normal(size=d)
  x /= np.linalg.norm(x, axis=1).max()
  return x.astype(np.float32), y


class CertaintyTest(tf.test.TestCase):

  def test_regression_matches_sklearn_at_the_official_setting(self):
    # fl_devices.py: LogisticRegression(penalty='l2', C=1/lambda_reg,
    # max_iter=1000), lambda_reg = 0.01. Its L-BFGS stops at tol 1e-4, a few
    # percent off the optimum; the probabilities agree closely.
    x, y = _data()
    reference = linear_model.LogisticRegression(
        penalty='l2', C=1 / 0.01, max_iter=1000).fit(x, y)
    w, b = certainty.fit_logistic_regression(x, y, l2=0.01, steps=50)
    scale = np.linalg.norm(reference.coef_[0])
    self.assertGreater(scale, 5.0)  # Weakly regularized: large weights.
    self.assertAllClose(w, reference.coef_[0], atol=0.02 * scale)
    self.assertAllClose(b, reference.intercept_[0], atol=0.02 * scale)
    self.assertAllClose(tf.sigmoid(x @ w.numpy() + b),
                        reference.predict_proba(x)[:, 1], atol=5e-3)

  def test_regression_matches_a_converged_sklearn(self):
    x, y = _data(n=200, d=20, seed=1)
    reference = linear_model.LogisticRegression(
        C=1 / 0.01, tol=1e-12, max_iter=100_000).fit(x, y)
    w, b = certainty.fit_logistic_regression(x, y, l2=0.01, steps=50)
    self.assertAllClose(w, reference.coef_[0], atol=1e-3)
    self.assertAllClose(b, reference.intercept_[0], atol=1e-3)

  def test_privacy_noise_follows_the_gaussian_mechanism(self):
    x, y = _data()
    epsilon, delta, seed = 0.5, 1e-3, tf.constant([3, 4])
    w, b = certainty.fit_logistic_regression(x, y, l2=0.01, steps=50)
    noisy_w, noisy_b = certainty.fit_logistic_regression(
        x, y, l2=0.01, steps=50, epsilon=epsilon, delta=delta, seed=seed)
    # fl_devices.py: sensitivity = 2 / (n lambda),
    # sigma^2 = 2 ln(1.25 / delta) sensitivity^2 / epsilon^2.
    sigma = math.sqrt(2 * math.log(1.25 / delta)
                      * (2 / (len(x) * 0.01))**2 / epsilon**2)
    noise = tf.random.stateless_normal([x.shape[1] + 1], seed)
    self.assertAllClose((noisy_w - w) / sigma, noise[:-1], atol=1e-4)
    self.assertAllClose((noisy_b - b) / sigma, noise[-1], atol=1e-4)

  def test_scores_are_high_near_local_data_and_low_near_auxiliary(self):
    rng = np.random.default_rng(1)
    local = rng.normal(loc=3.0, size=(50, 4)).astype(np.float32)
    auxiliary = rng.normal(loc=-3.0, size=(50, 4)).astype(np.float32)
    queries = np.stack([np.full(4, 3.0), np.full(4, -3.0)]).astype(np.float32)
    scores = certainty.certainty_scores(local, auxiliary, queries).numpy()
    self.assertGreater(scores[0], 0.8)
    self.assertLess(scores[1], 0.2)
    self.assertGreater(scores[1], 0.0)  # + 1e-8.

  def test_scores_use_features_normalized_by_the_largest_norm(self):
    rng = np.random.default_rng(2)
    local = rng.normal(loc=1.0, size=(30, 3)).astype(np.float32)
    auxiliary = rng.normal(loc=-1.0, size=(20, 3)).astype(np.float32)
    queries = 3 * rng.normal(size=(7, 3)).astype(np.float32)  # Not clipped.
    scale = max(np.linalg.norm(local, axis=1).max(),
                np.linalg.norm(auxiliary, axis=1).max())
    x = np.concatenate([local, auxiliary]) / scale
    y = np.concatenate([np.ones(30), np.zeros(20)])
    reference = linear_model.LogisticRegression(
        C=1 / 0.01, tol=1e-12, max_iter=100_000).fit(x, y)
    expected = reference.predict_proba(queries / scale)[:, 1] + 1e-8
    scores = certainty.certainty_scores(local, auxiliary, queries)
    self.assertAllClose(scores, expected, atol=1e-5)

  def test_rejects_bad_arguments(self):
    x, y = _data()
    with self.assertRaisesRegex(ValueError, 'l2 must be > 0; got 0'):
      certainty.fit_logistic_regression(x, y, l2=0, steps=5)
    with self.assertRaisesRegex(ValueError, 'epsilon must be > 0 or None; '
                                'got -1'):
      certainty.fit_logistic_regression(x, y, l2=0.01, steps=5, epsilon=-1,
                                        seed=tf.constant([0, 0]))
    with self.assertRaisesRegex(ValueError, 'delta must be in'):
      certainty.fit_logistic_regression(x, y, l2=0.01, steps=5, epsilon=1,
                                        delta=1.0, seed=tf.constant([0, 0]))
    with self.assertRaisesRegex(ValueError, 'seed must be given'):
      certainty.fit_logistic_regression(x, y, l2=0.01, steps=5, epsilon=1)


if __name__ == '__main__':
  tf.test.main()
