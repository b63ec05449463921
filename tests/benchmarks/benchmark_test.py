"""The benchmark binary runs in a tiny configuration and writes its report;
the PyTorch reference answers its pipe protocol in a process of its own.

torch is benchmark-only: it lives in .venv-bench (`make bench`), never in
.venv, and this process never imports it. Without it the report's PyTorch
rows are one line saying so, and the tests of the PyTorch process are
skipped.
"""

import json
import os
import re
import subprocess
import sys
import unittest

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import benchmark

pytestmark = pytest.mark.slow  # pytest.ini

_TORCH_PATH = flags.FLAGS['torch_path'].default
_NO_TORCH = benchmark.torch_unavailable(_TORCH_PATH)


def _clients(shape=(8, 8, 1)):
  rng = np.random.default_rng(0)
  return [(rng.random((n,) + shape, dtype=np.float32),
           rng.integers(0, 10, n)) for n in (40, 7, 33)]


def _resnet8_weights():
  """The Keras ResNet-8's trainable weights' sizes (built in a graph)."""
  with tf.Graph().as_default():
    model = benchmark.resnet8_keras_model((32, 32, 3), 10)
    return sorted(int(np.prod(v.shape)) for v in model.trainable_variables)


class BenchmarkTest(tf.test.TestCase):

  def test_writes_a_report_with_every_row(self):
    output = self.create_tempfile().full_path
    # One repeat, and ResNet-8 clients of one batch each, keep it short.
    with flagsaver.flagsaver(output=output, warmup_rounds=0, timed_rounds=1,
                             repeats=1, resnet8_examples=20,
                             bench_algorithms=['fedavg', 'feddf'],
                             bench_distill_steps=2,
                             worker_settings=['mccc=1'], process_rounds=2,
                             process_repeats=1, time_train_binary=False):
      benchmark.main(['benchmark'])
    with open(output) as f:
      report = f.read()
    if _NO_TORCH:
      torch_rows = ['Skipped: no PyTorch in', 'PyTorch: Skipped',
                    'tiny CNN: not measured (no PyTorch)',
                    'ResNet-8: not measured (no PyTorch)']
    else:
      torch_rows = ['| plain PyTorch, in its own process',
                    '(target <= 1.2): ', '(target <= 1.0): ',
                    '`torch.get_num_threads()` = 1',
                    '| PyTorch: phase | seconds |', '| import numpy, torch |',
                    'Ours / PyTorch, whole process: ']
      counts = re.search(
          r'Trainable parameters: ours ([0-9,]+); PyTorch\'s ([0-9,]+) '
          r'\(checked equal\)', report)
      self.assertIsNotNone(counts)
      self.assertEqual(counts[1], counts[2])
      self.assertEqual(counts[1], f'{sum(_resnet8_weights()):,}')
    for row in ['Load average (1, 5, 15 min) at the start: ',
                '## Against PyTorch',
                '| `tff_kd` `build_fedavg`, TFF C++ worker |',
                '| the same before the tf.data fix',
                '| plain `tf.function` loop, no TFF',
                '**Targets** (this run\'s interleaved rounds; median over '
                'the repeats): ours / PyTorch per round, tiny CNN',
                'TFF round / plain loop (tiny CNN) ',
                'Same numbers: after the 1 rounds', '### Tiny CNN',
                '### ResNet-8', 'Trainable parameters: ours 78,042; ',
                '| FedAvg round, ResNet-8 | seconds per round |',
                '| tf.data\'s default graph optimizations and autotuning off',
                '| TFF, no client work |', '| TFF, datasets iterated, no SGD |',
                '| max concurrent calls 1 |',
                '| TFF\'s and TensorFlow\'s defaults (default) |',
                '## Whole process: 2 rounds', '| import tensorflow |',
                '| build the process (build_fedavg) |', '| rounds 2-2 |',
                '| plain `tf.function` loop, no TFF (compute floor)',
                '| `tff_kd` FedAvg', '| TFF `build_weighted_fed_avg`, same',
                '| TFF `build_weighted_fed_avg(loop_implementation=',
                '| fedavg |', '| feddf |',
                '| `tf.function` (one `tf.while_loop`) |', '| eager |',
                '## Population scale', '](POPULATION.md)'] + torch_rows:
      self.assertIn(row, report)
    self.assertEqual(report.count('| `tff_kd` `build_fedavg`, TFF C++ '
                                  'worker |'), 2)  # Tiny CNN and ResNet-8.
    self.assertNotIn('earlier version', report.lower())
    first_minute = float(re.search(
        r'Load average \(1, 5, 15 min\) at the start: ([0-9.]+)',
        report)[1])
    self.assertEqual(
        'The machine was not idle at the start' in report, first_minute > 0.5)

  def test_resnet8_has_feddf_parameter_count(self):
    self.assertEqual(sum(_resnet8_weights()), 78_042)

  def test_targets_say_whether_met_with_the_spread(self):
    targets = benchmark._targets  # pylint: disable=protected-access
    paragraph = targets(
        {'ours / PyTorch': [1.3, 1.1, 1.25], 'TFF / plain': [1.0, 1.1, 1.2]},
        [0.9, 0.8, 1.4])
    self.assertIn('tiny CNN 1.25 [1.10, 1.30] (target <= 1.2): not met',
                  paragraph)
    self.assertIn('ResNet-8 0.90 [0.80, 1.40] (target <= 1.0): met',
                  paragraph)
    self.assertIn('(tiny CNN) 1.10 [1.00, 1.20] (target <= 1.2): met',
                  paragraph)
    self.assertIn('ResNet-8: not measured (no PyTorch)', targets(
        {'ours / PyTorch': None, 'TFF / plain': [1.0]}, None))

  def test_without_torch_the_pytorch_rows_are_skipped_with_a_reason(self):
    missing = self.create_tempdir().full_path
    line = benchmark.torch_unavailable(missing)
    self.assertStartsWith(line, f'Skipped: no PyTorch in `{missing}`.')
    self.assertIn('make bench', line)

  def test_worker_settings_are_parsed_and_checked(self):
    self.assertEqual(
        benchmark.parse_worker_setting('intra=1+inter=2+mccc=3'),
        {'intra_op_threads': 1, 'inter_op_threads': 2,
         'max_concurrent_computation_calls': 3})
    for spec in ['intra=0', 'threads=2', 'mccc', 'inter=-1', 'intra=1+']:
      with self.assertRaisesRegex(ValueError,
                                  f'bad setting .* in {re.escape(repr(spec))}'):
        benchmark.parse_worker_setting(spec)
    with flagsaver.flagsaver():
      with self.assertRaisesRegex(flags.IllegalFlagValueError,
                                  "bad setting 'intra=0'"):
        flags.FLAGS.worker_settings = ['mccc=2', 'intra=0']

  def test_a_pytorch_process_without_torch_fails_with_its_error(self):
    # torch is in no directory of its path (nor in .venv).
    with self.assertRaisesRegex(
        RuntimeError, '(?s)The PyTorch process exited .*Error'):
      benchmark.TorchProcess(self.create_tempdir().full_path).close()


