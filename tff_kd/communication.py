"""Bytes of what travels, computed from TFF value types."""

import numpy as np
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
