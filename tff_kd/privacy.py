"""Differential privacy, secure aggregation and compression of what KD sends.

KD clients send weights, logits, soft labels or attention maps; every one of
them reaches the server through a `tff.aggregators` factory (the builders'
`model_aggregator` and `fusion_aggregator`). This module maps four ways of
aggregating onto TFF's own factories, for both kinds of values, and accounts
for the privacy spent. Nothing here adds noise, clips or quantizes by hand:
TFF and TF Privacy do (`tff.aggregators.DifferentiallyPrivateFactory` with
`tfp.GaussianSumQuery`, `tff.learning.dp_aggregator`,
`tff.learning.secure_aggregator` / `tff.aggregators.SecureSumFactory`,
`tff.aggregators.EncodedSumFactory`).

- `mean`: the algorithm's defaults (model updates: the n_k/n weighted mean).
- `dp`: model updates `DifferentiallyPrivateFactory.gaussian_fixed(z, m,
  clip)`, or with `clip=None` `tff.learning.dp_aggregator(z, m,
  zeroing=False)` (adaptive clipping, Andrew et al. 2021); knowledge
  `LogitFusionFactory(GaussianSumFactory(z, row_clip), fixed_denominator=m)`:
  each client's payload clipped, Gaussian noise on the sum, divided by m.
  Uniform weights for both.
- `secure`: model updates `tff.learning.secure_aggregator(zeroing=False,
  clipping=False)` (weighted); knowledge
  `LogitFusionFactory(secure_sum_factory())`.
- `compression`: model updates `MeanFactory(CompressedSumFactory(bits,
  threshold))` (weighted; TFF's `compression_aggregator` without its zeroing
  and clipping); knowledge `LogitFusionFactory(CompressedSumFactory(bits,
  threshold))`.

z is the noise multiplier and m the clients per round. Differential privacy
is at the client level (add or remove one client's whole contribution),
DP-FedAvg's setting (McMahan, Ramage, Talwar, Zhang, ICLR 2018): every
client's update and every knowledge field it sends are clipped in L2 norm,
their sums get Gaussian noise of standard deviation z * clip, and the sums
are divided by m, the expected number of clients (public), not by the number
that took part. That is uniform weighting: a DP mean cannot weigh clients by
their example counts or certainties (the weights would leak, and a noisy
denominator can be near zero), so under `dp` FedAvg and FedDF weigh every
client 1/m, and an algorithm whose teacher weighs clients (FedAUX, certainty
s_k(x)) or needs every client's value (FedGen's heads) has no DP version:
`build_aggregators` refuses it. The adaptive clip of `clip=None` starts at
0.1 and moves toward the median norm; its clipped-count query spends a part
of z (TFF accounts for it: z is the total), and TFF requires z < 0.1 m.

The bound of a knowledge field (`KINDS`) decides its clip. A client's payload
`w_k * z_k` has R rows (inputs, or labels for FD) and is clipped as a whole
(TF Privacy's global L2 clip) to `row_clip * sqrt(R)`, an RMS row norm of
`row_clip`:
- `LOGITS`: logits have no bound, so `row_clip` is the caller's (the
  binaries' `--dp_logit_clip`);
- `BOUNDED`: FedAD's L2-normalized attention maps have rows of L2 norm
  <= 1, so `row_clip = 1` bounds them already and the clip never changes
  them;
- `PROBABILITIES`: soft labels (DS-FL, FD's per-label outputs) are bounded
  likewise (a probability vector has L2 norm <= 1), and their noisy mean is
  projected back onto the values the exact mean can take, rows with entries
  >= 0 summing to at most 1 (`SubSimplexProjectionFactory`; post-processing,
  which spends no privacy). Without it the noise gives negative "probabilities",
  and a KD loss -sum_c t_c log q_c with t_c < 0 has no lower bound: it
  drives q_c to 0.

Privacy accounting (`epsilons`): each round is the Poisson-sampled Gaussian
mechanism with sampling rate q = m / N (N clients; the experiment samples m
without replacement, the approximation of McMahan et al. 2018 and TFF's
tutorials), composed over rounds by `dp_accounting`'s RDP accountant, at a
delta of 1/N unless given. A round that releases k DP sums of the same
clients (FedDF: its model and its logits; FedAD: logits and attention maps)
is one Gaussian mechanism of noise multiplier z / sqrt(k) (each sum's record
normalized by its clip, the k records concatenated). One aggregation part per
process carries the accountant (`AccountedFactory`): its measurements have
`privacy/epsilon` after every round, `privacy/delta` and `privacy/rounds`,
and its state counts the rounds, so a resumed run continues the count. The
clients' training metrics and byte counts are reported in the clear, as in
TFF's DP-FedAvg (a deployment would drop or privatize them), and so are the
fusion's client counts.

Secure aggregation: TFF's C++ runtime has no secure intrinsics; TFF's own
test contexts (`tff.backends.test`) replace them with their insecure
TensorFlow bodies at compile time. `secure_simulation` does the same to the
processes of a secure factory, so they run on `tff_kd.runtime`'s workers
with the protocol's arithmetic (values clipped to the bounds, quantized to
32-bit integers, summed, dequantized) and without its cryptography.

Compression: `CompressedSumFactory` is TFF's
`EncodedSumFactory.quantize_above_threshold` (uniform quantization to `bits`
bits of every tensor with more than `threshold` elements, bit-packed; the
others are sent as they are), measured: its measurements `communication/
bytes_uploaded` and `bytes_uploaded_uncompressed` are the encoded and the
plain bytes of the clients' values (the encoded size read off TFF's encoders,
`encoded_bytes`). Clients whose value is all zeros (the clients of another
prototype, a client that dropped out) send nothing and are not counted, as in
the client works' `communication` metrics. `bytes_uploaded(row)` is a metrics
row's upload with the encoded sizes in place of the plain ones.

Runs under `dp` and `compression` are not reproducible bit for bit: TF
Privacy's Gaussian noise and TFF's stochastic quantization draw unseeded
random numbers.
"""

