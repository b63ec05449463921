r"""Population scale: memory, checkpoints and round time against the clients.

  python -m binaries.population --output=/tmp/population.json \
    --markdown=/tmp/population.md [--populations=100,1000,3400] \
    [--algorithms=fedavg,fd,dsfl] [--clients_per_round=50] [--rounds=3] \
    [--sweep=10,100,500] [--sweep_algorithms=fedavg,fd]

Every measurement is a run of `tff_kd.experiment.run_experiment` in a process
of its own (so its peak memory is its own) on `mnist1d_85k` (MNIST-1D
generated at 86,000 signals; `tasks.data`) split IID, the `cnn`, 1 local
epoch, batch 16, a checkpoint every round, evaluated at round 0 and the last.
Resident memory of the trainer and of its TFF worker(s) is sampled every 20 ms
with psutil while the run trains (its peak is reported, and the trainer's
`ru_maxrss` over the whole process); each checkpoint's seconds and bytes come
from `run_experiment(on_checkpoint=...)` (program state, store commit file and
the client-state rows written since the checkpoint before); the store's size is
its files on disk.

Five measurements, written to `--output` (JSON) and `--markdown` (tables):

1. population: each of `--algorithms` at each of `--populations` clients,
   `--clients_per_round` per round, `--rounds` rounds;
2. clients per round: each of `--sweep_algorithms` at 3,400 clients with
   `--sweep` clients per round, client data built on the worker (client ids
   in) and by the trainer (datasets in), on one worker; the worker's memory
   per added client is the slope of its peak between the first and the last;
3. workers: FedAvg at the middle of `--sweep` clients per round on 1 and 2
   local workers, data built on the workers and by the trainer;
4. round time: FedAvg at the last of `--sweep` clients per round, by default,
   in groups of each `--clients_per_group`, and with data built by the
   trainer, the variants interleaved `--timing_repeats` times (the machine's
   load drifts; each run records its load average);
5. worker memory per client, by what the round keeps: FedAvg at the first
   and the last of `--sweep` clients per round with TFF's weighted mean (the
   default), its unweighted mean, and data built by the trainer.

`--measurements` picks them (default 1,2,3). Results are written after every
run; a run is stopped after `--child_timeout` seconds.

With `--worker_limits=1,4`, measurement 2's FedAvg is repeated with the TFF
worker's `max_concurrent_computation_calls` at each value; with
`--clients_per_group=50`, each of `--sweep_algorithms` with the round's
clients in groups of 50, one group after the other, each group's aggregate
merged as it comes (`tff_kd.runtime.GroupingContext`). Measurement 5 (worker
memory per client, by what the round keeps): FedAvg at the first and the last
of `--sweep` with TFF's weighted mean (the default), its unweighted mean, and
data built by the trainer. Settings a `--tree` lacks are reported as errors.
"""

import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from absl import app
from absl import flags
import psutil

OUTPUT = flags.DEFINE_string('output', None, 'JSON file of the results.')
MARKDOWN = flags.DEFINE_string('markdown', None, 'Markdown tables of them.')
POPULATIONS = flags.DEFINE_list('populations', ['100', '1000', '3400'],
                                'Numbers of clients (measurement 1).')
ALGORITHMS = flags.DEFINE_list('algorithms', ['fedavg', 'fd', 'dsfl'],
                               'Algorithms of measurement 1.')
CLIENTS_PER_ROUND = flags.DEFINE_integer('clients_per_round', 50,
                                         'Measurement 1.')
ROUNDS = flags.DEFINE_integer('rounds', 3, 'Rounds of every run.')
SWEEP = flags.DEFINE_list('sweep', ['10', '100', '500'],
                          'Clients per round of measurement 2 (and 3).')
SWEEP_ALGORITHMS = flags.DEFINE_list('sweep_algorithms', ['fedavg', 'fd'],
                                     'Algorithms of measurement 2.')
