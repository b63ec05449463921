"""The client's training loop against numpy SGD on the tiny softmax regression:
delta, weight and metrics, the optimizer hyperparameters it is given, a
distillation term toward a teacher (the broadcast model, sent weights, none),
the `observe_fn` statistic, non-finite clients; and its small helpers."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import local_training

_L = tiny.NUM_CLASSES


def _weights(seed):
  rng = np.random.default_rng(seed)
  return (
      rng.normal(size=(tiny.NUM_FEATURES, _L)).astype(np.float32),
      rng.normal(size=(_L,)).astype(np.float32),
  )


def _dataset(x, y, batch_size, epochs=1):
  return tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=y)).repeat(epochs).batch(batch_size)


def _np_sgd(weights, x, y, *, batch_size, lr, epochs=1, distill_grad=None):
  """Minibatch SGD on mean cross-entropy (+ a term whose gradient with respect
  to the logits is `distill_grad(xb, yb, z)`), in float64.

  Returns the final (kernel, bias), and per batch the examples, labels,
  logits before its step and its mean cross-entropy.
  """
  kernel, bias = (np.array(w, np.float64) for w in weights)
  batches = []
  xs, ys = np.concatenate([x] * epochs), np.concatenate([y] * epochs)
  for start in range(0, len(ys), batch_size):
    xb, yb = xs[start:start + batch_size], ys[start:start + batch_size]
    z = xb @ kernel + bias
    p = tiny.np_softmax(z)
    batches.append((xb, yb, z, -np.mean(np.log(p[np.arange(len(yb)), yb]))))
    dz = (p - np.eye(_L)[yb]) / len(yb)
    if distill_grad is not None:
      dz = dz + distill_grad(xb, yb, z)
    kernel = kernel - lr * xb.T @ dz
    bias = bias - lr * dz.sum(axis=0)
  return (kernel, bias), batches


def _half_squared_distance(labels, student, teacher, extra):
  """extra / 2 * mean_i ||z_S(x_i) - z_T(x_i)||^2 (z_T = 0 without teacher)."""
  del labels
  target = 0.0 if teacher is None else teacher
  return extra * 0.5 * tf.reduce_mean(
      tf.reduce_sum(tf.square(student - target), axis=1))


def _label_sums(observed, labels, logits):
  """Per label: the sum of the student's logits and the number of examples."""
  sums, counts = observed
  return (
      sums + tf.math.unsorted_segment_sum(logits, labels, _L),
      counts + tf.math.unsorted_segment_sum(
          tf.ones_like(labels, tf.float32), labels, _L),
  )


def _run(initial, x, y, *, batch_size, lr, epochs=1, **kwargs):
  """`build_client_update`'s function on the tiny model, in a TFF
  computation (as the client work runs it); `kwargs` go to the builder,
  `call_*` ones to the call."""
  call = {k[len('call_'):]: v for k, v in kwargs.items()
          if k.startswith('call_')}
  build = {k: v for k, v in kwargs.items() if not k.startswith('call_')}
  teacher = build.pop('teacher', False)

  @tff.tensorflow.computation
  def run():
    update = local_training.build_client_update(
        tiny.model_fn(), tiny.sgd(0.5),  # The hparams below override 0.5.
        teacher=tiny.model_fn() if teacher else None, **build)
    return update(
        (list(initial), []), _dataset(x, y, batch_size, epochs),
        collections.OrderedDict(learning_rate=tf.constant(lr)),
        **{k: tf.nest.map_structure(tf.constant, v) for k, v in call.items()})

  return run()


class ClientUpdateTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('two_batches', 4, 1),
      ('one_full_batch', 7, 1),
      ('two_epochs', 3, 2),
  )
  def test_delta_weight_and_metrics_match_numpy_sgd(self, batch_size, epochs):
    x, y = tiny.client_arrays([7], seed=1)[0]
    initial = _weights(0)
    lr = 0.1
    (kernel, bias), batches = _np_sgd(initial, x, y, batch_size=batch_size,
                                      lr=lr, epochs=epochs)
    delta, weight, is_finite, metrics = _run(
        initial, x, y, batch_size=batch_size, lr=lr, epochs=epochs)
    # delta = initial - final, as TFF's FedAvg.
    self.assertAllClose(delta[0], initial[0] - kernel, rtol=1e-5, atol=1e-6)
    self.assertAllClose(delta[1], initial[1] - bias, rtol=1e-5, atol=1e-6)
    self.assertEqual(weight, 7.0 * epochs)  # Examples trained on.
    self.assertEqual(is_finite, 1)
    self.assertEqual(metrics['num_examples'], [7 * epochs])
    self.assertEqual(metrics['num_batches'], [len(batches)])
    # The loss metric: each batch's loss, before its step, times its size.
    self.assertAllClose(
        metrics['loss'],
        [sum(loss * len(yb) for _, yb, _, loss in batches), 7 * epochs],
        rtol=1e-5)
    correct = sum(np.sum(z.argmax(axis=1) == yb) for _, yb, z, _ in batches)
    self.assertAllClose(metrics['sparse_categorical_accuracy'],
                        [correct, 7 * epochs])

  @parameterized.named_parameters(
      # The teacher is the broadcast model (FedNTD, FedSSD).
      ('broadcast_teacher', True, False),
      # The teacher's weights are sent beside the model (FedGKD).
      ('sent_teacher', True, True),
      # No teacher: the term gets teacher_logits=None (FedGen).
      ('no_teacher', False, False),
  )
  def test_distillation_term_joins_the_loss(self, teacher, send_weights):
    x, y = tiny.client_arrays([6], seed=2)[0]
    initial, sent = _weights(3), _weights(4)
    scale, lr = 0.7, 0.2
    if not teacher:
      t_kernel, t_bias = np.zeros((tiny.NUM_FEATURES, _L)), np.zeros(_L)
    else:
      t_kernel, t_bias = sent if send_weights else initial

    def distill_grad(xb, yb, z):
      del yb
      return scale * (z - (xb @ t_kernel + t_bias)) / len(xb)

    (kernel, bias), _ = _np_sgd(initial, x, y, batch_size=4, lr=lr,
                                distill_grad=distill_grad)
    (no_kd_kernel, _), _ = _np_sgd(initial, x, y, batch_size=4, lr=lr)
    call = dict(call_extra=np.float32(scale))
    if send_weights:
      call['call_teacher_weights'] = (list(sent), [])
    delta, weight, _, _ = _run(
        initial, x, y, batch_size=4, lr=lr, teacher=teacher,
        distillation_fn=_half_squared_distance, **call)
    self.assertAllClose(delta[0], initial[0] - kernel, rtol=1e-5, atol=1e-6)
    self.assertAllClose(delta[1], initial[1] - bias, rtol=1e-5, atol=1e-6)
    self.assertNotAllClose(delta[0], initial[0] - no_kd_kernel, atol=1e-3)
    self.assertEqual(weight, 6.0)

  def test_observe_fn_folds_each_steps_forward_pass(self):
    x, y = tiny.client_arrays([9], seed=5)[0]
    initial = _weights(6)
    start = (np.ones((_L, _L), np.float32), np.full([_L], 2.0, np.float32))
    (kernel, _), batches = _np_sgd(initial, x, y, batch_size=4, lr=0.3)
    delta, weight, is_finite, _, (sums, counts) = _run(
        initial, x, y, batch_size=4, lr=0.3, observe_fn=_label_sums,
        call_observed=start)
    # Each batch's logits before its step, the ones its gradient came from.
    expected = start[0].astype(np.float64)
    for _, yb, z, _ in batches:
      np.add.at(expected, yb, z)
    self.assertAllClose(sums, expected, rtol=1e-5, atol=1e-5)
    self.assertAllEqual(counts, start[1] + np.bincount(y, minlength=_L))
    self.assertAllClose(delta[0], initial[0] - kernel, rtol=1e-5, atol=1e-6)
    self.assertEqual((weight, is_finite), (9.0, 1))

  @parameterized.named_parameters(('nan', np.nan), ('inf', np.inf))
  def test_non_finite_client_sends_zero_delta_with_weight_zero(self, value):
    x, y = tiny.client_arrays([6], seed=7)[0]
    x[4, 1] = value
    delta, weight, is_finite, metrics = _run(_weights(8), x, y, batch_size=3,
                                             lr=0.1)
    self.assertAllEqual(delta[0], np.zeros((tiny.NUM_FEATURES, _L)))
    self.assertAllEqual(delta[1], np.zeros(_L))
    self.assertEqual((weight, is_finite), (0.0, 0))
    # Its training metrics are reset, so they do not count either.
    self.assertEqual(metrics['num_examples'], [0])
    self.assertAllEqual(metrics['loss'], [0.0, 0.0])

  def test_a_teacher_needs_a_distillation_fn(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, 'teacher needs a distillation'):
        local_training.build_client_update(
            tiny.model_fn(), tiny.sgd(), teacher=tiny.model_fn())


