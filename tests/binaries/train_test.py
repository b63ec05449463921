"""The trainer binary: outputs, resume, bad flags, and no leaked TFF worker."""

import json
import os
import subprocess
import sys
import uuid

from absl import flags
from absl.testing import flagsaver
import tensorflow as tf

import processes

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

  def test_alpha_not_positive(self):
    self._assert_rejected('--alpha must be > 0', alpha=0.0)
    self._assert_rejected('--alpha must be > 0', alpha=-1.0)

  def test_clients_per_round_above_num_clients(self):
    self._assert_rejected(
        '--clients_per_round must be <= --num_clients',
        num_clients=5, clients_per_round=6,
    )

  def test_rounds_below_one(self):
    self._assert_rejected('--rounds must be >= 1', rounds=0)

  def test_learning_rate_not_positive(self):
    self._assert_rejected('--client_learning_rate must be > 0',
                          client_learning_rate=0.0)

  def test_missing_data_dir_data(self):
    empty = self.create_tempdir().full_path
    with flagsaver.flagsaver(task='mnist', data_dir=empty):
      with self.assertRaisesRegex(flags.ValidationError, 'data_dir'):
        train.main(['train'])


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
