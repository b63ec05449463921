"""StackFactory collects every client's value (checked against numpy)."""

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd.aggregators import stack


class StackFactoryTest(tf.test.TestCase):

  def test_collects_each_client_once(self):
    value_type = tff.TensorType(np.float32, [2, 3])
    process = stack.StackFactory(capacity=5).create(value_type)
    values = [np.full((2, 3), k, np.float32) for k in range(1, 5)]
    result = process.next(process.initialize(), values).result
    self.assertEqual(result['count'], 4)
    rows = result['values']
    self.assertEqual(rows.shape, (5, 2, 3))
    self.assertAllEqual(rows[4], np.zeros((2, 3)))
    self.assertCountEqual([float(r[0, 0]) for r in rows[:4]], [1, 2, 3, 4])
    self.assertAllClose(rows.sum(axis=0), sum(values))

  def test_too_many_clients_is_an_error(self):
    process = stack.StackFactory(capacity=2).create(tff.TensorType(np.float32))
    with self.assertRaisesRegex(Exception, 'capacity 2'):
      process.next(process.initialize(), [1.0, 2.0, 3.0])

  def test_rejects_bad_capacity(self):
    with self.assertRaisesRegex(ValueError, 'capacity must be >= 1; got 0'):
      stack.StackFactory(capacity=0)


if __name__ == '__main__':
  tf.test.main()