WORKER_LIMITS = flags.DEFINE_list(
    'worker_limits', [], 'max_concurrent_computation_calls values to '
    'repeat measurement 2\'s FedAvg with.')
CLIENTS_PER_GROUP = flags.DEFINE_list(
    'clients_per_group', [], 'Clients per group (TFF mergeable context\'s '
    'subrounds on one worker) to repeat measurement 2 with.')
TIMING_REPEATS = flags.DEFINE_integer(
    'timing_repeats', 3, 'Measurement 4: repetitions of each variant.')
MEASUREMENTS = flags.DEFINE_list('measurements', ['1', '2', '3'],
                                 'Which measurements to run.')
TREE = flags.DEFINE_string(
    'tree', None, 'Run the measurements with the code of this checkout '
    '(e.g. an earlier commit, with this file and its task copied in); '
    'default: this one.')
CHILD_TIMEOUT = flags.DEFINE_integer(
    'child_timeout', 3600, 'Seconds after which a run is stopped (reported '
    'with its peak trainer memory until then).')
CHILD = flags.DEFINE_string('child', None, 'Internal: one run, as JSON.')

_TASK = 'mnist1d_85k'
_SWEEP_POPULATION = 3400
_MB = 2**20


class _PeakRss:
  """Samples resident memory every 20 ms: this process and its children."""

  def __init__(self):
    self._me = psutil.Process()
    self.trainer = 0
    self.workers = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self.trainer = max(self.trainer, self._me.memory_info().rss)
      total = 0
      for child in self._me.children(recursive=True):
        try:
          total += child.memory_info().rss
        except psutil.Error:
          pass
      self.workers = max(self.workers, total)
      time.sleep(0.02)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *unused):
    self._stop.set()
    self._thread.join()


def _directory_bytes(path):
  total = 0
  for root, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  return total


def _run_child(spec):
  """One run (in this process); returns its measurements."""
  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff
  from binaries import registry
  import tasks
  from tff_kd import experiment
  from tff_kd import runtime
  from tff_kd.algorithms import fedavg
  # pylint: enable=g-import-not-at-top

  load = os.getloadavg()[0]
  start = time.perf_counter()
  task = tasks.create_task(
      _TASK, train_client_spec=tff.simulation.baselines.ClientSpec(
          num_epochs=1, batch_size=16),
      model='cnn', partition='iid', num_clients=spec['population'], seed=0)
  setup_seconds = time.perf_counter() - start
  algorithm = registry.get(spec['algorithm'])
  settings = {}
  for name, key in (('max_concurrent_computation_calls', 'worker_limit'),
                    ('clients_per_group', 'clients_per_group')):
    if spec.get(key):
      if name not in inspect.signature(runtime.LocalRuntime).parameters:
        return dict(spec, error=f'LocalRuntime has no {name}')
      settings[name] = spec[key]
  root = tempfile.mkdtemp(prefix='tff_kd_population_')
  checkpoints = []
  with runtime.LocalRuntime(num_workers=spec['workers'], **settings):
    if spec.get('unweighted'):  # FedAvg with TFF's unweighted mean.
      process = fedavg.build_fedavg(
          task.model_fn,
          tff.learning.optimizers.build_sgdm(learning_rate=0.1),
          tff.learning.optimizers.build_sgdm(learning_rate=1.0),
          model_aggregator=tff.aggregators.UnweightedMeanFactory())
    else:
      process = algorithm.build(
          task, client_learning_rate=0.1, server_learning_rate=1.0,
          clients_per_round=spec['clients_per_round'],
          **{k: h.default for k, h in algorithm.hparams.items()})
    kwargs = {}
    if 'on_checkpoint' in inspect.signature(
        experiment.run_experiment).parameters:
      kwargs = dict(data_on_workers=spec['data_on_workers'],
                    on_checkpoint=checkpoints.append)
    with _PeakRss() as peak:
      rows = experiment.run_experiment(
          process, task, total_rounds=spec['rounds'],
          clients_per_round=spec['clients_per_round'],
          root_output_dir=root, experiment_name='run',
          rounds_per_eval=spec['rounds'], print_fn=lambda line: None,
          **kwargs)
  paths = experiment.output_paths(root, 'run')
  store = paths.get('client_store', '')
  if not kwargs:  # A version before on_checkpoint: the last checkpoint's size.
    last = os.path.join(paths['checkpoints'], f'program_state_{spec["rounds"]}')
    size = _directory_bytes(last)
    checkpoints = [dict(version=spec['rounds'], seconds=float('nan'),
                        program_state_bytes=size, store_commit_bytes=0,
                        store_rows_bytes=0)]
  later = [c for c in checkpoints if c['version'] > 0]
  round_seconds = [float(r[tff.simulation.TRAINING_TIME_KEY]) for r in rows
                   if r.get(tff.simulation.TRAINING_TIME_KEY)]
  result = dict(
      spec,
      setup_seconds=setup_seconds,
      # Round 1 traces the computations: rounds 2.. are timed.
      round_seconds=statistics.median(round_seconds[1:] or round_seconds),
      peak_trainer_mb=peak.trainer / _MB,
      peak_workers_mb=peak.workers / _MB,
      trainer_maxrss_mb=resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss / 1024,
      checkpoint_seconds=statistics.median(c['seconds'] for c in later),
      checkpoint_bytes=statistics.median(
          c['program_state_bytes'] + c['store_commit_bytes']
          + c['store_rows_bytes'] for c in later),
      program_state_bytes=statistics.median(
          c['program_state_bytes'] for c in later),
      store_bytes=_directory_bytes(store) if os.path.exists(store) else 0,
      accuracy=float(rows[-1][experiment.ACCURACY_KEY]),
      # The 1-minute load average before and after: other work on the machine.
      load_average=[load, os.getloadavg()[0]],
  )
  subprocess.run(['rm', '-rf', root], check=False)
  return result


