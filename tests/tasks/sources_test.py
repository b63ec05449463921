"""TFF's federated data as arrays: ClientData reading, test sets, the cache."""

import collections
import dataclasses
import os
import re
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tasks import sources


def _client_data(sizes, *, input_key='pixels', label_key='label',
                 shape=(4, 4), dtype=np.float32):
  """A TestClientData of clients `c0`, `c1`, ... with `sizes` examples.

  Example j of client k has label (10 * k + j) and inputs all equal to
  (10 * k + j) / 100 (uint8: the integer itself), so that each example
  tells where it came from.
  """
  slices = collections.OrderedDict()
  for k, n in enumerate(sizes):
    codes = 10 * k + np.arange(n)
    if np.issubdtype(dtype, np.integer):
      x = np.broadcast_to(codes.reshape((-1,) + (1,) * len(shape)),
                          (n,) + shape).astype(dtype)
    else:
      x = np.broadcast_to((codes / 100).reshape((-1,) + (1,) * len(shape)),
                          (n,) + shape).astype(dtype)
    slices[f'c{k}'] = collections.OrderedDict(
        [(input_key, x), (label_key, codes.astype(np.int64))])
  return tff.simulation.datasets.TestClientData(slices)


class ClientDataArraysTest(tf.test.TestCase, parameterized.TestCase):

  def test_clients_in_order_with_their_owners(self):
    x, y, owners = sources.client_data_arrays(_client_data([2, 3, 1]))
    self.assertAllEqual(y, [0, 1, 10, 11, 12, 20])
    self.assertEqual(y.dtype, np.int32)
    self.assertAllEqual(owners, ['c0', 'c0', 'c1', 'c1', 'c1', 'c2'])
    self.assertEqual(owners.dtype.kind, 'U')
    # 2-D images get a channel axis; float inputs keep their values.
    self.assertEqual(x.shape, (6, 4, 4, 1))
    self.assertEqual(x.dtype, np.float32)
    self.assertAllClose(x[:, 0, 0, 0], y / 100)
    self.assertAllEqual(x.min(axis=(1, 2, 3)), x.max(axis=(1, 2, 3)))

  def test_client_order_is_the_client_datas_not_sorted(self):
    slices = collections.OrderedDict()
    for client_id, label in (('zeta', 5), ('alpha', 7), ('mu', 9)):
      slices[client_id] = collections.OrderedDict(
          pixels=np.zeros((1, 2, 2), np.float32),
          label=np.array([label], np.int32))
    client_data = tff.simulation.datasets.TestClientData(slices)
    _, y, owners = sources.client_data_arrays(client_data)
    self.assertAllEqual(owners, ['zeta', 'alpha', 'mu'])
    self.assertAllEqual(y, [5, 7, 9])

  def test_uint8_images_are_scaled(self):
    x, y, _ = sources.client_data_arrays(
        _client_data([3, 2], input_key='image', shape=(2, 2, 3),
                     dtype=np.uint8))
    self.assertEqual(x.shape, (5, 2, 2, 3))
    self.assertEqual(x.dtype, np.float32)
    self.assertAllClose(x[:, 1, 1, 2], y / 255.0)
    self.assertLessEqual(x.max(), 1.0)

  def test_known_layouts_and_named_keys(self):
    # CIFAR-100's layout: image, label and coarse_label; label is the label.
    slices = {'a': collections.OrderedDict(
        coarse_label=np.array([1, 2]), image=np.ones((2, 3, 3, 3), np.uint8),
        label=np.array([40, 41]))}
    _, y, _ = sources.client_data_arrays(
        tff.simulation.datasets.TestClientData(slices))
    self.assertAllEqual(y, [40, 41])
    # Named keys pick any layout, here the coarse labels.
    _, y, _ = sources.client_data_arrays(
        tff.simulation.datasets.TestClientData(slices), input_key='image',
        label_key='coarse_label')
    self.assertAllEqual(y, [1, 2])
    # x/y.
    _, y, _ = sources.client_data_arrays(
        _client_data([2], input_key='x', label_key='y'))
    self.assertAllEqual(y, [0, 1])
    # Two known layouts: the first of KNOWN_KEYS wins.
    both = {'a': collections.OrderedDict(
        x=np.zeros((1, 2), np.float32), y=np.array([5]),
        pixels=np.ones((1, 2), np.float32), label=np.array([6]))}
    x, y, _ = sources.client_data_arrays(
        tff.simulation.datasets.TestClientData(both))
    self.assertAllEqual(x, [[1.0, 1.0]])
    self.assertAllEqual(y, [6])

  def test_tuples(self):
    slices = {'a': (np.full((2, 3), 0.5, np.float32), np.array([3, 4])),
              'b': (np.full((1, 3), 0.25, np.float32), np.array([5]))}
    x, y, owners = sources.client_data_arrays(
        tff.simulation.datasets.TestClientData(slices))
    self.assertAllClose(x, [[0.5] * 3, [0.5] * 3, [0.25] * 3])
    self.assertAllEqual(y, [3, 4, 5])
    self.assertAllEqual(owners, ['a', 'a', 'b'])
    with self.assertRaisesRegex(
        ValueError, 'train_data has .input, label. tuples; input_key and '
        'label_key name the keys of dict elements'):
      sources.client_data_arrays(
          tff.simulation.datasets.TestClientData(slices), input_key='x')

  def test_clients_without_examples_are_left_out(self):
    sizes = {'a': 2, 'empty': 0, 'b': 1}

    def dataset_fn(client_id):
      n = sizes[client_id]
      return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
          x=np.zeros((n, 3), np.float32), y=np.arange(n, dtype=np.int32)))

    client_data = tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
        list(sizes), dataset_fn)
    _, y, owners = sources.client_data_arrays(client_data)
    self.assertAllEqual(owners, ['a', 'a', 'b'])
    self.assertAllEqual(y, [0, 1, 0])
    sizes.update(a=0, b=0)
    with self.assertRaisesRegex(ValueError, '^train_data has no examples'):
      sources.client_data_arrays(client_data)

  @parameterized.named_parameters(
      ('unknown_layout', dict(), ValueError,
       r"train_data has elements with keys \['img', 'target'\], none of the "
       r"known layouts .*'pixels', 'label'.*: give input_key and label_key"),
      ('wrong_input_key', dict(input_key='pixels', label_key='target'),
       ValueError, r"input_key='pixels' is not a key of train_data's "
       r"elements; they have \['img', 'target'\]"),
      ('wrong_label_key', dict(input_key='img', label_key='label'),
       ValueError, r"label_key='label' is not a key of train_data's "
       r"elements; they have \['img', 'target'\]"),
  )
  def test_key_errors_name_the_keys(self, kwargs, error, pattern):
    client_data = _client_data([2], input_key='img', label_key='target')
    with self.assertRaisesRegex(error, pattern):
      sources.client_data_arrays(client_data, **kwargs)

  def test_label_and_input_errors_name_the_argument(self):
    slices = {'a': collections.OrderedDict(
        pixels=np.zeros((2, 3), np.float32), label=np.array([0.0, 1.0]))}
    with self.assertRaisesRegex(ValueError, '^test_data labels must be 2 '
                                r'integer labels in \[0, 2\*\*31\)'):
      sources.client_data_arrays(
          tff.simulation.datasets.TestClientData(slices),
          argument='test_data')
    slices = {'a': collections.OrderedDict(
        pixels=np.array([[0.0, np.nan]], np.float32), label=np.array([0]))}
    with self.assertRaisesRegex(ValueError, '^train_data inputs has values '
                                'that are not finite'):
      sources.client_data_arrays(
          tff.simulation.datasets.TestClientData(slices))


