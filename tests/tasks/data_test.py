"""Datasets: shapes, ranges, canonical order, and tfds via mock data."""

import re

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


if __name__ == '__main__':
  tf.test.main()
