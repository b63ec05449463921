"""FedAvg's n_k/n weighted averaging as a `tff.aggregators` factory.

McMahan et al. 2017 (the guide's Algorithm 1): w = sum_k (n_k / n) w_k with
n = sum_k n_k. Numerically the same as `tff.aggregators.MeanFactory()`
(weighted sum, then `divide_no_nan` by the weight sum), written out so that the
averaging every algorithm builds on is readable in one place.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


class WeightedMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """Aggregates `value@CLIENTS` into `sum_k w_k value_k / sum_k w_k @SERVER`.

  The process is stateless. Its measurement is `OrderedDict(total_weight=n)`.
  A round in which every weight is zero returns zeros (no NaN).

  Type signature of `create(V, W).next`:
  `(<()@SERVER, {V}@CLIENTS, {W}@CLIENTS> -> <state=()@SERVER,
  result=V@SERVER, measurements=<total_weight=W>@SERVER>)`.
  """

  def create(
      self, value_type: tff.Type, weight_type: tff.Type
  ) -> tff.templates.AggregationProcess:
    for tensor_type in tff.structure.flatten(value_type):
      if not np.issubdtype(tensor_type.dtype, np.floating):
        raise TypeError(
            f'WeightedMeanFactory needs floating-point values; got {value_type}.'
        )
    if not (
        isinstance(weight_type, tff.TensorType)
        and np.issubdtype(weight_type.dtype, np.floating)
    ):
      raise TypeError(
          f'WeightedMeanFactory needs a float scalar weight; got {weight_type}.'
      )

    @tff.tensorflow.computation(value_type, weight_type)
    def scale(value, weight):
      return tf.nest.map_structure(lambda v: v * tf.cast(weight, v.dtype), value)

    @tff.tensorflow.computation(value_type, weight_type)
    def divide(value_sum, weight_sum):
      return tf.nest.map_structure(
          lambda v: tf.math.divide_no_nan(v, tf.cast(weight_sum, v.dtype)),
          value_sum,
      )

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS),
    )
    def next_fn(state, value, weight):
      value_sum = tff.federated_sum(tff.federated_map(scale, (value, weight)))
      weight_sum = tff.federated_sum(weight)
      mean = tff.federated_map(divide, (value_sum, weight_sum))
      measurements = tff.federated_zip(
          collections.OrderedDict(total_weight=weight_sum)
      )
      return tff.templates.MeasuredProcessOutput(state, mean, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)
