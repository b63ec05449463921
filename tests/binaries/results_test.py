"""The results binary writes a page with a table and plots per setting."""

import copy
import json
import os

from absl import flags
from absl.testing import flagsaver
import tensorflow as tf

from binaries import registry
from binaries import results
from tff_kd import experiment

FLAGS = flags.FLAGS


def flag_state():
  """Each flag of the binaries: its value, whether it is at its default, and
  whether it was given (absl's own flags, e.g. --verbosity, which logging
  sets, are left out)."""
  return {flag.name: (copy.deepcopy(flag.value), flag.using_default_value,
                      flag.present)
          for module, module_flags in FLAGS.flags_by_module_dict().items()
          if module.startswith('binaries.') for flag in module_flags}


class ResultsTest(tf.test.TestCase):

  def test_writes_tables_and_plots(self):
    root = self.create_tempdir().full_path
    output = os.path.join(self.create_tempdir().full_path, 'RESULTS.md')
    with flagsaver.flagsaver(
        tasks=['digits'], alphas=['0.5', 'iid'], algorithms=['fedavg'],
        model='mlp', num_clients=4, clients_per_round=2, rounds=1,
        local_epochs=1, seeds=['0'], root_output_dir=root, page=output,
    ):
      results.main(['results'])
    with open(output) as f:
      page = f.read()
    for setting in ('digits_alpha0.5', 'digits_iid'):
      self.assertIn(f'## {setting}', page)
      for png in ('accuracy', 'communication'):
        self.assertTrue(os.path.exists(os.path.join(
            os.path.dirname(output), 'results', f'{setting}_{png}.png')))
    self.assertIn('| fedavg |', page)
    self.assertRegex(page, r'\| algorithm \| digits_alpha0.5 \| digits_iid \|\n'
                     r'\|---\|---\|---\|\n\| fedavg \| 0\.\d{3} \+- 0\.000 \| '
                     r'0\.\d{3} \+- 0\.000 \|')
    for flag in ('--alphas=0.5,iid', '--algorithms=fedavg', '--model=mlp',
                 '--rounds=1', '--local_epochs=1', '--seeds=0'):
      self.assertIn(flag, page)
    for per_setting in ('--task=', '--partition=', '--alpha=', '--seed='):
      self.assertNotIn(per_setting, page)


  def test_leaves_the_flags_alone_and_records_its_own_under_runtime(self):
    root = self.create_tempdir().full_path
    output = os.path.join(self.create_tempdir().full_path, 'RESULTS.md')
    with flagsaver.flagsaver(
        tasks=['digits'], alphas=['iid'], algorithms=['fedavg'],
        model='mlp', num_clients=4, clients_per_round=2, rounds=1,
        local_epochs=1, seeds=['0'], root_output_dir=root, page=output,
        alpha=0.3,
    ):
      before = flag_state()
      results.main(['results'])
      self.assertEqual(flag_state(), before)
    with open(experiment.output_paths(
        os.path.join(root, 'digits_iid'), 'fedavg_seed0')['hparams']) as f:
      hparams = json.load(f)
    self.assertEqual(hparams['task'], 'digits')
    self.assertEqual(hparams['partition'], 'iid')
    self.assertEqual(hparams['alpha'], 0.3)  # --alpha: an iid setting keeps it.
    runtime = hparams[experiment.RUNTIME_KEY]
    self.assertEqual(runtime['root_output_dir'],
                     os.path.join(root, 'digits_iid'))
    self.assertEqual((runtime['tasks'], runtime['alphas'], runtime['page']),
                     (['digits'], ['iid'], output))
    self.assertEqual(runtime['algorithms'], ['fedavg'])

  def test_the_command_names_the_algorithms_run(self):
    with flagsaver.flagsaver():
      command = results._command('P.md', list(registry.ALGORITHMS))  # pylint: disable=protected-access
    self.assertEqual(
        command, 'python -m binaries.results --algorithms='
        + ','.join(registry.ALGORITHMS) + ' --root_output_dir=DIR --page=P.md')


if __name__ == '__main__':
  tf.test.main()
