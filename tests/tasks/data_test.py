"""Datasets: shapes, ranges, canonical order, and tfds via mock data."""

import os
import re
from unittest import mock

from absl.testing import parameterized
import numpy as np
from sklearn import datasets as sk_datasets
import tensorflow as tf
import tensorflow_datasets as tfds

from tasks import data


class EmbeddedDataTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      ('digits', 1797, (8, 8, 1)),
      ('mnist5k', 5000, (28, 28, 1)),
      ('mnist1d', 5000, (40,)),
  )
  def test_shapes_and_labels(self, name, total, shape):
    arrays = data.load_arrays(name)
    self.assertEqual(len(arrays.y_train) + len(arrays.y_test), total)
    self.assertEqual(arrays.x_train.shape[1:], shape)
    self.assertEqual(arrays.x_train.dtype, np.float32)
    self.assertEqual(arrays.y_train.dtype, np.int32)
    self.assertAllEqual(np.unique(arrays.y_train), np.arange(10))
    self.assertTrue(np.all(np.isfinite(arrays.x_train)))

  @parameterized.parameters('digits', 'mnist5k')
  def test_images_in_unit_range_with_a_stratified_holdout(self, name):
    arrays = data.load_arrays(name)
    self.assertGreaterEqual(arrays.x_train.min(), 0.0)
    self.assertLessEqual(arrays.x_train.max(), 1.0)
    test_share = np.bincount(arrays.y_test) / (
        np.bincount(arrays.y_test) + np.bincount(arrays.y_train)
    )
    self.assertAllClose(test_share, np.full(10, 0.2), atol=0.01)

  def test_digits_follow_load_digits_order(self):
    source = sk_datasets.load_digits()
    kept, held = data.stratified_holdout(source.target, 0.2, seed=0)
    arrays = data.load_arrays('digits')
    self.assertAllClose(arrays.x_train[..., 0], source.images[kept] / 16.0)
    self.assertAllEqual(arrays.y_test, source.target[held])

  def test_generated_mnist1d_is_cached_and_read_back(self):
    cache = self.create_tempdir().full_path
    first = data._mnist1d_generated('small', 60, 10, data_dir=cache)  # pylint: disable=protected-access
    self.assertEqual(first.x.shape, (60, 40))
    self.assertEqual(first.x.dtype, np.float32)
    self.assertAllEqual(first.test_indices, np.arange(50, 60))
    self.assertAllEqual(np.bincount(first.y), np.full(10, 6))
    again = data._mnist1d_generated('small', 60, 10, data_dir=cache)  # pylint: disable=protected-access
    self.assertAllEqual(first.x, again.x)
    self.assertAllEqual(first.y, again.y)
    with np.load(f'{cache}/small.npz', allow_pickle=False) as cached:
      self.assertAllEqual(cached['x'], first.x)
    self.assertEqual(data.SPECS['mnist1d_85k'], ((40,), 10))

  def test_unknown_name(self):
    with self.assertRaisesRegex(ValueError, "Unknown dataset 'svhn'"):
      data.load_arrays('svhn')


class TfdsDataTest(tf.test.TestCase):

  def test_mock_data_goes_through_the_tfds_path(self):
    with tfds.testing.mock_data(num_examples=12):
      arrays = data.load_arrays('mnist', data_dir=self.get_temp_dir())
    self.assertEqual(arrays.x_train.shape, (12, 28, 28, 1))
    self.assertEqual(arrays.x_test.shape[1:], (28, 28, 1))
    self.assertEqual(arrays.x_train.dtype, np.float32)
    self.assertLessEqual(arrays.x_train.max(), 1.0)

  def test_cifar10_mock(self):
    with tfds.testing.mock_data(num_examples=5):
      arrays = data.load_arrays('cifar10', data_dir=self.get_temp_dir())
    self.assertEqual(arrays.x_train.shape, (5, 32, 32, 3))

  def test_missing_data_names_data_dir(self):
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(
        FileNotFoundError, re.escape(f"data_dir='{empty}'")
    ):
      data.load_arrays('mnist', data_dir=empty)

  def test_no_data_dir(self):
    with self.assertRaisesRegex(ValueError, 'data_dir'):
      data.load_arrays('cifar100')


def _supervised_mnist(record):
  """A record read as an MNIST (image, label) pair."""
  del record
  return tf.zeros((28, 28, 1), tf.uint8), tf.constant(0, tf.int64)


class _CorruptBuilder:
  """A tfds builder whose records are a corrupt TFRecord file."""

  def __init__(self, path):
    self._path = path

  def as_dataset(self, split, as_supervised):
    del split, as_supervised
    return tf.data.TFRecordDataset(self._path).map(_supervised_mnist)


