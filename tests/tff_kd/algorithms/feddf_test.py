"""FedDF and FedAUX: hand computations of the fused init, of AVGLOGITS
distillation (on public inputs and on FedDF's fresh noise, two rounds), of
FedAUX's certainty-weighted round and its score spread; FedAvg equivalence,
heterogeneous prototypes, baseline tasks."""

import collections
import functools

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tasks
import tiny
from tff_kd import algorithms
from tff_kd import certainty
from tff_kd import communication
from tff_kd import server_distillation

_SPEC = tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=16)


def _structured(datasets, prototypes, names):
  """Each client's data as FedDF takes it: only its own prototype filled."""
  return [
      collections.OrderedDict(
          (n, ds if n == own else ds.take(0)) for n in names)
      for ds, own in zip(datasets, prototypes)
  ]


@functools.lru_cache(maxsize=None)
def _fedavg(model_fn, lr):
  return algorithms.build_fedavg(model_fn, tiny.sgd(lr))


def _trained_alone(model_fn, dataset, lr, start=None):
  """A client's trained model from `start` (default: the initial weights):
  FedAvg over that single client."""
  process = _fedavg(model_fn, lr)
  state = process.initialize()
  if start is not None:
    state = process.set_model_weights(state, start)
  state = process.next(state, [dataset]).state
  return process.get_model_weights(state).trainable


def _linear_kl_gradients(x, teacher_logits):
  """Gradients of the batch-mean KL for the tiny softmax regression."""
  def gradients(params):
    kernel, bias = params
    dz = (tiny.np_softmax(x @ kernel + bias)
          - tiny.np_softmax(teacher_logits)) / len(x)
    return [x.T @ dz, dz.sum(axis=0)]
  return gradients


def _mlp(params, x):
  """`tiny.mlp_model_fn`'s hidden features and logits."""
  w1, b1, w2, b2 = params
  hidden = np.maximum(x @ w1 + b1, 0)
  return hidden, hidden @ w2 + b2


def _distill_x(rows=6, seed=5):
  return np.random.default_rng(seed).normal(
      size=(rows, tiny.NUM_FEATURES)).astype(np.float32)


