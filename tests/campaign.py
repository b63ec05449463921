r"""A campaign of bad inputs and faults against the binaries, as a new user would try them.

  python tests/campaign.py [--jobs=2] [--only=SUBSTRING] [--output=FILE]

Not part of the test suite (it starts one Python process per case, about 10 minutes on 2
cores). Each case runs `binaries.train` (or `binaries.compare`, `binaries.results`,
`benchmarks.population`) on a tiny digits run with some bad input, and is classified:
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
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Optional

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SMALL = ['--task=digits', '--model=mlp', '--num_clients=4', '--clients_per_round=2',
          '--rounds=1', '--local_epochs=1', '--rounds_per_eval=1']
_TIMEOUT_SECONDS = 240


# The tiny run on a task with natural clients (no split flag may be given).
_NATURAL = ['--task=emnist_character', '--use_synthetic_data', '--model=mlp',
            '--clients_per_round=1', '--rounds=1', '--local_epochs=1']


def _base_args(binary, workdir):
  """The tiny run of `binary` that a case's arguments modify (later ones win)."""
  if binary == 'train_natural':
    return _NATURAL + [f'--root_output_dir={os.path.join(workdir, "out")}']
  if binary == 'population':  # Flags of its own: one tiny measurement.
    return ['--task=digits', '--populations=6', '--algorithms=fedavg',
            '--clients_per_round=2', '--rounds=1', '--sweep=2,4',
            '--sweep_algorithms=fedavg', '--sweep_population=6', '--measurements=1',
            f'--output={os.path.join(workdir, "population.json")}']
  small = _SMALL
  if binary == 'results':  # Its settings come from --tasks and --alphas.
    small = [a for a in _SMALL if not a.startswith('--task=')] + [
        '--tasks=digits', '--alphas=iid', '--algorithms=fedavg', '--seeds=0',
        f'--page={os.path.join(workdir, "RESULTS.md")}']
  return small + [f'--root_output_dir={os.path.join(workdir, "out")}']


@dataclasses.dataclass
class Case:
  """One input. `expect` is a substring of the error, or None for success."""

  name: str
  args: list[str]
  expect: Optional[str]
  binary: str = 'train'
  setup: Optional[Callable[[str], list[str]]] = None  # workdir -> more args
  check: Optional[Callable[[str, subprocess.CompletedProcess], bool]] = None
  env: Optional[dict[str, str]] = None  # More environment variables.


def _run(binary, args, workdir, env=None):
  module = 'train' if binary == 'train_natural' else binary
  command = [sys.executable, '-m', f'binaries.{module}'] + _base_args(
      binary, workdir) + args
  return subprocess.run(command, cwd=_REPO, capture_output=True, text=True,
                        timeout=_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL, check=False,
                        env=dict(os.environ, **(env or {})))


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


def _then(first, then):
  """Setup: `first` (a setup), then `then(workdir)`; `first`'s arguments."""
  def setup(workdir):
    args = first(workdir)
    then(workdir)
    return args
  return setup


def _run_path(workdir, *parts):
  return os.path.join(workdir, 'out', *parts)


_TESTS = {f'test_{c}': np.arange(200 + 10 * c, 205 + 10 * c) for c in range(4)}


def _rewrite_split(workdir):
  """A split file's client 0 now holds other examples (same path)."""
  np.savez(os.path.join(workdir, 'split.npz'), **_four_clients(
      train_0=np.arange(300, 320), **_TESTS))


def _with_split(workdir):
  """Setup: a finished 1-round run on a split file in the work directory."""
  path = os.path.join(workdir, 'split.npz')
  np.savez(path, **_four_clients(**_TESTS))
  return _first_run(f'--split_file={path}')(workdir) + [f'--split_file={path}']


def _damage_store(how):
  """Then-step: damages the FD run's client store (`how`)."""
  def damage(workdir):
    store = _run_path(workdir, 'checkpoints', 'run', 'client_store')
    if how == 'random rows':
      path = os.path.join(store, 'rows_0.bin')
      size = os.path.getsize(path)
      with open(path, 'r+b') as f:
        f.write(np.random.default_rng(0).bytes(size))
    elif how == 'nan rows':
      path = os.path.join(store, 'rows_0.bin')
      with open(path, 'r+b') as f:
        f.seek(8)
        f.write(np.full(4, np.nan, np.float32).tobytes())
    elif how == 'truncated manifest':
      path = os.path.join(store, 'manifest.json')
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    elif how == 'empty commit':
      commits = os.path.join(store, 'commits')
      open(os.path.join(commits, sorted(os.listdir(commits))[-1]), 'w').close()
  return damage


def _empty_checkpoint(workdir):
  os.makedirs(_run_path(workdir, 'checkpoints', 'run', 'program_state_99'))