class TfdsCorruptDataTest(tf.test.TestCase):

  def test_corrupt_records_name_the_data_dir(self):
    data_dir = self.create_tempdir()
    path = data_dir.create_file('mnist-train.tfrecord-00000-of-00001',
                                content='not a record ' * 10).full_path
    with mock.patch.object(tfds, 'builder',
                           return_value=_CorruptBuilder(path)) as builder:
      with self.assertRaisesRegex(
          ValueError,
          re.escape(f"data_dir='{data_dir.full_path}': the tensorflow-datasets"
                    " 'mnist' records cannot be read (DataLossError: ") +
          r'.*corrupted record at 0.*\). Prepare it again: `tfds build mnist '
          r'--data_dir=DIR`\.$') as raised:
        data.load_arrays('mnist', data_dir=data_dir.full_path)
    builder.assert_called_once_with('mnist', data_dir=data_dir.full_path)
    self.assertIsInstance(raised.exception.__cause__, tf.errors.DataLossError)

  def test_only_the_first_line_of_the_error_is_kept(self):
    data_dir = self.create_tempdir().full_path
    builder = mock.Mock()
    builder.as_dataset.side_effect = tf.errors.DataLossError(
        None, None, 'corrupted record\nat offset 1234')
    with mock.patch.object(tfds, 'builder', return_value=builder):
      with self.assertRaises(ValueError) as raised:
        data.load_arrays('emnist_digits', data_dir=data_dir)
    self.assertEqual(
        str(raised.exception),
        f"data_dir='{data_dir}': the tensorflow-datasets 'emnist/digits' "
        'records cannot be read (DataLossError: corrupted record). Prepare it'
        ' again: `tfds build emnist/digits --data_dir=DIR`.')

  def test_other_read_errors_name_the_data_dir_as_missing_data(self):
    data_dir = self.create_tempdir().full_path
    builder = mock.Mock()
    builder.as_dataset.side_effect = AssertionError('no data in dir')
    with mock.patch.object(tfds, 'builder', return_value=builder):
      with self.assertRaisesRegex(
          FileNotFoundError,
          re.escape(f"data_dir='{data_dir}' has no prepared tensorflow-"
                    "datasets 'cifar100' (AssertionError: no data in dir)")):
        data.load_arrays('cifar100', data_dir=data_dir)


class InputsAndLabelsTest(tf.test.TestCase, parameterized.TestCase):

  def test_integer_inputs_are_scaled_and_images_get_a_channel(self):
    x = np.array([[[0, 255], [51, 102]]], np.uint8)
    got = data.as_inputs(x, 'x')
    self.assertEqual(got.dtype, np.float32)
    self.assertEqual(got.shape, (1, 2, 2, 1))
    self.assertAllClose(got[..., 0], [[[0.0, 1.0], [0.2, 0.4]]])
    # Any integer dtype is scaled by 1/255.
    self.assertAllClose(data.as_inputs(np.array([[255, 510]], np.int64), 'x'),
                        [[1.0, 2.0]])

  @parameterized.parameters(((5, 7),), ((5, 3, 3, 1),), ((5, 4, 4, 3),))
  def test_float_inputs_keep_their_values_and_shape(self, shape):
    x = np.random.default_rng(0).normal(size=shape)
    got = data.as_inputs(x, 'x')
    self.assertEqual(got.dtype, np.float32)
    self.assertEqual(got.shape, shape)
    self.assertAllEqual(got, x.astype(np.float32))

  @parameterized.named_parameters(
      ('one_dimensional', np.zeros(5), 'got float64 of shape \\(5,\\)'),
      ('five_dimensional', np.zeros((2, 1, 1, 1, 1)),
       'got float64 of shape \\(2, 1, 1, 1, 1\\)'),
      ('strings', np.array([['a', 'b']]), 'got <U1 of shape \\(1, 2\\)'),
      ('booleans', np.ones((2, 2), bool), 'got bool'),
      ('objects', np.array([[1, None]], object), 'got object'),
  )
  def test_inputs_of_another_kind_are_refused(self, x, pattern):
    with self.assertRaisesRegex(
        ValueError, r'^my_x must be numbers of shape \(N, L\), \(N, H, W\) or'
        r' \(N, H, W, C\); ' + pattern):
      data.as_inputs(x, 'my_x')

  @parameterized.parameters(np.nan, np.inf, -np.inf, 1e39)
  def test_inputs_that_are_not_finite_are_refused(self, value):
    x = np.zeros((2, 3))
    x[1, 2] = value  # 1e39 is finite in float64, not in float32.
    with np.errstate(over='ignore'):  # 1e39 overflows float32 (to inf).
      with self.assertRaisesRegex(ValueError,
                                  '^my_x has values that are not finite'):
        data.as_inputs(x, 'my_x')

  def test_labels(self):
    for dtype in (np.uint8, np.int16, np.int64):
      got = data.as_labels(np.array([3, 0, 7], dtype), 'y', 3)
      self.assertEqual(got.dtype, np.int32)
      self.assertAllEqual(got, [3, 0, 7])
    self.assertAllEqual(data.as_labels([1, 2], 'y', 2), [1, 2])
    empty = data.as_labels(np.zeros(0, np.int64), 'y', 0)
    self.assertEqual((empty.shape, empty.dtype), ((0,), np.int32))

  @parameterized.named_parameters(
      ('floats', np.array([1.0, 2.0, 0.0]), 3, 'got float64 of shape \\(3,\\)'),
      ('negative', np.array([1, -1, 0]), 3, 'got int64 of shape \\(3,\\)'),
      ('too_few', np.array([1, 2]), 3, 'got int64 of shape \\(2,\\)'),
      ('two_dimensional', np.array([[1], [2], [0]]), 3,
       'got int64 of shape \\(3, 1\\)'),
      ('booleans', np.array([True, False, True]), 3, 'got bool'),
      ('strings', np.array(['1', '2', '0']), 3, 'got <U1'),
  )
  def test_labels_of_another_kind_are_refused(self, y, n, pattern):
    with self.assertRaisesRegex(
        ValueError, rf'^my_y must be {n} integer labels in \[0, 2\*\*31\) '
        r'\(one per example\); ' + pattern):
      data.as_labels(y, 'my_y', n)

  def test_labels_beyond_int32_are_refused(self):
    # Not wrapped around (2**32 + 1 would become label 1).
    for label in (2**31, 2**32 + 1):
      with self.assertRaisesRegex(
          ValueError, r'^my_y must be 2 integer labels in \[0, 2\*\*31\) '
          r'\(one per example\); got int64 of shape \(2,\)'):
        data.as_labels(np.array([0, label], np.int64), 'my_y', 2)
    got = data.as_labels(np.array([0, 2**31 - 1], np.int64), 'my_y', 2)
    self.assertAllEqual(got, [0, 2**31 - 1])


