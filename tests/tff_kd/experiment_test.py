"""run_experiment's checkpoints: atomic saves, a clear error on a corrupt one,
client states restored exactly; dropout; evaluation of stateful clients."""

import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
from unittest import mock

import numpy as np

import tensorflow as tf
import tensorflow_federated as tff

import tasks
import tiny
from tff_kd import algorithms
from tff_kd import client_store
from tff_kd import experiment
from tff_kd import checkpoints
from tff_kd import run_directory


def _task():
  return tasks.create_task(
      'digits', train_client_spec=tff.simulation.baselines.ClientSpec(
          num_epochs=1, batch_size=32),
      model='mlp', num_clients=4, partition='iid', seed=0)


class CheckpointTest(tf.test.TestCase):

  def _run(self, process, task, root, rounds, resume, **kwargs):
    return experiment.run_experiment(
        process, task, total_rounds=rounds, clients_per_round=2,
        root_output_dir=root, experiment_name='run', resume=resume,
        print_fn=lambda line: None, **kwargs)

  def test_corrupt_checkpoint_is_named_and_the_previous_one_resumes(self):
    task = _task()
    process = algorithms.build_fedavg(
        task.model_fn, tff.learning.optimizers.build_sgdm(learning_rate=0.1))
    root = self.create_tempdir().full_path
    reference = self._run(process, task, self.create_tempdir().full_path, 3,
                          resume=False)
    self._run(process, task, root, 2, resume=False)
    saved = run_directory.output_paths(root, 'run')['checkpoints']
    self.assertCountEqual(os.listdir(saved),
                          ['program_state_1', 'program_state_2'])
    # A save killed midway left a partial directory: it is not a version.
    os.makedirs(os.path.join(saved, '.partial', 'program_state_3'))
    latest = os.path.join(saved, 'program_state_2')
    for dirpath, _, files in os.walk(latest):
      for name in files:
        with open(os.path.join(dirpath, name), 'r+b') as f:
          f.truncate(3)
    with self.assertRaisesRegex(RuntimeError, 'program_state_2 cannot be read'):
      self._run(process, task, root, 3, resume=True)
    tf.io.gfile.rmtree(latest)
    rows = self._run(process, task, root, 3, resume=True)
    self.assertEqual(rows[-1]['round_num'], '3')
    self.assertEqual(rows[-1][experiment.ACCURACY_KEY],
                     reference[-1][experiment.ACCURACY_KEY])
    self.assertCountEqual(os.listdir(saved),
                          ['program_state_2', 'program_state_3'])

  def test_resume_restores_every_client_state_exactly(self):
    task = _task()
    process = algorithms.build_fd(
        {'mlp': task.model_fn},
        tff.learning.optimizers.build_sgdm(learning_rate=0.1),
        client_prototypes=task.client_prototypes)
    roots = [self.create_tempdir().full_path for _ in range(2)]
    full = self._run(process, task, roots[0], 3, resume=False)
    self._run(process, task, roots[1], 2, resume=False)
    # Killed after the store committed round 2 but before its program state
    # was written: the resumed run continues from round 1, and the store's
    # version 2 is discarded.
    saved = run_directory.output_paths(roots[1], 'run')['checkpoints']
    tf.io.gfile.rmtree(os.path.join(saved, 'program_state_2'))
    resumed = self._run(process, task, roots[1], 3, resume=True)
    self.assertEqual(full[-1], {**resumed[-1], **{
        k: full[-1][k] for k in full[-1] if 'time' in k}})
    # The datasets built by the trainer, not on the worker: the same numbers.
    saves = []
    trainer_data = self._run(process, task, self.create_tempdir().full_path,
                             3, resume=False, data_on_workers=False,
                             on_checkpoint=saves.append)
    for a, b in zip(full, trainer_data):
      self.assertEqual(a, {**b, **{k: a[k] for k in a if 'time' in k}})
    self.assertEqual([c['version'] for c in saves], [0, 1, 2, 3])
    self.assertTrue(all(c['program_state_bytes'] > 0
                        and c['store_commit_bytes'] > 0 for c in saves))
    states = []
    for root in roots:
      paths = run_directory.output_paths(root, 'run')
      manager = checkpoints.CheckpointManager(paths["checkpoints"])
      # Not asyncio.run: it would leave no event loop for the next test's
      # tff.simulation.run_training_process.
      loop = asyncio.new_event_loop()
      try:
        self.assertEqual(loop.run_until_complete(manager.get_versions())[-1],
                         3)
      finally:
        loop.close()
      # The program state records the store's version; the store has every
      # client's state (only those that ever trained: the rest are initial).
      states.append(client_store.read_version(paths['client_store'], 3))
    self.assertNotEmpty(states[0])
    self.assertCountEqual(states[0], states[1])
    for client in states[0]:
      for a, b in zip(states[0][client], states[1][client]):
        self.assertAllEqual(a, b)
    initial = process.initialize()['clients']
    moved = [not np.array_equal(a, b) for c in states[0] for a, b in
             zip(states[0][c], tf.nest.flatten(initial[c]))]
    self.assertTrue(any(moved))
    # Every client's model is evaluated; FD has no server model.
    self.assertEqual(full[-1][experiment.ACCURACY_KEY],
                     full[-1][experiment.CLIENTS_ACCURACY_KEY])


