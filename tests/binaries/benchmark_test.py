"""The benchmark binary runs in a tiny configuration and writes its report.

Its PyTorch section needs torch (requirements-bench.lock, `make bench`);
without it the section is one line saying so, and the reference's own test
is skipped.
"""

import unittest

from absl.testing import flagsaver
import numpy as np
import tensorflow as tf

from binaries import benchmark

_TORCH = benchmark.torch_reference


class BenchmarkTest(tf.test.TestCase):

  def test_writes_a_report_with_every_row(self):
    output = self.create_tempfile().full_path
    with flagsaver.flagsaver(output=output, warmup_rounds=0, timed_rounds=1,
                             bench_algorithms=['fedavg', 'feddf'],
                             scale_clients=['2', '4'],
                             scale_workers_clients=4, bench_distill_steps=2):
      benchmark.main(['benchmark'])
    with open(output) as f:
      report = f.read()
    if _TORCH is None:
      peer_rows = ['Skipped: torch is not importable here']
    else:
      peer_rows = ['| `tff_kd` `build_fedavg`, TFF C++ runtime |',
                   '| plain PyTorch (`binaries/torch_reference.py`) |',
                   'Ours / PyTorch: ', 'torch.get_num_threads()']
    for row in ['| plain `tf.function` loop', '| `tff_kd` FedAvg',
                '| TFF `build_weighted_fed_avg`, same runtime |',
                '| TFF `build_weighted_fed_avg(loop_implementation=',
                '## Against PyTorch', '| fedavg |', '| feddf |',
                '| `tf.function` (one `tf.while_loop`) |', '| eager |',
                '| 2 | ', '| 4 | ', '4 clients per round on 1 worker',
                'Worker memory from 2 to 4 clients per round'] + peer_rows:
      self.assertIn(row, report)


@unittest.skipIf(_TORCH is None, 'torch is not installed (make bench).')
class TorchReferenceTest(tf.test.TestCase):

  def _fedavg(self, learning_rate):
    rng = np.random.default_rng(0)
    clients = [(rng.random((n, 8, 8, 1), dtype=np.float32),
                rng.integers(0, 10, n)) for n in (40, 7, 33)]
    return _TORCH.FedAvg(clients, 10, epochs=2, batch_size=16,
                         learning_rate=learning_rate)

  def _weights(self, fedavg):
    return [p.detach().numpy().copy() for p in fedavg.model.parameters()]

  def test_a_round_trains_the_clients_full_batches(self):
    fedavg = self._fedavg(0.05)
    before = self._weights(fedavg)
    self.assertEqual(sum(w.size for w in before), 33_802)
    self.assertEqual(fedavg.run_round([0, 1, 2]), 2 * (2 + 0 + 2))
    self.assertNotAllClose(before, self._weights(fedavg))
    self.assertEqual(fedavg.run_round([1]), 0)  # 7 examples: no full batch.

  def test_averaging_equal_models_keeps_them(self):
    fedavg = self._fedavg(0.0)
    before = self._weights(fedavg)
    fedavg.run_round([0, 2])
    self.assertAllClose(before, self._weights(fedavg), atol=1e-6)


if __name__ == '__main__':
  tf.test.main()
