"""Fuses client logits on shared inputs into one teacher, example by example.

The ensemble teachers of server-side distillation are fusions of the clients'
predictions on the same R distillation inputs. Each client sends
`OrderedDict(logits=[R, C], weights=[R])`; the server receives, per row r,

    fused[r] = sum_k weights_k[r] * logits_k[r] / sum_k weights_k[r]

- FedDF's AVGLOGITS: every weight 1 (the plain mean over clients);
- FedAUX: weights_k[r] = client k's certainty score s_k(x_r);
- FD (per-label logits): rows are labels, weights_k[r] = client k's count of
  label r.

A row no client weighs stays zero (`divide_no_nan`). A client whose logits or
weights contain NaN or Inf is dropped (weight 0) and counted in the
measurements, as `local_training` drops non-finite model deltas.

Type signature of `create(V).next`, V = `<logits=float32[R,C],
weights=float32[R]>`: `(<()@SERVER, {V}@CLIENTS> -> <state=()@SERVER,
result=<logits=float32[R,C], weights=float32[R]>@SERVER,
measurements=<fused_clients=int32, non_finite_clients=int32>@SERVER>)`; the
result's `weights` is the per-row weight sum.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def value_type(rows: int, columns: int) -> tff.Type:
  """What a client sends: `<logits=float32[rows, columns], weights=float32[rows]>`."""
  return tff.StructWithPythonType(
      collections.OrderedDict(
          logits=tff.TensorType(np.float32, [rows, columns]),
          weights=tff.TensorType(np.float32, [rows]),
      ),
      collections.OrderedDict,
  )


class LogitFusionFactory(tff.aggregators.UnweightedAggregationFactory):
  """Per-row weighted mean of client logits (see module docstring)."""

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    if not (
        isinstance(value_type, tff.StructType)
        and tff.structure.name_list(value_type) == ['logits', 'weights']
        and value_type.logits.shape is not None
        and len(value_type.logits.shape) == 2
        and value_type.weights.shape == value_type.logits.shape[:1]
        and value_type.logits.dtype == np.float32
        and value_type.weights.dtype == np.float32
    ):
      raise TypeError(
          'LogitFusionFactory needs <logits=float32[R,C], weights=float32[R]>;'
          f' got {value_type}.'
      )

    @tff.tensorflow.computation(value_type)
    def scale(value):
      logits, weights = value['logits'], value['weights']
      finite = tf.logical_and(
          tf.reduce_all(tf.math.is_finite(logits)),
          tf.reduce_all(tf.math.is_finite(weights)),
      )
      weights = tf.where(finite, weights, tf.zeros_like(weights))
      # Zero the logits too: NaN * 0 is NaN.
      logits = tf.where(finite, logits, tf.zeros_like(logits))
      return collections.OrderedDict(
          logits=logits * weights[:, tf.newaxis],
          weights=weights,
          fused_clients=tf.cast(finite, tf.int32),
          non_finite_clients=1 - tf.cast(finite, tf.int32),
      )

    @tff.tensorflow.computation(scale.type_signature.result)
    def divide(total):
      return (
          collections.OrderedDict(
              logits=tf.math.divide_no_nan(
                  total['logits'], total['weights'][:, tf.newaxis]
              ),
              weights=total['weights'],
          ),
          collections.OrderedDict(
              fused_clients=total['fused_clients'],
              non_finite_clients=total['non_finite_clients'],
          ),
      )

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
    )
    def next_fn(state, value):
      total = tff.federated_sum(tff.federated_map(scale, value))
      fused, measurements = tff.federated_map(divide, total)
      return tff.templates.MeasuredProcessOutput(state, fused, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)
