"""Every algorithm on the researcher's own data, as the binaries build it.

- `--task=emnist_character --use_synthetic_data --clients_per_round=1
  --rounds=1`, no other flag, for each of the ten algorithms (TFF's
  synthetic EMNIST has 2 clients: the defaults hold one out for the server).
- A task of a `ClientData` with natural clients (TFF's `TestClientData`,
  30 clients of 28x28 images) and one of an .npz file holding only x_train,
  y_train, x_test, y_test, each run by FedDF, FedAUX, DS-FL and FedAD.
- The flags that do not apply to a task with natural clients are refused.
"""

import json
import os
import tempfile

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver
from absl.testing import parameterized
import numpy as np
from sklearn import datasets as sklearn_datasets
import tensorflow as tf
import tensorflow_federated as tff

from binaries import common
from binaries import registry
from binaries import train
import tasks
from tff_kd import experiment
from tff_kd import run_directory

FLAGS = flags.FLAGS

_SERVER_DATA = ('feddf', 'fedaux', 'dsfl', 'fedad')
# The algorithms' slowest steps, cut to a few.
_FAST = dict(
    distill_steps=2, distill_batch_size=8, dsfl_subset_size=16,
    dsfl_distill_epochs=1, dsfl_distill_batch_size=16, fedaux_distill_epochs=1,
    fedaux_distill_batch_size=16)


def _train(root, *args):
  """`python -m binaries.train ARGS --root_output_dir=ROOT`, in process: the
  flags parsed from a command line (so `present` is as a user's), restored
  after. Returns the run's name, metric rows and hparams.json."""
  argv = ['train', f'--root_output_dir={root}', *args]
  with flagsaver.flagsaver():
    FLAGS(argv)
    train.main(argv[:1])
    name = common.default_run_name(common.Settings.from_flags(),
                                   FLAGS.algorithm)
  paths = run_directory.output_paths(root, name)
  with open(paths['hparams']) as f:
    hparams = json.load(f)
  return name, run_directory.read_metrics(paths['metrics_csv']), hparams


def _digits_npz(path, **extra):
  """scikit-learn's digits as a user's own file: 1,500 train, 297 test."""
  digits = sklearn_datasets.load_digits()
  x, y = digits.images.astype(np.float32) / 16.0, digits.target
  np.savez(path, x_train=x[:1500], y_train=y[:1500], x_test=x[1500:],
           y_test=y[1500:], **extra)
  return path


def _test_client_data(num_clients, seed):
  """`TestClientData` of `num_clients` writers of 28x28 images, as TFF's
  EMNIST lays them out (`pixels`, `label`), each writer's labels skewed."""
  rng = np.random.default_rng(seed)
  clients = {}
  for c in range(num_clients):
    n = int(rng.integers(8, 16))
    label = rng.integers(0, 10, size=n).astype(np.int32)
    pixels = rng.uniform(size=(n, 28, 28)).astype(np.float32)
    pixels[np.arange(n), label, :] += 2.0  # A learnable row per class.
    clients[f'f{c:04d}_{c % 7}'] = dict(pixels=pixels, label=label)
  return tff.simulation.datasets.TestClientData(clients)


class SyntheticEmnistTest(tf.test.TestCase, parameterized.TestCase):
  """The issue's command, each algorithm at its defaults."""

  @parameterized.parameters(*sorted(registry.ALGORITHMS))
  def test_runs_at_the_defaults(self, algorithm):
    root = self.create_tempdir().full_path
    with self.assertLogs(level='WARNING') as logs:
      name, rows, hparams = _train(
          root, '--task=emnist_character', '--use_synthetic_data',
          f'--algorithm={algorithm}', '--clients_per_round=1', '--rounds=1')
    self.assertIn("Task 'emnist_character' is now named 'federated_emnist'",
                  '\n'.join(logs.output))
    self.assertEqual(name, f'federated_emnist_{algorithm}_seed0')
    self.assertEqual([r['round_num'] for r in rows], ['0', '1'])
    self.assertBetween(float(rows[-1]['evaluation/test/accuracy']), 0.0, 1.0)
    self.assertEqual(hparams['task'], 'federated_emnist')
    self.assertTrue(hparams['use_synthetic_data'])
    self.assertIn('data_digest', hparams)
    # Settings a task of natural clients does not use are not recorded.
    self.assertEmpty(set(common.SPLIT_FLAGS) & set(hparams))


