r"""Population scale: memory, checkpoints and round time against the clients.

  python -m benchmarks.population --output=/tmp/population.json \
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

`--measurements` picks them (default 1,2,3; none: write the page of the
results already in `--output`). Results are written after every run; a run
is stopped after `--child_timeout` seconds.

With `--worker_limits=1,4`, measurement 2's FedAvg is repeated with the TFF
worker's `max_concurrent_computation_calls` at each value; with
`--clients_per_group=50`, each of `--sweep_algorithms` with the round's
clients in groups of 50, one group after the other, each group's aggregate
merged as it comes (`tff_kd.runtime.GroupingContext`). Measurement 5 (worker
memory per client, by what the round keeps): FedAvg at the first and the last
of `--sweep` with TFF's weighted mean (the default), its unweighted mean, and
data built by the trainer. Settings a `--tree` lacks are reported as errors.

Every flag is checked before the first run (the task is built once with the
largest population asked of it): a bad value is one line naming the flag
(`--debug` shows the traceback). Outside a git checkout the commit is
recorded as `unknown`.
"""

import inspect
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import psutil

import binaries
from benchmarks import memory

OUTPUT = flags.DEFINE_string('output', None, 'JSON file of the results.')
MARKDOWN = flags.DEFINE_string('markdown', None, 'The page of them '
                                 '(docs/POPULATION.md).')
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
    '(e.g. an earlier commit, with this file, benchmarks/memory.py and its '
    'task copied in); default: this one.')
CHILD_TIMEOUT = flags.DEFINE_integer(
    'child_timeout', 3600, 'Seconds after which a run is stopped (reported '
    'with its peak trainer memory until then).')
BEFORE = flags.DEFINE_string(
    'before', None, 'JSON of an earlier run of this binary (e.g. with '
    '--tree at an earlier commit) whose measurement 1 the page shows too.')
TASK = flags.DEFINE_string(
    'task', 'mnist1d_85k', 'The task of every run (another for a quick '
    'check).')
SWEEP_POPULATION = flags.DEFINE_integer(
    'sweep_population', 3400, 'Clients of measurements 2-5.')
CHILD = flags.DEFINE_string('child', None, 'Internal: one run, as JSON.')
DEBUG = flags.DEFINE_bool(
    'debug', False, 'On an error, show the traceback instead of one line.')

MEASUREMENT_NAMES = ('1', '2', '3', '4', '5')


def _numbers(name, values, *, distinct=True):
  """A list flag's values as integers >= 1; ValidationError naming the flag.

  Raised, not returned False: the message names the value at fault.
  """
  numbers = []
  for value in values:
    if not (value.isascii() and value.isdigit() and int(value) >= 1):
      raise flags.ValidationError(
          f'--{name}: {value!r} is not a whole number >= 1.')
    numbers.append(int(value))
  if distinct and len(set(numbers)) != len(numbers):
    raise flags.ValidationError(
        f'--{name} lists a value twice: {",".join(values)}.')
  return numbers


def _check_numbers(name):
  def check(values):
    _numbers(name, values)
    return True
  return check


for _name in ('populations', 'sweep', 'worker_limits', 'clients_per_group'):
  flags.register_validator(_name, _check_numbers(_name))
for _name in ('clients_per_round', 'rounds', 'timing_repeats',
              'child_timeout', 'sweep_population'):
  flags.register_validator(
      _name, lambda v: v is not None and v >= 1, f'--{_name} must be >= 1.')


def _check_measurements(values):
  unknown = [v for v in values if v not in MEASUREMENT_NAMES]
  if unknown:
    raise flags.ValidationError(
        f'--measurements: {unknown[0]!r} is not a measurement; choose from '
        f'{",".join(MEASUREMENT_NAMES)} (none: the page of --output).')
  if len(set(values)) != len(values):
    raise flags.ValidationError(
        f'--measurements lists one twice: {",".join(values)}.')
  return True


flags.register_validator('measurements', _check_measurements)


@flags.multi_flags_validator(
    ['populations', 'clients_per_round', 'measurements'],
    message='--populations must each be >= --clients_per_round (a round of '
    'measurement 1 samples that many of the population\'s clients).')
def _check_populations(values):
  return '1' not in values['measurements'] or all(
      int(n) >= values['clients_per_round']
      for n in values['populations'] if n.isascii() and n.isdigit())


@flags.multi_flags_validator(
    ['sweep', 'sweep_population', 'measurements'],
    message='--sweep must each be <= --sweep_population (a round of '
    'measurements 2-5 samples that many of its clients).')
