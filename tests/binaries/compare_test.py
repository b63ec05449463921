"""The compare binary: same split for every algorithm, summary files, resume."""

import csv
import os

from absl import flags
from absl.testing import flagsaver
import tensorflow as tf

from binaries import compare
from tff_kd import experiment

FLAGS = flags.FLAGS


def _read_summary(root):
  with open(os.path.join(root, 'summary.csv')) as f:
    return list(csv.DictReader(f))


class CompareTest(tf.test.TestCase):

  def test_summary_plots_identical_numbers_and_resume(self):
    roots = [self.create_tempdir().full_path for _ in range(2)]
    summaries = []
    for root in roots:
      with flagsaver.flagsaver(
          task='digits', model='mlp', num_clients=4, clients_per_round=2,
          rounds=2, algorithms=['fedavg', 'fedntd'], seeds=['0', '1'],
          report_rounds=['1'], root_output_dir=root, local_epochs=1,
      ):
        compare.main(['compare'])
        summaries.append(_read_summary(root))
    root = roots[0]
    first, again = summaries
    with flagsaver.flagsaver(
        task='digits', model='mlp', num_clients=4, clients_per_round=2,
        rounds=2, algorithms=['fedavg', 'fedntd'], seeds=['0', '1'],
        report_rounds=['1'], root_output_dir=root, local_epochs=1,
        resume=True,  # Finished runs are read back, not rerun.
    ):
      compare.main(['compare'])
      resumed = _read_summary(root)
    self.assertEqual([r['algorithm'] for r in first], ['fedavg', 'fedntd'])
    self.assertEqual([r['seeds'] for r in first], ['2', '2'])
    numbers = [k for k in first[0] if 'accuracy' in k or k.startswith('mb_')]
    for a, b, c in zip(first, again, resumed):
      for key in numbers:
        self.assertEqual(a[key], b[key], key)  # Same flags, same numbers.
        self.assertEqual(a[key], c[key], key)
    self.assertGreater(float(first[0]['mb_uploaded_mean']), 0)
    for png in ['accuracy.png', 'communication.png']:
      with open(os.path.join(root, png), 'rb') as f:
        self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')
    with open(os.path.join(root, 'summary.md')) as f:
      table = f.read()
    self.assertIn('| fedavg |', table)
    self.assertIn('round 1', table)
    fedavg = experiment.read_metrics(
        experiment.output_paths(root, 'fedavg_seed0')['metrics_csv'])
    seed1 = experiment.read_metrics(
        experiment.output_paths(root, 'fedavg_seed1')['metrics_csv'])
    self.assertAlmostEqual(
        float(first[0]['final_accuracy_mean']),
        (float(fedavg[-1][experiment.ACCURACY_KEY])
         + float(seed1[-1][experiment.ACCURACY_KEY])) / 2,
    )

  def test_a_row_per_prototype(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(
        task='digits', prototypes=['mlp', 'cnn'], num_clients=4,
        clients_per_round=2, rounds=1, algorithms=['feddf'], seeds=['0'],
        root_output_dir=root, local_epochs=1, distill_steps=5,
    ):
      compare.main(['compare'])
    rows = _read_summary(root)
    self.assertEqual([r['algorithm'] for r in rows],
                     ['feddf[cnn]', 'feddf[mlp]'])
    metrics = experiment.read_metrics(
        experiment.output_paths(root, 'feddf_seed0')['metrics_csv'])
    self.assertEqual(  # mlp, the first prototype, is the task's model.
        metrics[-1][experiment.ACCURACY_KEY],
        metrics[-1][experiment.prototype_accuracy_key('mlp')])
    self.assertAlmostEqual(
        float(rows[0]['final_accuracy_mean']),
        float(metrics[-1][experiment.prototype_accuracy_key('cnn')]))


if __name__ == '__main__':
  tf.test.main()
