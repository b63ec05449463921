"""The results binary writes a page with a table and plots per setting."""

import copy
import json
import os

from absl import flags
from absl.testing import flagsaver
import numpy as np
import tensorflow as tf

from binaries import registry
from binaries import results
from tff_kd import run_directory

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
    with open(run_directory.output_paths(
        os.path.join(root, 'digits_iid'), 'fedavg_seed0')['hparams']) as f:
      hparams = json.load(f)
    self.assertEqual(hparams['task'], 'digits')
    self.assertEqual(hparams['partition'], 'iid')
    self.assertEqual(hparams['alpha'], 0.3)  # --alpha: an iid setting keeps it.
    runtime = hparams[run_directory.RUNTIME_KEY]
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


class BadFlagsTest(tf.test.TestCase):
  """Every bad value stops the binary before the first setting trains."""

  def _assert_rejected(self, pattern, *args):
    with flagsaver.flagsaver():
      with self.assertRaisesRegex(flags.IllegalFlagValueError, pattern):
        FLAGS(['results'] + list(args))

  def test_bad_tasks_alphas_and_page_fail_when_parsed(self):
    self._assert_rejected("--tasks: 'bogus' is not a task",
                          '--tasks=digits,bogus')
    self._assert_rejected('--tasks is empty', '--tasks=')
    self._assert_rejected('--tasks lists a task twice', '--tasks=digits,digits')
    self._assert_rejected('--tasks lists a task twice',
                          '--tasks=emnist,emnist_digits')  # A former name.
    self._assert_rejected('--tasks: federated_emnist keeps its own clients, '
                          'so --alphas cannot split it',
                          '--tasks=digits,federated_emnist')
    self._assert_rejected("--tasks: npz:/nonexistent.npz: no file at "
                          "'/nonexistent.npz'", '--tasks=npz:/nonexistent.npz')
    ids = os.path.join(self.create_tempdir().full_path, 'ids.npz')
    np.savez(ids, x_train=np.zeros((4, 2)), y_train=np.zeros(4, int),
             x_test=np.zeros((2, 2)), y_test=np.zeros(2, int),
             client_ids=np.arange(4))
    self._assert_rejected(f'--tasks: npz:{ids} keeps its own clients',
                          f'--tasks=npz:{ids}')
    self._assert_rejected("--alphas lists one setting twice: 'iid' and 'iid'",
                          '--alphas=iid,iid')
    self._assert_rejected("twice: '0.5' and '.5'", '--alphas=0.5,.5')
    self._assert_rejected('--alphas is empty', '--alphas=')
    for alpha in ('\u00b2', '1_0', 'nan', 'inf', '-1', '0.5.5'):
      self._assert_rejected(f'--alphas: {alpha!r} is neither a number nor iid',
                            f'--alphas={alpha}')
    for alpha in ('0', '1e-4', '2000'):
      self._assert_rejected(f'--alphas: {alpha} is outside',
                            f'--alphas={alpha}')
    self._assert_rejected("--page='' is not a file name", '--page=')
    with flagsaver.flagsaver():
      FLAGS(['results', '--alphas=1e-3,0.5,iid', '--tasks=digits'])  # Fine.

  def _assert_main_refuses(self, pattern, *args, **values):
    """`main` with `args` parsed (and `values` set) fails before training."""
    root = self.create_tempdir().full_path
    page = os.path.join(self.create_tempdir().full_path, 'RESULTS.md')
    values = dict(dict(
        tasks=['digits'], alphas=['0.5', 'iid'], algorithms=['fedavg'],
        model='mlp', num_clients=4, clients_per_round=2, rounds=1,
        local_epochs=1, seeds=['0'], root_output_dir=root, page=page),
                  **values)
    with flagsaver.flagsaver(**values):
      FLAGS(['results'] + list(args))
      with self.assertRaisesRegex(flags.ValidationError, pattern):
        results.main(['results'])
    self.assertEqual(os.listdir(root), [])  # Nothing trained.
    self.assertFalse(os.path.isfile(values['page']))

  def test_a_page_that_cannot_be_written_fails_before_training(self):
    directory = self.create_tempdir().full_path
    self._assert_main_refuses(f"--page='{directory}' is a directory",
                              page=directory)
    no_extension = os.path.join(directory, 'results')
    self._assert_main_refuses('has no extension', page=no_extension)
    a_file = self.create_tempfile().full_path
    self._assert_main_refuses('cannot be written',
                              page=os.path.join(a_file, 'RESULTS.md'))

  def test_per_setting_flags_are_refused(self):
    self._assert_main_refuses(
        '--task=mnist1d is not a flag of binaries.results', '--task=mnist1d')
    self._assert_main_refuses('--partition=iid is not a flag',
                              '--partition=iid')

  def test_a_split_that_cannot_be_drawn_fails_before_any_setting_trains(self):
    # The first setting (0.5) splits; the second cannot: at 0.001 each label
    # goes to about one client, and 20 clients would get 10 labels. It fails
    # before the first trains.
    self._assert_main_refuses(
        r'--tasks=digits with --alphas=0.001 \(seed 0\): No dirichlet '
        'partition', alphas=['0.5', '0.001'], seeds=['0', '1'],
        num_clients=20)


if __name__ == '__main__':
  tf.test.main()
