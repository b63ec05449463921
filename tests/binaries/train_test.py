"""The trainer binary: outputs, resume, bad flags, and no leaked TFF worker."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from unittest import mock
import uuid

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

import processes

from binaries import common
from binaries import registry
from binaries import train
import tasks
from tff_kd import experiment
from tff_kd import run_directory

FLAGS = flags.FLAGS
_ACC = experiment.ACCURACY_KEY
_SMALL = dict(
    task='digits', model='mlp', num_clients=4, clients_per_round=2,
    batch_size=32, partition='iid',
)


def _rows(root, name):
  return run_directory.read_metrics(
      run_directory.output_paths(root, name)['metrics_csv']
  )


class TrainTest(tf.test.TestCase):

  def test_writes_csv_tensorboard_checkpoint_and_hparams(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(
        rounds=2, root_output_dir=root, experiment_name='smoke', **_SMALL
    ):
      train.main(['train'])
    paths = run_directory.output_paths(root, 'smoke')
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
                             fedntd_beta=0.5, local_epochs=1, **_SMALL):
      train.main(['train'])
      values = {name: FLAGS[name].value for name in FLAGS}
    with open(run_directory.output_paths(root, 'every_flag')['hparams']) as f:
      hparams = json.load(f)
    by_module = FLAGS.flags_by_module_dict()
    defined = {flag.name for module in ('binaries.common', 'binaries.train')
               for flag in by_module[module]}
    other_algorithms = {
        name for a in registry.ALGORITHMS.values() for name in a.hparams
    } - set(registry.get('fedntd').hparams)
    runtime = {'workers', 'local_workers', 'clients_per_group',
               'root_output_dir', 'resume', 'debug', 'experiment_name'}
    self.assertContainsSubset({'fedntd_beta', 'fedntd_temperature', 'alpha'},
                              defined - other_algorithms - runtime)
    # Not recorded: the settings of aggregators the run does not use,
    # --use_synthetic_data (TFF's datasets only) and --server_step (FedNTD
    # learns nothing at the server). Recorded beside the flags: the digest of
    # the data the run trained on.
    unused = set(common.AGGREGATOR_FLAGS['dp']
                 + common.AGGREGATOR_FLAGS['compression']
                 + ('use_synthetic_data', 'server_step')) | {
                     flag for flag, (_, optimizer, _) in
                     common.OPTIMIZER_HPARAM_FLAGS.items()
                     if optimizer != 'sgd'}
    self.assertEqual(set(hparams) - {run_directory.RUNTIME_KEY},
                     (defined - other_algorithms - runtime - unused)
                     | {'data_digest'})
    self.assertEqual(set(hparams[run_directory.RUNTIME_KEY]), runtime)
    with flagsaver.flagsaver(local_epochs=1, **_SMALL):
      self.assertEqual(hparams['data_digest'], common.create_task(
          common.Settings.from_flags()).data_digest())
    for name, value in hparams.items():
      if name not in (run_directory.RUNTIME_KEY, 'data_digest'):
        self.assertEqual(value, _json(values[name]), name)
    for name, value in hparams[run_directory.RUNTIME_KEY].items():
      self.assertEqual(value, _json(values[name]), name)
    self.assertEqual(hparams['fedntd_beta'], 0.5)
    self.assertEqual(hparams[run_directory.RUNTIME_KEY]['experiment_name'],
                     'every_flag')

  def test_resume_compares_every_run_defining_flag_and_no_runtime_one(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(rounds=1, root_output_dir=root,
                             experiment_name='run', algorithm='fedntd',
                             local_epochs=1, **_SMALL):
      train.main(['train'])
      settings = common.Settings.from_flags()
    algorithm = registry.get('fedntd')
    task = common.create_task(settings)
    unused = common.AGGREGATOR_FLAGS['dp'] + common.AGGREGATOR_FLAGS[
        'compression'] + ('use_synthetic_data', 'server_step')

    def finished(changed):
      return run_directory.finished_run(root, 'run', 1, common.run_hparams(
          changed, algorithm, task=task, experiment_name='run'))

    self.assertIsNotNone(finished(settings))
    for field in dataclasses.fields(settings):
      name = field.name
      if name in ('algorithm_hparams', 'optimizer_hparams'):
        continue
      changed = dataclasses.replace(
          settings, **{name: _another(getattr(settings, name))})
      if (name in common.RUNTIME_FLAGS + unused
          or name in run_directory.RESUMABLE_HPARAMS):
        self.assertIsNotNone(finished(changed), name)
      else:
        self.assertIsNone(finished(changed), name)
    for name in ('client_sgd_momentum', 'server_sgd_momentum'):
      self.assertIsNone(finished(dataclasses.replace(
          settings, optimizer_hparams=dict(settings.optimizer_hparams,
                                           **{name: 0.5}))), name)
    # Another optimizer's settings are not the run's.
    self.assertIsNotNone(finished(dataclasses.replace(
        settings, optimizer_hparams=dict(settings.optimizer_hparams,
                                         client_adam_beta_1=0.5))))
    for name in algorithm.hparams:
      self.assertIsNone(finished(dataclasses.replace(
          settings, algorithm_hparams=dict(
              settings.algorithm_hparams,
              **{name: _another(settings.algorithm_hparams[name])}))), name)
    self.assertIsNone(run_directory.finished_run(
        root, 'run', 1,
        common.run_hparams(settings, registry.get('fedavg'), task=task,
                           experiment_name='run')))
    # The same flags on other data.
    other_data = mock.Mock(data_digest=lambda: 'another digest')
    self.assertIsNone(run_directory.finished_run(
        root, 'run', 1,
        common.run_hparams(settings, algorithm, task=other_data,
                           experiment_name='run')))

  def test_a_run_recorded_before_the_runtime_entry_resumes(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(root_output_dir=root, experiment_name='old',
                             local_epochs=1, **_SMALL):
      FLAGS.rounds = 1
      train.main(['train'])
      path = run_directory.output_paths(root, 'old')['hparams']
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
      # --use_synthetic_data is no longer recorded for tasks it does not
      # apply to; the old record's value is kept and not compared.
      self.assertContainsSubset(old_keys - {'use_synthetic_data'},
                                set(hparams))
      self.assertNotIn('use_synthetic_data', hparams)
      self.assertIn('aggregator', hparams)
      self.assertIn('data_digest', hparams)
      old = {k: v for k, v in hparams.items() if k in old_keys}
      old['use_synthetic_data'] = True  # Its old default.
      with open(path, 'w') as f:
        json.dump(old, f)
      FLAGS.resume, FLAGS.alpha = True, 0.3
      with self.assertRaisesRegex(ValueError, r'alpha=0.5 \(now 0.3\)'):
        train.main(['train'])
      FLAGS.alpha, FLAGS.rounds, FLAGS.debug = 0.5, 2, True
      train.main(['train'])
    self.assertEqual(_rows(root, 'old')[-1]['round_num'], '2')
    with open(path) as f:
      self.assertTrue(json.load(f)[run_directory.RUNTIME_KEY]['debug'])


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
    for name in ('client_learning_rate', 'server_learning_rate', 'fedntd_beta',
                 'fedgkd_gamma', 'fedgkd_temperature', 'distill_temperature',
                 'fd_beta', 'fedgen_alpha'):
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

  def _assert_refused(self, pattern, *args, error=flags.ValidationError):
    """`train ARGS` (on a small digits run) stops before training."""
    root = self.create_tempdir().full_path
    argv = ['train', f'--root_output_dir={root}', '--task=digits',
            '--model=mlp', '--num_clients=4', '--clients_per_round=2',
            '--rounds=1', *args]
    with flagsaver.flagsaver():
      FLAGS(argv)
      with self.assertRaisesRegex(error, pattern):
        train.main(argv[:1])
    self.assertFalse(os.path.exists(os.path.join(root, 'results')))

  def test_optimizer_flags_that_do_not_apply(self):
    self._assert_refused(
        '--client_adam_beta_1 is a setting of --client_optimizer=adam; the '
        'run has --client_optimizer=sgd', '--client_adam_beta_1=0.5')
    self._assert_refused(
        'fd has no server optimizer.*got adam', '--algorithm=fd',
        '--server_optimizer=adam', '--server_learning_rate=0.01',
        error=ValueError)
    self._assert_refused(
        "FD's client work has no per-round learning-rate decay.*"
        'learning_rate_decay=0.99', '--algorithm=fd',
        '--client_learning_rate_decay=0.99', error=ValueError)
    self._assert_rejected('--client_sgd_momentum must be in',
                          client_sgd_momentum=1.0)
    self._assert_rejected('--client_learning_rate_decay must be in',
                          client_learning_rate_decay=0.0)

  def test_dp_flags_of_what_the_algorithm_does_not_send(self):
    self._assert_refused(
        '--dp_clip does not apply to --algorithm=fd: none of them averages '
        'model updates', '--algorithm=fd', '--aggregator=dp', '--dp_clip=0.5')
    self._assert_refused(
        '--dp_logit_clip does not apply to --algorithm=fedavg: none of them '
        'sends logits', '--aggregator=dp', '--dp_logit_clip=3')
    self._assert_refused(
        '--dp_logit_clip is a setting of --aggregator=dp; the run has '
        '--aggregator=mean', '--algorithm=fd', '--dp_logit_clip=3')

  def test_local_workers_beside_workers(self):
    self._assert_refused('--local_workers starts workers on this machine',
                         '--workers=localhost:8000', '--local_workers=2')

  def test_use_synthetic_data_on_a_task_of_ours(self):
    self._assert_refused(
        "--use_synthetic_data applies to TFF's federated datasets .* not to "
        '--task=digits', '--use_synthetic_data')

  def test_fedaux_negatives_leaving_nothing_to_distill(self):
    self._assert_refused(
        '--fedaux_negative_fraction=0.999 holds out .* leaving none to distill',
        '--algorithm=fedaux', '--fedaux_negative_fraction=0.999',
        error=ValueError)  # The algorithm's builder's check.

  def test_missing_data_dir_data(self):
    empty = self.create_tempdir().full_path
    with flagsaver.flagsaver(task='mnist', data_dir=empty):
      with self.assertRaisesRegex(flags.ValidationError, 'data_dir'):
        train.main(['train'])


@pytest.mark.slow
class ChangedInputsTest(tf.test.TestCase):
  """A run's record pins the data it trained on: --resume refuses a changed
  split file (the same content under the same path)."""

  def test_a_changed_split_file_is_not_resumed(self):
    root = self.create_tempdir().full_path
    split = os.path.join(root, 'split.npz')
    test = tasks.data.load_canonical('digits').test_indices
    train_pool = np.setdiff1d(np.arange(1797), test)

    def write(first):
      np.savez(split, num_clients=2, train_0=train_pool[first:first + 40],
               train_1=train_pool[100:140])

    write(0)
    argv = ['train', f'--root_output_dir={root}', '--experiment_name=run',
            '--model=mlp', '--num_clients=2', '--clients_per_round=2',
            f'--split_file={split}']
    with flagsaver.flagsaver():
      FLAGS(argv + ['--rounds=1'])
      train.main(argv[:1])
    with open(run_directory.output_paths(root, 'run')['hparams']) as f:
      digest = json.load(f)['data_digest']
    write(1)  # Client 0 now holds other examples.
    with flagsaver.flagsaver():
      FLAGS(argv + ['--rounds=2', '--resume'])
      with self.assertRaisesRegex(ValueError, 'data_digest=' + repr(digest)):
        train.main(argv[:1])
    self.assertEqual(_rows(root, 'run')[-1]['round_num'], '1')
    write(0)  # The same split again: it resumes.
    with flagsaver.flagsaver():
      FLAGS(argv + ['--rounds=2', '--resume'])
      train.main(argv[:1])
    self.assertEqual(_rows(root, 'run')[-1]['round_num'], '2')


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


class FlagFileTest(tf.test.TestCase):

  def test_a_run_writes_the_flags_it_was_given_and_they_replay_it(self):
    root = self.create_tempdir().full_path
    argv = ['train', f'--root_output_dir={root}', '--task=digits',
            '--model=mlp', '--num_clients=4', '--clients_per_round=2',
            '--rounds=1', '--algorithm=fedntd', '--fedntd_beta=0.5',
            '--experiment_name=run']
    with flagsaver.flagsaver():
      FLAGS(argv)
      train.main(argv[:1])
    path = os.path.join(root, 'results', 'run', 'flags.txt')
    with open(path) as f:
      self.assertCountEqual(f.read().splitlines(), argv[1:])
    other = self.create_tempdir().full_path
    with flagsaver.flagsaver():
      FLAGS(['train', f'--flagfile={path}', f'--root_output_dir={other}'])
      self.assertEqual(FLAGS.fedntd_beta, 0.5)
      self.assertEqual(FLAGS.algorithm, 'fedntd')
      train.main(['train'])
    first, replay = _rows(root, 'run'), _rows(other, 'run')
    for a, b in zip(first, replay):
      self.assertEqual({k: v for k, v in a.items() if 'time' not in k},
                       {k: v for k, v in b.items() if 'time' not in k})


@pytest.mark.slow
class ProcessTest(tf.test.TestCase):
  """Whole processes: one-line errors, Ctrl-C, no leaked worker."""

  def test_helpshort_lists_the_flags_most_runs_set(self):
    child = _train_process(['--helpshort'], uuid.uuid4().hex)
    stdout, _ = child.communicate(timeout=120)
    for name in common.KEY_FLAGS + ('algorithm', 'experiment_name'):
      self.assertIn(f'--{name}', stdout)
    self.assertNotIn('--dp_clip', stdout)

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
    checkpoints = run_directory.output_paths(root, 'run')['checkpoints']
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


@pytest.mark.slow
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