class FedDFTest(tf.test.TestCase):

  def test_one_prototype_zero_steps_equals_fedavg_exactly(self):
    datasets = tiny.datasets(tiny.client_arrays([7, 12, 4], seed=1), 4)
    feddf = algorithms.build_feddf(
        {'model': tiny.model_fn}, tiny.sgd(0.2),
        distillation_inputs=_distill_x(), distill_steps=0, distill_batch_size=2)
    fedavg = algorithms.build_fedavg(tiny.model_fn, tiny.sgd(0.2))
    a, b = fedavg.initialize(), feddf.initialize()
    client_data = _structured(datasets, ['model'] * 3, ['model'])
    for _ in range(2):
      a = fedavg.next(a, datasets).state
      output = feddf.next(b, client_data)
      b = output.state
    for x, y in zip(fedavg.get_model_weights(a).trainable,
                    feddf.get_model_weights(b).trainable):
      self.assertAllEqual(x, y)
    self.assertEqual(output.metrics['finalizer']['model']['steps'], 0)

  def test_fused_init_is_the_weighted_average_per_prototype(self):
    sizes = [5, 9, 3, 8]
    datasets = tiny.datasets(tiny.client_arrays(sizes, seed=2), 4)
    owners = ['linear', 'mlp', 'linear', 'mlp']
    model_fns = {'linear': tiny.model_fn, 'mlp': tiny.mlp_model_fn}
    process = algorithms.build_feddf(
        model_fns, tiny.sgd(0.1), distillation_inputs=_distill_x(),
        distill_steps=0, distill_batch_size=2,
        client_prototypes=dict(enumerate(owners)))
    output = process.next(process.initialize(),
                          _structured(datasets, owners, list(model_fns)))
    for name, fn in model_fns.items():
      mine = [k for k, o in enumerate(owners) if o == name]
      total = sum(sizes[k] for k in mine)
      trained = {k: _trained_alone(fn, datasets[k], 0.1) for k in mine}
      expected = [sum(trained[k][i] * sizes[k] / total for k in mine)
                  for i in range(len(trained[mine[0]]))]
      self.assertAllClose(output.state.global_model_weights[name].trainable,
                          expected, rtol=1e-5, atol=1e-6)
      self.assertEqual(output.metrics['aggregator']['models'][name]['total_weight'],
                       total)

  def test_one_distillation_step_toward_avglogits_matches_numpy(self):
    # Two clients of different prototypes; the linear prototype's student is
    # its fused model and the teacher is the mean of BOTH clients' logits.
    arrays = tiny.client_arrays([6, 9], seed=3)
    datasets = tiny.datasets(arrays, 3)
    model_fns = {'linear': tiny.model_fn, 'mlp': tiny.mlp_model_fn}
    x = _distill_x(rows=1)
    lr = 0.01
    process = algorithms.build_feddf(
        model_fns, tiny.sgd(0.1), distillation_inputs=x, distill_steps=1,
        distill_batch_size=1, distill_learning_rate=lr,
        client_prototypes={'a': 'linear', 'b': 'mlp'})
    output = process.next(process.initialize(),
                          _structured(datasets, ['linear', 'mlp'],
                                      list(model_fns)))
    kernel, bias = _trained_alone(tiny.model_fn, datasets[0], 0.1)
    w1, b1, w2, b2 = _trained_alone(tiny.mlp_model_fn, datasets[1], 0.1)
    student = x @ kernel + bias
    teacher = (student + np.maximum(x @ w1 + b1, 0) @ w2 + b2) / 2
    dz = tiny.np_softmax(student) - tiny.np_softmax(teacher)
    # Adam's first step: w - lr * sqrt(1 - b2) g / (sqrt(1 - b2) |g| + eps).
    def adam(w, g):
      c = np.sqrt(1 - 0.999)
      return w - lr * c * g / (c * np.abs(g) + 1e-7)
    self.assertAllClose(output.state.global_model_weights['linear'].trainable,
                        [adam(kernel, x.T @ dz), adam(bias, dz[0])],
                        rtol=1e-4, atol=1e-6)
    self.assertEqual(output.metrics['aggregator']['knowledge']['logits']['fused_clients'], 2)

  def test_heterogeneous_digits_two_rounds(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC, model='cnn',
                             prototypes=('cnn', 'mlp'), num_clients=6, seed=0)
    process = algorithms.build_feddf(
        {n: task.model_fn_for(n) for n in task.prototypes}, tiny.sgd(0.1),
        distillation_inputs=task.public_x, validation=task.validation,
        distill_steps=20, eval_every=5, patience=2,
        client_prototypes=task.client_prototypes)
    client_input = process.client_input
    ids = ['0', '1', '2', '3']
    clients = [client_input(c, task.datasets.train_preprocess_fn(
        task.datasets.train_data.create_tf_dataset_for_client(c)))
               for c in ids]
    state = process.initialize()
    start = state.global_model_weights
    for _ in range(2):
      output = process.next(state, clients)
      state = output.state
    metrics = output.metrics
    owners = [task.client_prototypes[c] for c in ids]
    self.assertCountEqual(set(owners), {'cnn', 'mlp'})
    for name in task.prototypes:
      self.assertGreater(metrics['finalizer'][name]['steps'], 0)
      self.assertNotAllClose(state.global_model_weights[name].trainable[0],
                             start[name].trainable[0])
    state_type = process.initialize.type_signature.result.member
    down = {n: communication.type_bytes(state_type.global_model_weights[n])
            for n in task.prototypes}
    communicated = metrics['client_work']['communication']
    self.assertEqual(communicated['bytes_downloaded'],
                     sum(down[o] for o in owners))
    self.assertAllClose(communicated['bytes_downloaded_per_client'],
                        np.mean([down[o] for o in owners]))
    self.assertEqual(metrics['aggregator']['knowledge']['logits']['fused_clients'], 4)

  def test_accepts_a_tff_baseline_task_model_fn(self):
    task = tff.simulation.baselines.emnist.create_character_recognition_task(
        tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=8,
                                            max_elements=4),
        model_id='cnn_dropout', only_digits=True, use_synthetic_data=True)
    clients = task.datasets.sample_train_clients(2, random_seed=0)
    noise = np.random.default_rng(0).uniform(
        size=(8, 28, 28, 1)).astype(np.float32)
    process = algorithms.build_feddf(
        {'model': task.model_fn}, tiny.sgd(0.01), distillation_inputs=noise,
        distill_steps=2, distill_batch_size=4)
    output = process.next(process.initialize(),
                          [collections.OrderedDict(model=c) for c in clients])
    self.assertEqual(output.metrics['finalizer']['model']['steps'], 2)

  def test_fresh_noise_batches_two_rounds_match_numpy(self):
    # Two clients of one prototype. Each round, clients and server generate
    # the same steps x B noise inputs from (seed, round); the server's batch
    # i is inputs [i B, (i + 1) B); cosine rate, clip 5, no validation.
    sizes = [6, 9]
    datasets = tiny.datasets(tiny.client_arrays(sizes, seed=4), 3)
    steps, batch, lr, seed = 2, 3, 0.01, 5
    process = algorithms.build_feddf(
        {'model': tiny.model_fn}, tiny.sgd(0.1), distillation_inputs='noise',
        distill_steps=steps, distill_batch_size=batch,
        distill_learning_rate=lr, seed=seed)
    client_data = [collections.OrderedDict(model=ds) for ds in datasets]
    state = process.initialize()
    for round_num in range(2):
      start = process.get_model_weights(state)
      output = process.next(state, client_data)
      state = output.state
      trained = [_trained_alone(tiny.model_fn, ds, 0.1, start)
                 for ds in datasets]
      fused = [sum(t[i] * n / sum(sizes) for t, n in zip(trained, sizes))
               for i in range(2)]
      noise = server_distillation.noise_inputs(
          tf.constant([seed, round_num]), steps, batch,
          (tiny.NUM_FEATURES,)).numpy()
      teacher = np.mean([noise @ k + b for k, b in trained], axis=0)
      cosine = [lr * 0.5 * (1 + np.cos(np.pi * i / steps))
                for i in range(steps)]

      def gradients(step, params, noise=noise, teacher=teacher):
        rows = slice(step * batch, (step + 1) * batch)
        return _linear_kl_gradients(noise[rows], teacher[rows])(params)

      self.assertAllClose(process.get_model_weights(state).trainable,
                          tiny.np_adam(fused, gradients, cosine, clip_norm=5.0),
                          rtol=1e-4, atol=1e-5)
    metrics = output.metrics
    self.assertEqual(metrics['finalizer']['model']['steps'], steps)
    self.assertEqual(metrics['finalizer']['model']['validation_best'], -1)
    # Up: the delta, its weight and the logits and weights of all 6 inputs;
    # down: the weights and the round.
    state_type = process.initialize.type_signature.result.member
    weights_bytes = communication.type_bytes(state_type.global_model_weights['model'])
    communicated = metrics['client_work']['communication']
    self.assertEqual(communicated['bytes_uploaded_per_client'],
                     weights_bytes + 4 + 4 * steps * batch
                     * (tiny.NUM_CLASSES + 1))
    self.assertEqual(communicated['bytes_downloaded_per_client'],
                     weights_bytes + 4)

  def test_clear_errors(self):
    fns = {'model': tiny.model_fn}
    with self.assertRaisesRegex(ValueError, r'shape \(4, 7\).*\(4,\)'):
      algorithms.build_feddf(fns, tiny.sgd(),
                             distillation_inputs=np.zeros((4, 7)))
    with self.assertRaisesRegex(ValueError, "distillation_inputs must be an "
                                "array or 'noise'; got 'nosie'"):
      algorithms.build_feddf(fns, tiny.sgd(), distillation_inputs='nosie')
    with self.assertRaisesRegex(ValueError, 'distill_steps must be >= 1 with '
                                "distillation_inputs='noise'; got 0"):
      algorithms.build_feddf(fns, tiny.sgd(), distillation_inputs='noise',
                             distill_steps=0)
    with self.assertRaisesRegex(ValueError, "FedAUX.*'model'.*head"):
      algorithms.build_fedaux(fns, tiny.sgd(), distillation_inputs=_distill_x(),
                              negative_inputs=_distill_x())
    with self.assertRaisesRegex(ValueError, 'FedAUX has no data-free variant'):
      algorithms.build_fedaux(fns, tiny.sgd(), distillation_inputs='noise',
                              negative_inputs=_distill_x())
    with self.assertRaisesRegex(ValueError, 'certainty_epsilon must be > 0 or '
                                'None; got 0'):
      algorithms.build_fedaux(fns, tiny.sgd(), distillation_inputs=_distill_x(),
                              negative_inputs=_distill_x(),
                              certainty_epsilon=0)


