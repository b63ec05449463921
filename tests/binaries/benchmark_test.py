"""The benchmark binary runs in a tiny configuration and writes its report."""

from absl.testing import flagsaver
import tensorflow as tf

from binaries import benchmark


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
    for row in ['| plain `tf.function` loop', '| `tff_kd` FedAvg',
                '| TFF `build_weighted_fed_avg`, same runtime |',
                '| TFF `build_weighted_fed_avg(loop_implementation=',
                '## Against PyTorch peers', '| fedavg |', '| feddf |',
                '| `tf.function` (one `tf.while_loop`) |', '| eager |',
                '| 2 | ', '| 4 | ', '4 clients per round on 1 worker',
                'Worker memory from 2 to 4 clients per round']:
      self.assertIn(row, report)


if __name__ == '__main__':
  tf.test.main()