import collections
from collections.abc import Mapping, Sequence
import dataclasses
import functools
import logging
import math
import re
from typing import Any, Optional, Union

import dp_accounting
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp
from tensorflow_federated.python.core.backends.test import (
    compiler as test_compiler)
from tensorflow_model_optimization.python.core.internal import (
    tensor_encoding as te)

from tff_kd import communication
from tff_kd.aggregators import logit_fusion

AGGREGATORS = ('mean', 'dp', 'secure', 'compression')

# What a knowledge field is, for the aggregators (module docstring).
LOGITS = 'logits'  # Unbounded rows, uniform weights: clipped to row_clip.
BOUNDED = 'bounded'  # Rows of L2 norm <= 1, uniform weights.
PROBABILITIES = 'probabilities'  # BOUNDED rows that are distributions.
WEIGHTED = 'weighted'  # Rows weighted by the client (FedAUX): no DP.
STACKED = 'stacked'  # Every client's value collected (FedGen): no DP/secure.
KINDS = (LOGITS, BOUNDED, PROBABILITIES, WEIGHTED, STACKED)

# The largest `clip` and `logit_clip` (`AggregatorConfig`). TF clips and noises
# in float32 (largest finite value 3.4e38): a clip c is squared against the
# squared norm of an update, c * sqrt(R) is a payload's clip, m clipped values
# are summed and z * c is the noise's standard deviation. At 1e6 all of these
# stay far from overflow (c^2 = 1e12; with R = 1e6 rows and z =
# MAX_NOISE_MULTIPLIER, z * c * sqrt(R) = 1e11), while 1e308 is infinite in
# float32 and every clipped update NaN (every client discarded, nothing
# learned). An update or logit row of norm 1e6 comes only from a diverged
# model, so the bound never clips a finite training run that a larger one
# would not.
MAX_CLIP = 1e6
# The largest `noise_multiplier` z. `dp_accounting`'s RDP accountant loses
# its precision for large z at small sampling rates (it finds a negative
# Renyi divergence: at z = 1e3 for q <= 3e-6, at z = 1e5 for q <= 0.01) and
# overflows from z ~ 1e155 on (OverflowError); up to 100 it computes for
# every q >= 1e-5 (tested). A z of 100 already makes the noise of one round
# 100 times a client's clip, far past any useful privacy/utility trade-off.
MAX_NOISE_MULTIPLIER = 100.0

EPSILON_KEY = 'privacy/epsilon'
BYTES_UPLOADED_KEY = 'communication/bytes_uploaded'
BYTES_UNCOMPRESSED_KEY = 'communication/bytes_uploaded_uncompressed'

