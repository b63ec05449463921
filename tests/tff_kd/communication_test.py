"""Bytes of TFF value types, and the per-round byte counts and means, against
hand computations."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import communication


class TypeBytesTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('float32_matrix', tff.TensorType(np.float32, [4, 3]), 4 * 3 * 4),
      ('int64_scalar', tff.TensorType(np.int64), 8),
      ('float64_vector', tff.TensorType(np.float64, [5]), 5 * 8),
      ('int8', tff.TensorType(np.int8, [7, 2]), 14),
      ('bool', tff.TensorType(np.bool_, [3]), 3),
      ('empty_tensor', tff.TensorType(np.float32, [0, 9]), 0),
      ('empty_struct', tff.StructType([]), 0),
      # A model's weights: a 4x3 kernel, 3 biases, one int32 step counter.
      ('nested_struct', tff.StructType([
          ('trainable', tff.StructType([tff.TensorType(np.float32, [4, 3]),
                                        tff.TensorType(np.float32, [3])])),
          ('non_trainable', tff.StructType([tff.TensorType(np.int32)])),
      ]), (12 + 3) * 4 + 4),
      ('federated_member', tff.FederatedType(
          tff.TensorType(np.float16, [10]), tff.CLIENTS), 10 * 2),
  )
  def test_bytes(self, value_type, expected):
    self.assertEqual(communication.type_bytes(value_type), expected)

  def test_undefined_shape_is_an_error_naming_the_type(self):
    for shape in ([None, 3], None):
      with self.assertRaisesRegex(ValueError, 'no fully defined shape'):
        communication.type_bytes(tff.TensorType(np.float32, shape))

  def test_a_sequence_has_no_byte_count(self):
    with self.assertRaisesRegex(TypeError, 'Cannot count the bytes'):
      communication.type_bytes(
          tff.SequenceType(tff.TensorType(np.float32, [2])))


_DOWN = tff.StructType([tff.TensorType(np.float32, [4, 3]),
                        tff.TensorType(np.int64)])  # 48 + 8 bytes.
_UP = tff.TensorType(np.int8, [5])  # 5 bytes.


@tff.federated_computation(tff.FederatedType(np.int32, tff.CLIENTS))
def _count(clients):
  return communication.build_bytes_counter(down=_DOWN, up=_UP)(clients)


@tff.federated_computation(tff.FederatedType(np.int64, tff.CLIENTS),
                           tff.FederatedType(np.int64, tff.CLIENTS))
def _summarize(up, down):
  return communication.summarize(up, down)


class CountTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(1, 3)
  def test_bytes_counter_counts_every_client_of_the_round(self, clients):
    # The clients' values do not matter, only how many there are.
    result = _count(list(range(clients)))
    self.assertEqual(result, collections.OrderedDict(
        bytes_uploaded=5 * clients,
        bytes_downloaded=56 * clients,
        bytes_uploaded_per_client=5.0,
        bytes_downloaded_per_client=56.0,
    ))

  def test_no_clients_counts_zero(self):
    self.assertEqual(_count([]), collections.OrderedDict(
        bytes_uploaded=0, bytes_downloaded=0,
        bytes_uploaded_per_client=0.0, bytes_downloaded_per_client=0.0))

  def test_summarize_sums_and_averages_per_client_bytes(self):
    up, down = [10, 20, 45], [7, 0, 1]
    result = _summarize(up, down)
    self.assertEqual(result['bytes_uploaded'], 75)
    self.assertEqual(result['bytes_downloaded'], 8)
    self.assertAllClose(result['bytes_uploaded_per_client'], 25.0)
    self.assertAllClose(result['bytes_downloaded_per_client'], 8 / 3)
    self.assertIsInstance(result['bytes_uploaded'], np.int64)
    self.assertIsInstance(result['bytes_uploaded_per_client'], np.float64)


if __name__ == '__main__':
  tf.test.main()
