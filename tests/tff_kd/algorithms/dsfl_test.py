"""DS-FL: two rounds by hand in numpy (ERA soft labels, the clients'
distillation step), SA, the server model (and its distillation as the
clients'), heterogeneous clients, dropout."""

import collections

import numpy as np
import tensorflow as tf

import tiny
from tff_kd import aggregators
from tff_kd import algorithms
from tff_kd import server_distillation
from tff_kd.algorithms import dsfl

L = tiny.NUM_CLASSES


def _np_ce_step(weights, x, y, lr):
  kernel, bias = weights
  dz = (tiny.np_softmax(x @ kernel + bias) - np.eye(L)[y]) / len(x)
  return kernel - lr * x.T @ dz, bias - lr * dz.sum(0)


def _np_distill_step(weights, x, p, lr):
  """One SGD step of KL(p || q_S) on a full batch: d/dz = q_S - p."""
  kernel, bias = weights
  dz = (tiny.np_softmax(x @ kernel + bias) - p) / len(x)
  return kernel - lr * x.T @ dz, bias - lr * dz.sum(0)


def _predict(weights, x):
  return tiny.np_softmax(x @ weights[0] + weights[1])


class DSFLTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.public = np.random.default_rng(9).normal(
        size=(6, tiny.NUM_FEATURES)).astype(np.float32)

  def test_two_rounds_match_a_hand_computation(self):
    arrays = tiny.client_arrays([9, 12, 7], seed=3)
    datasets = tiny.datasets(arrays, batch_size=100)  # One step per round.
    ids = ['a', 'b', 'c']
    lr, distill_lr, temperature = 0.3, 0.2, 0.1
    process = algorithms.build_dsfl(
        {'model': tiny.model_fn}, tiny.sgd(lr),
        client_prototypes={c: 'model' for c in ids},
        public_inputs=self.public, subset_size=4,
        fusion_aggregator=aggregators.EntropyReductionFactory(temperature),
        distill_epochs=1, distill_batch_size=4,
        distill_learning_rate=distill_lr, seed=1)
    state = process.initialize()
    self.assertFalse(state['server']['has_labels'])
    start = [np.array(w) for w in state['clients']['a']['model'].trainable]

    # Round 1: no soft labels yet: CE only, then predictions on S_2.
    state = process.next(state, list(zip(ids, datasets))).state
    subset = state['server']['indices']
    self.assertLen(set(subset.tolist()), 4)
    trained = [_np_ce_step(start, x, y, lr) for x, y in arrays]
    mean = np.mean([_predict(w, self.public[subset]) for w in trained], 0)
    era = tiny.np_softmax(mean / temperature)
    self.assertTrue(state['server']['has_labels'])
    self.assertAllClose(state['server']['soft_labels'], era, atol=1e-5)

    # Round 2, clients a and b: distill on (S_2, ERA labels), then CE.
    output = process.next(state, list(zip(['a', 'b'], datasets)))
    for k, c in enumerate(['a', 'b']):
      distilled = _np_distill_step(trained[k], self.public[subset], era,
                                   distill_lr)
      expected = _np_ce_step(distilled, *arrays[k], lr)
      got = output.state['clients'][c]['model'].trainable
      self.assertAllClose(got[0], expected[0], atol=1e-5)
      self.assertAllClose(got[1], expected[1], atol=1e-5)
    # At T = 0.1 ERA sharpens these flat averages (it need not: see
    # entropy_reduction's docstring).
    entropy = output.metrics['fusion']['soft_labels']['entropy']
    self.assertLess(entropy['entropy_after'], entropy['entropy_before'])

  def test_sa_server_model_heterogeneous_clients_and_dropout(self):
    arrays = tiny.client_arrays([9, 12, 7, 5], seed=4)
    datasets = tiny.datasets(arrays, batch_size=4)
    ids = ['0', '1', '2', '3']
    process = algorithms.build_dsfl(
        {'linear': tiny.model_fn, 'mlp': tiny.mlp_model_fn}, tiny.sgd(0.2),
        client_prototypes=dict(zip(ids, ['linear', 'mlp', 'linear', 'mlp'])),
        public_inputs=self.public, subset_size=100,
        fusion_aggregator=aggregators.LogitFusionFactory(),
        distill_batch_size=2,
        # A batch larger than the 6 public inputs: drawn with replacement.
        server_distillation=server_distillation.DistillationConfig(
            steps=20, batch_size=8),
        seed=2)
    initial, state, output = tiny.two_rounds_third_client_dropping_out(
        process, ids, datasets)
    # SA: the plain mean of the two clients' predictions (no sharpening).
    labels = state['server']['soft_labels']
    self.assertEqual(labels.shape, (6, L))  # subset_size capped at R = 6.
    self.assertAllClose(labels.sum(-1), np.ones(6), atol=1e-5)
    self.assertNotIn('entropy', output.metrics['fusion']['soft_labels'])
    self.assertEqual(output.metrics['fusion']['soft_labels']['fused_clients'], 3)
    tiny.check_client_states(self, initial, state, changed=('0', '1'))
    # The server model (the first prototype's) is distilled every round.
    self.assertEqual(
        output.metrics['server']['server_distillation']['steps'], 20)
    server = state['server']['model'].trainable
    self.assertFalse(np.array_equal(
        server[0], initial['server']['model'].trainable[0]))
    m = 6
    self.assertEqual(
        output.metrics['client_work']['communication'],
        collections.OrderedDict(
            bytes_uploaded=3 * (m * L * 4 + m * 4),
            bytes_downloaded=3 * (m * L * 4 + 1 + 2 * m * 4 + 4),
            bytes_uploaded_per_client=m * L * 4 + m * 4,
            bytes_downloaded_per_client=m * L * 4 + 1 + 2 * m * 4 + 4))

  def test_server_model_distilled_like_the_clients(self):
    # SCARLET's dsfl.py: the clients' SGD, epochs and batches, over the
    # round's subset (at most the public split).
    config = dsfl.DSFLConfig(subset_size=250, distill_epochs=3,
                             distill_batch_size=100,
                             distill_learning_rate=0.2)
    like_clients = dsfl.distillation_like_clients(config, num_public=1000)
    self.assertEqual(like_clients, server_distillation.DistillationConfig(
        steps=9, batch_size=100, learning_rate=0.2, schedule='constant',
        temperature=1.0, clip_norm=None, sampling='shuffled',
        optimizer='sgd'))
    # 120 public inputs: a subset of 120, two batches an epoch.
    self.assertEqual(
        dsfl.distillation_like_clients(config, num_public=120).steps, 6)

  def test_rejects_bad_arguments(self):
    with self.assertRaisesRegex(TypeError, 'fusion aggregator of .*soft_labels'
                                '.* must be a tff.aggregators.Unweighted'):
      algorithms.build_dsfl({'model': tiny.model_fn}, tiny.sgd(),
                            client_prototypes={'a': 'model'},
                            public_inputs=self.public,
                            fusion_aggregator='max')
    with self.assertRaisesRegex(ValueError, r'public_inputs have shape \(6, 3\)'):
      algorithms.build_dsfl({'model': tiny.model_fn}, tiny.sgd(),
                            client_prototypes={'a': 'model'},
                            public_inputs=self.public[:, :3])


if __name__ == '__main__':
  tf.test.main()
