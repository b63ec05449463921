"""The client work process: its type signatures (with and without what a
`Distillation` adds to the broadcast), and on 3 tiny clients its updates,
weights, metrics and communication bytes against numpy and the types' sizes;
hyperparameters as state; non-finite clients; argument errors."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import client_work
from tff_kd import optimizers

_F, _L = tiny.NUM_FEATURES, tiny.NUM_CLASSES
_TRAINABLE = tff.StructType([tff.TensorType(np.float32, [_F, _L]),
                             tff.TensorType(np.float32, [_L])])
_WEIGHTS = tff.StructType([('trainable', _TRAINABLE),
                           ('non_trainable', tff.StructType([]))])
_EXTRA = tff.TensorType(np.float32)
_HPARAMS = tff.StructType([('learning_rate', np.float32)])
_WEIGHTS_BYTES = (_F * _L + _L) * 4  # float32 kernel and bias.


def _half_squared_distance(labels, student, teacher, extra):
  """extra / 2 * mean_i ||z_S - z_T||^2 (extra = 1 without an extra)."""
  del labels
  scale = 1.0 if extra is None else extra
  return scale * 0.5 * tf.reduce_mean(
      tf.reduce_sum(tf.square(student - teacher), axis=1))


def _np_sgd(weights, x, y, *, batch_size, lr, teacher=None, scale=1.0):
  """Minibatch SGD on cross-entropy (+ `_half_squared_distance` toward the
  linear `teacher`), float64: the final (kernel, bias) and the loss sum."""
  kernel, bias = (np.array(w, np.float64) for w in weights)
  loss_sum = 0.0
  for start in range(0, len(y), batch_size):
    xb, yb = x[start:start + batch_size], y[start:start + batch_size]
    z = xb @ kernel + bias
    p = tiny.np_softmax(z)
    loss_sum -= np.sum(np.log(p[np.arange(len(yb)), yb]))
    dz = (p - np.eye(_L)[yb]) / len(yb)
    if teacher is not None:
      dz += scale * (z - (xb @ teacher[0] + teacher[1])) / len(yb)
    kernel, bias = kernel - lr * xb.T @ dz, bias - lr * dz.sum(axis=0)
  return (kernel, bias), loss_sum


def _model_weights(seed):
  rng = np.random.default_rng(seed)
  return tff.learning.models.ModelWeights(
      trainable=[rng.normal(size=(_F, _L)).astype(np.float32),
                 rng.normal(size=(_L,)).astype(np.float32)],
      non_trainable=[])


class ClientWorkComputationTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('no_distillation', None, _WEIGHTS),
      # The teacher is the broadcast model: nothing more travels.
      ('broadcast_teacher', client_work.Distillation(_half_squared_distance),
       _WEIGHTS),
      ('separate_teacher', client_work.Distillation(
          _half_squared_distance, separate_teacher=True),
       tff.StructType([('model', _WEIGHTS), ('teacher', _WEIGHTS)])),
      ('extra', client_work.Distillation(
          _half_squared_distance, extra_type=_EXTRA),
       tff.StructType([('model', _WEIGHTS), ('extra', _EXTRA)])),
      ('teacher_and_extra', client_work.Distillation(
          _half_squared_distance, separate_teacher=True, extra_type=_EXTRA),
       tff.StructType([('model', _WEIGHTS), ('teacher', _WEIGHTS),
                       ('extra', _EXTRA)])),
  )
  def test_type_signature(self, distillation, broadcast):
    process = client_work.build_client_work(
        tiny.model_fn, tiny.sgd(0.1), distillation=distillation)
    self.assertIsInstance(process, tff.learning.templates.ClientWorkProcess)
    self.assertTrue(client_work.weights_type(tiny.model_fn)
                    .is_equivalent_to(_WEIGHTS))
    self.assertTrue(client_work.broadcast_type(_WEIGHTS, distillation)
                    .is_equivalent_to(broadcast))

    expected_initialize = tff.FunctionType(
        None, tff.FederatedType(_HPARAMS, tff.SERVER))
    data = tff.SequenceType(tff.StructType([
        ('x', tff.TensorType(np.float32, [None, _F])),
        ('y', tff.TensorType(np.int32, [None])),
    ]))
    metrics = tff.StructType([
        ('sparse_categorical_accuracy', np.float32), ('loss', np.float32),
        ('num_examples', np.int64), ('num_batches', np.int64),
    ])
    communication = tff.StructType([
        ('bytes_uploaded', np.int64), ('bytes_downloaded', np.int64),
        ('bytes_uploaded_per_client', np.float64),
        ('bytes_downloaded_per_client', np.float64),
    ])
    expected_next = tff.FunctionType(
        parameter=tff.StructType([
            ('state', tff.FederatedType(_HPARAMS, tff.SERVER)),
            ('weights', tff.FederatedType(broadcast, tff.CLIENTS)),
            ('client_data', tff.FederatedType(data, tff.CLIENTS)),
        ]),
        result=tff.StructType([
            ('state', tff.FederatedType(_HPARAMS, tff.SERVER)),
            ('result', tff.FederatedType(tff.StructType([
                ('update', _TRAINABLE), ('update_weight', np.float32),
            ]), tff.CLIENTS)),
            ('measurements', tff.FederatedType(tff.StructType([
                ('train', metrics), ('non_finite_clients', np.int32),
                ('communication', communication),
            ]), tff.SERVER)),
        ]),
    )
    expected_get = tff.FunctionType(_HPARAMS, _HPARAMS)
    expected_set = tff.FunctionType(
        tff.StructType([('state', _HPARAMS), ('hparams', _HPARAMS)]), _HPARAMS)
    for actual, expected in [
        (process.initialize.type_signature, expected_initialize),
        (process.next.type_signature, expected_next),
        (process.get_hparams.type_signature, expected_get),
        (process.set_hparams.type_signature, expected_set),
    ]:
      self.assertTrue(actual.is_equivalent_to(expected),
                      f'\n{actual}\n!=\n{expected}')

  def test_rejects_bad_arguments(self):
    with self.assertRaisesRegex(TypeError, 'model_fn must be a no-arg'):
      client_work.build_client_work(tiny.model_fn(), tiny.sgd())
    with self.assertRaisesRegex(TypeError, 'client_optimizer must be a tff'):
      client_work.build_client_work(tiny.model_fn, tf.keras.optimizers.SGD())
    with self.assertRaisesRegex(TypeError, 'returned Sequential'):
      client_work.build_client_work(
          lambda: tf.keras.Sequential([tf.keras.layers.Dense(1)]), tiny.sgd())


class ClientWorkExecutionTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.sizes = [5, 8, 3]
    self.arrays = tiny.client_arrays(self.sizes, seed=11)
    self.datasets = tiny.datasets(self.arrays, batch_size=4)
    # Each client trains from the weights it was given.
    self.weights = [_model_weights(seed) for seed in range(3)]

  def _check_updates(self, output, lr, teachers=(None,) * 3, scale=1.0):
    loss_sum = 0.0
    for (x, y), weights, teacher, result in zip(
        self.arrays, self.weights, teachers, output.result):
      (kernel, bias), client_loss = _np_sgd(
          weights.trainable, x, y, batch_size=4, lr=lr, teacher=teacher,
          scale=scale)
      loss_sum += client_loss
      self.assertAllClose(result.update[0], weights.trainable[0] - kernel,
                          rtol=1e-5, atol=1e-6)
      self.assertAllClose(result.update[1], weights.trainable[1] - bias,
                          rtol=1e-5, atol=1e-6)
      self.assertEqual(result.update_weight, len(y))
    train = output.measurements['train']
    self.assertEqual(train['num_examples'], sum(self.sizes))
    self.assertEqual(train['num_batches'], 2 + 2 + 1)
    self.assertAllClose(train['loss'], loss_sum / sum(self.sizes), rtol=1e-5)
    self.assertEqual(output.measurements['non_finite_clients'], 0)

  def test_updates_weights_and_bytes_match_numpy_and_type_sizes(self):
    process = client_work.build_client_work(tiny.model_fn, tiny.sgd(0.1))
    state = process.initialize()
    self.assertAllClose(state['learning_rate'], 0.1)
    output = process.next(state, self.weights, self.datasets)
    self._check_updates(output, lr=0.1)
    self.assertAllClose(output.state['learning_rate'], 0.1)
    # Down: the model weights; up: the update (same size) and its float32
    # weight; summed over the 3 clients.
    self.assertEqual(output.measurements['communication'], dict(
        bytes_uploaded=3 * (_WEIGHTS_BYTES + 4),
        bytes_downloaded=3 * _WEIGHTS_BYTES,
        bytes_uploaded_per_client=_WEIGHTS_BYTES + 4,
        bytes_downloaded_per_client=_WEIGHTS_BYTES))

  def test_set_hparams_sets_the_learning_rate_of_next(self):
    process = client_work.build_client_work(tiny.model_fn, tiny.sgd(0.1))
    state = process.set_hparams(
        process.initialize(), collections.OrderedDict(learning_rate=0.03))
    self.assertAllClose(process.get_hparams(state)['learning_rate'], 0.03)
    self._check_updates(process.next(state, self.weights, self.datasets),
                        lr=0.03)

  def test_round_decay_trains_each_round_at_the_decayed_rate(self):
    decayed = optimizers.RoundDecay(tiny.sgd(0.1), 0.5)
    process = client_work.build_client_work(tiny.model_fn, decayed)
    state = process.initialize()
    first = process.next(state, self.weights, self.datasets)
    self._check_updates(first, lr=0.1)
    self.assertAllClose(first.state['learning_rate'], 0.05)
    self._check_updates(process.next(first.state, self.weights,
                                     self.datasets), lr=0.05)

  def test_teacher_and_extra_come_from_the_broadcast(self):
    distillation = client_work.Distillation(
        _half_squared_distance, separate_teacher=True, extra_type=_EXTRA)
    process = client_work.build_client_work(
        tiny.model_fn, tiny.sgd(0.2), distillation=distillation)
    teachers = [_model_weights(seed) for seed in (7, 8, 9)]
    scales = np.float32(0.6)
    broadcast = [collections.OrderedDict(model=w, teacher=t, extra=scales)
                 for w, t in zip(self.weights, teachers)]
    output = process.next(process.initialize(), broadcast, self.datasets)
    self._check_updates(output, lr=0.2,
                        teachers=[t.trainable for t in teachers], scale=0.6)
    # Down: model, teacher and the float32 extra.
    self.assertEqual(
        output.measurements['communication']['bytes_downloaded_per_client'],
        2 * _WEIGHTS_BYTES + 4)

  def test_non_finite_client_has_zero_update_and_weight_and_is_counted(self):
    x, y = self.arrays[1]
    x = x.copy()
    x[2, 0] = np.nan
    self.arrays[1] = (x, y)
    process = client_work.build_client_work(tiny.model_fn, tiny.sgd(0.1))
    output = process.next(process.initialize(), self.weights,
                          tiny.datasets(self.arrays, batch_size=4))
    bad = output.result[1]
    self.assertAllEqual(bad.update[0], np.zeros((_F, _L)))
    self.assertAllEqual(bad.update[1], np.zeros(_L))
    self.assertEqual(bad.update_weight, 0.0)
    self.assertEqual(output.measurements['non_finite_clients'], 1)
    # Its metrics are reset; the others' count.
    self.assertEqual(output.measurements['train']['num_examples'], 5 + 3)
    for good in (0, 2):
      self.assertEqual(output.result[good].update_weight, self.sizes[good])
    # It was sent the model and sent its (zero) update: 3 clients' bytes.
    self.assertEqual(
        output.measurements['communication']['bytes_downloaded'],
        3 * _WEIGHTS_BYTES)


if __name__ == '__main__':
  tf.test.main()