def _measure(spec):
  """Runs `spec` in a fresh process; its measurements.

  A run still going after `--child_timeout` seconds is killed (with its
  workers) and reported as such, with the trainer's peak memory until then.
  """
  print(f'  {spec}', flush=True)
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile(
      'w+') as err:
    child = subprocess.Popen(
        [sys.executable, '-m', 'binaries.population',
         f'--child={json.dumps(spec)}'],
        stdout=out, stderr=err, text=True, cwd=TREE.value,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    start, peak = time.time(), 0
    process = psutil.Process(child.pid)
    while child.poll() is None:
      try:
        peak = max(peak, process.memory_info().rss)
      except psutil.Error:
        pass
      if time.time() - start > CHILD_TIMEOUT.value:
        child.kill()  # Its workers die with it (PR_SET_PDEATHSIG).
        child.wait()
        result = dict(spec, error=f'stopped after {CHILD_TIMEOUT.value} s',
                      peak_trainer_mb=peak / _MB)
        print(f'    {result}', flush=True)
        return result
      time.sleep(0.2)
    out.seek(0)
    err.seek(0)
    for line in reversed(out.read().splitlines()):
      if line.startswith('{'):
        result = json.loads(line)
        print(f'    {result}', flush=True)
        return result
    raise RuntimeError(f'The run {spec} failed:\n{err.read()[-3000:]}')


def _spec(algorithm, population, clients_per_round, *, data_on_workers=True,
          workers=1, worker_limit=None, clients_per_group=None,
          unweighted=False):
  return dict(algorithm=algorithm, population=population,
              clients_per_round=clients_per_round, rounds=ROUNDS.value,
              data_on_workers=data_on_workers, workers=workers,
              worker_limit=worker_limit,
              clients_per_group=clients_per_group,
              unweighted=unweighted)


def _table(header, rows):
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines)


