"""run_experiment's checkpoints: atomic saves, a clear error on a corrupt one,
client states restored exactly; dropout; evaluation of stateful clients."""

import asyncio
import os

import numpy as np

import tensorflow as tf
import tensorflow_federated as tff

import tasks
import tiny
from tff_kd import algorithms
from tff_kd import experiment


def _task():
  return tasks.create_task(
      'digits', train_client_spec=tff.simulation.baselines.ClientSpec(
          num_epochs=1, batch_size=32),
      model='mlp', num_clients=4, partition='iid', seed=0)


class CheckpointTest(tf.test.TestCase):

  def _run(self, process, task, root, rounds, resume):
    return experiment.run_experiment(
        process, task, total_rounds=rounds, clients_per_round=2,
        root_output_dir=root, experiment_name='run', resume=resume,
        print_fn=lambda line: None)

  def test_corrupt_checkpoint_is_named_and_the_previous_one_resumes(self):
    task = _task()
    process = algorithms.build_fedavg(
        task.model_fn, tff.learning.optimizers.build_sgdm(learning_rate=0.1))
    root = self.create_tempdir().full_path
    reference = self._run(process, task, self.create_tempdir().full_path, 3,
                          resume=False)
    self._run(process, task, root, 2, resume=False)
    checkpoints = experiment.output_paths(root, 'run')['checkpoints']
    self.assertCountEqual(os.listdir(checkpoints),
                          ['program_state_1', 'program_state_2'])
    # A save killed midway left a partial directory: it is not a version.
    os.makedirs(os.path.join(checkpoints, '.partial_program_state_3'))
    latest = os.path.join(checkpoints, 'program_state_2')
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
    self.assertCountEqual(os.listdir(checkpoints),
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
    resumed = self._run(process, task, roots[1], 3, resume=True)
    self.assertEqual(full[-1], {**resumed[-1], **{
        k: full[-1][k] for k in full[-1] if 'time' in k}})
    states = []
    for root in roots:
      manager = experiment.AtomicFileProgramStateManager(
          experiment.output_paths(root, 'run')['checkpoints'])
      # Not asyncio.run: it would leave no event loop for the next test's
      # tff.simulation.run_training_process.
      loop = asyncio.new_event_loop()
      try:
        state, version = loop.run_until_complete(
            manager.load_latest(process.initialize()))
      finally:
        loop.close()
      self.assertEqual(version, 3)
      states.append(state)
    flat = [tf.nest.flatten(s) for s in states]
    self.assertLen(flat[0], len(flat[1]))
    for a, b in zip(*flat):
      self.assertAllEqual(a, b)
    initial = tf.nest.flatten(process.initialize()['clients'])
    moved = [not np.array_equal(a, b) for a, b in
             zip(tf.nest.flatten(states[0]['clients']), initial)]
    self.assertTrue(any(moved))
    # Every client's model is evaluated; FD has no server model.
    self.assertEqual(full[-1][experiment.ACCURACY_KEY],
                     full[-1][experiment.CLIENTS_ACCURACY_KEY])


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


if __name__ == '__main__':
  tf.test.main()
