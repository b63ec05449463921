"""Checks the KD losses against a hand computation in numpy."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tff_kd import losses


def _np_softmax(z, tau):
  e = np.exp((z - z.max(axis=-1, keepdims=True)) / tau)
  return e / e.sum(axis=-1, keepdims=True)


class LossesTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.student = rng.normal(size=(4, 5)).astype(np.float32) * 3
    self.teacher = rng.normal(size=(4, 5)).astype(np.float32) * 3
    self.labels = np.array([0, 3, 4, 1], np.int32)

  @parameterized.parameters(0.5, 1.0, 4.0)
  def test_softmax_with_temperature(self, tau):
    self.assertAllClose(
        losses.softmax_with_temperature(self.student, tau),
        _np_softmax(self.student, tau),
        atol=1e-6,
    )

  @parameterized.parameters(1.0, 3.0)
  def test_kl_has_teacher_as_reference(self, tau):
    p = _np_softmax(self.teacher, tau)
    q = _np_softmax(self.student, tau)
    expected = (p * np.log(p / q)).sum(axis=-1)
    self.assertAllClose(
        losses.kl_divergence(self.teacher, self.student, tau),
        expected,
        rtol=1e-5,
        atol=1e-6,
    )
    reverse = (q * np.log(q / p)).sum(axis=-1)
    self.assertNotAllClose(expected, reverse)

  def test_kl_is_zero_for_equal_logits(self):
    self.assertAllClose(
        losses.kl_divergence(self.student, self.student, 2.0),
        np.zeros(4),
        atol=1e-6,
    )

  @parameterized.parameters((0.0, 1.0), (0.3, 2.0), (1.0, 4.0))
  def test_kd_loss(self, lam, tau):
    q = _np_softmax(self.student, 1.0)
    ce = -np.log(q[np.arange(4), self.labels]).mean()
    p_t = _np_softmax(self.teacher, tau)
    p_s = _np_softmax(self.student, tau)
    kl = (p_t * np.log(p_t / p_s)).sum(axis=-1).mean()
    expected = (1 - lam) * ce + lam * tau**2 * kl
    self.assertAllClose(
        losses.kd_loss(self.labels, self.student, self.teacher, lam, tau),
        expected,
        rtol=1e-5,
    )

  def test_distillation_loss_without_tau_squared(self):
    tau = 3.0
    p_t = _np_softmax(self.teacher, tau)
    p_s = _np_softmax(self.student, tau)
    kl = (p_t * np.log(p_t / p_s)).sum(axis=-1).mean()
    self.assertAllClose(
        losses.distillation_loss(
            self.teacher, self.student, tau, scale_by_temperature_squared=False
        ),
        kl,
        rtol=1e-5,
    )


  @parameterized.parameters(1.0, 2.0)
  def test_per_label_distillation_masks_labels_without_teacher(self, tau):
    label_probs = _np_softmax(
        np.random.default_rng(3).normal(size=(5, 5)), 1.0).astype(np.float32)
    mask = np.array([1, 0, 1, 1, 0], np.float32)
    q = _np_softmax(self.student, tau)
    p = label_probs[self.labels]
    kl = (p * np.log(p / q)).sum(axis=-1)
    expected = tau**2 * np.mean(mask[self.labels] * kl)  # Label 4 masked.
    self.assertAllClose(
        losses.per_label_distillation_loss(
            self.labels, self.student, label_probs, mask, tau),
        expected, rtol=1e-5)


class PerLabelTest(tf.test.TestCase, parameterized.TestCase):
  """FD's per-label outputs and teacher against numpy."""

  def test_per_label_outputs_add_softmax_sums_and_counts(self):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 2, 2, 0, 0, 1], np.int32)
    start = (rng.normal(size=(3, 3)).astype(np.float32),
             np.array([1.0, 0.0, 2.0], np.float32))
    sums, counts = losses.add_per_label_outputs(start, labels, logits, 2.0)
    p = _np_softmax(logits, 2.0)
    expected = start[0] + np.stack([p[labels == y].sum(0) for y in range(3)])
    self.assertAllClose(sums, expected, atol=1e-6)
    self.assertAllEqual(counts, start[1] + np.bincount(labels, minlength=3))

  @parameterized.parameters(True, False)
  def test_teacher_excludes_the_clients_own_upload(self, exclude):
    rng = np.random.default_rng(2)
    # Three clients' per-label means; label 2 reported by client 0 only.
    uploads = rng.uniform(size=(3, 3, 3)).astype(np.float32)
    counts = np.array([[2, 1, 4], [3, 0, 0], [1, 5, 0]], np.float32)
    reported = counts > 0
    reports = reported.sum(0).astype(np.float32)
    means = np.stack([
        uploads[reported[:, y], y].mean(0) for y in range(3)])
    teacher, mask = losses.per_label_teacher(
        means, reports, uploads[0], counts[0], tf.constant(exclude))
    if exclude:  # The others' mean: labels 0 (clients 1, 2) and 1 (client 2).
      expected = np.stack([uploads[1:, 0].mean(0), uploads[2, 1],
                           np.zeros(3)])
      self.assertAllEqual(mask, [1, 1, 0])
    else:
      expected = means
      self.assertAllEqual(mask, [1, 1, 1])
    self.assertAllClose(teacher, expected, atol=1e-6)