class TestArraysTest(tf.test.TestCase):

  def test_a_client_data_is_pooled_in_client_order(self):
    x, y = sources.test_arrays(_client_data([1, 2, 1]))
    self.assertAllEqual(y, [0, 10, 11, 20])
    self.assertEqual(y.dtype, np.int32)
    self.assertEqual(x.shape, (4, 4, 4, 1))
    self.assertAllClose(x[:, 2, 3, 0], [0.0, 0.1, 0.11, 0.2])

  def test_a_dataset_of_dicts_or_tuples(self):
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    labels = np.array([4, 0, 2], np.int64)
    for dataset in (
        tf.data.Dataset.from_tensor_slices(
            collections.OrderedDict(pixels=images, label=labels)),
        tf.data.Dataset.from_tensor_slices((images, labels))):
      x, y = sources.test_arrays(dataset)
      self.assertEqual(x.dtype, np.float32)
      self.assertAllClose(x, images[..., None] / 255.0)
      self.assertAllEqual(y, labels)
      self.assertEqual(y.dtype, np.int32)
    named = tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(img=images, target=labels))
    x, y = sources.test_arrays(named, input_key='img', label_key='target')
    self.assertAllEqual(y, labels)
    with self.assertRaisesRegex(ValueError, r"test_data has elements with "
                                r"keys \['img', 'target'\]"):
      sources.test_arrays(named)

  def test_errors(self):
    empty = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=np.zeros((0, 3), np.float32), y=np.zeros((0,), np.int32)))
    with self.assertRaisesRegex(ValueError, '^test_data has no examples'):
      sources.test_arrays(empty)
    with self.assertRaisesRegex(
        TypeError, '^test_data must be a tff.simulation.datasets.ClientData '
        'or a tf.data.Dataset; got tuple'):
      sources.test_arrays((np.zeros((2, 3)), np.zeros(2)))
    triples = tf.data.Dataset.from_tensor_slices(
        (np.zeros((2, 3)), np.zeros(2), np.zeros(2)))
    with self.assertRaisesRegex(ValueError, 'test_data has elements .*give '
                                r'dict elements .*or \(input, label\) tuples'):
      sources.test_arrays(triples)