class NpzTaskTest(tf.test.TestCase):
  """`--task=npz:PATH` (the issue's command runs in
  tests/readme_example_test.py, as the README gives it)."""


  def test_natural_clients_refuse_the_split_flags(self):
    root = self.create_tempdir().full_path
    path = _digits_npz(os.path.join(root, 'ids.npz'),
                       client_ids=np.arange(1500) % 12)
    for flag in ('--num_clients=10', '--partition=iid', '--alpha=0.1',
                 '--classes_per_client=3', f'--split_file={path}'):
      with self.subTest(flag=flag):
        with self.assertRaisesRegex(
            flags.ValidationError,
            f'{flag.split("=")[0]} does not apply to --task=npz:'):
          _train(root, f'--task=npz:{path}', '--rounds=1', flag)
    _, rows, _ = _train(root, f'--task=npz:{path}', '--rounds=1',
                        '--clients_per_round=3', '--model=mlp')
    self.assertEqual([r['round_num'] for r in rows], ['0', '1'])
    # 12 writers, 2 held out for the server: 10 train.
    with self.assertRaisesRegex(flags.ValidationError,
                                '--clients_per_round=11 .* 10 training'):
      _train(root, f'--task=npz:{path}', '--rounds=1',
             '--clients_per_round=11')


class ClientDataTest(tf.test.TestCase, parameterized.TestCase):
  """A task of TFF's `TestClientData` with natural clients, and one of an
  .npz holding only x_train, y_train, x_test and y_test, run by the
  algorithms that need server data, as the binaries build them."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    spec = tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=8)
    cls.client_data = _test_client_data(30, seed=0)
    cls.tasks = dict(
        client_data=tasks.from_client_data(
            cls.client_data, _test_client_data(4, seed=1),
            train_client_spec=spec),
        npz=tasks.create_task(
            'npz:' + _digits_npz(os.path.join(
                tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir()),
                'mine.npz')),
            num_clients=10, train_client_spec=spec))

  def test_held_out_clients_are_the_servers(self):
    task = self.tasks['client_data']
    train_ids = task.datasets.train_data.client_ids
    held = sorted(set(self.client_data.client_ids) - set(train_ids))
    self.assertLen(held, 6)  # round((0.1 + 0.1) * 30).
    served = np.concatenate([task.public_x, task.validation[0]])
    pooled = np.concatenate([
        np.stack([e['pixels'].numpy() for e in
                  self.client_data.create_tf_dataset_for_client(c)])
        for c in held])
    self.assertCountEqual([x.tobytes() for x in served[..., 0]],
                          [x.tobytes() for x in pooled])

  @parameterized.product(source=('client_data', 'npz'), name=_SERVER_DATA)
  def test_one_round(self, source, name):
    task = self.tasks[source]
    settings = common.Settings(
        clients_per_round=3, rounds=1,
        algorithm_hparams=dict(common.Settings().algorithm_hparams, **_FAST))
    process = common.build_process(settings, task, registry.get(name))
    clients = task.datasets.train_data.client_ids[:3]
    output = process.next(process.initialize(), [
        process.client_input(c, task.client_dataset(c, 1)) for c in clients])
    for weights in tf.nest.flatten(output.state):
      if np.issubdtype(np.asarray(weights).dtype, np.floating):
        self.assertTrue(np.all(np.isfinite(weights)))
    metrics = experiment.flatten(output.metrics)
    self.assertGreater(float(metrics[experiment.BYTES_UPLOADED_KEY]), 0)


if __name__ == '__main__':
  tf.test.main()
