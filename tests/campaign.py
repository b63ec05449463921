r"""A campaign of bad inputs and faults against the binaries, as a new user would try them.

  python tests/campaign.py [--jobs=2] [--only=SUBSTRING] [--output=FILE]

Not part of the test suite (it starts one Python process per case, about 10 minutes on 2
cores). Each case runs `binaries.train` (or `binaries.compare`) on a tiny digits run with
some bad input, and is classified:
- clear error: a non-zero exit, no traceback, and the message names what was wrong (the
  flag, file or value the case expects);
- correct: the case expects success (or a specific behaviour) and got it;
- bad: anything else (a traceback, a hang past the timeout, a silent success, an error that
  does not say what was wrong).
Prints one line per case and the counts; exits 1 when a case is bad.
"""

import argparse
import concurrent.futures
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import Callable, Optional

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SMALL = ['--task=digits', '--model=mlp', '--num_clients=4', '--clients_per_round=2',
          '--rounds=1', '--local_epochs=1', '--rounds_per_eval=1']
_TIMEOUT_SECONDS = 240


@dataclasses.dataclass
class Case:
  """One input. `expect` is a substring of the error, or None for success."""

  name: str
  args: list[str]
  expect: Optional[str]
  binary: str = 'train'
  setup: Optional[Callable[[str], list[str]]] = None  # workdir -> more args
  check: Optional[Callable[[str, subprocess.CompletedProcess], bool]] = None


def _run(binary, args, workdir):
  command = [sys.executable, '-m', f'binaries.{binary}'] + _SMALL + [
      f'--root_output_dir={os.path.join(workdir, "out")}'] + args
  return subprocess.run(command, cwd=_REPO, capture_output=True, text=True,
                        timeout=_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL, check=False)


def _npz(name, **entries):
  def setup(workdir):
    path = os.path.join(workdir, name)
    if name.endswith('.npz'):
      np.savez(path, **entries)
    elif name.endswith('.npy'):
      np.save(path, np.arange(3))
    else:
      open(path, 'w').close()
    return [f'--split_file={path}']
  return setup


def _four_clients(**extra):
  parts = {f'train_{c}': np.arange(30 * c, 30 * c + 20) for c in range(4)}
  return {'num_clients': 4, **parts, **extra}


def _first_run(*args):
  """Setup: a finished 1-round run named `run` with `args`."""
  def setup(workdir):
    result = _run('train', ['--experiment_name=run'] + list(args), workdir)
    if result.returncode:
      raise RuntimeError(f'setup run failed: {result.stderr[-500:]}')
    return ['--experiment_name=run']
  return setup


def _file_as_root(workdir):
  path = os.path.join(workdir, 'a_file')
  open(path, 'w').close()
  return [f'--root_output_dir={path}']


def _hparams_unchanged(workdir, unused_result):
  with open(os.path.join(workdir, 'out', 'results', 'run', 'hparams.json')) as f:
    return json.load(f)['alpha'] == 0.5


