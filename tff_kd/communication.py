"""Bytes of what travels, computed from TFF value types."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def type_bytes(value_type: tff.Type) -> int:
  """Bytes of a value of `value_type`: its tensors, fully defined shapes."""
  if isinstance(value_type, tff.FederatedType):
    return type_bytes(value_type.member)
  if isinstance(value_type, tff.StructType):
    return sum(type_bytes(t) for t in value_type)
  if isinstance(value_type, tff.TensorType):
    shape = value_type.shape
    if shape is None or any(d is None for d in shape):
      raise ValueError(f'{value_type} has no fully defined shape.')
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(
        value_type.dtype
    ).itemsize
  raise TypeError(f'Cannot count the bytes of {value_type}.')


def build_bytes_counter(down: tff.Type, up: tff.Type):
  """Returns `count(x@CLIENTS) -> <bytes_uploaded, bytes_downloaded>@SERVER`.

  Every client of the round (one per member of any CLIENTS-placed `x`)
  receives a value of type `down` and sends one of type `up`; the result sums
  their bytes (int64). Call it inside a federated computation.
  """
  per_client = collections.OrderedDict(
      bytes_uploaded=type_bytes(up), bytes_downloaded=type_bytes(down)
  )

  def count(client_value):
    member = client_value.type_signature.member

    @tff.tensorflow.computation(member)
    def bytes_of_one(value):
      del value
      return collections.OrderedDict(
          (k, tf.constant(v, tf.int64)) for k, v in per_client.items()
      )

    return tff.federated_sum(tff.federated_map(bytes_of_one, client_value))

  return count