Factory = Union[tff.aggregators.WeightedAggregationFactory,
                tff.aggregators.UnweightedAggregationFactory]


# Privacy accounting.


def dp_event(noise_multiplier: float, sampling_rate: float,
             releases_per_round: int = 1) -> dp_accounting.DpEvent:
  """One round: `releases_per_round` Gaussian sums of a Poisson sample."""
  return dp_accounting.PoissonSampledDpEvent(
      sampling_rate,
      dp_accounting.GaussianDpEvent(
          noise_multiplier / math.sqrt(releases_per_round)))


@functools.lru_cache(maxsize=64)
def epsilons(noise_multiplier: float, sampling_rate: float, rounds: int,
             delta: float, releases_per_round: int = 1) -> tuple[float, ...]:
  """Epsilon after rounds 1, ..., `rounds` at `delta` (RDP accountant).

  Each entry is `dp_accounting.rdp.RdpAccountant()` composed with
  `dp_event(...)` t times, `get_epsilon(delta)`: exactly what a direct
  computation gives. About 0.15 s per round (the RDP of the subsampled
  Gaussian at fractional orders); cached.
  """
  if not 0 < noise_multiplier <= MAX_NOISE_MULTIPLIER:
    raise ValueError(
        f'noise_multiplier must be in (0, {MAX_NOISE_MULTIPLIER:g}] '
        f'(MAX_NOISE_MULTIPLIER); got {noise_multiplier!r}.')
  if not 0 < sampling_rate <= 1:
    raise ValueError(f'sampling_rate must be in (0, 1]; got {sampling_rate!r}.')
  if not 0 < delta < 1:
    raise ValueError(f'delta must be in (0, 1); got {delta!r}.')
  event = dp_event(noise_multiplier, sampling_rate, releases_per_round)
  values = []
  for t in range(1, rounds + 1):
    accountant = dp_accounting.rdp.RdpAccountant()
    try:
      accountant.compose(event, t)
      value = float(accountant.get_epsilon(delta))
    except (ArithmeticError, ValueError) as e:  # OverflowError among them.
      # The accountant's own message (`(34, 'Numerical result out of
      # range')`, `Renyi divergence cannot be negative`) names no setting.
      raise ValueError(
          f'The privacy accountant cannot compute epsilon for '
          f'noise_multiplier={noise_multiplier!r} at sampling rate '
          f'{sampling_rate:g} (clients per round / clients), delta {delta:g}, '
          f'round {t} ({type(e).__name__}: {e}): its numerics fail for a '
          'noise multiplier this large at this sampling rate. Lower '
          'noise_multiplier or sample more clients per round.') from e
    if not (math.isfinite(value) and value >= 0):
      raise ValueError(
          f'The privacy accountant gives epsilon {value} for '
          f'noise_multiplier={noise_multiplier!r} at sampling rate '
          f'{sampling_rate:g}, delta {delta:g}, round {t}. Lower '
          'noise_multiplier or sample more clients per round.')
    values.append(value)
  return tuple(values)


class AccountedFactory(tff.aggregators.UnweightedAggregationFactory):
  """An unweighted DP factory whose measurements report the privacy spent.

  State `<inner=S, rounds=int32>` (rounds so far); measurements
  `<inner=M, privacy=<epsilon=float64, delta=float64, rounds=int32>>`, epsilon
  the `epsilons` entry of the round (NaN after the last entry: build again
  with more rounds). The value and result are the inner factory's.
  """

  def __init__(self, inner: tff.aggregators.UnweightedAggregationFactory, *,
               epsilons: Sequence[float], delta: float):
    if not isinstance(inner, tff.aggregators.UnweightedAggregationFactory):
      raise TypeError('inner must be a tff.aggregators.'
                      f'UnweightedAggregationFactory; got {inner!r}.')
    if not epsilons:
      raise ValueError('epsilons must have an entry per round; got none.')
    self._inner = inner
    self._epsilons = np.array(list(epsilons) + [np.nan], np.float64)
    self._delta = float(delta)

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    inner = self._inner.create(value_type)
    table, delta = self._epsilons, self._delta

    @tff.tensorflow.computation()
    def zero():
      return tf.constant(0, tf.int32)

    @tff.tensorflow.computation(np.int32)
    def account(rounds):
      rounds = rounds + 1
      epsilon = tf.gather(tf.constant(table),
                          tf.minimum(rounds, len(table)) - 1)
      return rounds, collections.OrderedDict(
          epsilon=epsilon, delta=tf.constant(delta, tf.float64),
          rounds=rounds)

    @tff.federated_computation()
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(
          inner=inner.initialize(),
          rounds=tff.federated_eval(zero, tff.SERVER)))

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      output = inner.next(state.inner, value)
      rounds, spent = tff.federated_map(account, state.rounds)
      return tff.templates.MeasuredProcessOutput(
          tff.federated_zip(collections.OrderedDict(
              inner=output.state, rounds=rounds)),
          output.result,
          tff.federated_zip(collections.OrderedDict(
              inner=output.measurements, privacy=spent)))

    return tff.templates.AggregationProcess(init_fn, next_fn)


