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


def summarize(bytes_uploaded, bytes_downloaded):
  """Per-client int64 bytes@CLIENTS -> totals and per-client means@SERVER.

  `<bytes_uploaded, bytes_downloaded, bytes_uploaded_per_client,
  bytes_downloaded_per_client>`: the sums over the round's clients and their
  means (float64; 0 with no clients). Call it inside a federated computation.
  """
  @tff.tensorflow.computation(bytes_uploaded.type_signature.member,
                              bytes_downloaded.type_signature.member)
  def with_one(up, down):
    return up, down, tf.constant(1, tf.int64)

  up, down, clients = tff.federated_sum(
      tff.federated_map(with_one, (bytes_uploaded, bytes_downloaded)))

  @tff.tensorflow.computation(up.type_signature.member,
                              down.type_signature.member,
                              clients.type_signature.member)
  def means(up, down, clients):
    clients = tf.cast(clients, tf.float64)
    return collections.OrderedDict(
        bytes_uploaded=up,
        bytes_downloaded=down,
        bytes_uploaded_per_client=tf.math.divide_no_nan(
            tf.cast(up, tf.float64), clients),
        bytes_downloaded_per_client=tf.math.divide_no_nan(
            tf.cast(down, tf.float64), clients),
    )

  return tff.federated_map(means, (up, down, clients))


def build_bytes_counter(down: tff.Type, up: tff.Type):
  """Returns `count(x@CLIENTS) -> summarize(...)@SERVER`.

  Every client of the round (one per member of any CLIENTS-placed `x`)
  receives a value of type `down` and sends one of type `up`; the result has
  their total bytes and the per-client means (`summarize`). Call it inside a
  federated computation.
  """
  per_client = (type_bytes(up), type_bytes(down))

  def count(client_value):
    member = client_value.type_signature.member

    @tff.tensorflow.computation(member)
    def bytes_of_one(value):
      del value
      return tuple(tf.constant(v, tf.int64) for v in per_client)

    up_bytes, down_bytes = tff.federated_map(bytes_of_one, client_value)
    return summarize(up_bytes, down_bytes)

  return count
