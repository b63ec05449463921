"""A run killed with SIGKILL resumes to exactly the uninterrupted numbers and,
for clients that keep state, to every client's state bit for bit; its TFF
worker dies with it."""

import os
import signal
import subprocess
import sys
import time
import uuid

from absl.testing import parameterized
import pytest
import tensorflow as tf

import processes

from tff_kd import client_store
from tff_kd import run_directory

pytestmark = pytest.mark.slow  # pytest.ini

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
_FLAGS = ['--task=digits', '--model=mlp', '--num_clients=4',
          '--clients_per_round=2', '--local_epochs=1', '--rounds=4',
          '--rounds_per_checkpoint=1']


def _train(args, marker, **kwargs):
  return subprocess.Popen(
      [sys.executable, '-m', 'binaries.train'] + _FLAGS + args,
      cwd=_REPO, env=dict(os.environ, TFF_KD_TEST_MARKER=marker),
      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **kwargs)


class KillResumeTest(tf.test.TestCase, parameterized.TestCase):

  # DS-FL is both a server-distillation algorithm (its server model) and a
  # stateful-client one (every client's model is in the checkpoint).
  @parameterized.parameters('fedavg', 'dsfl')
  def test_sigkill_then_resume_gives_the_uninterrupted_numbers(self, name):
    marker = uuid.uuid4().hex
    root = self.create_tempdir().full_path
    common = [f'--algorithm={name}', f'--root_output_dir={root}'] + (
        ['--distill_steps=5'] if name == 'dsfl' else [])
    full = _train(common + ['--experiment_name=full'], marker)
    full.communicate(timeout=600)
    self.assertEqual(full.returncode, 0)

    killed = _train(common + ['--experiment_name=killed'], marker)
    for line in killed.stdout:
      if line.startswith('round    2/4'):
        break
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    deadline = time.time() + 10
    while processes.workers_with(marker) and time.time() < deadline:
      time.sleep(0.2)
    self.assertEqual(processes.workers_with(marker), [])  # Died with its parent.

    resumed = _train(common + ['--experiment_name=killed', '--resume'], marker)
    resumed.communicate(timeout=600)
    self.assertEqual(resumed.returncode, 0)
    rows = {
        run: run_directory.read_metrics(
            run_directory.output_paths(root, run)['metrics_csv'])
        for run in ('full', 'killed')
    }
    final = {run: [r for r in rows[run] if r['round_num'] == '4'][-1]
             for run in rows}
    for key in final['full']:
      if 'time' not in key and 'seconds' not in key:
        self.assertEqual(final['full'][key], final['killed'][key], key)
    if name == 'dsfl':  # Every client's state, from the client stores.
      states = {
          run: client_store.read_version(
              run_directory.output_paths(root, run)['client_store'], 4)
          for run in ('full', 'killed')}
      self.assertNotEmpty(states['full'])
      self.assertCountEqual(states['full'], states['killed'])
      for client, leaves in states['full'].items():
        self.assertLen(states['killed'][client], len(leaves))
        for a, b in zip(leaves, states['killed'][client]):
          self.assertAllEqual(a, b, msg=f'client {client}')


if __name__ == '__main__':
  tf.test.main()