def _worker(r):
  """How the worker ran the round's clients."""
  if r.get('unweighted'):
    return 'FedAvg with an unweighted mean'
  if r.get('worker_limit'):
    return f'max_concurrent_computation_calls={r["worker_limit"]}'
  if r.get('clients_per_group'):
    return f'groups of {r["clients_per_group"]}'
  return 'default'


def _markdown(results):
  parts = []
  population = results.get('population', [])
  if population:
    parts.append(_table(
        ['algorithm', 'clients', 'peak trainer MB', 'trainer maxrss MB',
         'peak worker MB', 's per round', 'checkpoint s', 'checkpoint MB',
         'program state KB', 'store on disk MB'],
        [[r['algorithm'], f'{r["population"]:,}', f'{r["peak_trainer_mb"]:.0f}',
          f'{r["trainer_maxrss_mb"]:.0f}', f'{r["peak_workers_mb"]:.0f}',
          f'{r["round_seconds"]:.2f}', f'{r["checkpoint_seconds"]:.3f}',
          f'{r["checkpoint_bytes"] / _MB:.2f}',
          f'{r["program_state_bytes"] / 1024:.0f}',
          f'{r["store_bytes"] / _MB:.1f}'] if 'error' not in r else
         [r['algorithm'], f'{r["population"]:,}',
          f'{r["peak_trainer_mb"]:.0f} ({r["error"]})'] + ['-'] * 7
         for r in population]))
  sweep = results.get('clients_per_round', [])
  if sweep:
    parts.append(_table(
        ['algorithm', 'client data', 'worker', 'clients per round',
         's per round', 'peak trainer MB', 'peak worker MB'],
        [[r['algorithm'], 'built on the worker' if r['data_on_workers']
          else 'datasets from the trainer', _worker(r),
          r['clients_per_round'], f'{r["round_seconds"]:.2f}',
          f'{r["peak_trainer_mb"]:.0f}', f'{r["peak_workers_mb"]:.0f}']
         for r in sweep if 'error' not in r]))
    slopes = []
    groups = {}
    for r in sweep:
      if 'error' not in r:
        key = (r['algorithm'], r['data_on_workers'], _worker(r))
        groups.setdefault(key, []).append(r)
    for (name, on_workers, limit), group in groups.items():
      group.sort(key=lambda r: r['clients_per_round'])
      first, last = group[0], group[-1]
      if last['clients_per_round'] > first['clients_per_round']:
        per_client = (last['peak_workers_mb'] - first['peak_workers_mb']) / (
            last['clients_per_round'] - first['clients_per_round'])
        slopes.append([name, 'worker' if on_workers else 'trainer',
                       limit, f'{per_client:.3f}'])
    parts.append(_table(['algorithm', 'client data built by', 'worker',
                         'worker MB per added client'], slopes))
  workers = results.get('workers', [])
  if workers:
    parts.append(_table(
        ['workers', 'client data built by', 'clients per round',
         's per round', 'peak trainer MB', 'peak workers MB (summed)'],
        [[r['workers'], 'workers' if r['data_on_workers'] else 'trainer',
          r['clients_per_round'], f'{r["round_seconds"]:.2f}',
          f'{r["peak_trainer_mb"]:.0f}', f'{r["peak_workers_mb"]:.0f}']
         for r in workers]))
  breakdown = results.get('breakdown', [])
  if breakdown:
    groups = {}
    for r in breakdown:
      key = (_worker(r), 'worker' if r['data_on_workers'] else 'trainer')
      groups.setdefault(key, []).append(r)
    rows = []
    for (worker, built), group in groups.items():
      group.sort(key=lambda r: r['clients_per_round'])
      first, last = group[0], group[-1]
      rows.append([worker, built, first['clients_per_round'],
                   f'{first["peak_workers_mb"]:.0f}', last['clients_per_round'],
                   f'{last["peak_workers_mb"]:.0f}',
                   f'{(last["peak_workers_mb"] - first["peak_workers_mb"]) / (last["clients_per_round"] - first["clients_per_round"]):.3f}'])
    parts.append(_table(['round', 'client data built by', 'clients',
                         'peak worker MB', 'clients', 'peak worker MB',
                         'MB per added client'], rows))
  timing = results.get('timing', [])
  if timing:
    by_variant = {}
    for r in timing:
      key = ('trainer' if not r['data_on_workers'] else 'worker', _worker(r))
      by_variant.setdefault(key, []).append(r)
    parts.append(_table(
        ['client data built by', 'worker', 'clients per round',
         's per round (each run)', 'median', 'load averages'],
        [[built, worker, rs[0]['clients_per_round'],
          ', '.join(f'{r["round_seconds"]:.2f}' for r in rs),
          f'{statistics.median(r["round_seconds"] for r in rs):.2f}',
          ', '.join(f'{r["load_average"][0]:.1f}' for r in rs)]
         for (built, worker), rs in by_variant.items()]))
  return '\n\n'.join(parts) + '\n'