# Differentially private sum of a knowledge payload.


class GaussianSumFactory(tff.aggregators.UnweightedAggregationFactory):
  """Clipped Gaussian sum of [R, ...] payloads, clip `row_clip * sqrt(R)`.

  `tff.aggregators.DifferentiallyPrivateFactory(tfp.GaussianSumQuery(
  l2_norm_clip=c, stddev=noise_multiplier * c))`, c = row_clip * sqrt(R): each
  client's payload is clipped to L2 norm c as a whole (an RMS row norm of
  `row_clip`), and the sum gets N(0, (noise_multiplier * c)^2) noise per
  entry. The value must be one float32 tensor of rank >= 1.
  """

  def __init__(self, noise_multiplier: float, row_clip: float):
    if not 0 <= noise_multiplier <= MAX_NOISE_MULTIPLIER:
      raise ValueError(
          f'noise_multiplier must be in [0, {MAX_NOISE_MULTIPLIER:g}] '
          f'(MAX_NOISE_MULTIPLIER); got {noise_multiplier!r}.')
    if not 0 < row_clip <= MAX_CLIP:
      raise ValueError(f'row_clip must be in (0, {MAX_CLIP:g}] (MAX_CLIP); '
                       f'got {row_clip!r}.')
    self._noise_multiplier = noise_multiplier
    self._row_clip = row_clip

  def clip(self, rows: int) -> float:
    """The L2 clip of a payload of `rows` rows."""
    return self._row_clip * math.sqrt(rows)

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    if not (isinstance(value_type, tff.TensorType)
            and value_type.dtype == np.float32
            and value_type.shape is not None and len(value_type.shape) >= 1
            and value_type.shape[0] is not None):
      raise TypeError('GaussianSumFactory needs a float32 tensor [R, ...]; '
                      f'got {value_type}.')
    clip = self.clip(value_type.shape[0])
    return tff.aggregators.DifferentiallyPrivateFactory(
        tfp.GaussianSumQuery(l2_norm_clip=clip,
                             stddev=self._noise_multiplier * clip)
    ).create(value_type)


def project_rows(values: tf.Tensor) -> tf.Tensor:
  """Each row's Euclidean projection onto {x >= 0, sum(x) <= 1}.

  A row whose positive part sums to at most 1 becomes that positive part;
  any other row its projection onto the probability simplex (Duchi,
  Shalev-Shwartz, Singer, Chandra, ICML 2008: x = max(v - theta, 0), theta
  from the sorted row).
  """
  positive = tf.nn.relu(values)
  sorted_rows = tf.sort(values, axis=-1, direction='DESCENDING')
  ranks = tf.range(1, tf.shape(values)[-1] + 1, dtype=values.dtype)
  excess = tf.cumsum(sorted_rows, axis=-1) - 1.0
  support = tf.reduce_sum(
      tf.cast(sorted_rows - excess / ranks > 0, tf.int32), axis=-1,
      keepdims=True)
  theta = (tf.gather(excess, tf.maximum(support, 1) - 1, batch_dims=1)
           / tf.cast(tf.maximum(support, 1), values.dtype))
  simplex = tf.nn.relu(values - theta)
  return tf.where(tf.reduce_sum(positive, axis=-1, keepdims=True) <= 1.0,
                  positive, simplex)


