"""FedAUX's certainty scores: the regression matches scikit-learn's."""

import numpy as np
from sklearn import linear_model
import tensorflow as tf

from tff_kd import certainty


class CertaintyTest(tf.test.TestCase):

  def test_logistic_regression_matches_sklearn(self):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) + np.where(rng.uniform(size=(60, 1)) < .5, 1, -1)
    x /= np.linalg.norm(x, axis=1).max()
    y = (x @ rng.normal(size=5) + 0.3 * rng.normal(size=60) > 0).astype(float)
    l2 = 0.01
    reference = linear_model.LogisticRegression(
        C=1.0 / (l2 * len(x)), tol=1e-10, max_iter=10_000).fit(x, y)
    w, b = certainty.fit_logistic_regression(
        x.astype(np.float32), y.astype(np.float32), l2=l2, steps=2000)
    self.assertAllClose(w, reference.coef_[0], atol=2e-3)
    self.assertAllClose(b, reference.intercept_[0], atol=2e-3)

  def test_scores_are_high_near_local_data_and_low_near_auxiliary(self):
    rng = np.random.default_rng(1)
    local = rng.normal(loc=3.0, size=(50, 4)).astype(np.float32)
    auxiliary = rng.normal(loc=-3.0, size=(50, 4)).astype(np.float32)
    queries = np.stack([np.full(4, 3.0), np.full(4, -3.0)]).astype(np.float32)
    scores = certainty.certainty_scores(local, auxiliary, queries).numpy()
    self.assertGreater(scores[0], 0.8)
    self.assertLess(scores[1], 0.2)

  def test_scores_use_features_normalized_by_the_largest_norm(self):
    rng = np.random.default_rng(2)
    local = rng.normal(loc=1.0, size=(30, 3)).astype(np.float32)
    auxiliary = rng.normal(loc=-1.0, size=(20, 3)).astype(np.float32)
    queries = rng.normal(size=(7, 3)).astype(np.float32)
    scale = max(np.linalg.norm(local, axis=1).max(),
                np.linalg.norm(auxiliary, axis=1).max())
    x = np.concatenate([local, auxiliary]) / scale
    y = np.concatenate([np.ones(30), np.zeros(20)])
    reference = linear_model.LogisticRegression(
        C=1.0 / (0.01 * 50), tol=1e-10, max_iter=10_000).fit(x, y)
    expected = reference.predict_proba(queries / scale)[:, 1]
    scores = certainty.certainty_scores(local, auxiliary, queries, steps=2000)
    self.assertAllClose(scores, expected, atol=2e-3)


if __name__ == '__main__':
  tf.test.main()
