"""tff_kd.privacy: DP noise and clipping, accounting, secure sum, compression.

Each against what it must equal: the noise's standard deviation by a
chi-square test, the clip by the contribution's norm, epsilon by a direct
`dp_accounting` computation, the secure and compressed sums by the plain
ones within their quantization error.
"""

import collections
import math

from absl.testing import parameterized
import dp_accounting
import numpy as np
from scipy import stats
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import privacy
from tff_kd.aggregators import logit_fusion
from tff_kd.aggregators import weighted_mean

# A statistical test fails by chance with probability 2e-9 (two-sided).
_P = 1e-9


def _clients(logits, weights=None):
  if weights is None:
    weights = np.ones(logits.shape[:2])
  return [collections.OrderedDict(logits=z.astype(np.float32),
                                  weights=w.astype(np.float32))
          for z, w in zip(logits, weights)]


def _run(factory, value_type, values, rounds=1):
  process = factory.create(value_type)
  state = process.initialize()
  for _ in range(rounds):
    output = process.next(state, values)
    state = output.state
  return output


class DifferentialPrivacyTest(tf.test.TestCase, parameterized.TestCase):

  def test_fused_logits_get_the_configured_noise(self):
    # 3 clients, 400 x 50 logits, every row within the clip: the fused
    # logits minus the exact mean are the noise / m, N(0, (z c sqrt(R) / m)^2)
    # per entry, 20,000 entries.
    rows, columns, m, z, row_clip = 400, 50, 3, 0.8, 30.0
    logits = np.random.default_rng(0).normal(size=(m, rows, columns))
    factory = logit_fusion.LogitFusionFactory(
        privacy.GaussianSumFactory(z, row_clip), fixed_denominator=m)
    output = _run(factory, logit_fusion.value_type(rows, columns),
                  _clients(logits))
    noise = (output.result['logits'] - logits.astype(np.float32).mean(0)) * m
    stddev = z * row_clip * math.sqrt(rows)
    n = noise.size
    # (n - 1) s^2 / sigma^2 is chi-square with n - 1 degrees of freedom.
    statistic = (n - 1) * noise.var(ddof=1) / stddev**2
    self.assertBetween(statistic, stats.chi2.ppf(_P, n - 1),
                       stats.chi2.ppf(1 - _P, n - 1))
    self.assertLess(abs(noise.mean()),
                    stats.norm.ppf(1 - _P) * stddev / math.sqrt(n))
    self.assertAllEqual(output.result['weights'], np.full(rows, m))

  def test_clipping_bounds_each_clients_contribution(self):
    rows, columns, row_clip = 6, 4, 2.0
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, rows, columns)) * 0.1  # Within the clip.
    logits[1] *= 1000.0  # Far beyond it.
    factory = logit_fusion.LogitFusionFactory(
        privacy.GaussianSumFactory(0.0, row_clip), fixed_denominator=3)
    fused = _run(factory, logit_fusion.value_type(rows, columns),
                 _clients(logits)).result['logits'] * 3
    contribution = fused - logits[0] - logits[2]
    clip = row_clip * math.sqrt(rows)
    self.assertAllClose(np.linalg.norm(contribution), clip, rtol=1e-5)
    self.assertAllClose(contribution, logits[1] * clip
                        / np.linalg.norm(logits[1]), rtol=1e-4, atol=1e-5)

  def test_the_model_aggregator_clips_and_weighs_uniformly(self):
    aggregators = privacy.build_aggregators(
        privacy.AggregatorConfig(aggregator='dp', noise_multiplier=1e-9,
                                 clip=1.5),
        models=True, knowledge={}, clients_per_round=2, num_clients=4,
        total_rounds=2)
    value_type = tff.TensorType(np.float32, [3])
    updates = [np.array([0.3, 0.4, 0.0], np.float32),  # Norm 0.5.
               np.array([30.0, 0.0, 40.0], np.float32)]  # Norm 50.
    output = _run(aggregators.model_aggregator, value_type, updates)
    self.assertAllClose(output.result, (updates[0] + updates[1] * 1.5 / 50) / 2,
                        atol=1e-6)

  def test_the_largest_clip_and_noise_stay_finite_in_float32(self):
    # clip=1e308 was infinite in float32: every update clipped to NaN and
    # discarded. At MAX_CLIP an update within the clip passes as it is, and
    # the noise of MAX_NOISE_MULTIPLIER * MAX_CLIP is finite.
    value_type = tff.TensorType(np.float32, [3])
    updates = [np.array([0.3, 0.4, 0.0], np.float32),
               np.array([3e5, 0.0, 4e5], np.float32)]  # Norm 5e5.
    for z, exact in ((1e-9, True), (privacy.MAX_NOISE_MULTIPLIER, False)):
      aggregators = privacy.build_aggregators(
          privacy.AggregatorConfig(aggregator='dp', noise_multiplier=z,
                                   clip=privacy.MAX_CLIP),
          models=True, knowledge={}, clients_per_round=2, num_clients=4,
          total_rounds=1)
      result = _run(aggregators.model_aggregator, value_type, updates).result
      self.assertAllEqual(np.isfinite(result), [True] * 3)
      if exact:
        self.assertAllClose(result, (updates[0] + updates[1]) / 2, rtol=1e-6,
                            atol=1e-2)  # Noise of sd 1e-3 / 2.

  def test_bounded_knowledge_is_never_clipped(self):
    # Soft labels: every row a probability vector, so the payload's norm is at
    # most sqrt(R), the clip of a BOUNDED field.
    aggregators = privacy.build_aggregators(
        privacy.AggregatorConfig(aggregator='dp', noise_multiplier=1e-9),
        models=False, knowledge={'soft_labels': privacy.BOUNDED},
        clients_per_round=2, num_clients=4, total_rounds=1)
    one_hot = np.tile(np.eye(3)[[0]], (5, 1))[None].repeat(2, 0)
    output = _run(aggregators.fusion_aggregator['soft_labels'],
                  logit_fusion.value_type(5, 3), _clients(one_hot))
    self.assertAllClose(output.result['logits'], one_hot[0], atol=1e-6)


  def test_noisy_probabilities_are_projected_onto_what_the_mean_can_be(self):
    rows = tf.constant([[0.2, 0.3, 0.1],     # Feasible: unchanged.
                        [0.5, -0.2, 0.1],    # Negative entries: 0.
                        [0.8, 0.6, -0.2]])   # Sum > 1: the simplex's point.
    self.assertAllClose(privacy.project_rows(rows),
                        [[0.2, 0.3, 0.1], [0.5, 0.0, 0.1], [0.6, 0.4, 0.0]])
    # Against brute force: no point of the set is closer.
    rng = np.random.default_rng(6)
    values = rng.normal(size=(50, 4)).astype(np.float32)
    projected = privacy.project_rows(tf.constant(values)).numpy()
    candidates = rng.dirichlet(np.ones(4), 20000) * rng.uniform(
        size=(20000, 1))
    for value, point in zip(values, projected):
      self.assertLessEqual(np.sum((point - value)**2),
                           np.min(np.sum((candidates - value)**2, 1)) + 1e-6)

  def test_probabilities_fused_under_dp_are_projected(self):
    aggregators = privacy.build_aggregators(
        privacy.AggregatorConfig(aggregator='dp', noise_multiplier=5.0),
        models=False, knowledge={'soft_labels': privacy.PROBABILITIES},
        clients_per_round=2, num_clients=4, total_rounds=1)
    soft = np.full((2, 40, 3), 1 / 3)
    fused = _run(aggregators.fusion_aggregator['soft_labels'],
                 logit_fusion.value_type(40, 3), _clients(soft)).result
    self.assertAllGreaterEqual(fused['logits'], 0.0)
    self.assertAllLessEqual(fused['logits'].sum(1), 1.0 + 1e-5)


class AccountingTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((1.0, 0.5, 1e-5, 1), (0.6, 0.1, 0.05, 2),
                            (2.5, 0.25, 1e-3, 3))
  def test_epsilon_equals_dp_accountings(self, z, q, delta, releases):
    table = privacy.epsilons(z, q, 5, delta, releases)
    for t, epsilon in enumerate(table, start=1):
      accountant = dp_accounting.rdp.RdpAccountant()
      accountant.compose(dp_accounting.SelfComposedDpEvent(
          dp_accounting.PoissonSampledDpEvent(
              q, dp_accounting.GaussianDpEvent(z / math.sqrt(releases))), t))
      self.assertEqual(epsilon, accountant.get_epsilon(delta))
    self.assertAllGreater(np.diff(table), 0)

  def test_k_releases_compose_as_one_gaussian_of_z_over_sqrt_k(self):
    # Without sampling, the composition of k Gaussian mechanisms is exactly
    # one of noise multiplier z / sqrt(k) (RDP adds up: k a / (2 z^2)).
    composed = dp_accounting.rdp.RdpAccountant()
    composed.compose(dp_accounting.ComposedDpEvent(
        [dp_accounting.GaussianDpEvent(1.3)] * 3), 4)
    self.assertAlmostEqual(privacy.epsilons(1.3, 1.0, 4, 1e-5, 3)[-1],
                           composed.get_epsilon(1e-5), places=9)

  def test_the_largest_noise_multiplier_is_accounted_at_any_sampling_rate(self):
    for q in (1e-5, 1e-3, 0.1, 1.0):
      for delta in (1e-9, 0.5):
        for releases in (1, 3):
          table = privacy.epsilons(privacy.MAX_NOISE_MULTIPLIER, q, 2, delta,
                                   releases)
          self.assertTrue(all(math.isfinite(e) and e >= 0 for e in table),
                          (q, delta, releases, table))

  def test_an_accountant_failure_names_the_noise_multiplier(self):
    # Beyond the bound: refused before dp_accounting overflows.
    with self.assertRaisesRegex(ValueError,
                                r'noise_multiplier must be in \(0, 100\]'):
      privacy.epsilons(1e300, 0.3, 1, 1e-5)
    # Within it, at a sampling rate where the accountant's numerics fail
    # (it finds a negative Renyi divergence): the error names the setting.
    with self.assertRaisesRegex(
        ValueError, r'cannot compute epsilon for noise_multiplier=100\.0 at '
        r'sampling rate 1e-06.*Lower noise_multiplier'):
      privacy.epsilons(100.0, 1e-6, 1, 1e-5)

  def test_the_process_reports_epsilon_each_round_and_counts_in_its_state(self):
    table = (0.5, 0.9, 1.2)
    factory = privacy.AccountedFactory(tff.aggregators.SumFactory(),
                                       epsilons=table, delta=0.01)
    process = factory.create(tff.TensorType(np.float32))
    state = process.initialize()
    spent = []
    for _ in range(4):
      output = process.next(state, [1.0, 2.0])
      self.assertEqual(output.result, 3.0)
      state = output.state
      spent.append(output.measurements['privacy']['epsilon'])
      self.assertEqual(output.measurements['privacy']['delta'], 0.01)
    self.assertEqual(spent[:3], list(table))
    self.assertTrue(np.isnan(spent[3]))  # Past the table: not computed.
    self.assertEqual(state['rounds'], 4)

  def test_build_aggregators_accounts_once_for_every_release(self):
    config = privacy.AggregatorConfig(aggregator='dp', noise_multiplier=1.1,
                                      delta=1e-3)
    aggregators = privacy.build_aggregators(
        config, models=True, knowledge={'logits': privacy.LOGITS},
        clients_per_round=5, num_clients=50, total_rounds=3)
    self.assertEqual(aggregators.releases_per_round, 2)
    self.assertEqual(aggregators.epsilons,
                     privacy.epsilons(1.1, 0.1, 3, 1e-3, 2))
    self.assertIsInstance(aggregators.model_aggregator,
                          privacy.AccountedFactory)
    self.assertNotIsInstance(aggregators.fusion_aggregator['logits'],
                             privacy.AccountedFactory)
    default_delta = privacy.build_aggregators(
        config.__class__(aggregator='dp'), models=False,
        knowledge={'a': privacy.BOUNDED, 'b': privacy.LOGITS},
        clients_per_round=5, num_clients=50, total_rounds=1)
    self.assertEqual(default_delta.delta, 1 / 50)
    self.assertIsInstance(default_delta.fusion_aggregator['a'],
                          privacy.AccountedFactory)


