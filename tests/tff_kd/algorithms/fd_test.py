"""FD: rounds by hand in numpy (per-label mean outputs during training,
exclusion, the distillation step), stateful heterogeneous clients, dropout."""

import collections

import numpy as np
import tensorflow as tf

import tiny
from tff_kd import algorithms
from tff_kd import communication

L = tiny.NUM_CLASSES


def _np_softmax(z, tau=1.0):
  return tiny.np_softmax(z / tau)


def _np_step(weights, x, y, lr, teacher=None, mask=None, beta=0.0, tau=1.0):
  """One SGD step of CE (+ FD's term) on a full batch, softmax regression."""
  kernel, bias = weights
  z = x @ kernel + bias
  dz = _np_softmax(z) - np.eye(L)[y]
  if teacher is not None:
    # d/dz tau^2 KL(p || q_S,tau) = tau (q_S,tau - p), p the label's teacher.
    dz += beta * tau * mask[y][:, None] * (_np_softmax(z, tau) - teacher[y])
  dz /= len(x)
  return kernel - lr * x.T @ dz, bias - lr * dz.sum(0)


def _np_label_means(weights, x, y, tau):
  """Per-label mean of softmax(z / tau) of the training step, and counts."""
  p = _np_softmax(x @ weights[0] + weights[1], tau)
  counts = np.bincount(y, minlength=L).astype(np.float64)
  sums = np.zeros((L, L))
  np.add.at(sums, y, p)
  return sums / np.maximum(counts, 1)[:, None], counts


def _run(process, state, ids, datasets):
  return process.next(state, list(zip(ids, datasets)))


class FDTest(tf.test.TestCase):

  def test_two_rounds_match_a_hand_computation(self):
    arrays = tiny.client_arrays([9, 12, 7], seed=3)
    datasets = tiny.datasets(arrays, batch_size=100)  # One step per round.
    beta, tau, lr = 0.5, 2.0, 0.3
    ids = ['a', 'b', 'c']
    process = algorithms.build_fd(
        {'model': tiny.model_fn}, tiny.sgd(lr),
        client_prototypes={c: 'model' for c in ids}, beta=beta,
        temperature=tau)
    state = process.initialize()
    start = [np.array(w) for w in state['clients']['a']['model'].trainable]

    # Round 1: no knowledge yet, so plain CE; the per-label mean outputs come
    # from the training step's forward pass (the start weights: one step).
    output = _run(process, state, ids, datasets)
    state = output.state
    trained = [_np_step(start, x, y, lr) for x, y in arrays]
    stats = [_np_label_means(start, x, y, tau) for x, y in arrays]
    reported = [(counts > 0).astype(np.float64) for _, counts in stats]
    total = sum(p * r[:, None] for (p, _), r in zip(stats, reported))
    reports = sum(reported)
    for c, w, (probs, counts) in zip(ids, trained, stats):
      got = state['clients'][c]
      self.assertAllClose(got['model'].trainable[0], w[0], atol=1e-5)
      self.assertAllClose(got['model'].trainable[1], w[1], atol=1e-5)
      self.assertAllClose(got['upload']['counts'], counts)
      self.assertAllClose(got['upload']['probs'], probs, atol=1e-5)
    # Uniform over the clients that reported each label (not count-weighted).
    self.assertAllClose(state['server']['reports'], reports)
    self.assertAllClose(state['server']['probs'],
                        total / np.maximum(reports, 1)[:, None], atol=1e-5)
    count_weighted = sum(p * n[:, None] for p, n in stats) / sum(
        n for _, n in stats)[:, None]
    self.assertNotAllClose(state['server']['probs'], count_weighted)
    self.assertEqual(output.metrics['server']['labels_reported'], L)
    fused = total / np.maximum(reports, 1)[:, None]
    entropy = -(fused * np.log(np.maximum(fused, 1e-12))).sum(1)
    self.assertAllClose(output.metrics['server']['knowledge_entropy'],
                        entropy[reports > 0].mean(), rtol=1e-5)
    self.assertAllClose(
        output.metrics['server']['knowledge_true_label_probability'],
        np.diag(fused)[reports > 0].mean(), rtol=1e-5)
    self.assertEqual(output.metrics['fusion']['per_label']['fused_clients'], 3)

    # Round 2, clients a and b: each distills toward the others' outputs.
    output = _run(process, state, ['a', 'b'], datasets[:2])
    for k, c in enumerate(['a', 'b']):
      probs, _ = stats[k]
      others = reports - reported[k]
      teacher = (total - probs * reported[k][:, None]) / np.maximum(
          others, 1)[:, None]
      mask = (others > 0).astype(np.float64)
      x, y = arrays[k]
      expected = _np_step(trained[k], x, y, lr, teacher, mask, beta, tau)
      got = output.state['clients'][c]['model'].trainable
      self.assertAllClose(got[0], expected[0], atol=1e-5)
      self.assertAllClose(got[1], expected[1], atol=1e-5)
    # c was not sampled: unchanged.
    for a, b in zip(output.state['clients']['c']['model'].trainable,
                    state['clients']['c']['model'].trainable):
      self.assertAllEqual(a, b)

  def test_heterogeneous_clients_keep_their_architectures(self):
    arrays = tiny.client_arrays([9, 12, 7, 5], seed=4)
    datasets = tiny.datasets(arrays, batch_size=4)
    ids = ['0', '1', '2', '3']
    assignment = dict(zip(ids, ['linear', 'mlp', 'linear', 'mlp']))
    process = algorithms.build_fd(
        {'linear': tiny.model_fn, 'mlp': tiny.mlp_model_fn}, tiny.sgd(0.2),
        client_prototypes=assignment)
    initial, state, output = tiny.two_rounds_third_client_dropping_out(
        process, ids, datasets)
    tiny.check_client_states(self, initial, state, changed=('0', '1'))
    self.assertLen(state['clients']['1']['model'].trainable, 4)  # The MLP.
    train = output.metrics['client_work']['train']
    self.assertEqual(train['linear']['num_examples'], 9)
    self.assertEqual(train['mlp']['num_examples'], 12)
    per_client = L * L * 4 + L * 4
    self.assertEqual(
        output.metrics['client_work']['communication'],
        collections.OrderedDict(bytes_uploaded=3 * per_client,
                                bytes_downloaded=3 * (per_client + 4),
                                bytes_uploaded_per_client=per_client,
                                bytes_downloaded_per_client=per_client + 4))
    self.assertEqual(communication.type_bytes(
        process.round.type_signature.parameter[0]), per_client + 4)
    self.assertEqual(output.metrics['fusion']['per_label']['fused_clients'], 3)

  def test_rejects_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'temperature must be > 0; got 0'):
      algorithms.build_fd({'model': tiny.model_fn}, tiny.sgd(),
                          client_prototypes={'a': 'model'}, temperature=0.0)
    with self.assertRaisesRegex(ValueError, r"prototypes \['other'\]"):
      algorithms.build_fd({'model': tiny.model_fn}, tiny.sgd(),
                          client_prototypes={'a': 'other'})


if __name__ == '__main__':
  tf.test.main()
