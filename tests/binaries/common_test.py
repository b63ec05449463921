"""The shared flags: `Settings` holds every one, `run_hparams` records every one."""

import dataclasses

from absl import flags
from absl.testing import flagsaver
import tensorflow as tf

from binaries import common
from binaries import registry
from tff_kd import run_directory

FLAGS = flags.FLAGS


class SettingsTest(tf.test.TestCase):

  def test_a_field_per_flag_defaulting_to_the_flag_default(self):
    defined = {flag.name for flag in
               FLAGS.flags_by_module_dict()[common.__name__]}
    fields = {f.name for f in dataclasses.fields(common.Settings)}
    self.assertEqual(fields - {'algorithm_hparams', 'optimizer_hparams'},
                     defined - set(common.ALGORITHM_HPARAM_FLAGS)
                     - set(common.OPTIMIZER_HPARAM_FLAGS))
    self.assertContainsSubset(common.RUNTIME_FLAGS, fields)
    with flagsaver.flagsaver():
      self.assertEqual(common.Settings(), common.Settings.from_flags())
    self.assertEqual(set(common.Settings().algorithm_hparams),
                     set(common.ALGORITHM_HPARAM_FLAGS))
    self.assertEqual(set(common.Settings().optimizer_hparams),
                     set(common.OPTIMIZER_HPARAM_FLAGS))

  def test_optimizer_config_takes_the_chosen_optimizers_flags(self):
    with flagsaver.flagsaver(client_optimizer='adam', client_adam_beta_1=0.5,
                             client_learning_rate=0.01,
                             client_weight_decay=1e-5,
                             client_learning_rate_decay=0.99,
                             server_optimizer='yogi',
                             server_learning_rate=0.03):
      settings = common.Settings.from_flags()
    client = common.optimizer_config(settings, 'client')
    self.assertEqual((client.name, client.learning_rate, client.weight_decay,
                      client.learning_rate_decay), ('adam', 0.01, 1e-5, 0.99))
    self.assertEqual(client.all_hparams(),
                     dict(beta_1=0.5, beta_2=0.999, epsilon=1e-7))
    server = common.optimizer_config(settings, 'server')
    self.assertEqual((server.name, server.learning_rate, server.weight_decay,
                      server.learning_rate_decay), ('yogi', 0.03, 0.0, 1.0))
    hparams = common.run_hparams(settings, registry.get('fedavg'))
    self.assertEqual(hparams['client_adam_beta_1'], 0.5)
    self.assertIn('server_yogi_epsilon', hparams)
    # The other optimizers' settings are not the run's.
    self.assertNotIn('client_sgd_momentum', hparams)
    self.assertNotIn('server_adam_beta_1', hparams)

  def test_from_flags_reads_every_flag(self):
    with flagsaver.flagsaver(alpha=0.3, prototypes=['mlp', 'cnn'], seed=7,
                             workers=['h:1'], fd_beta=0.25, debug=True):
      settings = common.Settings.from_flags()
    self.assertEqual(settings.alpha, 0.3)
    self.assertEqual(settings.prototypes, ('mlp', 'cnn'))
    self.assertEqual(settings.seed, 7)
    self.assertEqual(settings.workers, ('h:1',))
    self.assertTrue(settings.debug)
    self.assertEqual(settings.algorithm_hparams['fd_beta'], 0.25)

  def test_run_hparams_puts_the_runtime_flags_under_runtime(self):
    settings = common.Settings(alpha=0.3, workers=('h:1',))
    algorithm = registry.get('fedntd')
    hparams = common.run_hparams(settings, algorithm, experiment_name='x')
    self.assertEqual(hparams[run_directory.RUNTIME_KEY], dict(
        workers=('h:1',), local_workers=1, clients_per_group=None,
        root_output_dir='/tmp/tff_kd',
        resume=False, debug=False, experiment_name='x'))
    top = set(hparams) - {run_directory.RUNTIME_KEY}
    self.assertEqual(
        top, {f.name for f in dataclasses.fields(settings)}
        - set(common.RUNTIME_FLAGS) - {'algorithm_hparams',
                                       'optimizer_hparams'}
        # Not recorded: what the run does not use (no DP, no compression,
        # not one of TFF's datasets, no learning at the server).
        - set(common.AGGREGATOR_FLAGS['dp'])
        - set(common.AGGREGATOR_FLAGS['compression'])
        - {'use_synthetic_data', 'server_step'}
        | {'algorithm', 'fedntd_beta', 'fedntd_temperature',
           'client_sgd_momentum', 'server_sgd_momentum'})
    self.assertEqual(hparams['alpha'], 0.3)
    self.assertEqual(hparams['algorithm'], 'fedntd')
    # An algorithm that learns at the server records where.
    self.assertEqual(common.run_hparams(
        settings, registry.get('feddf'))['server_step'], 'worker')


if __name__ == '__main__':
  tf.test.main()