@unittest.skipIf(_NO_TORCH, f'no torch for the reference: {_NO_TORCH}')
class TorchProcessTest(tf.test.TestCase):

  def test_rounds_over_the_pipe(self):
    with benchmark.TorchProcess(_TORCH_PATH) as torch:
      self.assertIn('torch', torch.ready)
      self.assertNotIn('torch', sys.modules)  # Never in this process.
      started = torch.start(clients=_clients(), num_classes=10, epochs=2,
                            batch_size=16, learning_rate=0.05,
                            num_threads=1)
      self.assertIn('`torch.get_num_threads()` = 1', started['threads'])
      before = torch.weights()
      self.assertEqual(sum(w.size for w in before), 33_802)
      first = torch.run_round([0, 1, 2])
      self.assertEqual(first['steps'], 2 * (2 + 0 + 2))  # Full batches.
      self.assertGreater(first['seconds'], 0)
      self.assertNotAllClose(before, torch.weights())
      self.assertEqual(torch.run_round([1])['steps'], 0)  # 7 examples.
      with self.assertRaisesRegex(RuntimeError, 'Unknown request'):
        torch.call('bogus')
      self.assertEqual(torch.run_round([0])['steps'], 4)  # Still serving.
    self.assertIsNotNone(torch._process.poll())  # pylint: disable=protected-access

  def test_resnet8_matches_the_keras_model(self):
    with benchmark.TorchProcess(_TORCH_PATH) as torch:
      torch.start(clients=_clients((32, 32, 3)), num_classes=10, epochs=1,
                  batch_size=16, learning_rate=0.05, num_threads=1,
                  model='resnet8')
      weights = torch.weights()
      self.assertEqual(sorted(w.size for w in weights), _resnet8_weights())
      self.assertEqual(torch.run_round([0, 1, 2])['steps'], 2 + 0 + 2)
      self.assertNotAllClose(weights, torch.weights())

  def test_averaging_equal_models_keeps_them(self):
    with benchmark.TorchProcess(_TORCH_PATH) as torch:
      torch.start(clients=_clients(), num_classes=10, epochs=2,
                  batch_size=16, learning_rate=0.0)
      before = torch.weights()
      torch.run_round([0, 2])
      self.assertAllClose(before, torch.weights(), atol=1e-6)

  def test_the_whole_process_run_reports_its_phases(self):
    data = os.path.join(self.create_tempdir().full_path, 'clients.npz')
    arrays = {'schedule': np.array([[0, 2], [2, 0]]), 'num_classes': 10}
    for k, (x, y) in enumerate(_clients()):
      arrays[f'x{k}'], arrays[f'y{k}'] = x, y
    np.savez(data, **arrays)
    result = subprocess.run(
        [sys.executable, '-m', 'benchmarks.torch_reference', 'run',
         f'--data={data}', '--epochs=1', '--batch_size=16',
         '--learning_rate=0.05', '--threads=1'],
        env=benchmark._torch_environment(_TORCH_PATH),  # pylint: disable=protected-access
        capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    self.assertEqual(report['steps'], 2 * (2 + 2))
    self.assertEqual([name for name, _ in report['phases']], [
        'interpreter start', 'import numpy, torch',
        'load the clients\' data (.npz)', 'build the models', 'round 1',
        'rounds 2-2'])


if __name__ == '__main__':
  tf.test.main()