def _metrics_a_directory(workdir):
  """The run's metrics CSV cannot be written (a directory in its place)."""
  path = _run_path(workdir, 'results', 'run', 'experiment.metrics.csv')
  os.rename(path, path + '.old')
  os.mkdir(path)


def _tfds_mnist(corrupt):
  """Setup: a prepared tensorflow-datasets 'mnist' of 60 + 20 blank images in
  the work directory (tfds' own writer), its training records damaged if
  `corrupt`; `--task=mnist --data_dir=DIR`."""
  def setup(workdir):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    tfds.disable_progress_bar()
    features = tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(28, 28, 1)),
        'label': tfds.features.ClassLabel(num_classes=10)})
    data_dir = os.path.join(workdir, 'tfds')

    def examples(n):
      return tf.data.Dataset.from_tensor_slices({
          'image': np.zeros((n, 28, 28, 1), np.uint8),
          'label': np.arange(n) % 10})

    tfds.dataset_builders.store_as_tfds_dataset(
        name='mnist', version='3.0.1', features=features,
        split_datasets={'train': examples(60), 'test': examples(20)},
        data_dir=data_dir)
    if corrupt:
      directory = os.path.join(data_dir, 'mnist', '3.0.1')
      shard = [n for n in os.listdir(directory) if '-train.tfrecord' in n][0]
      with open(os.path.join(directory, shard), 'r+b') as f:
        f.seek(100)
        f.write(b'\xff' * 64)
    return ['--task=mnist', f'--data_dir={data_dir}']
  return setup


