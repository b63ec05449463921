"""Collects client values into a fixed-capacity stack at the server.

Some algorithms need every sampled client's value, not their sum: FedGen
trains its generator against each client's classifier head. TFF has no
"collect" intrinsic, so this factory builds one from `tff.federated_aggregate`:
the accumulator is a zero-initialized `[capacity, ...]` stack plus a count,
each client's value is written at the next free row, and partial stacks merge
by appending. Rows past `count` stay zero. The order of the rows follows the
runtime's aggregation order; consumers must not depend on it (a sum over the
rows does not).

Type signature of `create(V).next`:
`(<()@SERVER, {V}@CLIENTS> -> <state=()@SERVER,
result=<values=V stacked [capacity, ...], count=int32>@SERVER,
measurements=()@SERVER>)`.
"""

import collections

import tensorflow as tf
import tensorflow_federated as tff


def stacked_zeros(value_type: tff.Type, depth: int):
  """Zeros of `value_type` with a leading axis of size `depth` (TF, in a trace)."""
  return tf.nest.map_structure(
      lambda s: tf.zeros([depth] + s.shape.as_list(), s.dtype),
      tff.types.type_to_tf_tensor_specs(value_type),
  )


class StackFactory(tff.aggregators.UnweightedAggregationFactory):
  """Stacks up to `capacity` client values; more clients is an error."""

  def __init__(self, capacity: int):
    if capacity < 1:
      raise ValueError(f'capacity must be >= 1; got {capacity}.')
    self._capacity = capacity

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    capacity = self._capacity

    @tff.tensorflow.computation()
    def zeros():
      return collections.OrderedDict(
          values=stacked_zeros(value_type, capacity),
          count=tf.constant(0, tf.int32),
      )

    stack_type = zeros.type_signature.result

    def checked(count):
      """`count`, after checking it is within capacity."""
      with tf.control_dependencies([tf.debugging.assert_less_equal(
          count, capacity,
          message=f'StackFactory: more clients than capacity {capacity}.',
      )]):
        return tf.identity(count)

    @tff.tensorflow.computation(stack_type, value_type)
    def accumulate(stack, value):
      count = checked(stack['count'] + 1) - 1
      values = tf.nest.map_structure(
          lambda rows, v: tf.tensor_scatter_nd_update(
              rows, [[count]], v[tf.newaxis]
          ),
          stack['values'],
          value,
      )
      return collections.OrderedDict(values=values, count=count + 1)

    @tff.tensorflow.computation(stack_type, stack_type)
    def merge(a, b):
      total = checked(a['count'] + b['count'])
      positions = a['count'] + tf.range(b['count'])
      values = tf.nest.map_structure(
          lambda rows_a, rows_b: tf.tensor_scatter_nd_update(
              rows_a, positions[:, tf.newaxis], rows_b[:b['count']]
          ),
          a['values'],
          b['values'],
      )
      return collections.OrderedDict(values=values, count=total)

    @tff.tensorflow.computation(stack_type)
    def report(stack):
      return stack

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
    )
    def next_fn(state, value):
      stacked = tff.federated_aggregate(value, zeros(), accumulate, merge,
                                        report)
      return tff.templates.MeasuredProcessOutput(
          state, stacked, tff.federated_value((), tff.SERVER)
      )

    return tff.templates.AggregationProcess(init_fn, next_fn)
