"""The compare binary: same split for every algorithm, summary files, resume."""

import copy
import csv
import io
import json
import os
import re
from unittest import mock

from absl import flags
from absl.testing import flagsaver
import tensorflow as tf
import tqdm

from binaries import common
from binaries import compare
from tff_kd import experiment
from tff_kd import run_directory

FLAGS = flags.FLAGS


def flag_state():
  """Each flag of the binaries: its value, whether it is at its default, and
  whether it was given (absl's own flags, e.g. --verbosity, which logging
  sets, are left out)."""
  return {flag.name: (copy.deepcopy(flag.value), flag.using_default_value,
                      flag.present)
          for module, module_flags in FLAGS.flags_by_module_dict().items()
          if module.startswith('binaries.') for flag in module_flags}


def _read_summary(root):
  with open(os.path.join(root, 'summary.csv')) as f:
    return list(csv.DictReader(f))


class CompareTest(tf.test.TestCase):

  def test_summary_plots_identical_numbers_and_resume(self):
    root, again = (self.create_tempdir().full_path for _ in range(2))
    flags_ = dict(
        task='digits', model='mlp', num_clients=4, clients_per_round=2,
        rounds=2, algorithms=['fedavg', 'fedntd'], seeds=['0', '1'],
        report_rounds=['1'], root_output_dir=root, local_epochs=1,
    )
    with flagsaver.flagsaver(**flags_):
      compare.main(['compare'])
    first = _read_summary(root)
    with flagsaver.flagsaver(**dict(flags_, resume=True)):
      compare.main(['compare'])  # Finished runs are read back, not rerun.
    resumed = _read_summary(root)
    # Identical flags, identical numbers: rerun seed 1 from scratch.
    with flagsaver.flagsaver(**dict(flags_, seeds=['1'],
                                    root_output_dir=again)):
      compare.main(['compare'])
    for name in ('fedavg', 'fedntd'):
      a, b = (run_directory.read_metrics(run_directory.output_paths(
          r, f'{name}_seed1')['metrics_csv']) for r in (root, again))
      for row_a, row_b in zip(a, b):
        for key in row_a:
          if 'time' not in key and 'seconds' not in key:
            self.assertEqual(row_a[key], row_b[key], key)
    self.assertEqual([r['algorithm'] for r in first], ['fedavg', 'fedntd'])
    self.assertEqual([r['seeds'] for r in first], ['2', '2'])
    self.assertEqual([r['labelled_server_data'] for r in first], ['0', '0'])
    numbers = [k for k in first[0] if 'accuracy' in k or k.startswith('mb_')]
    for a, c in zip(first, resumed):
      for key in numbers:
        self.assertEqual(a[key], c[key], key)
    self.assertGreater(float(first[0]['mb_uploaded_mean']), 0)
    for png in ['accuracy.png', 'communication.png']:
      with open(os.path.join(root, png), 'rb') as f:
        self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')
    with open(os.path.join(root, 'summary.md')) as f:
      table = f.read()
    self.assertIn('| fedavg |', table)
    self.assertIn('round 1', table)
    fedavg = run_directory.read_metrics(
        run_directory.output_paths(root, 'fedavg_seed0')['metrics_csv'])
    seed1 = run_directory.read_metrics(
        run_directory.output_paths(root, 'fedavg_seed1')['metrics_csv'])
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
    metrics = run_directory.read_metrics(
        run_directory.output_paths(root, 'feddf_seed0')['metrics_csv'])
    self.assertEqual(  # mlp, the first prototype, is the task's model.
        metrics[-1][experiment.ACCURACY_KEY],
        metrics[-1][experiment.prototype_accuracy_key('mlp')])
    self.assertAlmostEqual(
        float(rows[0]['final_accuracy_mean']),
        float(metrics[-1][experiment.prototype_accuracy_key('cnn')]))
    # FedDF selects on the labelled validation split: its rows are marked.
    self.assertEqual([r['labelled_server_data'] for r in rows], ['1', '1'])
    with open(os.path.join(root, 'summary.md')) as f:
      table = f.read()
    self.assertIn('| feddf[cnn] (L) |', table)
    self.assertIn(compare.LABELLED_NOTE, table)


