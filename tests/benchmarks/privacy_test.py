"""The privacy page: its runs' flags, its cells (mean +- std over the seeds
that finished, the diverged ones named), the paired rule at the same epsilon
and the answer it writes, from a store alone."""

import csv
import os

import numpy as np
import tensorflow as tf

from benchmarks import privacy
from benchmarks import runs


def _curve(final_accuracy, epsilon, status=''):
  """Three evaluated rounds; validation peaks at round 1."""
  return [dict(round=r, test_accuracy=t, validation_accuracy=v,
               clients_accuracy=t / 2, clients_validation_accuracy=v / 2,
               mb=r, mb_up=r / 2, mb_up_plain=r, epsilon=epsilon * r / 2,
               status=status)
          for r, t, v in ((0, 0.1, 0.1), (1, final_accuracy - 0.05, 0.9),
                          (2, final_accuracy, 0.5))]


class PrivacyTest(tf.test.TestCase):

  def test_run_flags(self):
    flags = privacy.run_flags('digits', 'dp0.4243', 'feddf', 2)
    for flag in ('--aggregator=dp', '--dp_noise_multiplier=0.4243',
                 '--algorithm=feddf', '--seed=2', '--task=digits',
                 '--clients_per_round=10', '--num_clients=20'):
      self.assertIn(flag, flags)
    flags = privacy.run_flags('mnist1d', 'compression', 'dsfl', 0)
    self.assertIn('--compression_threshold=0', flags)
    self.assertIn('--fd_beta=0.0',
                  privacy.run_flags('digits', 'mean', 'fd_alone', 0))
    planned = privacy.planned_runs([0, 1])
    self.assertLen(planned, 2 * 2 * sum(map(len, privacy.PLAN.values())))
    self.assertEqual(next(iter(planned))[0], 'digits_mean')

  def test_page_from_a_store(self):
    store = os.path.join(self.create_tempdir().full_path, 'curves.csv')
    fedavg = {0: 0.80, 1: 0.70, 2: 0.75}
    dsfl = {0: 0.40, 1: 0.45, 2: 0.30}
    with open(store, 'w', newline='') as f:
      writer = csv.DictWriter(f, privacy.FIELDS)
      writer.writeheader()
      for seed in fedavg:
        for setting, variant, accuracy, status in (
            ('digits_dp0.3', 'fedavg', fedavg[seed], ''),
            ('digits_dp0.3', 'dsfl', dsfl[seed], ''),
            ('digits_dp0.4243', 'feddf', 0.5,
             'non-finite at round 3' if seed == 1 else '')):
          for row in _curve(accuracy, epsilon=84.8, status=status):
            writer.writerow(dict(row, setting=setting, variant=variant,
                                 seed=seed, commit='abc1234'))
    page = os.path.join(self.create_tempdir().full_path, 'PRIVACY.md')
    privacy.write_page(store, page)
    with open(page) as f:
      text = f.read()
    self.assertTrue(os.path.isfile(os.path.join(
        os.path.dirname(page), 'privacy', 'accuracy_vs_epsilon.png')))
    values = np.array(list(fedavg.values()))
    self.assertIn(f'| fedavg |  | {values.mean():.3f} +- {values.std():.3f} |',
                  text)
    # The diverged seed is named and left out of the mean.
    self.assertIn('0.500 +- 0.000 (1 of 3 seeds non-finite: seed 1 '
                  'non-finite at round 3)', text)
    # Selected: round 1, the best on validation.
    selected = values - 0.05
    self.assertIn(f'| fedavg |  | {selected.mean():.3f} +- '
                  f'{selected.std():.3f} |', text)
    mean, low, high = runs.interval(
        [dsfl[s] - 0.05 - (fedavg[s] - 0.05) for s in fedavg])
    row = [line for line in text.splitlines()
           if line.startswith('| digits | low noise, epsilon 84.8 | dsfl |')][0]
    self.assertIn(f'{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] '
                  '(3 seeds)', row)
    self.assertTrue(row.endswith('| below |'))
    self.assertIn('**No.** Of the 2 comparisons', text)
    self.assertIn('below in 1 (DS-FL on digits at low noise, epsilon 84.8)',
                  text)
    self.assertIn('abc1234', text)
    self.assertIn('epsilon 84.8', text)


  def test_context_names_fedavg_and_the_clients_alone_where_knowledge_wins(self):
    runs_ = {}
    for seed, (fedavg, alone) in enumerate([(0.15, 0.25), (0.17, 0.27)]):
      runs_['digits_dp1.0', 'fedavg', seed] = [
          {k: str(v) for k, v in row.items()} for row in _curve(fedavg, 8)]
      runs_['digits_mean', 'fd_alone', seed] = [
          {k: str(v) for k, v in row.items()} for row in _curve(alone, 0)]
    above = [('digits', 'high noise', 'fd', None, 'digits_dp1.0')]
    # Selected: round 1, 0.05 below the final round.
    self.assertEqual(
        privacy.context(runs_, above),
        ' Where it comes out above, FedAvg itself is at 0.110 (digits, high '
        'noise), while FD\'s clients trained alone, with no exchange at all, '
        'reach 0.210 (digits).')
    self.assertEqual(privacy.context(runs_, []), '')

if __name__ == '__main__':
  tf.test.main()