class SecureAggregationTest(tf.test.TestCase):

  def test_secure_fusion_is_the_plain_mean_within_quantization_error(self):
    rows, columns = 30, 7
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4, rows, columns)) * 10
    weights = rng.uniform(size=(4, rows))
    value_type = logit_fusion.value_type(rows, columns)
    plain = _run(logit_fusion.LogitFusionFactory(), value_type,
                 _clients(logits, weights))
    secure = _run(logit_fusion.LogitFusionFactory(privacy.secure_sum_factory()),
                  value_type, _clients(logits, weights))
    bound = secure.measurements['sum']['secure_upper_threshold']
    self.assertEqual(bound, 100.0)  # Twice TFF's initial estimate, 50.
    self.assertEqual(secure.measurements['sum']['secure_upper_clipped_count'],
                     0)
    # Per client and entry: one 32-bit quantization step of [-100, 100] and one
    # float32 rounding of that range; over 4 clients, in the weighted sum and
    # in the weight sum W: |fused error| <= 4 step (1 + |fused|) / W.
    step = 2 * bound / (2**32 - 1) + 2 * bound * np.finfo(np.float32).eps
    weight_sum = weights.sum(0)[:, None]
    error = 4 * step * (1 + np.abs(plain.result['logits'])) / weight_sum
    self.assertAllEqual(
        np.abs(secure.result['logits'] - plain.result['logits']) <= error,
        np.ones_like(error, bool))
    self.assertAllClose(secure.result['weights'], plain.result['weights'],
                        atol=4 * step)

  def test_secure_model_mean_is_the_weighted_mean_within_quantization(self):
    value_type = tff.TensorType(np.float32, [5])
    rng = np.random.default_rng(3)
    values = [rng.normal(size=5).astype(np.float32) for _ in range(3)]
    # Weighted values within the initial bound, 100: nothing is clipped.
    weights = [np.float32(w) for w in (1.0, 3.0, 6.0)]
    process = privacy.secure_model_aggregator().create(
        value_type, tff.TensorType(np.float32))
    secure = process.next(process.initialize(), values, weights).result
    mean_process = weighted_mean.WeightedMeanFactory().create(
        value_type, tff.TensorType(np.float32))
    plain = mean_process.next(mean_process.initialize(), values, weights).result
    self.assertAllClose(secure, plain, atol=1e-5)