class RunComparisonTest(tf.test.TestCase):
  """`compare.run_comparison(config)`, called without flags."""

  def test_returns_what_it_writes_the_flags_numbers_and_leaves_flags(self):
    root, by_flags = (self.create_tempdir().full_path for _ in range(2))
    config = compare.Config(
        settings=common.Settings(
            task='digits', model='mlp', num_clients=4, clients_per_round=2,
            rounds=2, local_epochs=1, root_output_dir=root),
        algorithms=('fedavg',), seeds=(1,), report_rounds=(1,),
        target_accuracy=0.5)
    before = flag_state()
    bars, shown = [], tqdm.tqdm

    def bar(*args, **kwargs):  # Shown, as on a terminal.
      bars.append(shown(*args, **dict(kwargs, disable=False,
                                      file=io.StringIO())))
      return bars[-1]

    with mock.patch.object(compare.tqdm, 'tqdm', bar):
      summary = compare.run_comparison(config)
    self.assertEqual(flag_state(), before)
    # A step per trained round (round 0, the initial evaluation, is none).
    self.assertEqual((bars[0].n, bars[0].total), (2, 2))
    self.assertEqual(FLAGS.seed, 0)
    with open(os.path.join(root, 'summary.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual(
        [{k: str(v) for k, v in row.items()} for row in summary.rows], rows)
    self.assertIsInstance(summary.rows[0]['final_accuracy_mean'], float)
    with open(os.path.join(root, 'summary.md')) as f:
      self.assertEqual(summary.markdown, f.read())
    self.assertIn('seeds 1', summary.markdown)
    hparams_path = run_directory.output_paths(root, 'fedavg_seed1')['hparams']
    with open(hparams_path) as f:
      hparams = json.load(f)
    self.assertEqual(hparams['seed'], 1)
    self.assertEqual(hparams[run_directory.RUNTIME_KEY], dict(
        workers=[], local_workers=1, clients_per_group=None,
        root_output_dir=root, resume=False,
        debug=False, algorithms=['fedavg'], seeds=[1], target_accuracy=0.5,
        report_rounds=[1]))
    # The same comparison from the command line: the same numbers.
    with flagsaver.flagsaver(
        task='digits', model='mlp', num_clients=4, clients_per_round=2,
        rounds=2, local_epochs=1, root_output_dir=by_flags,
        algorithms=['fedavg'], seeds=['1'], report_rounds=['1'],
        target_accuracy=0.5):
      compare.main(['compare'])
    a, b = (run_directory.read_metrics(run_directory.output_paths(
        r, 'fedavg_seed1')['metrics_csv']) for r in (root, by_flags))
    self.assertEqual(len(a), len(b))
    for row_a, row_b in zip(a, b):
      for key in row_a:
        if 'time' not in key and 'seconds' not in key:
          self.assertEqual(row_a[key], row_b[key], key)
    with open(os.path.join(by_flags, 'summary.csv')) as f:
      for row_a, row_b in zip(rows, csv.DictReader(f)):
        for key in row_a:
          if 'seconds' not in key:
            self.assertEqual(row_a[key], row_b[key], key)
    with open(run_directory.output_paths(by_flags, 'fedavg_seed1')['hparams']
              ) as f:
      by_flags_hparams = json.load(f)
    runtime = by_flags_hparams.pop(run_directory.RUNTIME_KEY)
    self.assertEqual(runtime['root_output_dir'], by_flags)
    hparams.pop(run_directory.RUNTIME_KEY)
    self.assertEqual(hparams, by_flags_hparams)

  def test_a_bad_configuration_is_refused(self):
    settings = common.Settings(rounds=3)
    for kwargs, pattern in [
        (dict(algorithms=('fedfoo',)), 'Unknown algorithm'),
        (dict(algorithms=('fedavg', 'fedavg')), 'algorithms must be distinct'),
        (dict(algorithms=()), 'algorithms must be distinct and not empty'),
        (dict(seeds=(0, 0)), 'seeds must be distinct'),
        (dict(seeds=(-1,)), r'seeds must be in \[0, 2\*\*31\)'),
        (dict(report_rounds=(4,)), r'report_rounds must be rounds in \[1, 3\]'),
        (dict(target_accuracy=float('nan')), 'target_accuracy must be in'),
    ]:
      with self.assertRaisesRegex(ValueError, pattern):
        compare.Config(settings=settings, **kwargs)


class BadFlagsTest(tf.test.TestCase):

  def _assert_rejected(self, pattern, *args):
    with flagsaver.flagsaver():
      with self.assertRaisesRegex(flags.IllegalFlagValueError, pattern):
        FLAGS(['compare'] + list(args))

  def test_duplicates_and_bad_report_rounds(self):
    self._assert_rejected('--algorithms must not list an algorithm twice',
                          '--algorithms=fedavg,fedavg')
    self._assert_rejected('--seeds must be distinct', '--seeds=0,0')
    self._assert_rejected('--seeds must be distinct', '--seeds=-1')
    self._assert_rejected('--report_rounds must be round numbers',
                          '--report_rounds=abc')
    self._assert_rejected('--report_rounds must be at most --rounds',
                          '--report_rounds=5', '--rounds=3')
    self._assert_rejected('--target_accuracy must be in', '--target_accuracy=nan')

  def test_a_bad_combination_fails_before_any_run_trains(self):
    root = self.create_tempdir().full_path
    with flagsaver.flagsaver(
        task='digits', model='mlp', num_clients=4, clients_per_round=2,
        rounds=1, algorithms=['fedavg', 'feddf'], seeds=['0'],
        server_learning_rate=0.5, root_output_dir=root, local_epochs=1):
      with self.assertRaisesRegex(ValueError, 'feddf has no server optimizer'):
        compare.main(['compare'])
    self.assertFalse(os.path.exists(os.path.join(root, 'results')))
    # The failed comparison let go of the root.
    run_directory.RunLock(root, 'another comparison').release()


class RootLockTest(tf.test.TestCase):

  def test_a_second_comparison_on_the_root_fails_at_once(self):
    root = self.create_tempdir().full_path
    # The first comparison's lock, as its process holds it: flock locks of
    # two open files conflict within one process too.
    held = run_directory.RunLock(root, 'the first comparison')
    try:
      with flagsaver.flagsaver(
          task='digits', model='mlp', num_clients=4, clients_per_round=2,
          rounds=1, algorithms=['fedavg'], seeds=['0'], root_output_dir=root,
          local_epochs=1):
        with self.assertRaisesRegex(RuntimeError, re.escape(
            f"--root_output_dir='{root}' is in use by another comparison "
            f'(pid {os.getpid()})')):
          compare.main(['compare'])
    finally:
      held.release()
    # Refused before any run: nothing trained, no summary overwritten.
    self.assertFalse(os.path.exists(os.path.join(root, 'results')))
    self.assertFalse(os.path.exists(os.path.join(root, 'summary.csv')))


if __name__ == '__main__':
  tf.test.main()
