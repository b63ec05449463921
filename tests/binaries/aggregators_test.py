"""--aggregator on every algorithm: 2 rounds each, the flags' checks, hparams.

Every registered algorithm runs 2 rounds under each aggregator that applies
to it (`mean` is every other test's), built as the binaries build it
(`common.build_process`: the flags -> `tff_kd.privacy` -> the builder), on a
digits task with a tiny CNN; the combinations that do not apply are refused with an
error naming the flags, before any data is loaded.
"""

import dataclasses
import json
import math

from absl import flags
from absl.testing import flagsaver
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from binaries import common
from binaries import compare
from binaries import registry
from binaries import train
import tasks
from tff_kd import experiment
from tff_kd import run_directory
from tff_kd import privacy

FLAGS = flags.FLAGS

# The combinations that have no such aggregation (registry.check_aggregator).
_REFUSED = {('fedaux', 'dp'), ('fedgen', 'dp'), ('fedgen', 'secure')}
_FAST = dict(  # The algorithms' slowest steps, cut to a few.
    distill_steps=2, distill_batch_size=8, fedgen_generator_steps=1, dsfl_subset_size=16,
    dsfl_distill_epochs=1, dsfl_distill_batch_size=16, fedaux_distill_epochs=1,
    fedaux_distill_batch_size=16)
_SETTINGS = common.Settings(
    task='digits', num_clients=3, clients_per_round=2, local_epochs=1,
    batch_size=64, partition='iid', rounds=2, dp_noise_multiplier=0.7,
    compression_threshold=0,
    algorithm_hparams=dict(common.Settings().algorithm_hparams, **_FAST))


def tiny_cnn():
  """The smallest model every algorithm takes: a convolution `feature_map`
  (FedAD) and a Dense `head` (FedGen, FedAUX)."""
  return tf.keras.Sequential([
      tf.keras.layers.Conv2D(2, 3, name='feature_map'),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(10, name='head'),
  ])