def _npz_entries(**overrides):
  entries = dict(
      x_train=np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3),
      y_train=np.array([0, 2, 1, 2]),
      x_test=np.full((2, 3, 3), 255, np.uint8),
      y_test=np.array([1, 0]))
  entries.update(overrides)
  return {k: v for k, v in entries.items() if v is not None}


class NpzTest(tf.test.TestCase, parameterized.TestCase):

  def _save(self, name='data.npz', **overrides):
    path = os.path.join(self.create_tempdir().full_path, name)
    np.savez(path, **_npz_entries(**overrides))
    return path

  def test_arrays_without_client_ids(self):
    arrays, client_ids = data.load_npz(self._save())
    self.assertIsNone(client_ids)
    expected = _npz_entries()
    self.assertEqual(arrays.x_train.shape, (4, 3, 3, 1))
    self.assertEqual(arrays.x_train.dtype, np.float32)
    self.assertAllClose(arrays.x_train[..., 0], expected['x_train'] / 255.0)
    self.assertAllEqual(arrays.x_test, np.ones((2, 3, 3, 1)))
    self.assertAllEqual(arrays.y_train, [0, 2, 1, 2])
    self.assertEqual(arrays.y_train.dtype, np.int32)
    self.assertAllEqual(arrays.y_test, [1, 0])

  @parameterized.parameters((np.array([7, 3, 7, 9]),),
                            (np.array(['a/b', 'ü', 'a/b', 'z']),))
  def test_client_ids_are_returned(self, ids):
    path = self._save(client_ids=ids)
    self.assertTrue(data.npz_has_client_ids(path))
    _, client_ids = data.load_npz(path)
    self.assertAllEqual(client_ids, ids)

  def test_unused_entries_give_one_warning(self):
    path = self._save(notes=np.array('hi'), alpha=np.array(0.5))
    with self.assertLogs(level='WARNING') as logs:
      arrays, _ = data.load_npz(path)
    self.assertEqual(logs.output, [
        f'WARNING:absl:--task=npz:{path}: entries alpha, notes are not used.'])
    self.assertLen(arrays.y_train, 4)

  @parameterized.named_parameters(
      ('one', dict(y_test=None), 'lacks y_test; it needs x_train, y_train, '
       'x_test, y_test .and optionally client_ids.'),
      ('two', dict(x_train=None, y_train=None), 'lacks x_train, y_train;'),
  )
  def test_missing_entries_name_the_file_and_keys(self, overrides, pattern):
    path = self._save(**overrides)
    with self.assertRaisesRegex(ValueError,
                                f'^--task=npz:{re.escape(path)} {pattern}'):
      data.load_npz(path)

  @parameterized.named_parameters(
      ('shapes', dict(x_test=np.zeros((2, 4, 4))),
       r': x_train examples have shape \(3, 3, 1\) but x_test examples '
       r'\(4, 4, 1\)'),
      ('labels', dict(y_train=np.array([0, 1, 2])),
       r' y_train must be 4 integer labels in \[0, 2\*\*31\)'),
      ('inputs', dict(x_test=np.array([[np.nan]])),
       r' x_test has values that are not finite'),
      ('client_ids', dict(client_ids=np.array([1, 2, 3])),
       r': client_ids must hold one client per training example \(4\); got '
       r'shape \(3,\)'),
  )
  def test_bad_entries_name_the_file(self, overrides, pattern):
    path = self._save(**overrides)
    with self.assertRaisesRegex(ValueError,
                                f'^(--task=)?npz:{re.escape(path)}{pattern}'):
      data.load_npz(path)

  def test_unreadable_files_name_the_path(self):
    directory = self.create_tempdir()
    text = directory.create_file('text.npz', content='x_train,y_train\n')
    one = os.path.join(directory.full_path, 'one.npy')
    np.save(one, np.arange(3))
    pickled = os.path.join(directory.full_path, 'pickled.npz')
    np.savez(pickled, **_npz_entries(client_ids=np.array([1, 'a', 2, None],
                                                         object)))
    missing = os.path.join(directory.full_path, 'missing.npz')
    for path, pattern in ((text.full_path, 'pickled data'),
                          (one, 'it holds one ndarray, not named arrays'),
                          (pickled, 'Object arrays cannot be loaded'),
                          (missing, 'No such file')):
      with self.assertRaisesRegex(
          ValueError, f'^--task=npz:{re.escape(path)}: not a readable .npz: '
          f'.*{pattern}'):
        data.load_npz(path)
    self.assertFalse(data.npz_has_client_ids(text.full_path))
    self.assertFalse(data.npz_has_client_ids(missing))
    self.assertFalse(data.npz_has_client_ids(self._save()))

  def test_a_truncated_npz_names_the_path(self):
    path = self._save(client_ids=np.array([1, 2, 1, 2]))
    with open(path, 'rb') as f:
      content = f.read()
    with open(path, 'wb') as f:
      f.write(content[:len(content) // 2])
    with self.assertRaisesRegex(
        ValueError, f'^--task=npz:{re.escape(path)}: not a readable .npz'):
      data.load_npz(path)

  def test_npz_has_client_ids_is_false_for_an_npy_or_a_truncated_npz(self):
    one = os.path.join(self.create_tempdir().full_path, 'one.npy')
    np.save(one, np.arange(3))
    self.assertFalse(data.npz_has_client_ids(one))
    path = self._save(client_ids=np.array([1, 2, 1, 2]))
    with open(path, 'rb') as f:
      content = f.read()
    with open(path, 'wb') as f:
      f.write(content[:len(content) // 2])
    self.assertFalse(data.npz_has_client_ids(path))


class SplitFileTest(tf.test.TestCase):

  def test_unused_entries_give_one_warning_naming_them(self):
    path = os.path.join(self.create_tempdir().full_path, 'split.npz')
    np.savez(path, num_clients=2, train_0=np.array([4, 1]),
             train_1=np.array([0]), test_0=np.array([2]),
             test_1=np.array([3, 2]), seed=3, method=np.array('dirichlet'))
    with self.assertLogs(level='WARNING') as logs:
      train, test = data.load_split_file(path, 6)
    self.assertEqual(logs.output, [
        f"WARNING:absl:split_file='{path}': entries method, seed are not used"
        ' (a split file holds num_clients, train_{c} and optionally '
        'test_{c}).'])
    self.assertLen(train, 2)
    self.assertAllEqual(train[0], [4, 1])
    self.assertAllEqual(train[1], [0])
    self.assertEqual(train[0].dtype, np.int64)
    self.assertAllEqual(test, [2, 3])

  def test_no_warning_without_unused_entries(self):
    path = os.path.join(self.create_tempdir().full_path, 'split.npz')
    np.savez(path, num_clients=1, train_0=np.array([0, 1]))
    with self.assertNoLogs(level='WARNING'):
      train, test = data.load_split_file(path, 3)
    self.assertAllEqual(train[0], [0, 1])
    self.assertIsNone(test)

  def test_a_text_file_names_the_path(self):
    path = self.create_tempdir().create_file('split.npz',
                                             content='0,1').full_path
    with self.assertRaisesRegex(
        ValueError, f'^split_file={re.escape(repr(path))} is not a readable '
        '.npz'):
      data.load_split_file(path, 3)


if __name__ == '__main__':
  tf.test.main()
