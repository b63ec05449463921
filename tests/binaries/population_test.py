"""The population binary measures tiny runs, each in a process of its own,
and writes its page: a stateful algorithm's checkpoint holds the rows of the
clients it trained, grouped rounds are measured as groups, and the page is
rebuilt from the JSON alone.

The binary defines flags the other binaries define too (`--rounds`,
`--clients_per_group`), so it runs as a subprocess, as its users run it.
"""

import json
import os
import subprocess
import sys

import tensorflow as tf

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _population(*args):
  result = subprocess.run(
      [sys.executable, '-m', 'binaries.population', *args],
      capture_output=True, text=True, check=False, cwd=_REPO, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


class PopulationTest(tf.test.TestCase):

  def test_measures_tiny_runs_and_writes_the_page(self):
    output = self.create_tempfile().full_path
    page = self.create_tempfile().full_path
    _population(
        '--task=digits', '--populations=6', '--algorithms=fd',
        '--clients_per_round=2', '--rounds=2', '--sweep=2,4',
        '--sweep_algorithms=fedavg', '--sweep_population=6',
        '--clients_per_group=2', '--measurements=1,2',
        f'--output={output}', f'--markdown={page}')
    with open(output) as f:
      results = json.load(f)
    (fd,) = results['population']
    self.assertEqual((fd['algorithm'], fd['population']), ('fd', 6))
    self.assertGreater(fd['store_bytes'], 0)
    # The program state records the store's version; the clients' rows are
    # written beside it.
    self.assertGreater(fd['checkpoint_bytes'], fd['program_state_bytes'])
    self.assertGreater(fd['peak_workers_mb'], 0)
    runs = {(r['data_on_workers'], r['clients_per_group'],
             r['clients_per_round']) for r in results['clients_per_round']}
    self.assertEqual(runs, {(w, g, n) for w, g in [(True, None), (False, None),
                                                    (True, 2)]
                            for n in (2, 4)})
    with open(page) as f:
      text = f.read()
    for line in ['# Population scale', 'binaries.population --task=digits',
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


if __name__ == '__main__':
  tf.test.main()