class SubSimplexProjectionFactory(tff.aggregators.UnweightedAggregationFactory):
  """A fusion's result logits, each row projected by `project_rows`.

  Wraps a factory whose result is `<logits=float32[R, C], weights>` (a
  `LogitFusionFactory`); state and measurements are the inner factory's. For
  the fixed-denominator DP mean of probability rows (weights 0 or 1), whose
  exact value lies in that set: the projection only moves the noise.
  """

  def __init__(self, inner: tff.aggregators.UnweightedAggregationFactory):
    self._inner = inner

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    inner = self._inner.create(value_type)
    result_type = inner.next.type_signature.result.result.member

    @tff.tensorflow.computation(result_type)
    def project(fused):
      return collections.OrderedDict(logits=project_rows(fused['logits']),
                                     weights=fused['weights'])

    @tff.federated_computation(inner.initialize.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      output = inner.next(state, value)
      return tff.templates.MeasuredProcessOutput(
          output.state, tff.federated_map(project, output.result),
          output.measurements)

    return tff.templates.AggregationProcess(inner.initialize, next_fn)


# Secure aggregation.


class _UnusedAssertFilter(logging.Filter):
  """Drops TF's "Object was never used" error about TFF's secure sum.

  TFF's secure quantization builds `tf.debugging.assert_less_equal` ops it
  never runs; TF logs a 10-line ERROR for each when it is garbage collected.
  """

  def filter(self, record):
    message = record.getMessage()
    return not ('Object was never used' in message
                and 'assert_less_equal' in message)


def _quiet_unused_asserts():
  logger = logging.getLogger('tensorflow')
  if not any(isinstance(f, _UnusedAssertFilter) for f in logger.filters):
    logger.addFilter(_UnusedAssertFilter())


def _without_secure_intrinsics(process):
  """`process` with TFF's insecure bodies in place of its secure intrinsics."""
  initialize = test_compiler.replace_secure_intrinsics_with_bodies(
      process.initialize)
  replaced = test_compiler.replace_secure_intrinsics_with_bodies(process.next)
  parameter = process.next.type_signature.parameter

  def measured(output):
    return tff.templates.MeasuredProcessOutput(
        output.state, output.result, output.measurements)

  if len(parameter) == 2:
    @tff.federated_computation(parameter[0], parameter[1])
    def next_fn(state, value):
      return measured(replaced(state, value))
  else:
    @tff.federated_computation(parameter[0], parameter[1], parameter[2])
    def next_fn(state, value, weight):
      return measured(replaced(state, value, weight))

  return tff.templates.AggregationProcess(initialize, next_fn)


class _UnweightedSecureSimulation(
    tff.aggregators.UnweightedAggregationFactory):

  def __init__(self, inner):
    self._inner = inner

  def create(self, value_type):
    return _without_secure_intrinsics(self._inner.create(value_type))


class _WeightedSecureSimulation(tff.aggregators.WeightedAggregationFactory):

  def __init__(self, inner):
    self._inner = inner

  def create(self, value_type, weight_type):
    return _without_secure_intrinsics(
        self._inner.create(value_type, weight_type))


def secure_simulation(factory: Factory) -> Factory:
  """`factory` whose processes run without secure intrinsics (module doc)."""
  _quiet_unused_asserts()
  if isinstance(factory, tff.aggregators.WeightedAggregationFactory):
    return _WeightedSecureSimulation(factory)
  if isinstance(factory, tff.aggregators.UnweightedAggregationFactory):
    return _UnweightedSecureSimulation(factory)
  raise TypeError(
      f'factory must be a tff.aggregators factory; got {factory!r}.')


def secure_sum_factory() -> tff.aggregators.UnweightedAggregationFactory:
  """TFF's secure sum, adaptive bound as `tff.learning.secure_aggregator`'s.

  `SecureSumFactory` clips every entry to [-b, b], b twice an estimate of
  the 0.95 quantile of the clients' largest absolute entries (the estimate
  starts at 50, so b at 100, and adapts each round), then quantizes to 32
  bits; run through `secure_simulation`.
  """
  _quiet_unused_asserts()
  bound = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
      initial_estimate=50.0, target_quantile=0.95, learning_rate=1.0,
      multiplier=2.0, secure_estimation=True)
  return secure_simulation(tff.aggregators.SecureSumFactory(bound))


