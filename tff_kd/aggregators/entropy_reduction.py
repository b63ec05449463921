"""DS-FL's entropy-reduction aggregation (ERA) of clients' soft labels.

Itahara, Nishio, Koda, Morikura, Yamamoto, "Distillation-Based
Semi-Supervised Federated Learning for Communication-Efficient Collaborative
Training With Non-IID Private Data", IEEE TMC 2021.

Each client sends its soft labels (class probabilities) on the same R public
inputs, as `LogitFusionFactory` values `<logits=float32[R,C],
weights=float32[R]>` (here the "logits" are probabilities). The inner factory
averages them per row (weights 1: DS-FL's simple averaging, SA); ERA then
sharpens each averaged row:

    era[r] = softmax(mean[r] / T),   T = 0.1 by default,

lowering the entropy of the global soft labels, which the paper finds makes
distillation robust to non-IID clients. Note that softmax(p / T) of a
probability vector p has logits in [0, 1/T], so its top probability is at
most 1 / (1 + (C - 1) exp(-1/T)) (0.9996 at T = 0.1, C = 10): ERA sharpens
the flat averages that non-IID clients produce, but makes an average that is
already more confident than that less so (and at large T, e.g. 0.5, it
flattens most rows; the tests show both). Rows no client sent stay as the inner
factory leaves them (zeros) with weight 0. Measurements: the inner factory's,
and the mean entropy (nats) of the weighted rows before and after sharpening.

Privacy and compression happen in the inner factory: e.g.
`EntropyReductionFactory(inner=LogitFusionFactory(sum_factory=...,
fixed_denominator=m))` sharpens a differentially private mean. Sharpening is
post-processing, so it spends no privacy; the noisy mean may have negative
entries, which softmax maps to probabilities like any other.
"""

import collections
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_kd.aggregators import logit_fusion


def mean_entropy(probabilities: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """Mean entropy (nats) of the rows with weight > 0 (0 if there are none).

  Negative entries (a differentially private mean is noisy) count as 0, so
  the measurement stays finite; probabilities are unaffected.
  """
  probabilities = tf.maximum(probabilities, 0.0)
  entropy = -tf.reduce_sum(
      tf.math.multiply_no_nan(tf.math.log(probabilities), probabilities),
      axis=-1)
  present = tf.cast(weights > 0, tf.float32)
  return tf.math.divide_no_nan(
      tf.reduce_sum(entropy * present), tf.reduce_sum(present))


class EntropyReductionFactory(tff.aggregators.UnweightedAggregationFactory):
  """ERA: softmax(mean / T) of the clients' soft labels (module docstring)."""

  def __init__(
      self,
      temperature: float = 0.1,
      inner: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
  ):
    if not temperature > 0:
      raise ValueError(f'temperature must be > 0; got {temperature}.')
    self._temperature = temperature
    self._inner = inner or logit_fusion.LogitFusionFactory()

  def create(self, value_type: tff.Type) -> tff.templates.AggregationProcess:
    inner = self._inner.create(value_type)
    result_type = inner.next.type_signature.result.result.member
    temperature = self._temperature

    @tff.tensorflow.computation(result_type)
    def sharpen(mean):
      present = mean['weights'] > 0
      sharpened = tf.where(
          present[:, tf.newaxis],
          tf.nn.softmax(mean['logits'] / temperature, axis=-1),
          mean['logits'],
      )
      return (
          collections.OrderedDict(logits=sharpened, weights=mean['weights']),
          collections.OrderedDict(
              entropy_before=mean_entropy(mean['logits'], mean['weights']),
              entropy_after=mean_entropy(sharpened, mean['weights']),
          ),
      )

    @tff.federated_computation()
    def init_fn():
      return inner.initialize()

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
    )
    def next_fn(state, value):
      output = inner.next(state, value)
      sharpened, entropy = tff.federated_map(sharpen, output.result)
      measurements = tff.federated_zip(collections.OrderedDict(
          inner=output.measurements, entropy=entropy))
      return tff.templates.MeasuredProcessOutput(
          output.state, sharpened, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)