class FederatedTest(tf.test.TestCase, parameterized.TestCase):

  def test_tff_cache_dir(self):
    home = self.create_tempdir().full_path
    with mock.patch.dict(os.environ, {'HOME': home}):
      self.assertEqual(sources.tff_cache_dir(None),
                       os.path.join(home, '.tff'))
      self.assertEqual(sources.tff_cache_dir(''), os.path.join(home, '.tff'))
    self.assertEqual(sources.tff_cache_dir('/data/tff'), '/data/tff')

  def test_federated_datasets(self):
    self.assertEqual(
        {name: (f.num_classes, f.label_key, f.cache_file)
         for name, f in sources.FEDERATED.items()},
        {'federated_emnist': (62, 'label', 'emnist_all.sqlite'),
         'federated_emnist_digits': (10, 'label', 'emnist_all.sqlite'),
         'federated_cifar100': (100, 'label', 'cifar100.sqlite')})
    self.assertEqual(sources.KNOWN_KEYS[0], ('pixels', 'label'))

  @parameterized.parameters(*sources.FEDERATED)
  def test_synthetic_data_is_one_client_data_for_both(self, name):
    train, test = sources.load_federated(name, data_dir='/nonexistent',
                                         use_synthetic_data=True)
    self.assertIs(train, test)
    self.assertEqual(train.client_ids, ['synthetic1', 'synthetic2'])
    _, y, _ = sources.client_data_arrays(
        train, label_key='label',
        input_key='image' if 'cifar' in name else 'pixels')
    self.assertLess(y.max(), sources.FEDERATED[name].num_classes)

  @parameterized.parameters(
      ('federated_emnist', 'emnist_all.sqlite', 'emnist'),
      ('federated_emnist_digits', 'emnist_all.sqlite', 'emnist'),
      ('federated_cifar100', 'cifar100.sqlite', 'cifar100'))
  def test_a_missing_cache_file_names_the_path(self, name, file_name, module):
    cache = self.create_tempdir().full_path
    path = os.path.join(cache, file_name)
    with self.assertRaisesRegex(
        FileNotFoundError,
        f'^--task={name}: .* is not in TFF\'s cache: looked for '
        f'{re.escape(path)} \\(--data_dir sets the directory\\).*'
        f'tff.simulation.datasets.{module}.load_data.*--use_synthetic_data'):
      sources.load_federated(name, data_dir=cache, use_synthetic_data=False)
    self.assertEmpty(os.listdir(cache))  # Nothing downloaded.
    home = self.create_tempdir().full_path
    with mock.patch.dict(os.environ, {'HOME': home}):
      with self.assertRaisesRegex(FileNotFoundError, re.escape(
          os.path.join(home, '.tff', file_name))):
        sources.load_federated(name, data_dir=None, use_synthetic_data=False)
    self.assertEmpty(os.listdir(home))

  def test_a_cached_file_is_loaded_from_the_cache(self):
    cache = self.create_tempdir()
    cache.create_file('emnist_all.sqlite')
    loaded = (object(), object())
    load = mock.Mock(return_value=loaded)
    source = dataclasses.replace(sources.FEDERATED['federated_emnist'],
                                 load=load)
    with mock.patch.dict(sources.FEDERATED, {'federated_emnist': source}):
      self.assertIs(
          sources.load_federated('federated_emnist', data_dir=cache.full_path,
                                 use_synthetic_data=False), loaded)
    load.assert_called_once_with(cache.full_path)


if __name__ == '__main__':
  tf.test.main()