class DistillationEpochsTest(tf.test.TestCase, parameterized.TestCase):
  """DS-FL's client distillation loop against numpy SGD on the KL."""

  @parameterized.named_parameters(('all', -1, 2, 3), ('two_batches', 2, 2, 3),
                                  ('none', 0, 1, 4))
  def test_matches_numpy_sgd_on_the_kl(self, max_batches, epochs, batch_size):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, tiny.NUM_FEATURES)).astype(np.float32)
    teacher = rng.normal(size=(5, _L)).astype(np.float32)
    initial = _weights(6)
    seed = np.array([3, 7], np.int32)
    lr = 0.4

    @tff.tensorflow.computation
    def run():
      distill = tf.function(local_training.build_distillation_epochs(
          tiny.model_fn(), tiny.sgd(lr), epochs=epochs, batch_size=batch_size))
      return distill(tff.learning.models.ModelWeights(list(initial), []),
                     tf.constant(x), tf.constant(teacher), tf.constant(seed),
                     tf.constant(max_batches, tf.int64))

    # The batches: each epoch's permutation from [seed0, seed1 * 1000 + e].
    order = np.concatenate([
        tf.argsort(tf.random.stateless_uniform(
            [5], [seed[0], seed[1] * 1000 + e])).numpy()
        for e in range(epochs)])
    batches = [order[i:i + batch_size] for i in range(0, len(order),
                                                      batch_size)]
    if max_batches >= 0:
      batches = batches[:max_batches]
    kernel, bias = (np.array(w, np.float64) for w in initial)
    for index in batches:
      z = x[index] @ kernel + bias
      dz = (tiny.np_softmax(z) - tiny.np_softmax(teacher[index])) / len(index)
      kernel, bias = kernel - lr * x[index].T @ dz, bias - lr * dz.sum(0)
    self.assertAllClose(run(), [kernel, bias], rtol=1e-5, atol=1e-6)
    if max_batches == 0:
      self.assertAllClose(run(), initial)

  def test_rejects_bad_arguments(self):
    with tf.Graph().as_default():
      with self.assertRaisesRegex(ValueError, 'epochs must be >= 1; got 0'):
        local_training.build_distillation_epochs(
            tiny.model_fn(), tiny.sgd(), epochs=0, batch_size=1)


class HelpersTest(tf.test.TestCase):

  def test_assign_flattens_nested_values_in_order(self):
    variables = [tf.Variable(np.zeros(2, np.float32)),
                 tf.Variable(0.0), tf.Variable(np.zeros((1, 2), np.float32))]
    # Tensors are the leaves: (trainable, non_trainable) as ModelWeights.
    local_training.assign(variables, ([np.array([1.0, 2.0])], {'a': 3.0},
                                      [np.array([[4.0, 5.0]])]))
    self.assertAllEqual(variables[0], [1.0, 2.0])
    self.assertEqual(variables[1], 3.0)
    self.assertAllEqual(variables[2], [[4.0, 5.0]])

  def test_batch_inputs_and_labels_of_mappings_and_tuples(self):
    x, y = np.ones((2, 3)), np.array([0, 1])
    self.assertIs(local_training.batch_inputs({'x': x, 'y': y}), x)
    self.assertIs(local_training.batch_labels({'x': x, 'y': y}), y)
    self.assertIs(local_training.batch_inputs((x, y)), x)
    self.assertIs(local_training.batch_labels((x, y)), y)

  def test_dataset_reduce_matches_dataset_reduce(self):
    dataset = tf.data.Dataset.range(1, 11).batch(3)

    def fold(state, batch):
      return state * 2 + tf.reduce_sum(batch)

    loop = tf.function(lambda: local_training.dataset_reduce(
        dataset, tf.constant(0, tf.int64), fold))
    self.assertEqual(loop(), dataset.reduce(tf.constant(0, tf.int64), fold))
    self.assertEqual(loop(), ((6 * 2 + 15) * 2 + 24) * 2 + 10)


if __name__ == '__main__':
  tf.test.main()