class CompressionTest(tf.test.TestCase):

  def test_encoded_bytes(self):
    value_type = tff.StructWithPythonType(collections.OrderedDict(
        big=tff.TensorType(np.float32, [1000]),
        small=tff.TensorType(np.float32, [10])), collections.OrderedDict)
    # 8-bit values bit-packed into 28 bits of each int32 (TF Model
    # Optimization's packing), plus the tensor's float32 min and max.
    self.assertEqual(privacy.encoded_bytes(value_type, 8, 100),
                     4 * math.ceil(1000 * 8 / 28) + 8 + 10 * 4)
    self.assertEqual(privacy.encoded_bytes(value_type, 8, 5000), 1010 * 4)
    self.assertEqual(privacy.encoded_bytes(value_type, 4, 0),
                     4 * math.ceil(1000 * 4 / 28) + 8
                     + 4 * math.ceil(10 * 4 / 28) + 8)

  def test_compressed_fusion_counts_the_encoded_bytes_of_senders(self):
    rows, columns = 40, 10
    logits = np.random.default_rng(4).normal(size=(3, rows, columns))
    weights = np.ones((3, rows))
    logits[2], weights[2] = 0.0, 0.0  # Sends nothing.
    value_type = logit_fusion.value_type(rows, columns)
    output = _run(logit_fusion.LogitFusionFactory(
        privacy.CompressedSumFactory(8, 0)), value_type,
                  _clients(logits, weights))
    sent = output.measurements['sum']['communication']
    self.assertEqual(sent['bytes_uploaded'],
                     2 * privacy.encoded_bytes(value_type, 8, 0))
    self.assertEqual(sent['bytes_uploaded_uncompressed'],
                     2 * (rows * columns + rows) * 4)
    # 8 bits between each tensor's min and max: half a step per entry.
    step = (logits[:2].max() - logits[:2].min()) / 255
    self.assertAllClose(output.result['logits'], logits[:2].mean(0),
                        atol=step)

  def test_bytes_uploaded_puts_encoded_sizes_in_place_of_plain_ones(self):
    row = {'client_work/communication/bytes_uploaded': '1000',
           'aggregator/mean_value/communication/bytes_uploaded': '100',
           'aggregator/mean_value/communication/bytes_uploaded_uncompressed':
               '400',
           'fusion/logits/sum/communication/bytes_uploaded': '30',
           'fusion/logits/sum/communication/bytes_uploaded_uncompressed': '90'}
    self.assertEqual(privacy.bytes_uploaded(row), 1000 - 400 + 100 - 90 + 30)
    self.assertEqual(privacy.bytes_uploaded(
        {'client_work/communication/bytes_uploaded': '1000'}), 1000)


class BadConfigurationTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      (dict(noise_multiplier=0.0), 'noise_multiplier must be finite and > 0'),
      (dict(noise_multiplier=-1.0), 'noise_multiplier must be'),
      (dict(clip=0.0), 'clip must be finite and > 0'),
      (dict(clip=1e308), r'clip must be <= 1e\+06 \(MAX_CLIP.*got 1e\+308'),
      (dict(logit_clip=2e6), r'logit_clip must be <= 1e\+06.*got 2000000.0'),
      (dict(noise_multiplier=1e300),
       r'noise_multiplier must be <= 100 \(MAX_NOISE_MULTIPLIER.*got 1e\+300'),
      (dict(logit_clip=math.nan), 'logit_clip must be finite'),
      (dict(delta=1.5), 'delta must be None or in'),
      (dict(aggregator='laplace'), 'aggregator must be one of'),
      (dict(compression_bits=0), 'bits must be an integer in'),
  )
  def test_config(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      privacy.AggregatorConfig(**kwargs)

  @parameterized.parameters(
      ('dp', privacy.WEIGHTED, 'weighted per client'),
      ('dp', privacy.STACKED, 'the server needs each one'),
      ('secure', privacy.STACKED, 'reveals only sums'),
  )
  def test_knowledge_without_such_aggregation(self, aggregator, kind,
                                              message):
    with self.assertRaisesRegex(ValueError, message):
      privacy.build_aggregators(
          privacy.AggregatorConfig(aggregator=aggregator), models=True,
          knowledge={'k': kind}, clients_per_round=2, num_clients=4,
          total_rounds=1)

  def test_adaptive_clipping_needs_enough_clients(self):
    with self.assertRaisesRegex(ValueError,
                                r'noise_multiplier < 0.1 \* clients_per_round'):
      privacy.build_aggregators(
          privacy.AggregatorConfig(aggregator='dp', noise_multiplier=1.0,
                                   clip=None),
          models=True, knowledge={}, clients_per_round=10, num_clients=20,
          total_rounds=1)

  def test_mean_keeps_every_default(self):
    self.assertEqual(
        privacy.build_aggregators(
            privacy.AggregatorConfig(), models=True,
            knowledge={'logits': privacy.WEIGHTED}, clients_per_round=2,
            num_clients=4, total_rounds=1),
        privacy.Aggregators())


if __name__ == '__main__':
  tf.test.main()