def _check_sweep(values):
  return not set(values['measurements']) - {'1'} or all(
      int(n) <= values['sweep_population']
      for n in values['sweep'] if n.isascii() and n.isdigit())

_MB = 2**20


def _directory_bytes(path):
  # tff_kd.experiment has its own, private and absent from a --tree before
  # fc0d7fc.
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
  from tff_kd import run_directory
  from tff_kd import optimizers
  from tff_kd import runtime
  from tff_kd.algorithms import fedavg
  # pylint: enable=g-import-not-at-top

  load = os.getloadavg()[0]
  start = time.perf_counter()
  task = tasks.create_task(
      spec['task'], train_client_spec=tff.simulation.baselines.ClientSpec(
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
          task,
          client_optimizer=optimizers.OptimizerConfig(learning_rate=0.1),
          server_optimizer=optimizers.OptimizerConfig(learning_rate=1.0),
          clients_per_round=spec['clients_per_round'],
          **{k: h.default for k, h in algorithm.hparams.items()})
    kwargs = {}
    if 'on_checkpoint' in inspect.signature(
        experiment.run_experiment).parameters:
      kwargs = dict(data_on_workers=spec['data_on_workers'],
                    on_checkpoint=checkpoints.append)
    with memory.PeakRss() as peak:
      rows = experiment.run_experiment(
          process, task, total_rounds=spec['rounds'],
          clients_per_round=spec['clients_per_round'],
          root_output_dir=root, experiment_name='run',
          rounds_per_eval=spec['rounds'], print_fn=lambda line: None,
          **kwargs)
  paths = run_directory.output_paths(root, 'run')
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
        [sys.executable, '-m', 'benchmarks.population',
         f'--child={json.dumps(spec)}'],
        stdout=out, stderr=err, text=True, cwd=TREE.value,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    deadline = time.time() + CHILD_TIMEOUT.value
    with memory.PeakRss(psutil.Process(child.pid)) as peak:
      while child.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    if child.poll() is None:
      child.kill()  # Its workers die with it (PR_SET_PDEATHSIG).
      child.wait()
      result = dict(spec, error=f'stopped after {CHILD_TIMEOUT.value} s',
                    peak_trainer_mb=peak.trainer / _MB)
      print(f'    {result}', flush=True)
      return result
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
  return dict(task=TASK.value, algorithm=algorithm, population=population,
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


def _task(name, num_clients, flag):
  """Task `name` as the runs build it, with `num_clients` clients.

  Built before any run, so that a task whose data is missing, or that has
  too few examples for the clients, is an error naming `flag` (the flag
  that asked for it), not a failed run after the runs before it.
  """
  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff
  import tasks
  # pylint: enable=g-import-not-at-top
  try:
    return tasks.create_task(
        name, train_client_spec=tff.simulation.baselines.ClientSpec(
            num_epochs=1, batch_size=16),
        model='cnn', partition='iid', num_clients=num_clients, seed=0)
  except (ValueError, OSError) as e:
    raise flags.ValidationError(
        f'{flag}: task {name!r} with {num_clients:,} clients cannot be '
        f'built: {e}') from None


def _model_mb(task):
  """MB of the task model's float32 trainable weights (built in a graph)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.Graph().as_default():
    return sum(4 * v.shape.num_elements()
               for v in task.model_fn().trainable_variables) / _MB


def _slope(first, last):
  """Peak worker MB per added client between two runs."""
  return (last['peak_workers_mb'] - first['peak_workers_mb']) / (
      last['clients_per_round'] - first['clients_per_round'])


def _median(runs, key):
  return statistics.median(r[key] for r in runs)


def _by(runs, key):
  """`runs` without errors, grouped by `key(run)`, each sorted by clients."""
  groups = {}
  for r in runs:
    if 'error' not in r:
      groups.setdefault(key(r), []).append(r)
  for group in groups.values():
    group.sort(key=lambda r: r['clients_per_round'])
  return groups


def _population_rows(runs):
  return [[r['algorithm'], f'{r["population"]:,}',
           f'{r["peak_trainer_mb"]:.0f}', f'{r["trainer_maxrss_mb"]:.0f}',
           f'{r["peak_workers_mb"]:.0f}', f'{r["round_seconds"]:.2f}',
           # Not measured by a --tree without `on_checkpoint`: nan.
           '-' if math.isnan(r['checkpoint_seconds'])
           else f'{r["checkpoint_seconds"]:.3f}',
           f'{r["checkpoint_bytes"] / _MB:.2f}',
           f'{r["store_bytes"] / _MB:.1f}'] if 'error' not in r else
          [r['algorithm'], f'{r["population"]:,}',
           f'{r["peak_trainer_mb"]:.0f} ({r["error"]})'] + ['-'] * 6
          for r in runs]


def _markdown(results, before, model_mb, results_path):
  """The page of `results` (and of `before`'s population runs)."""
  built = {True: 'worker', False: 'trainer'}
  clients = results.get('sweep_population', 3400)
  described = {'mnist1d_85k': ' (MNIST-1D generated at 86,000 signals, '
                              '`tasks.data`)'}.get(results['task'], '')
  parts = [
      '# Population scale',
      f'Measured by `{results["command"]}` at commit {results["commit"]} '
      f'on a machine with {results["cores"]} cores and no GPU. Task '
      f'`{results["task"]}`{described} split IID, the `cnn` '
      f'({model_mb:.2f} MB of float32 weights), 1 local epoch, batch 16, a '
      'checkpoint every round. Every run is a process of its own (its peak '
      'memory is its own): resident memory of the trainer and of its TFF '
      'workers sampled every 20 ms while it trains (`benchmarks.memory`), '
      '`ru_maxrss` over the whole trainer process, each checkpoint\'s '
      'seconds and bytes from `run_experiment(on_checkpoint=...)` (program '
      'state plus the client store\'s commit and the rows written since '
      'the checkpoint before), the store\'s files on disk; seconds per '
      'round: the median of rounds 2 on (round 1 traces). Each run records '
      f'the 1-minute load average (every run: `{results_path}`): round '
      'times move with it, memory does not.',
  ]
  population = results.get('population', [])
  if population:
    parts += [
        f'## Memory against the population '
        f'({population[0]["clients_per_round"]} clients per round, '
        f'{results["rounds"]} rounds)',
        _table(['algorithm', 'clients', 'peak trainer MB',
                'trainer maxrss MB', 'peak worker MB', 's per round',
                'checkpoint s', 'checkpoint MB', 'store on disk MB'],
               _population_rows(population)),
    ]
    if results['task'] == 'mnist1d_85k':
      parts.append(
          'A client has 68,000 / clients training examples (the IID split of '
          'the 85,000 signals less the server\'s 10% validation and 10% '
          'public splits), so a round is faster the more clients there are.')
    by_algorithm = {}
    for r in population:
      if 'error' not in r:
        by_algorithm.setdefault(r['algorithm'], []).append(r)
    parts.append('From the fewest to the most clients, peak trainer MB: ' +
                 '; '.join(
                     f'{a} {rs[0]["peak_trainer_mb"]:.0f} -> '
                     f'{rs[-1]["peak_trainer_mb"]:.0f}'
                     for a, rs in by_algorithm.items()) +
                 '. The stateful algorithms\' checkpoint holds the program '
                 'state (a few KB: the store\'s version, the server model) '
                 'and the rows of the clients trained since the checkpoint '
                 'before, so it does not grow with the population; the '
                 'store on disk holds the clients trained so far (a client '
                 'never trained is at its prototype\'s initial state and '
                 'has no row).')
  if before and before.get('population'):
    parts += [
        f'Before the client store (`--tree` at commit '
        f'{before["commit"]}: every client\'s state in the program state, '
        'rewritten by every checkpoint), the same runs:',
        _table(['algorithm', 'clients', 'peak trainer MB',
                'trainer maxrss MB', 'peak worker MB', 's per round',
                'checkpoint s', 'checkpoint MB', 'store on disk MB'],
               _population_rows(before['population'])),
    ]
  sweep = results.get('clients_per_round', [])
  if sweep:
    groups = _by(sweep, lambda r: (r['algorithm'], r['data_on_workers'],
                                   _worker(r)))
    parts += [
        f'## Memory against the clients per round ({clients:,} '
        'clients)',
        'Client data built by the worker (a round\'s input is the sampled '
        'client ids, the datasets built where the computation runs: '
        '`tff.simulation.compose_dataset_computation_with_learning_process`)'
        ' or by the trainer (each client\'s `tf.data.Dataset` serialized '
        'into the round); the worker runs all of a round\'s clients at '
        'once (default), one at a time (the worker binary\'s '
        '`max_concurrent_computation_calls=1`), or in groups '
        '(`--clients_per_group`, `tff_kd.runtime.GroupingContext`).',
        _table(['algorithm', 'client data built by', 'worker',
                'clients per round', 's per round', 'peak trainer MB',
                'peak worker MB', 'worker MB per added client'],
               [[name, built[on_workers], worker, r['clients_per_round'],
                 f'{r["round_seconds"]:.2f}', f'{r["peak_trainer_mb"]:.0f}',
                 f'{r["peak_workers_mb"]:.0f}',
                 f'{_slope(runs[0], r):.3f}' if r is not runs[0] else '']
                for (name, on_workers, worker), runs in groups.items()
                for r in runs]),
        'Worker MB per added client: the slope of the peak from the fewest '
        f'clients per round. The model is {model_mb:.2f} MB. In groups, a '
        'round whose clients return values (FD\'s new client states) '
        'trains them twice: TFF\'s mergeable form runs the part of the '
        'round after the aggregation on the round\'s argument and the '
        'merged aggregate only (`mergeable_comp_compiler`: '
        '`after_agg_callable(top_level_arg, [reported_result])`), so what '
        'the clients computed before it is computed again there. FedAvg\'s '
        'clients return nothing after the aggregation.',
    ]
  breakdown = results.get('breakdown', [])
  if breakdown:
    # With measurement 2's FedAvg runs one at a time and in groups.
    breakdown = breakdown + [
        r for r in sweep if r['algorithm'] == 'fedavg'
        and (r.get('worker_limit') or r.get('clients_per_group'))]
    groups = _by(breakdown, lambda r: (_worker(r), r['data_on_workers']))
    parts += [
        '## Worker memory per client: what the round keeps',
        f'FedAvg, {clients:,} clients, one worker, from the fewest to the '
        'most clients per round of `--sweep` (measurement 5, and '
        'measurement 2\'s runs with a worker limit or groups).',
        _table(['aggregation', 'client data built by', 'clients per round',
                'peak worker MB', 'clients per round', 'peak worker MB',
                'MB per added client', 'x the model'],
               [[worker, built[on_workers], runs[0]['clients_per_round'],
                 f'{runs[0]["peak_workers_mb"]:.0f}',
                 runs[-1]['clients_per_round'],
                 f'{runs[-1]["peak_workers_mb"]:.0f}',
                 f'{_slope(runs[0], runs[-1]):.3f}',
                 f'{_slope(runs[0], runs[-1]) / model_mb:.2f}']
                for (worker, on_workers), runs in groups.items()]),
        'What holds it, read in TFF 0.87\'s C++ executor (tensorflow_'
        'federated/cc/core/impl/executors/): `federated_broadcast` gives '
        'every client a reference to one server value (federating_executor'
        '.cc, `ClientsAllEqualValue`), so the broadcast model is not copied '
        'per client. `federated_map` starts every client\'s call at once, '
        'and the reference-resolving executor keeps every local of the '
        'round\'s block until the block returns (reference_resolving_'
        'executor.cc): per client its model delta stays. TFF\'s weighted '
        '`MeanFactory` multiplies each delta by its weight in a '
        '`federated_map` of its own (aggregators/mean.py): a second model '
        'per client (the unweighted mean has no such map). The sum is a '
        'sequential fold (federating_executor.cc, `AGGREGATE`) whose '
        'partial sums stay referenced through the futures of the calls '
        'that made them: a third. Three models per client is about what '
        'the default measures. The worker\'s '
        '`max_concurrent_computation_calls` only sizes the TF executor\'s '
        'thread pool: it bounds the training running at once, not what '
        'finished clients leave behind. Groups bound it: each group\'s part '
        'up to the merge is a call of its own, whose values are released '
        'when it returns (`tff_kd.runtime.GroupingContext`).',
    ]
  timing = results.get('timing', [])
  if timing:
    by_variant = {}
    for r in timing:
      if 'error' not in r:
        by_variant.setdefault((built[r['data_on_workers']], _worker(r)),
                              []).append(r)
    default = _median(by_variant[('worker', 'default')], 'round_seconds')
    parts += [
        '## Round time of the variants, interleaved',
        f'FedAvg, {clients:,} clients, '
        f'{timing[0]["clients_per_round"]} per round, one worker; the '
        'variants run one after the other, that sequence repeated, so a '
        'slow phase of the machine falls on all of them.',
        _table(['client data built by', 'worker', 's per round (each run)',
                'median', 'ratio to the default', 'peak worker MB (median)',
                'load averages'],
               [[b, worker, ', '.join(f'{r["round_seconds"]:.2f}'
                                      for r in rs),
                 f'{_median(rs, "round_seconds"):.2f}',
                 f'{_median(rs, "round_seconds") / default:.2f}',
                 f'{_median(rs, "peak_workers_mb"):.0f}',
                 ', '.join(f'{r["load_average"][0]:.1f}' for r in rs)]
                for (b, worker), rs in by_variant.items()]),
    ]
  workers = results.get('workers', [])
  if workers:
    parts += [
        '## One and two workers',
        f'FedAvg, {clients:,} clients, '
        f'{workers[0]["clients_per_round"]} per round; two local workers '
        'split each round\'s clients (TFF\'s mergeable context) on the '
        f'same {results["cores"]} cores.',
        _table(['workers', 'client data built by', 's per round',
                'peak trainer MB', 'peak workers MB (summed)'],
               [[r['workers'], built[r['data_on_workers']],
                 f'{r["round_seconds"]:.2f}', f'{r["peak_trainer_mb"]:.0f}',
                 f'{r["peak_workers_mb"]:.0f}']
                for r in workers if 'error' not in r]),
    ]
  return '\n\n'.join(parts) + '\n'


def _check_writable(flag, path):
  """`path` can be written as a file: not a directory, its directory there."""
  directory = os.path.dirname(os.path.abspath(path))
  if os.path.isdir(path):
    raise flags.ValidationError(f'--{flag}={path!r} is a directory; give the '
                                'file to write.')
  if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
    raise flags.ValidationError(
        f'--{flag}={path!r}: its directory {directory!r} is not a writable '
        'directory.')
  if os.path.exists(path) and not os.access(path, os.W_OK):
    raise flags.ValidationError(f'--{flag}={path!r} is not writable.')


def _read_json(flag, path, keys):
  """The JSON object in `path`, which must hold `keys`."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError) as e:
    raise flags.ValidationError(
        f'--{flag}={path!r} is not a readable JSON file: '
        f'{getattr(e, "strerror", None) or e}.') from None
  if not isinstance(value, dict) or not set(keys) <= set(value):
    raise flags.ValidationError(
        f'--{flag}={path!r} is not the JSON of this binary (it needs '
        f'{", ".join(keys)}).')
  return value


def _check_flags():
  """Every flag, before the first run: one-line errors naming flag and value.

  The absl validators have checked each flag's form; this checks what needs
  the file system, the registry or the task's data, and the flags each
  selected measurement needs. Names are checked against this checkout's
  registry and tasks (with --tree too: an earlier tree has fewer).
  """
  # pylint: disable=g-import-not-at-top,unused-import
  # Imported first: it replaces TFF's default context, whose finalizer
  # prints a traceback at the exit of an error (`tff_kd.runtime`).
  from tff_kd import runtime
  from binaries import registry
  import tasks
  # pylint: enable=g-import-not-at-top,unused-import
  if not OUTPUT.value:
    raise flags.ValidationError('--output is required (the JSON file of the '
                                'results).')
  chosen = set(MEASUREMENTS.value)
  if chosen:
    _check_writable('output', OUTPUT.value)
  else:  # The page of the results already there.
    _read_json('output', OUTPUT.value, ('task', 'command', 'commit', 'cores',
                                        'rounds'))
  if MARKDOWN.value:
    _check_writable('markdown', MARKDOWN.value)
  if BEFORE.value:
    _read_json('before', BEFORE.value, ('commit',))
  if TREE.value and not os.path.isfile(
      os.path.join(TREE.value, 'binaries', 'population.py')):
    raise flags.ValidationError(
        f'--tree={TREE.value!r} is not a checkout holding '
        'benchmarks/population.py (copy this file, benchmarks/memory.py and '
        'the '
        'task in).')
  if TASK.value not in tasks.OUR_TASKS:  # It splits them into populations.
    raise flags.ValidationError(
        f'--task={TASK.value!r} is not a task this binary splits into '
        f'populations; choose from {", ".join(tasks.OUR_TASKS)}.')
  for flag, names in (('algorithms', ALGORITHMS.value),
                      ('sweep_algorithms', SWEEP_ALGORITHMS.value)):
    for name in names:
      if name not in registry.ALGORITHMS:
        raise flags.ValidationError(
            f'--{flag}: {name!r} is not an algorithm; choose from '
            f'{", ".join(sorted(registry.ALGORITHMS))}.')
    if len(set(names)) != len(names):
      raise flags.ValidationError(
          f'--{flag} lists an algorithm twice: {",".join(names)}.')
  needs = [('1', 'populations', POPULATIONS.value, 1),
           ('1', 'algorithms', ALGORITHMS.value, 1),
           ('2', 'sweep_algorithms', SWEEP_ALGORITHMS.value, 1)]
  needs += [(m, 'sweep', SWEEP.value, 1) for m in '234']
  # Measurement 5 is a slope between the first and the last.
  needs.append(('5', 'sweep', SWEEP.value, 2))
  for measurement, flag, values, least in needs:
    if measurement in chosen and len(values) < least:
      raise flags.ValidationError(
          f'--measurements={",".join(MEASUREMENTS.value)} needs '
          f'{"a value" if least == 1 else f"{least} values"} of --{flag} '
          f'(got --{flag}={",".join(values)}).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if CHILD.value:
    print(json.dumps(_run_child(json.loads(CHILD.value))), flush=True)
    return
  _check_flags()
  if not MEASUREMENTS.value:  # The page of earlier results.
    with open(OUTPUT.value) as f:
      results = json.load(f)
    model_mb = _model_mb(_task(results['task'], 10, '--output'))
  else:
    # The largest population any run asks of the task, built once.
    largest = max([int(n) for n in POPULATIONS.value
                   if '1' in MEASUREMENTS.value]
                  + [SWEEP_POPULATION.value
                     if set(MEASUREMENTS.value) - {'1'} else 0])
    model_mb = _model_mb(_task(
        TASK.value, largest,
        f'--task={TASK.value} (--populations, --sweep_population)'))
    results = dict(
        command=' '.join(['python -m benchmarks.population'] + sys.argv[1:]),
        commit=binaries.git_commit(TREE.value),
        cores=os.cpu_count(), task=TASK.value,
        sweep_population=SWEEP_POPULATION.value, rounds=ROUNDS.value,
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
  clients = SWEEP_POPULATION.value
  if '2' in MEASUREMENTS.value:
    print('2. clients per round')
    for a in SWEEP_ALGORITHMS.value:
      for on_workers in (True, False):
        for n in sweep:
          measure('clients_per_round', _spec(a, clients, n,
                                             data_on_workers=on_workers))
    for limit in WORKER_LIMITS.value:
      for n in sweep:
        measure('clients_per_round', _spec('fedavg', clients, n,
                                           worker_limit=int(limit)))
    for group in CLIENTS_PER_GROUP.value:
      for a in SWEEP_ALGORITHMS.value:
        for n in sweep:
          measure('clients_per_round', _spec(
              a, clients, n, clients_per_group=int(group)))
  if '3' in MEASUREMENTS.value:
    print('3. workers')
    middle = sweep[len(sweep) // 2]
    for on_workers in (True, False):
      for w in (1, 2):
        measure('workers', _spec('fedavg', clients, middle,
                                 workers=w, data_on_workers=on_workers))
  if '4' in MEASUREMENTS.value:
    print('4. round time of the variants, interleaved')
    last = sweep[-1]
    variants = ([dict()] + [dict(clients_per_group=int(group))
                            for group in CLIENTS_PER_GROUP.value]
                + [dict(data_on_workers=False)])
    for _ in range(TIMING_REPEATS.value):
      for variant in variants:
        measure('timing', _spec('fedavg', clients, last, **variant))
  if '5' in MEASUREMENTS.value:
    print('5. worker memory per client, by what the round keeps')
    for variant in (dict(), dict(unweighted=True),
                    dict(data_on_workers=False)):
      for n in (sweep[0], sweep[-1]):
        measure('breakdown', _spec('fedavg', clients, n, **variant))
  before = None
  if BEFORE.value:
    with open(BEFORE.value) as f:
      before = json.load(f)
  page = _markdown(results, before, model_mb, OUTPUT.value)
  if MARKDOWN.value:
    with open(MARKDOWN.value, 'w') as f:
      f.write(page)
  print(page)


def run(main_fn) -> None:
  """`app.run(main_fn)`; an error prints one line (exit 1).

  As `binaries.common.run`, whose module this binary cannot import (it
  defines flags of the same names). A --child run shows its traceback: its
  parent reports the child's stderr.
  """

  def guarded(argv):
    try:
      return main_fn(argv)
    except Exception as e:  # pylint: disable=broad-except
      if DEBUG.value or CHILD.value:
        raise
      print(f'Error: {e}  ({type(e).__name__}; --debug shows the traceback)',
            file=sys.stderr)
      sys.exit(1)

  app.run(guarded)


if __name__ == '__main__':
  run(main)