def secure_model_aggregator() -> tff.aggregators.WeightedAggregationFactory:
  """`tff.learning.secure_aggregator(zeroing=False, clipping=False)`, simulated.

  TFF's weighted secure mean (n_k/n weights, the weights summed securely too);
  its zeroing and clipping are off, so that the mean is the plain mean's up
  to quantization.
  """
  _quiet_unused_asserts()
  return secure_simulation(tff.learning.secure_aggregator(
      zeroing=False, clipping=False, weighted=True))


# Compression.


def _encoder(spec: tf.TensorSpec, bits: int, threshold: int):
  """The encoder of `EncodedSumFactory.quantize_above_threshold` for `spec`."""
  if spec.shape.num_elements() > threshold:
    return te.encoders.as_gather_encoder(
        te.encoders.uniform_quantization(bits), spec)
  return te.encoders.as_gather_encoder(te.encoders.identity(), spec)


def encoded_bytes(value_type: tff.Type, bits: int, threshold: int) -> int:
  """Bytes a client sends of `value_type` under `quantize_above_threshold`.

  The tensors TFF's encoders produce for each tensor of the value (for a
  quantized one: the bit-packed values and their min and max), and the state
  updates they send, encoded once with zeros (the shapes do not depend on
  the values).
  """
  total = 0
  for spec in tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type)):
    encoder = _encoder(spec, bits, threshold)
    encode_params, _, _ = encoder.get_params(encoder.initial_state())
    encoded, state_updates = encoder.encode(
        tf.zeros(spec.shape, spec.dtype), encode_params)
    total += sum(int(np.prod(t.shape, dtype=np.int64)) * t.dtype.size
                 for t in tf.nest.flatten((encoded, state_updates)))
  return total