class EveryAlgorithmUnderEveryAggregatorTest(tf.test.TestCase,
                                             parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.task = tasks.create_task(
        'digits', model=tiny_cnn, num_clients=3, partition='iid', seed=0,
        train_client_spec=tff.simulation.baselines.ClientSpec(
            num_epochs=1, batch_size=64))

  @parameterized.parameters(*[
      (name, aggregator) for aggregator in ('dp', 'secure', 'compression')
      for name in sorted(registry.ALGORITHMS)
      if (name, aggregator) not in _REFUSED])
  def test_two_rounds(self, name, aggregator):
    settings = dataclasses.replace(_SETTINGS, aggregator=aggregator)
    algorithm = registry.get(name)
    process = common.build_process(settings, self.task, algorithm)
    state = process.initialize()
    clients = self.task.datasets.train_data.client_ids[:2]
    for round_num in (1, 2):
      output = process.next(state, [
          process.client_input(c, self.task.client_dataset(c, round_num))
          for c in clients])
      state = output.state
    metrics = experiment.flatten(output.metrics)
    spent = privacy.epsilon(metrics)
    if aggregator == 'dp':
      releases = int(algorithm.models) + len(algorithm.knowledge)
      self.assertEqual(spent, privacy.epsilons(0.7, 2 / 3, 2, 1 / 3,
                                               releases)[1])
    else:
      self.assertIsNone(spent)
    counted = float(metrics[experiment.BYTES_UPLOADED_KEY])
    sent = privacy.bytes_uploaded(metrics)
    if aggregator == 'compression':
      # 8 of 32 bits; FedGen's heads travel uncompressed (its stack).
      self.assertBetween(sent, 0.2 * counted,
                         (0.9 if name == 'fedgen' else 0.5) * counted)
    else:
      self.assertEqual(sent, counted)
    for weights in tf.nest.flatten(state):
      if np.issubdtype(np.asarray(weights).dtype, np.floating):
        self.assertTrue(np.all(np.isfinite(weights)))


class FlagsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*sorted(_REFUSED))
  def test_a_combination_that_does_not_apply_is_refused_naming_the_flags(
      self, name, aggregator):
    with flagsaver.flagsaver(aggregator=aggregator):
      with self.assertRaisesRegex(
          flags.ValidationError,
          f'--aggregator={aggregator} does not apply to --algorithm={name}'):
        common.check_algorithm_flags([registry.get(name)])

  def test_dp_over_several_prototypes_is_refused(self):
    with flagsaver.flagsaver(aggregator='dp', prototypes=['cnn', 'mlp']):
      with self.assertRaisesRegex(flags.ValidationError,
                                  '--prototypes=cnn,mlp gives feddf 2'):
        common.check_algorithm_flags([registry.get('feddf')])

  def test_an_aggregator_flag_needs_its_aggregator(self):
    for flag, value, owner in (('dp_noise_multiplier', 0.5, 'dp'),
                               ('dp_clip', '2', 'dp'),
                               ('compression_bits', 4, 'compression')):
      with flagsaver.flagsaver(**{flag: value}):
        FLAGS[flag].present = 1
        try:
          with self.assertRaisesRegex(
              flags.ValidationError,
              f'--{flag} is a setting of --aggregator={owner}; the run has '
              '--aggregator=mean'):
            common.check_algorithm_flags([registry.get('fedavg')])
        finally:
          FLAGS[flag].present = 0

  @parameterized.parameters(
      (dict(dp_noise_multiplier=0.0), r'--dp_noise_multiplier must be in '
       r'\(0, 100\]'),
      (dict(dp_noise_multiplier=1e300), r'--dp_noise_multiplier must be in '
       r'\(0, 100\]'),
      (dict(dp_noise_multiplier=-1.0), '--dp_noise_multiplier must be'),
      (dict(dp_noise_multiplier=math.nan), '--dp_noise_multiplier must be'),
      (dict(dp_clip='abc'), r'--dp_clip must be `adaptive` or a number in '
       r'\(0, 1e\+06\]'),
      (dict(dp_clip='0'), '--dp_clip must be'),
      (dict(dp_clip='1e308'), r'--dp_clip must be .* \(0, 1e\+06\]'),
      (dict(dp_logit_clip=math.inf), r'--dp_logit_clip must be in \(0, '
       r'1e\+06\]'),
      (dict(dp_logit_clip=2e6), '--dp_logit_clip must be in'),
      (dict(dp_delta=1.0), '--dp_delta must be in'),
      (dict(compression_bits=17), '--compression_bits must be in'),
      (dict(compression_threshold=-1), '--compression_threshold must be'),
      (dict(aggregator='dp', dp_clip='adaptive', dp_noise_multiplier=1.0,
            clients_per_round=10), '--dp_clip=adaptive needs '
       '--dp_noise_multiplier < 0.1'),
  )
  def test_a_bad_value_is_refused_when_parsed(self, values, message):
    with flagsaver.flagsaver():
      with self.assertRaisesRegex(flags.IllegalFlagValueError, message):
        for name, value in values.items():
          setattr(FLAGS, name, value)
        FLAGS.validate_all_flags()

  def test_hparams_record_the_aggregator_and_resume_continues_epsilon(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(
        task='digits', model='mlp', num_clients=4, clients_per_round=2,
        rounds=1, local_epochs=1, partition='iid', root_output_dir=root,
        experiment_name='dp', aggregator='dp', dp_noise_multiplier=2.0,
        dp_clip='1'):
      train.main(['train'])
      with open(run_directory.output_paths(root, 'dp')['hparams']) as f:
        hparams = json.load(f)
      self.assertEqual(
          {k: hparams[k] for k in ('aggregator', 'dp_noise_multiplier',
                                   'dp_clip', 'dp_logit_clip', 'dp_delta')},
          dict(aggregator='dp', dp_noise_multiplier=2.0, dp_clip='1.0',
               dp_logit_clip=10.0, dp_delta=None))
      # Resumed, the accountant continues from the checkpointed round count.
      FLAGS.rounds, FLAGS.resume = 2, True
      train.main(['train'])
      rows = run_directory.read_metrics(
          run_directory.output_paths(root, 'dp')['metrics_csv'])
      self.assertEqual(
          [float(r['aggregator/privacy/epsilon']) for r in rows[1:]],
          list(privacy.epsilons(2.0, 0.5, 2, 0.25)))
      # Another noise multiplier is another run.
      FLAGS.dp_noise_multiplier = 1.0
      with self.assertRaisesRegex(ValueError,
                                  r'dp_noise_multiplier=2\.0 \(now 1\.0\)'):
        train.main(['train'])


class CompareTableTest(tf.test.TestCase):

  def test_epsilon_column_and_encoded_megabytes(self):
    rows = [dict(round_num='0', **{experiment.ACCURACY_KEY: '0.1'}),
            {'round_num': '1', experiment.ACCURACY_KEY: '0.5',
             experiment.BYTES_UPLOADED_KEY: '1000000',
             experiment.BYTES_DOWNLOADED_KEY: '500000',
             'aggregator/privacy/epsilon': '3.5',
             'aggregator/mean_value/communication/bytes_uploaded': '200000',
             'aggregator/mean_value/communication/'
             'bytes_uploaded_uncompressed': '800000'}]
    summary = compare._run_summary(rows)
    self.assertEqual(summary['epsilon'], 3.5)
    self.assertAlmostEqual(summary['mb_up'], 0.4)
    self.assertAlmostEqual(summary['mb_down'], 0.5)
    plain = compare._run_summary([rows[0], {
        k: v for k, v in rows[1].items() if not k.startswith('aggregator')}])
    self.assertIsNone(plain['epsilon'])
    self.assertAlmostEqual(plain['mb_up'], 1.0)


if __name__ == '__main__':
  tf.test.main()
