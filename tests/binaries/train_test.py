"""The trainer binary: outputs, resume, bad flags, and no leaked TFF worker."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid

from absl import flags
from absl.testing import flagsaver
import numpy as np
import tensorflow as tf

import processes

from binaries import common
from binaries import registry
from binaries import train
from tff_kd import experiment

FLAGS = flags.FLAGS
_ACC = experiment.ACCURACY_KEY
_SMALL = dict(
    task='digits', model='mlp', num_clients=4, clients_per_round=2,
    batch_size=32, partition='iid',
)


def _rows(root, name):
  return experiment.read_metrics(
      experiment.output_paths(root, name)['metrics_csv']
  )


class TrainTest(tf.test.TestCase):

  def test_writes_csv_tensorboard_checkpoint_and_hparams(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(
        rounds=2, root_output_dir=root, experiment_name='smoke', **_SMALL
    ):
      train.main(['train'])
    paths = experiment.output_paths(root, 'smoke')
    rows = _rows(root, 'smoke')
    self.assertEqual([r['round_num'] for r in rows], ['0', '1', '2'])
    for key in [_ACC, 'evaluation/test/loss', 'training_time_in_seconds']:
      self.assertIn(key, rows[-1])
      self.assertNotEqual(rows[-1][key], '')
    self.assertTrue(
        any('tfevents' in f for f in os.listdir(paths['logdir']))
    )
    self.assertIn('program_state_2', os.listdir(paths['checkpoints']))
    with open(paths['hparams']) as f:
      hparams = json.load(f)
    self.assertEqual(hparams['algorithm'], 'fedavg')
    self.assertEqual(hparams['num_clients'], 4)

  def test_resume_continues_at_the_right_round_with_the_same_numbers(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(root_output_dir=root, **_SMALL):
      FLAGS.rounds, FLAGS.experiment_name = 4, 'straight'
      train.main(['train'])
      FLAGS.rounds, FLAGS.experiment_name = 2, 'stopped'
      train.main(['train'])
      with self.assertRaisesRegex(FileExistsError, 'resume'):
        train.main(['train'])
      FLAGS.rounds, FLAGS.resume = 4, True
      train.main(['train'])
    straight, resumed = _rows(root, 'straight'), _rows(root, 'stopped')
    self.assertEqual([r['round_num'] for r in resumed], ['0', '1', '2', '3', '4'])
    self.assertEqual(
        [r[_ACC] for r in straight], [r[_ACC] for r in resumed]
    )
    self.assertEqual(
        [r['evaluation/test/loss'] for r in straight],
        [r['evaluation/test/loss'] for r in resumed],
    )


def _json(value):
  return json.loads(json.dumps(value))


def _another(value):
  """A value of the same kind that differs from `value`."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value + 1
  if isinstance(value, tuple):
    return value + ('cnn',)
  return f'{value}_other'  # str or None.