def main(argv):
  del argv
  if CHILD.value:
    print(json.dumps(_run_child(json.loads(CHILD.value))), flush=True)
    return
  if not OUTPUT.value:
    raise app.UsageError('--output is required.')
  results = dict(command=' '.join(sys.argv), task=_TASK, rounds=ROUNDS.value,
                 tree=TREE.value)

  def measure(key, spec):
    result = _measure(spec)
    results.setdefault(key, []).append(result)
    with open(OUTPUT.value, 'w') as f:  # After every run.
      json.dump(results, f, indent=1)
    return result

  if '1' in MEASUREMENTS.value:
    print('1. population')
    for a in ALGORITHMS.value:
      for n in POPULATIONS.value:
        measure('population', _spec(a, int(n), CLIENTS_PER_ROUND.value))
  sweep = [int(n) for n in SWEEP.value]
  if '2' in MEASUREMENTS.value:
    print('2. clients per round')
    for a in SWEEP_ALGORITHMS.value:
      for on_workers in (True, False):
        for n in sweep:
          measure('clients_per_round', _spec(a, _SWEEP_POPULATION, n,
                                             data_on_workers=on_workers))
    for limit in WORKER_LIMITS.value:
      for n in sweep:
        measure('clients_per_round', _spec('fedavg', _SWEEP_POPULATION, n,
                                           worker_limit=int(limit)))
    for group in CLIENTS_PER_GROUP.value:
      for a in SWEEP_ALGORITHMS.value:
        for n in sweep:
          measure('clients_per_round', _spec(
              a, _SWEEP_POPULATION, n, clients_per_group=int(group)))
  if '3' in MEASUREMENTS.value:
    print('3. workers')
    middle = sweep[len(sweep) // 2]
    for on_workers in (True, False):
      for w in (1, 2):
        measure('workers', _spec('fedavg', _SWEEP_POPULATION, middle,
                                 workers=w, data_on_workers=on_workers))
  if '4' in MEASUREMENTS.value:
    print('4. round time of the variants, interleaved')
    last = sweep[-1]
    variants = ([dict()] + [dict(clients_per_group=int(group))
                            for group in CLIENTS_PER_GROUP.value]
                + [dict(data_on_workers=False)])
    for _ in range(TIMING_REPEATS.value):
      for variant in variants:
        measure('timing', _spec('fedavg', _SWEEP_POPULATION, last, **variant))
  if '5' in MEASUREMENTS.value:
    print('5. worker memory per client, by what the round keeps')
    for variant in (dict(), dict(unweighted=True),
                    dict(data_on_workers=False)):
      for n in (sweep[0], sweep[-1]):
        measure('breakdown', _spec('fedavg', _SWEEP_POPULATION, n, **variant))
  if MARKDOWN.value:
    with open(MARKDOWN.value, 'w') as f:
      f.write(_markdown(results))
  print(_markdown(results))


if __name__ == '__main__':
  app.run(main)