def _worker_killed_after_round_one(workdir):
  """Setup: a TFF worker started by hand on a free port, SIGKILLed once the run
  on it has checkpointed round 1 (or after 200 s); `--workers=localhost:PORT`."""
  binary = subprocess.run(
      [sys.executable, '-c', 'from tff_kd import runtime; '
       'print(runtime.worker_binary_path())'],
      cwd=_REPO, capture_output=True, text=True, check=True).stdout.split()[-1]
  with socket.socket() as probe:
    probe.bind(('localhost', 0))
    port = probe.getsockname()[1]
  worker = subprocess.Popen([binary, f'--port={port}'], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoint = _run_path(workdir, 'checkpoints', 'run', 'program_state_1')

  def kill():
    deadline = time.monotonic() + 200
    while not os.path.isdir(checkpoint) and time.monotonic() < deadline:
      time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()

  threading.Thread(target=kill, daemon=True).start()
  time.sleep(1.0)  # The worker listens.
  with open(os.path.join(workdir, 'worker'), 'w') as f:
    f.write(f'localhost:{port}')
  return [f'--workers=localhost:{port}', '--experiment_name=run']


def _names_worker_and_kept_checkpoint(workdir, result):
  with open(os.path.join(workdir, 'worker')) as f:
    address = f.read()
  return (f'TFF worker {address} stopped answering' in result.stderr
          and os.path.isdir(_run_path(workdir, 'checkpoints', 'run', 'program_state_1')))


def _hparams_model_mlp(workdir, unused_result):
  results = _run_path(workdir, 'results')
  (name,) = os.listdir(results)
  with open(os.path.join(results, name, 'hparams.json')) as f:
    hparams = json.load(f)
  return hparams['model'] == 'mlp' and 'num_clients' not in hparams


def _file_as_root(workdir):
  path = os.path.join(workdir, 'a_file')
  open(path, 'w').close()
  return [f'--root_output_dir={path}']


def _a_directory(flag):
  """Setup: `--flag` names a directory (the work directory)."""
  return lambda workdir: [f'--{flag}={workdir}']


# Holds DIR/.lock as a running comparison does
# (`tff_kd.run_directory.RunLock`: flock, the
# pid in the file) until the case's work directory is gone (at most 300 s).
_HOLDER = r"""
import fcntl, os, sys, time
root = sys.argv[1]
os.makedirs(root, exist_ok=True)
f = open(os.path.join(root, '.lock'), 'a+')
fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
f.truncate(0); f.write(str(os.getpid())); f.flush()
print('held', flush=True)
deadline = time.time() + 300
while os.path.isdir(root) and time.time() < deadline:
  time.sleep(0.5)
"""


def _another_comparison(workdir):
  """Setup: another process holds the root as a comparison in progress."""
  holder = subprocess.Popen([sys.executable, '-c', _HOLDER, os.path.join(workdir, 'out')],
                            stdout=subprocess.PIPE, text=True)
  holder.stdout.readline()  # 'held'
  with open(os.path.join(workdir, 'holder'), 'w') as f:
    f.write(str(holder.pid))
  return []


def _names_holder_and_trained_nothing(workdir, result):
  with open(os.path.join(workdir, 'holder')) as f:
    holder = f.read()
  return (f'(pid {holder})' in result.stderr
          and not os.path.exists(os.path.join(workdir, 'out', 'results')))


def _hparams_unchanged(workdir, unused_result):
  with open(os.path.join(workdir, 'out', 'results', 'run', 'hparams.json')) as f:
    return json.load(f)['alpha'] == 0.5


def _cases() -> list[Case]:
  cases = []
  floats = ['client_learning_rate', 'server_learning_rate', 'fedntd_beta', 'fedntd_temperature',
            'fedgkd_gamma', 'fedgkd_temperature', 'fedssd_kd_weight', 'fedssd_temperature', 'fedgen_alpha',
            'fedgen_beta', 'distill_learning_rate', 'distill_temperature', 'fd_beta',
            'fd_temperature', 'dsfl_era_temperature', 'dsfl_distill_learning_rate',
            'fedad_attention_weight', 'fedaux_distill_learning_rate', 'fedaux_dp_epsilon', 'fedaux_dp_delta',
            'fedaux_negative_fraction']
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
  for flag, value, algorithm in [('fedgkd_buffer_size', '0', 'fedgkd'),
                                 ('fedgkd_buffer_size', '1000000000', 'fedgkd'),
                                 ('fedgen_generator_steps', '0', 'fedgen'),
                                 ('distill_steps', '-1', 'feddf'),
                                 ('distill_steps', '1000000000', 'feddf'),
                                 ('distill_batch_size', '0', 'feddf'),
                                 ('dsfl_subset_size', '0', 'dsfl'),
                                 ('fedaux_distill_epochs', '0', 'fedaux'),
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
  cases.append(Case('foreign flag fedgkd_gamma with feddf', ['--algorithm=feddf',
                                                          '--fedgkd_gamma=0.5'], '--fedgkd_gamma'))
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
  cases.append(Case('TFF dataset not in the cache', ['--use_synthetic_data=false',
                                                     '--data_dir=/nonexistent/tff'],
                    '--use_synthetic_data', binary='train_natural'))
  cases.append(Case('tfds mnist, prepared', [], None, setup=_tfds_mnist(corrupt=False)))
  cases.append(Case('tfds mnist, corrupt records', [], '--data_dir',
                    setup=_tfds_mnist(corrupt=True)))
  # Settings a run does not use are refused, not recorded as used.
  for flag in ('--num_clients=10', '--partition=iid', '--alpha=0.01',
               '--classes_per_client=3', '--split_file=/tmp/x.npz'):
    cases.append(Case(f'natural clients with {flag}', [flag], flag.split('=')[0],
                      binary='train_natural'))
  cases.append(Case('natural clients: all ten algorithms run', [
      '--algorithm=fedavg'], None, binary='train_natural', check=_hparams_model_mlp))
  for algorithm in ('feddf', 'fedaux', 'dsfl', 'fedad', 'fedssd', 'fedgen', 'fd',
                    'fedgkd', 'fedntd'):
    model = ['--model=cnn'] if algorithm == 'fedad' else []  # A feature map.
    cases.append(Case(f'natural clients: {algorithm}', [f'--algorithm={algorithm}'] + model,
                      None, binary='train_natural'))
  cases.append(Case('use_synthetic_data on digits', ['--use_synthetic_data'],
                    '--use_synthetic_data'))
  cases.append(Case('dp_clip under FD (no model averaged)', [
      '--algorithm=fd', '--aggregator=dp', '--dp_clip=0.5'], '--dp_clip'))
  cases.append(Case('dp_logit_clip under FedAvg (no logits sent)', [
      '--aggregator=dp', '--dp_logit_clip=3'], '--dp_logit_clip'))
  cases.append(Case('local_workers beside workers', [
      '--workers=localhost:8000', '--local_workers=2'], '--local_workers'))
  cases.append(Case('dp_clip=1e308 (overflows float32)', [
      '--aggregator=dp', '--dp_clip=1e308'], '--dp_clip'))
  cases.append(Case('dp_noise_multiplier=1e300', [
      '--aggregator=dp', '--dp_noise_multiplier=1e300'], '--dp_noise_multiplier'))
  cases.append(Case('fedaux_negative_fraction=0.999', [
      '--algorithm=fedaux', '--fedaux_negative_fraction=0.999'], '--fedaux_negative_fraction'))
  cases.append(Case('client_learning_rate=1e9 (the model diverges)', [
      '--client_learning_rate=1e9', '--rounds=3'], 'non-finite'))
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
  cases.append(Case('resume on a changed split file', ['--resume', '--rounds=2'],
                    'data_digest', setup=_then(_with_split, _rewrite_split)))
  cases.append(Case('resume on the same split file', ['--resume', '--rounds=2'], None,
                    setup=_with_split))
  for how in ('random rows', 'nan rows', 'truncated manifest', 'empty commit'):
    cases.append(Case(f'resume on a client store with {how}', [
        '--algorithm=fd', '--resume', '--rounds=2'], 'client_store', setup=_then(
            _first_run('--algorithm=fd'), _damage_store(how))))
  cases.append(Case('resume beside an empty program_state_99', ['--resume', '--rounds=2'],
                    'program_state_99', setup=_then(_first_run(), _empty_checkpoint)))
  cases.append(Case('resume with a metrics CSV that cannot be written', [
      '--resume', '--rounds=3'], 'experiment.metrics.csv',
                    setup=_then(_first_run(), _metrics_a_directory),
                    check=lambda workdir, r: not os.path.isdir(_run_path(
                        workdir, 'checkpoints', 'run', 'program_state_2'))))
  cases.append(Case('a remote worker killed mid-run', ['--rounds=3000',
                                                       '--rounds_per_eval=3000'],
                    'stopped answering', setup=_worker_killed_after_round_one,
                    check=_names_worker_and_kept_checkpoint))
  # Huge but finite weights: the model's logits overflow, its test loss is NaN, and
  # the run stops.
  cases.append(Case('overflowing model (server lr 1e30)', ['--server_learning_rate=1e30',
                                                          '--rounds=3'], 'non-finite'))
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
  cases.append(Case('compare: a second comparison on the same root', [],
                    '--root_output_dir', binary='compare', setup=_another_comparison,
                    check=_names_holder_and_trained_nothing))
  # binaries.results: every flag checked before the first setting trains.
  nothing_trained = lambda workdir, r: not os.listdir(os.path.join(workdir, 'out')) if (
      os.path.exists(os.path.join(workdir, 'out'))) else True
  for name, args, expect in [
      ('tasks=digits,bogus', ['--tasks=digits,bogus'], '--tasks'),
      ('tasks=digits,digits', ['--tasks=digits,digits'], '--tasks'),
      ('tasks= (empty)', ['--tasks='], '--tasks'),
      ('alphas=iid,iid', ['--alphas=iid,iid'], '--alphas'),
      ('alphas=0.5,.5', ['--alphas=0.5,.5'], '--alphas'),
      ('alphas=\u00b2', ['--alphas=\u00b2'], '--alphas'),
      ('alphas=0', ['--alphas=0'], '--alphas'),
      ('alphas=nan', ['--alphas=nan'], '--alphas'),
      ('task=mnist1d (each setting sets it)', ['--task=mnist1d'], '--task'),
      ('alphas=iid,0.001 with 20 clients (a split that cannot be drawn)',
       ['--alphas=iid,0.001', '--num_clients=20'], '--alphas=0.001'),
  ]:
    cases.append(Case(f'results: {name}', args, expect, binary='results',
                      check=nothing_trained))
  cases.append(Case('results: page is a directory', [], '--page', binary='results',
                    setup=_a_directory('page'), check=nothing_trained))
  cases.append(Case('results: a tiny page', [], None, binary='results',
                    check=lambda workdir, r: os.path.isfile(
                        os.path.join(workdir, 'RESULTS.md'))))
  # benchmarks.population: every flag checked before the first run is measured.
  no_results = lambda workdir, r: not os.path.exists(
      os.path.join(workdir, 'population.json'))
  for name, args, expect in [
      ('populations=abc', ['--populations=abc'], '--populations'),
      ('populations=0', ['--populations=0'], '--populations'),
      ('rounds=0', ['--rounds=0'], '--rounds'),
      ('task=bogus', ['--task=bogus'], '--task'),
      ('algorithms=bogus', ['--algorithms=bogus'], '--algorithms'),
      ('tree=/nonexistent', ['--tree=/nonexistent'], '--tree'),
      ('measurements=9', ['--measurements=9'], '--measurements'),
      ('clients_per_group=0', ['--clients_per_group=0'], '--clients_per_group'),
      ('populations=5000 (more than digits has)', ['--populations=5000'],
       '--populations'),
      ('measurements=5 with one sweep value', ['--measurements=5', '--sweep=2'],
       '--sweep'),
      ('measurements= with no results', ['--measurements='], '--output'),
  ]:
    cases.append(Case(f'population: {name}', args, expect, binary='population',
                      check=no_results))
  cases.append(Case('population: output is a directory', [], '--output',
                    binary='population', setup=_a_directory('output')))
  cases.append(Case('population: a tiny measurement outside a git checkout', [], None,
                    binary='population', env={'GIT_DIR': '/nonexistent/.git'},
                    check=lambda workdir, r: json.load(open(os.path.join(
                        workdir, 'population.json')))['commit'] == 'unknown'))
  return cases


def _classify(case: Case) -> tuple[str, str]:
  with tempfile.TemporaryDirectory(prefix='tff_kd_campaign_') as workdir:
    try:
      args = case.args + (case.setup(workdir) if case.setup else [])
      result = _run(case.binary, args, workdir, case.env)
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