def _cases() -> list[Case]:
  cases = []
  floats = ['client_learning_rate', 'server_learning_rate', 'ntd_beta', 'ntd_temperature',
            'gkd_gamma', 'gkd_temperature', 'ssd_kd_weight', 'ssd_temperature', 'gen_alpha',
            'gen_beta', 'distill_learning_rate', 'distill_temperature', 'fd_beta',
            'fd_temperature', 'dsfl_era_temperature', 'dsfl_distill_learning_rate',
            'fedad_beta', 'aux_distill_learning_rate', 'aux_dp_epsilon', 'aux_dp_delta',
            'aux_negative_fraction']
  algorithm_of = {'ntd': 'fedntd', 'gkd': 'fedgkd', 'ssd': 'fedssd', 'gen': 'fedgen',
                  'distill': 'feddf', 'fd': 'fd', 'dsfl': 'dsfl', 'fedad': 'fedad',
                  'aux': 'fedaux'}
  for name in floats:
    algorithm = algorithm_of.get(name.split('_')[0], 'fedavg')
    for value in ('nan', 'inf', '-inf', '-1'):
      cases.append(Case(f'{name}={value}', [f'--algorithm={algorithm}', f'--{name}={value}'],
                        f'--{name}'))
  for value in ('0', '-1', '1e-10', '1e10', 'nan', 'inf'):
    cases.append(Case(f'alpha={value}', [f'--alpha={value}'], '--alpha'))
  for value in ('nan', '1', '-0.1', 'inf'):
    cases.append(Case(f'client_dropout={value}', [f'--client_dropout={value}'],
                      '--client_dropout'))
  for flag, value in [('num_clients', '0'), ('rounds', '0'), ('batch_size', '0'),
                      ('local_epochs', '0'), ('seed', '-1'), ('seed', str(2**40)),
                      ('clients_per_round', '9'), ('rounds_per_eval', '0'),
                      ('rounds_per_checkpoint', '0'), ('local_workers', '0')]:
    cases.append(Case(f'{flag}={value}', [f'--{flag}={value}'], f'--{flag}'))
  for flag, value, algorithm in [('gkd_buffer_size', '0', 'fedgkd'),
                                 ('gkd_buffer_size', '1000000000', 'fedgkd'),
                                 ('gen_steps', '0', 'fedgen'),
                                 ('distill_steps', '-1', 'feddf'),
                                 ('distill_steps', '1000000000', 'feddf'),
                                 ('distill_batch_size', '0', 'feddf'),
                                 ('dsfl_subset_size', '0', 'dsfl'),
                                 ('aux_distill_epochs', '0', 'fedaux'),
                                 ('distill_data', 'imagenet', 'feddf'),
                                 ('dsfl_aggregation', 'median', 'dsfl')]:
    cases.append(Case(f'{flag}={value}', [f'--algorithm={algorithm}', f'--{flag}={value}'],
                      f'--{flag}'))
  for flag, value in [('task', 'imagenet'), ('model', 'vgg'), ('partition', 'zipf'),
                      ('algorithm', 'fedfoo'), ('prototypes', 'cnn,cnn'),
                      ('prototypes', 'cnn,vgg')]:
    cases.append(Case(f'{flag}={value}', [f'--{flag}={value}'], flag))
  cases.append(Case('prototypes with fedavg', ['--prototypes=mlp,cnn'], 'prototypes'))
  for address in ('h:1:2', 'host:99999', 'host:0', 'host:\u0661\u0662', ':80', 'host',
                  'a b:80'):
    cases.append(Case(f'workers={address}', [f'--workers={address}'], '--workers'))
  for name in ('/abs', '../..', 'a/b', '..'):
    cases.append(Case(f'experiment_name={name}', [f'--experiment_name={name}'],
                      'experiment_name'))
  cases.append(Case('foreign flag fd_beta with fedavg', ['--fd_beta=0.5'], '--fd_beta'))
  cases.append(Case('foreign flag gkd_gamma with feddf', ['--algorithm=feddf',
                                                          '--gkd_gamma=0.5'], '--gkd_gamma'))
  cases.append(Case('unexpected argument', ['extra'], 'Unexpected arguments'))
  # Files and directories.
  cases.append(Case('split_file missing', ['--split_file=/nonexistent.npz'], 'split_file'))
  cases.append(Case('split_file empty', [], 'split_file', setup=_npz('empty.npz')))
  cases.append(Case('split_file .npy', [], 'split_file', setup=_npz('split.npy')))
  cases.append(Case('split_file num_clients=4.9', [], 'num_clients',
                    setup=_npz('a.npz', **_four_clients(num_clients=4.9))))
  cases.append(Case('split_file num_clients text', [], 'num_clients',
                    setup=_npz('b.npz', **_four_clients(num_clients='4'))))
  cases.append(Case('split_file num_clients array', [], 'num_clients',
                    setup=_npz('c.npz', **_four_clients(num_clients=np.array([4, 4])))))
  cases.append(Case('split_file num_clients=1e9', ['--num_clients=4'], 'num_clients',
                    setup=_npz('d.npz', **_four_clients(num_clients=10**9))))
  cases.append(Case('split_file extra train_4', [], 'train_4',
                    setup=_npz('e.npz', **_four_clients(train_4=np.arange(200, 210)))))
  cases.append(Case('split_file overlapping clients', [], 'two clients',
                    setup=_npz('f.npz', **_four_clients(train_1=np.arange(0, 10)))))
  cases.append(Case('split_file out of range', [], 'outside',
                    setup=_npz('g.npz', **_four_clients(train_1=np.array([10**6])))))
  cases.append(Case('split_file a good one', [], None, setup=_npz('h.npz', **_four_clients(
      **{f'test_{c}': np.arange(200 + 10 * c, 205 + 10 * c) for c in range(4)}))))
  cases.append(Case('data_dir garbage', ['--task=mnist', '--data_dir=/nonexistent/x'],
                    'data_dir'))
  cases.append(Case('root_output_dir is a file', [], 'root_output_dir', setup=_file_as_root))
  cases.append(Case('root_output_dir too long', ['--root_output_dir=/tmp/' + 'x' * 300],
                    'root_output_dir'))
  cases.append(Case('TFF baseline task that needs a download', [
      '--task=emnist_character', '--use_synthetic_data=false'], '--task=emnist_character'))
  # Runs and resumes.
  cases.append(Case('a tiny run', [], None))
  cases.append(Case('resume of a run never started (starts it)', ['--resume',
                                                                   '--experiment_name=new'],
                    None))
  cases.append(Case('same run again without --resume', [], 'resume',
                    setup=_first_run()))
  cases.append(Case('resume with another alpha', ['--resume', '--alpha=0.3'],
                    'alpha=0.5 (now 0.3)', setup=_first_run(), check=_hparams_unchanged))
  cases.append(Case('resume with another algorithm', ['--resume', '--algorithm=fedntd'],
                    'another configuration', setup=_first_run()))
  cases.append(Case('resume with fewer rounds', ['--resume', '--rounds=1'],
                    'already trained 2 rounds', setup=_first_run('--rounds=2')))
  cases.append(Case('resume of a finished run', ['--resume'], None,
                    setup=_first_run()))  # Nothing left to do.
  cases.append(Case('resume with more rounds', ['--resume', '--rounds=2'], None,
                    setup=_first_run()))
  # Huge but finite: the model's logits overflow, every client's update is non-finite
  # and dropped, and the progress line must say so.
  cases.append(Case('overflowing model (server lr 1e30)', ['--server_learning_rate=1e30',
                                                          '--rounds=3'], None,
                    check=lambda workdir, r: 'not finite (NaN or Inf)' in r.stdout))
  cases.append(Case('compare: duplicated algorithm', ['--algorithms=fedavg,fedavg'],
                    '--algorithms', binary='compare'))
  cases.append(Case('compare: duplicated seed', ['--seeds=0,0'], '--seeds',
                    binary='compare'))
  cases.append(Case('compare: report_rounds=abc', ['--report_rounds=abc'],
                    '--report_rounds', binary='compare'))
  cases.append(Case('compare: report_rounds beyond rounds', ['--report_rounds=5'],
                    '--report_rounds', binary='compare'))
  cases.append(Case('compare: feddf with server lr 0.5', [
      '--algorithms=fedavg,feddf', '--server_learning_rate=0.5'], 'server_learning_rate',
                    binary='compare', check=lambda workdir, r: not os.path.exists(
                        os.path.join(workdir, 'out', 'results', 'fedavg_seed0'))))
  cases.append(Case('compare: a tiny comparison', ['--algorithms=fedavg,fedntd'], None,
                    binary='compare'))
  return cases


