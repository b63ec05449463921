"""The claims page: its rule (a paired 95% t-interval over seeds), the
selected accuracy (the round best on validation, reported on test), the
budget of a comparison at the same communication, and the page written from
a store alone."""

import csv
import os

import numpy as np
from scipy import stats
import tensorflow as tf

from benchmarks import claims


def _rows(test, validation, mb_per_round):
  return [dict(round=str(r), test_accuracy=str(t), validation_accuracy=str(v),
               mb=str(mb_per_round * r))
          for r, (t, v) in enumerate(zip(test, validation))]


class ClaimsTest(tf.test.TestCase):

  def test_interval_is_the_paired_t_interval(self):
    d = np.array([0.02, 0.05, -0.01, 0.04, 0.03])
    mean, low, high = claims.interval(d)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    self.assertAllClose([mean, low, high],
                        [d.mean(), d.mean() - half, d.mean() + half])
    # By hand: t(0.975, 4) = 2.776.
    self.assertAllClose(half, 2.776 * d.std(ddof=1) / np.sqrt(5), rtol=1e-3)

  def test_selected_is_the_test_accuracy_of_the_best_validation_round(self):
    rows = _rows(test=[0.1, 0.5, 0.9, 0.6], validation=[0.1, 0.7, 0.4, 0.7],
                 mb_per_round=1.0)
    # Round 1 and 3 tie on validation: the first; never round 2, the best
    # on test.
    self.assertEqual(claims.selected(rows), 0.5)
    self.assertEqual(claims.final(rows), 0.6)
    # Within 2.5 MB: rounds 0 to 2.
    self.assertEqual(claims.selected(rows, max_mb=2.5), 0.5)
    # Within 0.5 MB only round 0 fits: the untrained model.
    self.assertEqual(claims.selected(rows, max_mb=0.5), 0.1)

  def test_the_page_applies_the_rule_to_each_claim_from_the_store(self):
    store = os.path.join(self.create_tempdir().full_path, 'curves.csv')
    gains = {0: 0.05, 1: 0.04, 2: 0.06}
    with open(store, 'w', newline='') as f:
      writer = csv.DictWriter(f, claims.FIELDS)
      writer.writeheader()
      for seed, gain in gains.items():
        for variant, shift in (('fedavg', 0.0), ('fedgen', gain)):
          for row in _rows(test=[0.1, 0.5 + shift, 0.7 + shift],
                           validation=[0.1, 0.5 + shift, 0.7 + shift],
                           mb_per_round=7.5):
            writer.writerow(dict(row, setting='label_skew', variant=variant,
                                 seed=seed, commit='abc1234'))
    page = os.path.join(self.create_tempdir().full_path, 'CLAIMS.md')
    claims.write_page(store, page)
    with open(page) as f:
      text = f.read()
    fedgen = [line for line in text.splitlines()
              if line.startswith('| FedGen | above FedAvg')][0]
    mean, low, high = claims.interval(list(gains.values()))
    self.assertIn(f'| +{100 * mean:.1f} [+{100 * low:.1f}, '
                  f'+{100 * high:.1f}] |', fedgen)
    self.assertTrue(fedgen.endswith('| holds |'))
    self.assertIn('3 seeds', fedgen)
    # Claims without runs say so.
    feddf = [line for line in text.splitlines()
             if line.startswith('| FedDF |')][0]
    self.assertTrue(feddf.endswith('| not measured |'))
    self.assertIn('abc1234', text)

  def test_run_flags_give_the_distillation_algorithms_the_public_inputs(self):
    flags = claims.run_flags('label_skew', 'feddf', 3, '/runs')
    self.assertIn('--algorithm=feddf', flags)
    self.assertIn('--seed=3', flags)
    self.assertIn(f'--distill_data=npz:/runs/{claims.PUBLIC_FILE}', flags)
    flags = claims.run_flags('shards', 'fd_alone', 0, '/runs')
    self.assertIn('--fd_beta=0.0', flags)
    self.assertFalse(any(f.startswith('--distill_data') for f in flags))


if __name__ == '__main__':
  tf.test.main()
