"""The compare binary: same split for every algorithm, summary files, resume."""

import csv
import os

from absl import flags
from absl.testing import flagsaver
import tensorflow as tf

from binaries import compare
from tff_kd import experiment

FLAGS = flags.FLAGS


class CompareTest(tf.test.TestCase):

  def test_summary_rows_and_identical_numbers_on_resume(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(
        task='digits', model='mlp', num_clients=4, clients_per_round=2,
        rounds=2, algorithms=['fedavg', 'fedntd'], seeds=['0'],
        report_rounds=['1'], root_output_dir=root, local_epochs=1,
    ):
      compare.main(['compare'])
      with open(os.path.join(root, 'summary.csv')) as f:
        first = list(csv.DictReader(f))
      FLAGS.resume = True  # Finished runs are read back, not rerun.
      compare.main(['compare'])
      with open(os.path.join(root, 'summary.csv')) as f:
        second = list(csv.DictReader(f))
    self.assertEqual([r['algorithm'] for r in first], ['fedavg', 'fedntd'])
    for a, b in zip(first, second):
      self.assertEqual(a['final_accuracy_mean'], b['final_accuracy_mean'])
    with open(os.path.join(root, 'summary.md')) as f:
      table = f.read()
    self.assertIn('| fedavg |', table)
    self.assertIn('round 1', table)
    fedavg = experiment.read_metrics(
        experiment.output_paths(root, 'fedavg_seed0')['metrics_csv'])
    self.assertEqual(
        float(first[0]['final_accuracy_mean']),
        float(fedavg[-1][experiment.ACCURACY_KEY]),
    )


if __name__ == '__main__':
  tf.test.main()