class FedAUXTest(tf.test.TestCase):

  def test_one_round_matches_numpy(self):
    # Two clients; the student is the UNIFORM mean of their models; the
    # teacher weighs each client's logits by its certainty s_k(x) (global
    # model features); one constant-rate Adam step on all 6 inputs (fewer
    # than a batch of 128), no clipping, no validation.
    datasets = tiny.datasets(tiny.client_arrays([5, 11], seed=7), 4)
    x = _distill_x(rows=6, seed=8)
    negatives = _distill_x(rows=5, seed=9)
    lr = 1e-3
    process = algorithms.build_fedaux(
        {'mlp': tiny.mlp_model_fn}, tiny.sgd(0.1), distillation_inputs=x,
        negative_inputs=negatives, distill_learning_rate=lr)
    state = process.initialize()
    start = state.global_model_weights['mlp'].trainable
    output = process.next(
        state, [collections.OrderedDict(mlp=ds) for ds in datasets])
    trained = [_trained_alone(tiny.mlp_model_fn, ds, 0.1) for ds in datasets]
    scores = []
    for ds in datasets:
      local = np.concatenate([b['x'] for b in ds.as_numpy_iterator()])
      scores.append(certainty.certainty_scores(
          _mlp(start, local)[0], _mlp(start, negatives)[0],
          _mlp(start, x)[0]).numpy())
    teacher = (sum(s[:, None] * _mlp(t, x)[1] for s, t in zip(scores, trained))
               / sum(scores)[:, None])
    student = [(a + b) / 2 for a, b in zip(*trained)]

    def gradients(step, params):
      del step
      hidden, logits = _mlp(params, x)
      dz = (tiny.np_softmax(logits) - tiny.np_softmax(teacher)) / len(x)
      dh = dz @ params[2].T * (hidden > 0)
      return [x.T @ dh, dh.sum(axis=0), hidden.T @ dz, dz.sum(axis=0)]

    self.assertAllClose(output.state.global_model_weights['mlp'].trainable,
                        tiny.np_adam(student, gradients, [lr]),
                        rtol=1e-4, atol=1e-6)
    metrics = output.metrics
    self.assertEqual(metrics['finalizer']['mlp']['steps'], 1)
    self.assertEqual(metrics['finalizer']['mlp']['validation_best'], -1)
    self.assertEqual(metrics['aggregator']['models']['mlp']['total_weight'], 2.0)
    self.assertAllClose(metrics['client_work']['certainty_std'],
                        np.mean([np.std(s) for s in scores]), rtol=1e-3)
    self.assertGreater(metrics['client_work']['certainty_std'], 0.0)

  def test_two_rounds_on_digits_with_validation_keeps_the_best_epoch(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC, model='mlp',
                             num_clients=6, alpha=0.1, seed=0)
    process = algorithms.build_fedaux(
        {'mlp': task.model_fn}, tiny.sgd(0.1),
        distillation_inputs=task.public_x[:100],
        negative_inputs=task.public_x[100:], validation=task.validation,
        distill_epochs=2, distill_batch_size=32, distill_learning_rate=1e-3)
    client_input = process.client_input
    clients = [client_input(c, task.datasets.train_preprocess_fn(
        task.datasets.train_data.create_tf_dataset_for_client(c)))
               for c in ['0', '1', '2']]
    state = process.initialize()
    for _ in range(2):
      output = process.next(state, clients)
      state = output.state
    self.assertEqual(output.metrics['aggregator']['models']['mlp']['total_weight'], 3.0)
    self.assertEqual(output.metrics['aggregator']['knowledge']['logits']['fused_clients'], 3)
    distillation = output.metrics['finalizer']['mlp']
    # Two epochs of ceil(100 / 32) = 4 batches, evaluated after each.
    self.assertEqual(distillation['steps'], 8)
    self.assertGreaterEqual(distillation['validation_best'],
                            distillation['validation_before'])
    self.assertBetween(output.metrics['client_work']['certainty_std'],
                       1e-6, 0.5)


if __name__ == '__main__':
  tf.test.main()
