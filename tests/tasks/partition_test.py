"""Partitions: coverage, disjointness, determinism, skew, and argument errors."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tasks import partition as partition_lib

_LABELS = np.repeat(np.arange(10), 100)  # 1,000 examples, 100 per class.


class PartitionTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters('iid', 'dirichlet', 'shards', 'quantity')
  def test_every_example_on_exactly_one_client(self, method):
    parts = partition_lib.partition(
        _LABELS, num_clients=20, method=method, seed=0, alpha=0.5
    )
    self.assertLen(parts, 20)
    joined = np.concatenate(parts)
    self.assertLen(joined, len(_LABELS))
    self.assertAllEqual(np.sort(joined), np.arange(len(_LABELS)))
    self.assertGreaterEqual(min(len(p) for p in parts), 1)

  @parameterized.parameters('iid', 'dirichlet', 'shards', 'quantity')
  def test_deterministic_by_seed(self, method):
    kwargs = dict(num_clients=10, method=method, alpha=0.3)
    a = partition_lib.partition(_LABELS, seed=3, **kwargs)
    b = partition_lib.partition(_LABELS, seed=3, **kwargs)
    c = partition_lib.partition(_LABELS, seed=4, **kwargs)
    for x, y in zip(a, b):
      self.assertAllEqual(x, y)
    self.assertFalse(all(np.array_equal(x, y) for x, y in zip(a, c)))

  def test_dirichlet_skew_grows_as_alpha_falls(self):
    skews = [
        np.mean([
            partition_lib.label_skew(
                _LABELS,
                partition_lib.partition(
                    _LABELS, num_clients=20, method='dirichlet', seed=s,
                    alpha=alpha,
                ),
            )
            for s in range(3)
        ])
        for alpha in (100.0, 1.0, 0.1, 0.05)
    ]
    self.assertLess(skews[0], 0.15)
    self.assertGreater(skews[-1], 0.6)
    self.assertAllEqual(np.argsort(skews), np.arange(4))

  def test_iid_has_little_skew(self):
    parts = partition_lib.partition(
        _LABELS, num_clients=10, method='iid', seed=0
    )
    self.assertLess(partition_lib.label_skew(_LABELS, parts), 0.15)
    self.assertEqual({len(p) for p in parts}, {100})

  @parameterized.parameters(1, 2, 3)
  def test_shards_give_k_classes_per_client(self, k):
    parts = partition_lib.partition(
        _LABELS, num_clients=10, method='shards', seed=0, classes_per_client=k
    )
    for part in parts:
      self.assertLen(np.unique(_LABELS[part]), k)

  def test_quantity_skew_gives_unequal_sizes_and_iid_labels(self):
    parts = partition_lib.partition(
        _LABELS, num_clients=10, method='quantity', seed=0, alpha=0.5
    )
    sizes = [len(p) for p in parts]
    self.assertGreater(max(sizes), 3 * min(sizes))
    biggest = parts[int(np.argmax(sizes))]
    self.assertLess(partition_lib.label_skew(_LABELS, [biggest]), 0.15)

  @parameterized.named_parameters(
      ('method', dict(method='pathological'), 'partition must be one of'),
      ('alpha', dict(method='dirichlet', alpha=0.0), 'alpha must be > 0; got 0'),
      ('clients', dict(method='iid', num_clients=0), 'num_clients must be'),
      ('too_many', dict(method='iid', num_clients=1001), 'got 1001'),
      ('classes', dict(method='shards', classes_per_client=11),
       'classes_per_client must be in'),
      ('uncovered', dict(method='shards', num_clients=4, classes_per_client=2),
       'must be >= the 10 classes'),
  )
  def test_errors_name_the_argument(self, kwargs, pattern):
    kwargs = dict(dict(num_clients=10, seed=0), **kwargs)
    with self.assertRaisesRegex(ValueError, pattern):
      partition_lib.partition(_LABELS, **kwargs)

  def test_impossible_min_size_is_reported(self):
    with self.assertRaisesRegex(ValueError, 'raise alpha or lower num_clients'):
      partition_lib.partition(
          _LABELS, num_clients=100, method='dirichlet', seed=0, alpha=0.001,
          min_client_size=9,
      )


if __name__ == '__main__':
  tf.test.main()
