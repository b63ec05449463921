"""The results binary writes a page with a table and plots per setting."""

import os

from absl.testing import flagsaver
import tensorflow as tf

from binaries import results


class ResultsTest(tf.test.TestCase):

  def test_writes_tables_and_plots(self):
    root = self.create_tempdir().full_path
    output = os.path.join(self.create_tempdir().full_path, 'RESULTS.md')
    with flagsaver.flagsaver(
        tasks=['digits'], alphas=['0.5', 'iid'], algorithms=['fedavg'],
        model='mlp', num_clients=4, clients_per_round=2, rounds=1,
        local_epochs=1, seeds=['0'], root_output_dir=root, page=output,
    ):
      results.main(['results'])
    with open(output) as f:
      page = f.read()
    for setting in ('digits_alpha0.5', 'digits_iid'):
      self.assertIn(f'## {setting}', page)
      for png in ('accuracy', 'communication'):
        self.assertTrue(os.path.exists(os.path.join(
            os.path.dirname(output), 'results', f'{setting}_{png}.png')))
    self.assertIn('| fedavg |', page)
    self.assertRegex(page, r'\| algorithm \| digits_alpha0.5 \| digits_iid \|\n'
                     r'\|---\|---\|---\|\n\| fedavg \| 0\.\d{3} \+- 0\.000 \| '
                     r'0\.\d{3} \+- 0\.000 \|')
    for flag in ('--alphas=0.5,iid', '--algorithms=fedavg', '--model=mlp',
                 '--rounds=1', '--local_epochs=1', '--seeds=0'):
      self.assertIn(flag, page)
    for per_setting in ('--task=', '--partition=', '--alpha=', '--seed='):
      self.assertNotIn(per_setting, page)


if __name__ == '__main__':
  tf.test.main()