class ProgressTest(tf.test.TestCase):

  def test_the_line_shows_epsilon_when_the_metrics_have_it(self):
    lines = []
    manager = experiment.ProgressReleaseManager(5, lines.append, {})
    loop = asyncio.new_event_loop()
    try:
      loop.run_until_complete(manager.release(
          {'client_work': {'privacy': {'epsilon': 1.25}},
           'training_time_in_seconds': 0.5}, 3))
      loop.run_until_complete(manager.release(
          {'training_time_in_seconds': 0.5}, 4))
    finally:
      loop.close()
    self.assertEqual(lines, ['round    3/5  epsilon 1.25  0.50 s',
                             'round    4/5  0.50 s'])


class DropoutTest(tf.test.TestCase):

  def test_dropped_clients_send_nothing_and_all_dropped_changes_nothing(self):
    task = _task()
    process = algorithms.build_fedavg(
        task.model_fn, tff.learning.optimizers.build_sgdm(learning_rate=0.1))
    lines = []
    rows = experiment.run_experiment(
        process, task, total_rounds=2, clients_per_round=2,
        root_output_dir=self.create_tempdir().full_path,
        experiment_name='all_drop', print_fn=lines.append,
        client_dropout=0.9999)
    self.assertIn('2/2 clients dropped out: no update, the model is unchanged',
                  lines[-1])
    self.assertEqual(float(rows[-1]['aggregator/total_weight']), 0.0)
    self.assertEqual(rows[-1][experiment.ACCURACY_KEY],
                     rows[0][experiment.ACCURACY_KEY])

    lines = []
    rows = experiment.run_experiment(
        process, task, total_rounds=6, clients_per_round=4,
        root_output_dir=self.create_tempdir().full_path,
        experiment_name='half', print_fn=lines.append, client_dropout=0.5)
    dropped = [int(l.split('clients dropped')[0].split()[-1].split('/')[0])
               for l in lines if 'dropped' in l]
    self.assertNotEmpty(dropped)
    trained = [float(r['aggregator/total_weight']) for r in rows[1:]]
    full = float(sum(len(i) for i in task.client_indices))
    self.assertTrue(any(0 < t < full for t in trained), trained)

  def test_task_and_model_mismatch_is_an_error_before_training(self):
    task = _task()
    process = algorithms.build_fedavg(
        tiny.model_fn, tff.learning.optimizers.build_sgdm(learning_rate=0.1))
    root = self.create_tempdir().full_path
    with self.assertRaisesRegex(ValueError, 'the task and the model_fn do not'
                                ' match'):
      experiment.run_experiment(
          process, task, total_rounds=1, clients_per_round=2,
          root_output_dir=root, experiment_name='x')
    self.assertFalse(os.path.exists(os.path.join(root, 'checkpoints')))

  def test_rejects_bad_dropout(self):
    task = _task()
    with self.assertRaisesRegex(ValueError, 'client_dropout must be in'):
      experiment.run_experiment(
          None, task, total_rounds=1, clients_per_round=2,
          root_output_dir=self.create_tempdir().full_path,
          experiment_name='x', client_dropout=1.0)