class CompressedSumFactory(tff.aggregators.UnweightedAggregationFactory):
  """TFF's quantizing sum, with the bytes it saves measured (module doc).

  `tff.aggregators.EncodedSumFactory.quantize_above_threshold(bits,
  threshold)`: each tensor of more than `threshold` elements is uniformly
  quantized to `bits` bits between its min and max (stochastic rounding) and
  bit-packed. Measurements: `<communication=<bytes_uploaded=int64,
  bytes_uploaded_uncompressed=int64>>`, over the clients whose value is not
  all zeros.
  """

  def __init__(self, bits: int = 8, threshold: int = 20000):
    if not (isinstance(bits, (int, np.integer)) and 1 <= bits <= 16):
      raise ValueError(f'bits must be an integer in [1, 16]; got {bits!r}.')
    if not (isinstance(threshold, (int, np.integer)) and threshold >= 0):
      raise ValueError(f'threshold must be an integer >= 0; got {threshold!r}.')
    self._bits = int(bits)
    self._threshold = int(threshold)

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    inner = tff.aggregators.EncodedSumFactory.quantize_above_threshold(
        quantization_bits=self._bits, threshold=self._threshold
    ).create(value_type)
    sizes = (encoded_bytes(value_type, self._bits, self._threshold),
             communication.type_bytes(value_type))

    @tff.tensorflow.computation(value_type)
    def bytes_of_one(value):
      sends = tf.cast(tf.reduce_any(tf.stack(
          [tf.reduce_any(tf.not_equal(v, 0)) for v in tf.nest.flatten(value)])),
                      tf.int64)
      return tuple(sends * tf.constant(s, tf.int64) for s in sizes)

    @tff.federated_computation(inner.initialize.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      output = inner.next(state, value)
      encoded, plain = tff.federated_map(bytes_of_one, value)
      return tff.templates.MeasuredProcessOutput(
          output.state, output.result,
          tff.federated_zip(collections.OrderedDict(
              communication=tff.federated_zip(collections.OrderedDict(
                  bytes_uploaded=tff.federated_sum(encoded),
                  bytes_uploaded_uncompressed=tff.federated_sum(plain))))))

    return tff.templates.AggregationProcess(inner.initialize, next_fn)


# Configuration: the aggregators of an algorithm.


@dataclasses.dataclass(frozen=True, kw_only=True)
class AggregatorConfig:
  """How what the clients send is aggregated (module docstring).

  Attributes:
    aggregator: one of `AGGREGATORS`.
    noise_multiplier: `dp`: z in (0, MAX_NOISE_MULTIPLIER], the Gaussian
      noise's standard deviation over the clip.
    clip: `dp`: the L2 clip of a client's model update, in (0, MAX_CLIP], or
      None for TFF's adaptive clipping.
    logit_clip: `dp`: the RMS row norm a `LOGITS` payload is clipped to, in
      (0, MAX_CLIP].
    delta: `dp`: the delta of the reported epsilon; None: 1 / clients.
    compression_bits: `compression`: bits per quantized entry.
    compression_threshold: `compression`: tensors of at most this many
      elements are sent unquantized.
  """

  aggregator: str = 'mean'
  noise_multiplier: float = 1.0
  clip: Optional[float] = 1.0
  logit_clip: float = 10.0
  delta: Optional[float] = None
  compression_bits: int = 8
  compression_threshold: int = 20000

  def __post_init__(self):
    if self.aggregator not in AGGREGATORS:
      raise ValueError(f'aggregator must be one of {AGGREGATORS}; got '
                       f'{self.aggregator!r}.')
    if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
      raise ValueError('noise_multiplier must be finite and > 0 (0 gives no '
                       'privacy: use aggregator="mean"); got '
                       f'{self.noise_multiplier!r}.')
    if self.noise_multiplier > MAX_NOISE_MULTIPLIER:
      raise ValueError(
          f'noise_multiplier must be <= {MAX_NOISE_MULTIPLIER:g} '
          '(MAX_NOISE_MULTIPLIER: beyond it the privacy accountant fails and '
          f'the noise drowns every update); got {self.noise_multiplier!r}.')
    for name in ('clip', 'logit_clip'):
      value = getattr(self, name)
      if (value is None and name == 'logit_clip') or (
          value is not None and not (math.isfinite(value) and value > 0)):
        raise ValueError(f'{name} must be finite and > 0; got {value!r}.')
      if value is not None and value > MAX_CLIP:
        raise ValueError(
            f'{name} must be <= {MAX_CLIP:g} (MAX_CLIP: a larger clip '
            'overflows float32 when squared or multiplied by the noise, and '
            f'no finite training reaches it); got {value!r}.')
    if self.delta is not None and not 0 < self.delta < 1:
      raise ValueError(f'delta must be None or in (0, 1); got {self.delta!r}.')
    CompressedSumFactory(self.compression_bits, self.compression_threshold)


@dataclasses.dataclass(frozen=True)
class Aggregators:
  """What `build_aggregators` returns, for an algorithm's builder.

  Attributes:
    model_aggregator: for `model_aggregator=`; None: the builder's default.
    fusion_aggregator: knowledge field -> factory, for `fusion_aggregator=`;
      None: the builder's default (a field's factory is None where the
      builder's default serves, e.g. FedGen's stack under compression).
    releases_per_round: DP sums per round (0 without DP).
    epsilons: epsilon after each round (empty without DP).
    delta: their delta (None without DP).
  """

  model_aggregator: Optional[Factory] = None
  fusion_aggregator: Optional[Mapping[str, Optional[
      tff.aggregators.UnweightedAggregationFactory]]] = None
  releases_per_round: int = 0
  epsilons: tuple[float, ...] = ()
  delta: Optional[float] = None


def build_aggregators(
    config: AggregatorConfig,
    *,
    models: bool,
    knowledge: Mapping[str, str],
    clients_per_round: int,
    num_clients: int,
    total_rounds: int,
) -> Aggregators:
  """The aggregation factories of `config` for an algorithm.

  Args:
    config: the aggregator and its settings.
    models: whether the algorithm averages model updates.
    knowledge: field -> kind (`KINDS`) of each knowledge field it fuses.
    clients_per_round: m, clients sampled per round.
    num_clients: N, the population (sampling rate m / N, delta 1 / N).
    total_rounds: rounds of the run (the epsilon table's length).

  Returns:
    `Aggregators`; with `dp`, the first DP part (the model's, else the first
    knowledge field's) is an `AccountedFactory`.

  Raises:
    ValueError: a combination that has no such aggregation (module docstring).
  """
  for name, kind in knowledge.items():
    if kind not in KINDS:
      raise ValueError(f'knowledge[{name!r}] must be one of {KINDS}; got '
                       f'{kind!r}.')
  if not 1 <= clients_per_round <= num_clients:
    raise ValueError(f'clients_per_round must be in [1, {num_clients}] '
                     f'(num_clients); got {clients_per_round!r}.')
  if total_rounds < 1:
    raise ValueError(f'total_rounds must be >= 1; got {total_rounds!r}.')
  name = config.aggregator
  if name == 'mean':
    return Aggregators()
  if name == 'compression':
    def compressed():
      return CompressedSumFactory(config.compression_bits,
                                  config.compression_threshold)
    return Aggregators(
        model_aggregator=(tff.aggregators.MeanFactory(compressed())
                          if models else None),
        fusion_aggregator={
            f: (None if kind == STACKED
                else logit_fusion.LogitFusionFactory(compressed()))
            for f, kind in knowledge.items()} or None)
  if name == 'secure':
    stacked = [f for f, kind in knowledge.items() if kind == STACKED]
    if stacked:
      raise ValueError(
          f'aggregator="secure" reveals only sums, but the server needs every '
          f'client\'s {stacked[0]!r} (not their sum).')
    return Aggregators(
        model_aggregator=secure_model_aggregator() if models else None,
        fusion_aggregator={
            f: logit_fusion.LogitFusionFactory(secure_sum_factory())
            for f in knowledge} or None)
  # Differential privacy.
  refused = {f: kind for f, kind in knowledge.items()
             if kind in (WEIGHTED, STACKED)}
  for field, kind in refused.items():
    raise ValueError(
        f'aggregator="dp" needs uniform weights and sums, but knowledge '
        f'{field!r} is ' + (
            'weighted per client (a DP mean weighs every client 1/m)'
            if kind == WEIGHTED else
            'every client\'s value (the server needs each one, not their '
            'sum)') + '.')
  m = clients_per_round
  z = config.noise_multiplier
  if config.clip is None and models and z >= 0.1 * m:
    raise ValueError(
        f'Adaptive clipping (clip=None) needs noise_multiplier < 0.1 * '
        f'clients_per_round = {0.1 * m:g} (TFF\'s clipped-count noise, 0.05 '
        f'per client); got {z!r}. Give a fixed clip.')
  releases = int(models) + len(knowledge)
  delta = config.delta if config.delta is not None else 1.0 / num_clients
  table = epsilons(z, m / num_clients, total_rounds, delta, releases)
  model_aggregator = None
  if models:
    model_aggregator = (
        tff.learning.dp_aggregator(z, m, zeroing=False) if config.clip is None
        else tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
            z, m, config.clip))
  fusion = collections.OrderedDict()
  for field, kind in knowledge.items():
    row_clip = config.logit_clip if kind == LOGITS else 1.0
    fusion[field] = logit_fusion.LogitFusionFactory(
        GaussianSumFactory(z, row_clip), fixed_denominator=float(m))
    if kind == PROBABILITIES:
      fusion[field] = SubSimplexProjectionFactory(fusion[field])
  if models:
    model_aggregator = AccountedFactory(model_aggregator, epsilons=table,
                                        delta=delta)
  elif fusion:
    first = next(iter(fusion))
    fusion[first] = AccountedFactory(fusion[first], epsilons=table,
                                     delta=delta)
  return Aggregators(model_aggregator=model_aggregator,
                     fusion_aggregator=dict(fusion) or None,
                     releases_per_round=releases, epsilons=table, delta=delta)


