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

The summation is a `tff.aggregators` factory of its own, `sum_factory`
(default `tff.aggregators.SumFactory()`: the numbers of a plain
`tff.federated_sum`), so TFF's secure sum (`tff.aggregators.SecureSumFactory`)
or compression (`tff.aggregators.EncodedSumFactory`) sum the clients' weighted
payloads `<logits=w_k * z_k, weights=w_k>`. Differential privacy needs more:
the weights sum (how many clients reported each row) would be released
exactly, and a noisy denominator near zero makes the quotient explode. With
`fixed_denominator=m` the fusion is DP-FedAvg's estimator instead (McMahan et
al., ICLR 2018): uniform weighting, every client counts 1/m with m the
expected number of clients per round (public), the weights are not summed,
and only the weighted logits `w_k * z_k` go through `sum_factory` (a DP sum
clips each client's payload and adds the noise, e.g.
`tff_kd.privacy.GaussianSumFactory`):

    fused[r] = sum_k w_k[r] z_k[r] / m,   weights[r] = m.

The client weights must then be 0 or 1 (a client sends a row or does not); a
weighted teacher (FedAUX's certainties) has no such estimator.

Type signature of `create(V).next`, V = `<logits=float32[R,C],
weights=float32[R]>`: `(<S@SERVER, {V}@CLIENTS> -> <state=S@SERVER,
result=<logits=float32[R,C], weights=float32[R]>@SERVER,
measurements=<fused_clients=int32, non_finite_clients=int32[, sum=M]>@SERVER>)`;
S and M are `sum_factory`'s state and measurements (`sum` only when M has
tensors), the result's `weights` is the per-row weight sum (m with a fixed
denominator).
"""

import collections
from typing import Optional

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


def _has_tensors(type_spec: tff.Type) -> bool:
  if isinstance(type_spec, tff.StructType):
    return any(_has_tensors(t) for _, t in tff.structure.to_elements(type_spec))
  return isinstance(type_spec, tff.TensorType)


class LogitFusionFactory(tff.aggregators.UnweightedAggregationFactory):
  """Per-row weighted mean of client logits (see module docstring)."""

  def __init__(
      self,
      sum_factory: Optional[
          tff.aggregators.UnweightedAggregationFactory] = None,
      *,
      fixed_denominator: Optional[float] = None,
  ):
    """Args:

    sum_factory: sums the clients' weighted payloads; default
      `tff.aggregators.SumFactory()`.
    fixed_denominator: None for the per-row weighted mean; a number m > 0 for
      the uniform, fixed-denominator mean (module docstring), which
      differential privacy needs.
    """
    if sum_factory is None:
      sum_factory = tff.aggregators.SumFactory()
    if not isinstance(sum_factory,
                      tff.aggregators.UnweightedAggregationFactory):
      raise TypeError(
          'sum_factory must be a tff.aggregators.UnweightedAggregationFactory;'
          f' got {sum_factory!r}.')
    if fixed_denominator is not None and not (
        np.isfinite(fixed_denominator) and fixed_denominator > 0):
      raise ValueError('fixed_denominator must be None or finite and > 0; got '
                       f'{fixed_denominator!r}.')
    self._sum_factory = sum_factory
    self._fixed_denominator = fixed_denominator

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
    fixed = self._fixed_denominator
    rows = value_type.weights.shape[0]

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
      weighted = logits * weights[:, tf.newaxis]
      payload = (weighted if fixed is not None else
                 collections.OrderedDict(logits=weighted, weights=weights))
      return payload, collections.OrderedDict(
          fused_clients=tf.cast(finite, tf.int32),
          non_finite_clients=1 - tf.cast(finite, tf.int32),
      )

    payload_type, _ = scale.type_signature.result
    sum_process = self._sum_factory.create(payload_type)
    sum_result_type = sum_process.next.type_signature.result.result.member
    if not sum_result_type.is_assignable_from(payload_type):
      raise TypeError(
          f'sum_factory must return the type it sums ({payload_type}); it '
          f'returns {sum_result_type}.')
    sum_measurements_type = (
        sum_process.next.type_signature.result.measurements.member)

    @tff.tensorflow.computation(sum_result_type)
    def divide(total):
      if fixed is not None:
        return collections.OrderedDict(
            logits=total / np.float32(fixed),
            weights=tf.fill([rows], np.float32(fixed)))
      return collections.OrderedDict(
          logits=tf.math.divide_no_nan(
              total['logits'], total['weights'][:, tf.newaxis]
          ),
          weights=total['weights'],
      )

    @tff.federated_computation()
    def init_fn():
      return sum_process.initialize()

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
    )
    def next_fn(state, value):
      payload, counts = tff.federated_map(scale, value)
      total = sum_process.next(state, payload)
      measurements = collections.OrderedDict(
          fused_clients=tff.federated_sum(counts.fused_clients),
          non_finite_clients=tff.federated_sum(counts.non_finite_clients))
      if _has_tensors(sum_measurements_type):
        measurements['sum'] = total.measurements
      return tff.templates.MeasuredProcessOutput(
          total.state, tff.federated_map(divide, total.result),
          tff.federated_zip(measurements))

    return tff.templates.AggregationProcess(init_fn, next_fn)