def _classify(case: Case) -> tuple[str, str]:
  with tempfile.TemporaryDirectory(prefix='tff_kd_campaign_') as workdir:
    try:
      args = case.args + (case.setup(workdir) if case.setup else [])
      result = _run(case.binary, args, workdir)
    except subprocess.TimeoutExpired:
      return 'bad', f'no answer in {_TIMEOUT_SECONDS} s'
    except RuntimeError as e:
      return 'bad', str(e)
    tail = (result.stderr.strip().splitlines() or [''])[-1]
    if 'Traceback' in result.stderr:
      return 'bad', 'traceback: ' + tail
    if case.check is not None and not case.check(workdir, result):
      return 'bad', 'the check failed: ' + tail
    if case.expect is None:
      return ('correct', 'ran') if result.returncode == 0 else ('bad', tail)
    if result.returncode == 0:
      return 'bad', 'exited 0 on a bad input'
    if case.expect not in result.stderr:
      return 'bad', f'does not name {case.expect!r}: ' + tail
    return 'clear error', tail


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--jobs', type=int, default=2)
  parser.add_argument('--only', default='')
  parser.add_argument('--output', default=None)
  flags = parser.parse_args()
  cases = [c for c in _cases() if flags.only in c.name]
  with concurrent.futures.ThreadPoolExecutor(flags.jobs) as pool:
    outcomes = list(pool.map(_classify, cases))
  lines = [f'{outcome:12s} {case.name}: {detail[:200]}'
           for case, (outcome, detail) in zip(cases, outcomes)]
  counts = {k: sum(o == k for o, _ in outcomes) for k in ('clear error', 'correct', 'bad')}
  lines.append(f'tried {len(cases)}: {counts["clear error"]} clear errors, '
               f'{counts["correct"]} correct, {counts["bad"]} bad')
  print('\n'.join(lines))
  if flags.output:
    with open(flags.output, 'w') as f:
      f.write('\n'.join(lines) + '\n')
  sys.exit(1 if counts['bad'] else 0)


if __name__ == '__main__':
  main()