class HparamsTest(tf.test.TestCase):
  """hparams.json records every flag; --resume compares the run-defining ones."""

  def test_every_flag_is_recorded_runtime_ones_under_runtime(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(rounds=1, root_output_dir=root,
                             experiment_name='every_flag', algorithm='fedntd',
                             ntd_beta=0.5, local_epochs=1, **_SMALL):
      train.main(['train'])
      values = {name: FLAGS[name].value for name in FLAGS}
    with open(experiment.output_paths(root, 'every_flag')['hparams']) as f:
      hparams = json.load(f)
    by_module = FLAGS.flags_by_module_dict()
    defined = {flag.name for module in ('binaries.common', 'binaries.train')
               for flag in by_module[module]}
    other_algorithms = {
        name for a in registry.ALGORITHMS.values() for name in a.hparams
    } - set(registry.get('fedntd').hparams)
    runtime = {'workers', 'local_workers', 'clients_per_group',
               'root_output_dir', 'resume', 'debug', 'experiment_name'}
    self.assertContainsSubset({'ntd_beta', 'ntd_temperature', 'alpha'},
                              defined - other_algorithms - runtime)
    self.assertEqual(set(hparams) - {experiment.RUNTIME_KEY},
                     defined - other_algorithms - runtime)
    self.assertEqual(set(hparams[experiment.RUNTIME_KEY]), runtime)
    for name, value in hparams.items():
      if name != experiment.RUNTIME_KEY:
        self.assertEqual(value, _json(values[name]), name)
    for name, value in hparams[experiment.RUNTIME_KEY].items():
      self.assertEqual(value, _json(values[name]), name)
    self.assertEqual(hparams['ntd_beta'], 0.5)
    self.assertEqual(hparams[experiment.RUNTIME_KEY]['experiment_name'],
                     'every_flag')

  def test_resume_compares_every_run_defining_flag_and_no_runtime_one(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(rounds=1, root_output_dir=root,
                             experiment_name='run', algorithm='fedntd',
                             local_epochs=1, **_SMALL):
      train.main(['train'])
      settings = common.Settings.from_flags()
    algorithm = registry.get('fedntd')

    def finished(changed):
      return experiment.finished_run(root, 'run', 1, common.run_hparams(
          changed, algorithm, experiment_name='run'))

    self.assertIsNotNone(finished(settings))
    for field in dataclasses.fields(settings):
      name = field.name
      if name == 'algorithm_hparams':
        continue
      changed = dataclasses.replace(
          settings, **{name: _another(getattr(settings, name))})
      if name in common.RUNTIME_FLAGS or name in experiment.RESUMABLE_HPARAMS:
        self.assertIsNotNone(finished(changed), name)
      else:
        self.assertIsNone(finished(changed), name)
    for name in algorithm.hparams:
      self.assertIsNone(finished(dataclasses.replace(
          settings, algorithm_hparams=dict(
              settings.algorithm_hparams,
              **{name: _another(settings.algorithm_hparams[name])}))), name)
    self.assertIsNone(experiment.finished_run(root, 'run', 1, common.run_hparams(
        settings, registry.get('fedavg'), experiment_name='run')))

  def test_a_run_recorded_before_the_runtime_entry_resumes(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(root_output_dir=root, experiment_name='old',
                             local_epochs=1, **_SMALL):
      FLAGS.rounds = 1
      train.main(['train'])
      path = experiment.output_paths(root, 'old')['hparams']
      with open(path) as f:
        hparams = json.load(f)
      # The keys written before hparams.json recorded every flag; the flags
      # added since (e.g. --aggregator) are at their defaults here.
      old_keys = {
          'task', 'model', 'prototypes', 'data_dir', 'use_synthetic_data',
          'partition', 'alpha', 'classes_per_client', 'num_clients',
          'split_file', 'clients_per_round', 'client_dropout', 'local_epochs',
          'batch_size', 'client_learning_rate', 'server_learning_rate',
          'rounds', 'rounds_per_eval', 'rounds_per_checkpoint', 'seed',
          'algorithm'}
      self.assertContainsSubset(old_keys, set(hparams))
      self.assertIn('aggregator', hparams)
      old = {k: v for k, v in hparams.items() if k in old_keys}
      with open(path, 'w') as f:
        json.dump(old, f)
      FLAGS.resume, FLAGS.alpha = True, 0.3
      with self.assertRaisesRegex(ValueError, r'alpha=0.5 \(now 0.3\)'):
        train.main(['train'])
      FLAGS.alpha, FLAGS.rounds, FLAGS.debug = 0.5, 2, True
      train.main(['train'])
    self.assertEqual(_rows(root, 'old')[-1]['round_num'], '2')
    with open(path) as f:
      self.assertTrue(json.load(f)[experiment.RUNTIME_KEY]['debug'])


class BadFlagsTest(tf.test.TestCase):

  def _assert_rejected(self, pattern, **values):
    """Parses a command line with `values`, as the binary would."""
    argv = ['train'] + [f'--{name}={value}' for name, value in values.items()]
    with flagsaver.flagsaver():
      with self.assertRaisesRegex(flags.IllegalFlagValueError, pattern):
        FLAGS(argv)

  def test_unknown_task(self):
    self._assert_rejected('task', task='imagenet')

  def test_unknown_algorithm(self):
    self._assert_rejected('algorithm', algorithm='fedfoo')

  def test_alpha_outside_its_range(self):
    for alpha in (0.0, -1.0, 1e-10, 1e10, 'nan', 'inf'):
      self._assert_rejected(r'--alpha must be in \[0.001, 1000\]',
                            alpha=alpha)

  def test_non_finite_floats(self):
    for name in ('client_learning_rate', 'server_learning_rate', 'ntd_beta',
                 'gkd_gamma', 'gkd_temperature', 'distill_temperature',
                 'fd_beta', 'gen_alpha'):
      for value in ('nan', 'inf', '-inf'):
        self._assert_rejected(f'--{name} must be finite', **{name: value})
    self._assert_rejected('--client_dropout must be in', client_dropout='nan')

  def test_seed_outside_its_range(self):
    self._assert_rejected(r'--seed must be in \[0, 2\*\*31\)', seed=-1)
    self._assert_rejected(r'--seed must be in \[0, 2\*\*31\)', seed=2**40)

  def test_malformed_worker_addresses(self):
    for address in ('h:1:2', 'host:99999', 'host:0', 'host:\u0661\u0662',
                    ':80', 'host'):
      self._assert_rejected('--workers', workers=address)

  def test_a_flag_of_another_algorithm(self):
    with flagsaver.flagsaver(algorithm='fedavg', fd_beta=0.5):
      FLAGS['fd_beta'].present = 1
      try:
        with self.assertRaisesRegex(flags.ValidationError,
                                    '--fd_beta is not a flag of fedavg'):
          train.main(['train'])
      finally:
        FLAGS['fd_beta'].present = 0

  def test_unwritable_output_directory(self):
    blocker = os.path.join(self.create_tempdir().full_path, 'file')
    open(blocker, 'w').close()
    with flagsaver.flagsaver(root_output_dir=os.path.join(blocker, 'x')):
      with self.assertRaisesRegex(flags.ValidationError,
                                  '--root_output_dir=.* not a writable'):
        train.main(['train'])

  def test_clients_per_round_above_num_clients(self):
    self._assert_rejected(
        '--clients_per_round must be <= --num_clients',
        num_clients=5, clients_per_round=6,
    )

  def test_rounds_below_one(self):
    self._assert_rejected('--rounds must be >= 1', rounds=0)

  def test_learning_rate_not_positive(self):
    self._assert_rejected('--client_learning_rate must be finite and > 0',
                          client_learning_rate=0.0)

  def test_missing_data_dir_data(self):
    empty = self.create_tempdir().full_path
    with flagsaver.flagsaver(task='mnist', data_dir=empty):
      with self.assertRaisesRegex(flags.ValidationError, 'data_dir'):
        train.main(['train'])


# `python -m binaries.train` with SIGINT handled, as a program run at a
# terminal has it. A test runner started in the background by a shell without
# job control (as CI may be, or `make test &`) has SIGINT ignored, which its
# children inherit, and Python then installs no handler: the run rightly
# ignores Ctrl-C, as a background job should. (Not `preexec_fn`: unsafe in
# this multithreaded process.)
_AT_A_TERMINAL = (
    'import runpy, signal; '
    'signal.signal(signal.SIGINT, signal.default_int_handler); '
    "runpy.run_module('binaries.train', run_name='__main__', alter_sys=True)")


def _train_process(args, marker, *, at_a_terminal=False):
  """`python -m binaries.train ARGS` with the test's marker in its env."""
  command = (['-c', _AT_A_TERMINAL] if at_a_terminal
             else ['-m', 'binaries.train'])
  return subprocess.Popen(
      [sys.executable] + command + args,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
      env=dict(os.environ, TFF_KD_TEST_MARKER=marker))


class ProcessTest(tf.test.TestCase):
  """Whole processes: one-line errors, Ctrl-C, no leaked worker."""

  def test_an_error_is_one_line_without_traceback(self):
    split = os.path.join(self.create_tempdir().full_path, 'split.npy')
    np.save(split, np.arange(3))
    child = _train_process([f'--split_file={split}', '--num_clients=3',
                            '--clients_per_round=2', '--rounds=1'],
                           uuid.uuid4().hex)
    _, stderr = child.communicate(timeout=300)
    self.assertEqual(child.returncode, 1, stderr)
    self.assertNotIn('Traceback', stderr)
    self.assertRegex(stderr, r'split_file=.*split.npy.* not a readable .npz')

  def test_ctrl_c_stops_cleanly_and_the_run_resumes(self):
    marker = uuid.uuid4().hex
    root = self.create_tempdir().full_path
    args = ['--task=digits', '--model=mlp', '--num_clients=4',
            '--clients_per_round=2', '--rounds=400', '--rounds_per_eval=400',
            f'--root_output_dir={root}', '--experiment_name=run']
    child = _train_process(args, marker, at_a_terminal=True)
    checkpoints = experiment.output_paths(root, 'run')['checkpoints']
    deadline = time.monotonic() + 240
    while not (os.path.isdir(checkpoints) and any(
        n.startswith('program_state_') for n in os.listdir(checkpoints))):
      self.assertLess(time.monotonic(), deadline, 'no checkpoint in time')
      time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    self.assertEqual(child.returncode, 130, stderr)
    self.assertNotIn('Traceback', stderr)
    self.assertIn('--resume', stderr)
    self.assertEqual(processes.workers_with(marker), [])
    self.assertNotEmpty([n for n in os.listdir(checkpoints)
                         if n.startswith('program_state_')])


class NoLeakedWorkerTest(tf.test.TestCase):

  def test_a_run_leaves_no_worker_process(self):
    marker = uuid.uuid4().hex
    root = self.create_tempdir().full_path
    # stdout is a pipe: a leaked worker holding it would block communicate().
    result = subprocess.run(
        [sys.executable, '-m', 'binaries.train', '--task=digits',
         '--model=mlp', '--num_clients=4', '--clients_per_round=2',
         '--rounds=1', f'--root_output_dir={root}'],
        capture_output=True, text=True, timeout=300, check=False,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        env=dict(os.environ, TFF_KD_TEST_MARKER=marker),
    )
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    self.assertIn('round    1/1', result.stdout)
    self.assertEqual(processes.workers_with(marker), [])


if __name__ == '__main__':
  tf.test.main()