# Reading a metrics row (`tff_kd.experiment.flatten`'s keys, or the CSV's).


def epsilon(metrics: Mapping[str, Any]) -> Optional[float]:
  """The `privacy/epsilon` of a flat metrics row (any prefix; the largest
  when several aggregators spend privacy), None when it has none."""
  values = [float(v) for k, v in metrics.items()
            if (k == EPSILON_KEY or k.endswith('/' + EPSILON_KEY))
            and v not in (None, '')]
  return max(values) if values else None


def bytes_uploaded(
    metrics: Mapping[str, Any],
    counted_key: str = 'client_work/communication/bytes_uploaded',
) -> float:
  """A row's uploaded bytes with every compressed value at its encoded size.

  `counted_key` (the client works' count, from the TFF types) minus the
  plain bytes and plus the encoded bytes of every `CompressedSumFactory` of
  the row's aggregators; `counted_key` alone without compression.
  """
  def total(suffix):
    return sum(float(v) for k, v in metrics.items()
               if k != counted_key and re.search(f'(^|/){suffix}$', k)
               and v not in (None, ''))

  counted = metrics.get(counted_key)
  counted = float(counted) if counted not in (None, '') else 0.0
  return counted - total(BYTES_UNCOMPRESSED_KEY) + total(BYTES_UPLOADED_KEY)