class RunIntegrityTest(tf.test.TestCase):
  """Runs are never overwritten, mislabelled, shared or left non-finite."""

  def setUp(self):
    super().setUp()
    self.task = _task()
    self.process = algorithms.build_fedavg(
        self.task.model_fn,
        tff.learning.optimizers.build_sgdm(learning_rate=0.1))
    self.root = self.create_tempdir().full_path

  def _run(self, rounds, resume=False, hparams=None, process=None, **kwargs):
    return experiment.run_experiment(
        process or self.process, self.task, total_rounds=rounds,
        clients_per_round=2, root_output_dir=self.root, experiment_name='run',
        resume=resume, hparams=dict(hparams or {'alpha': 0.5}, rounds=rounds),
        print_fn=lambda line: None, **kwargs)

  def test_resume_with_other_settings_is_refused_and_changes_nothing(self):
    self._run(2)
    paths = run_directory.output_paths(self.root, 'run')
    with open(paths['hparams']) as f:
      before = f.read()
    with self.assertRaisesRegex(
        ValueError, r"another configuration.*alpha=0.5 \(now 0.3\)"):
      self._run(4, resume=True, hparams={'alpha': 0.3})
    with self.assertRaisesRegex(ValueError, 'already trained 2 rounds'):
      self._run(1, resume=True)
    with open(paths['hparams']) as f:
      self.assertEqual(f.read(), before)
    self.assertLen(run_directory.read_metrics(paths['metrics_csv']), 3)
    rows = self._run(3, resume=True)  # More rounds may be asked for.
    self.assertEqual(rows[-1]['round_num'], '3')
    with open(paths['hparams']) as f:
      self.assertEqual(json.load(f)['rounds'], 3)

  def test_a_run_without_its_checkpoints_is_not_overwritten(self):
    self._run(1)
    paths = run_directory.output_paths(self.root, 'run')
    tf.io.gfile.rmtree(paths['checkpoints'])
    for resume in (False, True):
      with self.assertRaisesRegex(FileExistsError, 'results/run exists'):
        self._run(1, resume=resume)
    self.assertLen(run_directory.read_metrics(paths['metrics_csv']), 2)

  def test_names_that_leave_the_root_are_refused(self):
    for name in ('/abs', '../..', 'a/b', '..', ''):
      with self.assertRaisesRegex(ValueError, 'plain directory name'):
        experiment.run_experiment(
            self.process, self.task, total_rounds=1, clients_per_round=2,
            root_output_dir=self.root, experiment_name=name)

  def test_a_second_process_on_the_run_is_refused(self):
    results = run_directory.output_paths(self.root, 'run')['results']
    os.makedirs(results)
    lock = run_directory.RunLock(results, 'run')
    child = subprocess.run(
        [sys.executable, '-c',
         'import sys; from tff_kd import run_directory; '
         'run_directory.RunLock(sys.argv[1], "run")', results],
        capture_output=True, text=True, check=False)
    lock.release()
    self.assertNotEqual(child.returncode, 0)
    self.assertIn(f'in use by another process (pid {os.getpid()})',
                  child.stderr)
    run_directory.RunLock(results, 'run').release()  # Free again.

  def test_a_non_finite_model_stops_the_run_and_keeps_its_checkpoint(self):
    process = algorithms.build_fedavg(
        self.task.model_fn,
        tff.learning.optimizers.build_sgdm(learning_rate=0.1),
        tff.learning.optimizers.build_sgdm(learning_rate=float('inf')))
    with self.assertRaisesRegex(FloatingPointError,
                                r'Round 1 .*non-finite.*\(round 0\)'):
      self._run(3, process=process)
    saved = run_directory.output_paths(self.root, "run")["checkpoints"]
    self.assertEqual(os.listdir(saved), ['program_state_0'])

  def test_a_model_whose_test_loss_is_not_finite_stops_the_run(self):
    # A server step so large that the weights stay finite (about 1e30) but
    # the logits overflow: the test loss is NaN, the weights are not.
    process = algorithms.build_fedavg(
        self.task.model_fn,
        tff.learning.optimizers.build_sgdm(learning_rate=0.1),
        tff.learning.optimizers.build_sgdm(learning_rate=1e30))
    with self.assertRaisesRegex(
        FloatingPointError,
        r'^Round 1 made the model non-finite \(NaN or Inf\): '
        r'evaluation/test/loss is nan; .*\(round 0\)\. Lower the learning '
        'rates'):
      self._run(3, process=process)
    paths = run_directory.output_paths(self.root, 'run')
    self.assertEqual(os.listdir(paths['checkpoints']), ['program_state_0'])
    # Round 1's metrics were not written.
    self.assertEqual([r['round_num'] for r in
                      run_directory.read_metrics(paths['metrics_csv'])], ['0'])

  def test_a_non_finite_training_loss_stops_the_run_unless_none_trained(self):

    class NanTrainingLoss:
      """FedAvg whose clients' training loss is NaN."""

      def __init__(self, inner):
        self._inner = inner
        self.initialize = inner.initialize
        self.client_data_type = inner.client_data_type
        self.client_input = inner.client_input
        self.evaluation_models = inner.evaluation_models
        self.client_prototypes = inner.client_prototypes
        self.open_client_store = inner.open_client_store

      def with_client_data(self, data_computation):
        return NanTrainingLoss(self._inner.with_client_data(data_computation))

      def next(self, state, clients):
        output = self._inner.next(state, clients)
        metrics = collections.OrderedDict(output.metrics)
        metrics['client_work'] = collections.OrderedDict(
            metrics['client_work'])
        metrics['client_work']['train'] = collections.OrderedDict(
            metrics['client_work']['train'], loss=float('nan'))
        return tff.learning.templates.LearningProcessOutput(output.state,
                                                            metrics)

    process = NanTrainingLoss(self.process)
    with self.assertRaisesRegex(
        FloatingPointError, r'^Round 1 made the model non-finite .*: '
        r'client_work/train/loss is nan; .*\(round 0\)'):
      self._run(2, process=process)
    # Every client dropped out: the loss averages nothing, no alarm.
    rows = experiment.run_experiment(
        process, self.task, total_rounds=1, clients_per_round=2,
        root_output_dir=self.root, experiment_name='all_drop',
        print_fn=lambda line: None, client_dropout=0.9999)
    self.assertEqual(rows[-1]['client_work/train/loss'], 'nan')

  def test_an_entry_that_is_no_checkpoint_is_named_not_counted(self):
    self._run(1)
    paths = run_directory.output_paths(self.root, 'run')
    bogus = os.path.join(paths['checkpoints'], 'program_state_99')
    for make, kind in ((lambda: open(bogus, 'w').close(), 'not a directory'),
                       (lambda: os.makedirs(bogus), 'an empty directory')):
      make()
      with self.assertRaisesRegex(
          RuntimeError, f'{bogus} is not a checkpoint \\({kind}\\): no save '
          'wrote it, so round 99 was not trained. Remove it'):
        self._run(3, resume=True)
      (shutil.rmtree if os.path.isdir(bogus) else os.remove)(bogus)
    self.assertCountEqual(os.listdir(paths['checkpoints']),
                          ['program_state_0', 'program_state_1'])
    self.assertLen(run_directory.read_metrics(paths['metrics_csv']), 2)

  def test_an_output_that_cannot_be_written_is_an_error_before_training(self):
    # A fresh run whose log directory cannot be made (its parent is a file):
    # refused, and nothing is left behind.
    os.makedirs(self.root, exist_ok=True)
    with open(os.path.join(self.root, 'logdir'), 'w') as f:
      f.write('not a directory')
    paths = run_directory.output_paths(self.root, 'run')
    with self.assertRaisesRegex(
        PermissionError, f'^{paths["logdir"]} is not a writable directory'):
      self._run(1)
    self.assertFalse(os.path.exists(paths['results']))
    os.remove(os.path.join(self.root, 'logdir'))
    # An immutable metrics CSV (root-proof: `chattr +i`) stops a resumed run
    # before it trains, not after.
    self._run(1)
    if subprocess.run(['chattr', '+i', paths['metrics_csv']],
                      capture_output=True, check=False).returncode:
      self.skipTest('chattr +i is not available here.')
    self.addCleanup(subprocess.run, ['chattr', '-i', paths['metrics_csv']],
                    check=False)
    lines = []
    with self.assertRaisesRegex(
        PermissionError, f'^{paths["metrics_csv"]} is not writable'):
      experiment.run_experiment(
          self.process, self.task, total_rounds=3, clients_per_round=2,
          root_output_dir=self.root, experiment_name='run', resume=True,
          hparams={'alpha': 0.5, 'rounds': 3}, print_fn=lines.append)
    self.assertEqual(lines, [])
    self.assertCountEqual(os.listdir(paths['checkpoints']),
                          ['program_state_0', 'program_state_1'])

  def test_a_round_whose_clients_are_all_non_finite_stops_the_run(self):
    # Each update is dropped (weight 0), so the model stays finite; but a
    # round in which no client's training stayed finite trains nothing, and
    # neither would the next: the learning rate, not a fault.
    process = algorithms.build_fedavg(
        self.task.model_fn,
        tff.learning.optimizers.build_sgdm(learning_rate=float('inf')))
    with self.assertRaisesRegex(
        FloatingPointError, r'^Round 1: every client that trained \(2/2\) '
        r'sent a non-finite update .* keeps its last checkpoint \(round 0\)'):
      self._run(3, process=process)
    paths = run_directory.output_paths(self.root, 'run')
    self.assertEqual(os.listdir(paths['checkpoints']), ['program_state_0'])
    self.assertEqual([r['round_num'] for r in
                      run_directory.read_metrics(paths['metrics_csv'])], ['0'])

  def test_a_fresh_run_that_fails_early_can_be_started_again(self):
    # Round 0's evaluation fails, before the first checkpoint.
    with mock.patch.object(experiment.evaluation, 'build_evaluator',
                           return_value=lambda weights, data: 1 / 0):
      with self.assertRaises(ZeroDivisionError):
        self._run(1)
    paths = run_directory.output_paths(self.root, 'run')
    for key in ('checkpoints', 'results', 'logdir'):
      self.assertFalse(os.path.exists(paths[key]), key)
    self._run(1)  # Not blocked by what the failed start left.

  def test_the_last_round_is_evaluated_and_checkpointed(self):
    rows = experiment.run_experiment(
        self.process, self.task, total_rounds=3, clients_per_round=2,
        root_output_dir=self.root, experiment_name='run', rounds_per_eval=5,
        rounds_per_checkpoint=2, print_fn=lambda line: None)
    evaluated = [r['round_num'] for r in rows
                 if r.get(experiment.ACCURACY_KEY)]
    self.assertEqual(evaluated, ['0', '3'])
    saved = run_directory.output_paths(self.root, 'run')['checkpoints']
    self.assertCountEqual(os.listdir(saved),
                          ['program_state_2', 'program_state_3'])


if __name__ == '__main__':
  tf.test.main()
