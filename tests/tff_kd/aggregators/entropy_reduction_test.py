"""EntropyReductionFactory (DS-FL's ERA) vs numpy; SA is LogitFusionFactory."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd.aggregators import entropy_reduction

R, C = 6, 4


def _value_type():
  return tff.StructWithPythonType(
      collections.OrderedDict(
          logits=tff.TensorType(np.float32, [R, C]),
          weights=tff.TensorType(np.float32, [R]),
      ),
      collections.OrderedDict,
  )


def _entropy(p):
  return -(p * np.log(p)).sum(axis=-1)


class EntropyReductionTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, R, C)) * 2
    e = np.exp(logits)
    self.probabilities = (e / e.sum(-1, keepdims=True)).astype(np.float32)

  def _run(self, weights, temperature=0.1):
    process = entropy_reduction.EntropyReductionFactory(temperature).create(
        _value_type())
    return process.next(process.initialize(), [
        collections.OrderedDict(logits=p, weights=w.astype(np.float32))
        for p, w in zip(self.probabilities, weights)
    ])

  def test_softmax_of_mean_over_temperature_lowers_the_entropy(self):
    output = self._run(np.ones((3, R)))
    mean = self.probabilities.mean(axis=0)
    z = mean / 0.1
    expected = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    self.assertAllClose(output.result['logits'], expected, atol=1e-6)
    self.assertAllClose(output.result['weights'], np.full(R, 3.0))
    entropy = output.measurements['entropy']
    self.assertAllClose(entropy['entropy_before'], _entropy(mean).mean(),
                        rtol=1e-5)
    self.assertAllClose(entropy['entropy_after'], _entropy(expected).mean(),
                        rtol=1e-5)
    # ERA sharpens every row: lower entropy, same argmax.
    self.assertTrue(np.all(_entropy(expected) < _entropy(mean)))
    self.assertAllEqual(expected.argmax(-1), mean.argmax(-1))
    self.assertEqual(output.measurements['inner']['fused_clients'], 3)

  def test_rows_no_client_sent_stay_empty(self):
    weights = np.ones((3, R))
    weights[:, 2] = 0.0  # Nobody labelled input 2.
    output = self._run(weights)
    self.assertAllEqual(output.result['logits'][2], np.zeros(C))
    self.assertEqual(output.result['weights'][2], 0.0)
    rows = [r for r in range(R) if r != 2]
    mean = self.probabilities.mean(axis=0)[rows]
    self.assertAllClose(output.measurements['entropy']['entropy_before'],
                        _entropy(mean).mean(), rtol=1e-5)

  def test_caps_the_confidence_of_very_confident_rows(self):
    # softmax(p / T) has logits in [0, 1/T]: a row more confident than
    # 1 / (1 + (C - 1) exp(-1/T)) comes out flatter.
    self.probabilities[:] = np.array(
        [0.99997, 1e-5, 1e-5, 1e-5], np.float32)
    output = self._run(np.ones((3, R)), temperature=0.1)
    cap = 1 / (1 + (C - 1) * np.exp(-10))
    self.assertAllClose(output.result['logits'][:, 0], np.full(R, cap),
                        rtol=1e-5)
    entropy = output.measurements['entropy']
    self.assertGreater(entropy['entropy_after'], entropy['entropy_before'])

  def test_a_noisy_mean_with_negative_entries_has_finite_entropy(self):
    probabilities = tf.constant([[0.7, 0.4, -0.1], [0.5, 0.5, 0.0]])
    entropy = entropy_reduction.mean_entropy(probabilities, tf.ones([2]))
    expected = np.mean([-(0.7 * np.log(0.7) + 0.4 * np.log(0.4)),
                        -np.log(0.5)])
    self.assertAllClose(entropy, expected)

  def test_rejects_bad_temperature(self):
    with self.assertRaisesRegex(ValueError, 'temperature must be > 0; got 0'):
      entropy_reduction.EntropyReductionFactory(0.0)


if __name__ == '__main__':
  tf.test.main()