if __name__ == '__main__':
  tf.test.main()


class NotTrueDistillationTest(tf.test.TestCase):

  def test_not_true_logits_drop_the_label_column(self):
    logits = np.arange(12, dtype=np.float32).reshape(3, 4)
    self.assertAllEqual(
        losses.not_true_logits(logits, np.array([0, 2, 3])),
        [[1, 2, 3], [4, 5, 7], [8, 9, 10]],
    )

  def test_matches_numpy(self):
    rng = np.random.default_rng(1)
    student = rng.normal(size=(5, 4)).astype(np.float32)
    teacher = rng.normal(size=(5, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1], np.int32)
    tau = 2.0
    expected = []
    for s, t, y in zip(student, teacher, labels):
      s, t = np.delete(s, y), np.delete(t, y)
      p, q = _np_softmax(t[None], tau)[0], _np_softmax(s[None], tau)[0]
      expected.append((p * np.log(p / q)).sum())
    self.assertAllClose(
        losses.not_true_distillation_loss(labels, student, teacher, tau),
        tau**2 * np.mean(expected),
        rtol=1e-5,
    )

  def test_ignores_the_true_class_logit(self):
    student = np.array([[1.0, 2.0, 3.0]], np.float32)
    teacher = np.array([[50.0, 2.0, 3.0]], np.float32)
    self.assertAllClose(
        losses.not_true_distillation_loss(np.array([0]), student, teacher),
        0.0,
        atol=1e-6,
    )


class SelectiveDistillationTest(tf.test.TestCase):

  def test_matches_numpy(self):
    rng = np.random.default_rng(2)
    student = rng.normal(size=(6, 3)).astype(np.float32)
    teacher = rng.normal(size=(6, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 2, 1, 0], np.int32)
    credibility = np.array([0.9, 0.2, 0.5], np.float32)
    tau = 2.0
    p_t, p_s = _np_softmax(teacher, tau), _np_softmax(student, tau)
    kl = (p_t * np.log(p_t / p_s)).sum(axis=1)
    confidence = _np_softmax(teacher, 1.0)[np.arange(6), labels]
    expected = tau**2 * np.mean(credibility[labels] * confidence * kl)
    self.assertAllClose(
        losses.selective_distillation_loss(
            labels, student, teacher, credibility, tau
        ),
        expected,
        rtol=1e-5,
    )

  def test_zero_credibility_class_is_not_distilled(self):
    student = np.array([[0.0, 1.0], [2.0, 0.0]], np.float32)
    teacher = np.array([[3.0, -1.0], [-2.0, 1.0]], np.float32)
    loss = losses.selective_distillation_loss(
        np.array([1, 1]), student, teacher, np.array([1.0, 0.0], np.float32)
    )
    self.assertAllClose(loss, 0.0)
