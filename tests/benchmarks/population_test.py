"""The population binary measures tiny runs, each in a process of its own,
and writes its page: a stateful algorithm's checkpoint holds the rows of the
clients it trained, grouped rounds are measured as groups, and the page is
rebuilt from the JSON alone.

The binary defines flags the other binaries define too (`--rounds`,
`--clients_per_group`), so it runs as a subprocess, as its users run it.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import tensorflow as tf

pytestmark = pytest.mark.slow  # pytest.ini

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _population(*args, env=None):
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks.population', *args],
      capture_output=True, text=True, check=False, cwd=_REPO, timeout=600,
      env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


class PopulationTest(tf.test.TestCase):

  def test_measures_tiny_runs_and_writes_the_page(self):
    output = self.create_tempfile().full_path
    page = self.create_tempfile().full_path
    _population(
        '--task=digits', '--populations=6', '--algorithms=fd',
        '--clients_per_round=2', '--rounds=2', '--sweep=4',
        '--sweep_algorithms=fedavg', '--sweep_population=6',
        '--clients_per_group=2', '--measurements=1,2',
        f'--output={output}', f'--markdown={page}',
        # As outside a git checkout: the commit is unknown, not an error.
        env=dict(os.environ, GIT_DIR=os.path.join(
            self.create_tempdir().full_path, 'no_git')))
    with open(output) as f:
      results = json.load(f)
    self.assertEqual(results['commit'], 'unknown')
    (fd,) = results['population']
    self.assertEqual((fd['algorithm'], fd['population']), ('fd', 6))
    self.assertGreater(fd['store_bytes'], 0)
    # The program state records the store's version; the clients' rows are
    # written beside it.
    self.assertGreater(fd['checkpoint_bytes'], fd['program_state_bytes'])
    self.assertGreater(fd['peak_workers_mb'], 0)
    runs = {(r['data_on_workers'], r['clients_per_group'],
             r['clients_per_round']) for r in results['clients_per_round']}
    self.assertEqual(runs, {(True, None, 4), (False, None, 4), (True, 2, 4)})
    with open(page) as f:
      text = f.read()
    for line in ['# Population scale', 'benchmarks.population --task=digits',
                 '## Memory against the population (2 clients per round',
                 '| fd | 6 | ', '## Memory against the clients per round',
                 '| fedavg | worker | groups of 2 | 4 | ']:
      self.assertIn(line, text)
    # The page again, from the JSON alone: the same page.
    again = self.create_tempfile().full_path
    _population('--measurements=', f'--output={output}',
                f'--markdown={again}')
    with open(again) as f:
      self.assertEqual(f.read(), text)



class BadFlagsTest(tf.test.TestCase):
  """Every bad value is one line naming the flag, before the first run."""

  def _assert_refused(self, pattern, *args):
    workdir = self.create_tempdir().full_path
    output = os.path.join(workdir, 'population.json')
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, '-m', 'benchmarks.population', '--task=digits',
         '--populations=6', '--algorithms=fedavg', '--clients_per_round=2',
         '--rounds=1', '--sweep=2,4', '--sweep_algorithms=fedavg',
         '--sweep_population=6', '--measurements=1', f'--output={output}',
         *args],
        capture_output=True, text=True, check=False, cwd=_REPO, timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    self.assertEqual(result.returncode, 1, result.stderr[-2000:])
    self.assertNotIn('Traceback', result.stderr)
    self.assertRegex(result.stderr, pattern)
    self.assertLess(time.monotonic() - start, 60)  # No run was measured.
    self.assertFalse(os.path.isfile(output))

  def test_bad_values_fail_when_parsed(self):
    for pattern, arg in [
        ("--populations: 'abc' is not a whole number", '--populations=abc'),
        ("--populations: '0' is not a whole number", '--populations=0'),
        ('--rounds must be >= 1', '--rounds=0'),
        ("--measurements: '9' is not a measurement", '--measurements=9'),
        ("--clients_per_group: '0' is not a whole number",
         '--clients_per_group=0'),
        ('--sweep lists a value twice', '--sweep=2,2'),
        ('--populations must each be >= --clients_per_round',
         '--populations=1'),
    ]:
      self._assert_refused(re.escape(pattern), arg)

  def test_bad_names_and_files_fail_before_the_first_run(self):
    directory = self.create_tempdir().full_path
    for pattern, arg in [
        ("Error: --task='bogus' is not a task this binary splits",
         '--task=bogus'),
        ("Error: --task='federated_emnist' is not a task this binary splits",
         '--task=federated_emnist'),
        ("Error: --algorithms: 'bogus' is not an algorithm",
         '--algorithms=bogus'),
        ("Error: --tree='/nonexistent' is not a checkout",
         '--tree=/nonexistent'),
        (f"Error: --output='{directory}' is a directory",
         f'--output={directory}'),
        ('Error: --measurements=5 needs 2 values of --sweep', '--sweep=2'),
        ("task 'digits' with 5,000 clients cannot be built",
         '--populations=5000'),
    ]:
      self._assert_refused(re.escape(pattern), arg,
                           *(['--measurements=5'] if arg == '--sweep=2'
                             else []))


if __name__ == '__main__':
  tf.test.main()
