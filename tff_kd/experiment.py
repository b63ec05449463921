"""Runs a learning process on a task, with checkpoints, metrics and resume.

The loop (`_train`) is written out on `tff.program`'s public API: the process's
rounds, its checks and evaluations, TFF's CSV and TensorBoard release managers
and our atomic checkpoints (`CheckpointManager`, over TFF's
`FileProgramStateManager`), all under one root directory:

  ROOT/checkpoints/NAME/program_state_R/      CheckpointManager
  ROOT/checkpoints/NAME/client_store/         clients' states (FD, DS-FL, ...)
  ROOT/checkpoints/NAME/client_data/          clients' examples, for workers
                                              (while the run runs)
  ROOT/results/NAME/experiment.metrics.csv    CSVFileReleaseManager
  ROOT/results/NAME/hparams.json              the run's hyperparameters
  ROOT/logdir/NAME/                           TensorBoardReleaseManager

Client sampling is a pure function of (seed, round), so a resumed run samples
the same clients as an uninterrupted one.

The process answers the protocol of `tff_kd.process`: `client_input(client
id, dataset)` is what its `next` takes per client, `client_data_type` the
type of a client's dataset, and `evaluation_models(state)` the models each
evaluation tests on the task's test set, `evaluation/<name>/<metric>` (means
over a list of models), and on its labelled validation split when it has one,
`evaluation/<name>/validation_<metric>`. Every tff_kd process answers it: the
processes over model prototypes (FedDF, FedAUX) report `evaluation/test_<name>/*` per
prototype beside `evaluation/test/*` (the first prototype's); the processes
whose clients keep their own models (FD, DS-FL, FedAD) report
`evaluation/clients/*`, the mean over every client's model (and
`evaluation/clients_<name>/*` per prototype), and `evaluation/test/*`, the
server model's where the server has one (DS-FL, FedAD), else the clients'
mean (FD). Any other `tff.learning.templates.LearningProcess` (TFF's own
builders) is run on the task's datasets and evaluated with the task's
`model_fn`.
"""

import asyncio
import collections
from collections.abc import Callable, Mapping
import json
import hashlib
import re
import time
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import checkpoints
from tff_kd import client_store as client_store_lib
from tff_kd import evaluation
from tff_kd import privacy
from tff_kd import process as process_lib
from tff_kd import run_directory

ACCURACY_KEY = 'evaluation/test/accuracy'
CLIENTS_ACCURACY_KEY = 'evaluation/clients/accuracy'
# Metrics of the validation split carry this prefix beside the test set's:
# evaluation/<name>/validation_accuracy.
VALIDATION_PREFIX = 'validation_'
BYTES_UPLOADED_KEY = 'client_work/communication/bytes_uploaded'
BYTES_DOWNLOADED_KEY = 'client_work/communication/bytes_downloaded'
NON_FINITE_KEY = 'client_work/non_finite_clients'


def prototype_accuracy_key(name: str) -> str:
  return f'evaluation/test_{name}/accuracy'


class ProgressReleaseManager(tff.program.ReleaseManager):
  """Prints one line per round: round, test accuracy (when evaluated), the
  privacy spent (`privacy/epsilon`, when the metrics have it), seconds."""

  def __init__(self, total_rounds: int, print_fn: Callable[[str], None],
               dropped: Mapping[int, tuple[int, int]]):
    self._total_rounds = total_rounds
    self._print = print_fn
    self._dropped = dropped  # round -> (dropped clients, sampled clients)

  async def release(self, value, key):
    metrics = flatten(value)
    line = f'round {key:4d}/{self._total_rounds}'
    if ACCURACY_KEY in metrics:
      line += f'  test accuracy {metrics[ACCURACY_KEY]:.4f}'
    epsilon = privacy.epsilon(metrics)
    if epsilon is not None:
      line += f'  epsilon {epsilon:.3g}'
    if tff.simulation.TRAINING_TIME_KEY in metrics:
      line += f'  {metrics[tff.simulation.TRAINING_TIME_KEY]:.2f} s'
    dropped, sampled = self._dropped.get(key, (0, 0))
    if dropped:
      line += f'  {dropped}/{sampled} clients dropped out'
    non_finite = int(metrics.get(NON_FINITE_KEY, 0))
    if non_finite:
      line += (f'  {non_finite}/{sampled} clients dropped: their update was '
               'not finite (NaN or Inf)')
    if sampled and dropped + non_finite >= sampled:
      line += ': no update, the model is unchanged'
    self._print(line)


def flatten(metrics: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """Flattens nested metrics to `/`-joined keys, as the CSV manager does."""
  flat = {}
  for key, value in metrics.items():
    if isinstance(value, Mapping):
      flat.update(flatten(value, f'{prefix}{key}/'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def client_sampler(
    client_ids: list[str], clients_per_round: int, seed: int
) -> Callable[[int], list[str]]:
  """Returns `round -> client ids`, sampled without replacement by (seed, round)."""
  if not 1 <= clients_per_round <= len(client_ids):
    raise ValueError(
        f'clients_per_round must be in [1, {len(client_ids)}] (the number of'
        f' clients); got {clients_per_round}.'
    )

  def sample(round_num: int) -> list[str]:
    rng = np.random.default_rng([seed, round_num])
    chosen = rng.choice(len(client_ids), size=clients_per_round, replace=False)
    return [client_ids[i] for i in sorted(chosen)]

  return sample


@runtime_checkable
class ClientDataTask(Protocol):
  """A task that builds its clients' data itself (`tasks.Task`): a client's
  dataset of a round, shuffled by (seed, round, client), and the files and
  computation that build it on the workers. Any other `BaselineTask` (TFF's)
  gives its `train_preprocess_fn` of the client's data, built by the trainer.
  """

  def client_dataset(self, client_id: str, round_num: int) -> tf.data.Dataset:
    ...

  def client_data_key(self, client_id: str, round_num: int,
                      dropped: bool = False) -> Any:
    ...

  def client_data_computation(self, directory: str) -> tff.Computation:
    ...


class _TffProcess:
  """`process_lib.ProgramProcess` for a TFF `LearningProcess` that does not
  answer it, over the task's datasets and model."""

  client_prototypes = None

  def __init__(self, process, model_fn):
    self.initialize = process.initialize
    self.next = process.next
    self._process = process
    self._model_fn = model_fn
    self.client_data_type = process.next.type_signature.parameter[1].member

  @staticmethod
  def client_input(client_id, dataset):
    del client_id
    return dataset

  def with_client_data(self, data_computation):
    """TFF's `compose_dataset_computation_with_learning_process`."""
    composed = _TffProcess(
        tff.simulation.compose_dataset_computation_with_learning_process(
            data_computation, self._process), self._model_fn)
    composed.client_data_type = self.client_data_type
    return composed

  def evaluation_models(self, state):
    return collections.OrderedDict(
        test=[(self._model_fn, self._process.get_model_weights(state))])

  @staticmethod
  def open_client_store(directory):
    del directory


def _protocol(process, task) -> process_lib.ProgramProcess:
  """`process`, or an adapter answering `process_lib.ProgramProcess`."""
  if isinstance(process, process_lib.ProgramProcess):
    return process
  return _TffProcess(process, task.model_fn)


def client_dataset(
    task: tff.simulation.baselines.BaselineTask, client_id: str, round_num: int
) -> tf.data.Dataset:
  """A client's preprocessed training data for a round.

  A task with a `client_dataset(client_id, round_num)` method (ours:
  `tasks.Task`, shuffled by (seed, round, client)) gives it; any other
  `BaselineTask` (TFF's) its `train_preprocess_fn` of the client's data.
  """
  if isinstance(task, ClientDataTask):
    return task.client_dataset(client_id, round_num)
  return task.datasets.train_preprocess_fn(
      task.datasets.train_data.create_tf_dataset_for_client(client_id))


def validation_dataset(
    task: tff.simulation.baselines.BaselineTask) -> Optional[tf.data.Dataset]:
  """The task's labelled validation split, batched; None when it has none.

  Every evaluation reports each model's accuracy and loss on it beside the
  test set's (`evaluation/<name>/validation_accuracy`), so that a round can be
  selected on validation and reported on test.
  """
  data = task.datasets.validation_data
  if data is None:
    return None
  if isinstance(data, tff.simulation.datasets.ClientData):
    data = data.create_tf_dataset_from_all_clients()
  if data.cardinality() == 0:
    return None
  return task.datasets.eval_preprocess_fn(data)


def selected_accuracy(test: Mapping[int, float],
                      validation: Mapping[int, float]) -> Optional[float]:
  """The test accuracy of the round with the best validation accuracy.

  Model selection on the labelled validation split, never on test: the first
  evaluated round (> 0) whose validation accuracy is the highest. None when
  the run has no validation split.
  """
  rounds = [r for r in validation if r > 0 and r in test]
  if not rounds:
    return None
  return test[max(rounds, key=lambda r: (validation[r], -r))]


def _check_data_fits_process(process, task) -> None:
  """A clear error, before training, when the task's data and model differ."""
  client_type = process.client_data_type
  data_type = tff.types.tensorflow_to_type(
      task.datasets.element_type_structure)
  if not client_type.element.is_assignable_from(data_type):
    raise ValueError(
        f'The task\'s client data have elements {data_type} but the model '
        f'takes {client_type.element}: the task and the model_fn do not '
        'match.')
  assignment = process.client_prototypes
  if assignment is not None:
    missing = sorted(set(task.datasets.train_data.client_ids) - set(assignment))
    if missing:
      raise ValueError(
          f'The process assigns no prototype to clients {missing[:5]} of the '
          'task: build it with the task\'s client_prototypes.')


def _digest(weights) -> bytes:
  """A digest of a model's weights: equal weights, equal digests."""
  h = hashlib.blake2b(digest_size=16)
  for leaf in tf.nest.flatten(weights):
    leaf = np.asarray(leaf)
    h.update(f'{leaf.dtype.str}{leaf.shape}'.encode())
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.digest()


def _evaluate(process, state, dataset, evaluators):
  """`evaluation_models(state)` evaluated; metrics averaged over a list.

  The models of a list are taken one at a time (a process may load them from
  disk), and equal weights are evaluated once (e.g. every client that has
  not trained yet).
  """
  metrics = collections.OrderedDict()
  done = {}  # id of a list of models -> its metrics (a list named twice).
  results_of = {}  # (model_fn, digest of the weights) -> metrics
  for name, models in process.evaluation_models(state).items():
    if id(models) not in done:
      results = []
      for model_fn, weights in models:
        if model_fn not in evaluators:
          evaluators[model_fn] = evaluation.build_evaluator(model_fn)
        key = (model_fn, _digest(weights))
        if key not in results_of:
          results_of[key] = evaluators[model_fn](weights, dataset)
        results.append(results_of[key])
      done[id(models)] = results[0] if len(results) == 1 else (
          collections.OrderedDict(
              (key, float(np.mean([r[key] for r in results])))
              for key in results[0]))
    metrics[name] = done[id(models)]
  return metrics


def _non_finite_error(round_num: int, what: str,
                      last_checkpoint: str) -> FloatingPointError:
  """The one error of a run stopped because its model is no longer finite."""
  if round_num == 0:
    return FloatingPointError(
        f'The initial model is not finite: {what}. Check the model and its '
        'initialization.')
  return FloatingPointError(
      f'Round {round_num} made the model non-finite (NaN or Inf): {what}; the '
      f'run stops here and keeps its last checkpoint ({last_checkpoint}). '
      'Lower the learning rates (client and server) or the distillation '
      'weights.')


# The losses that show the model is no longer finite (keys of `flatten`):
# a test-set loss of `_evaluate`, and a clients' training loss (any prefix,
# any prototype's, e.g. `client_work/train/loss`, `client_work/train/cnn/
# loss`). Not the server distillation's `loss_first`/`loss_last`, NaN when it
# ran no step.
_EVALUATION_LOSS = re.compile(r'^evaluation/.+/loss$')
_TRAINING_LOSS = re.compile(r'(^|/)train/(.+/)?loss$')


def _non_finite_loss(metrics: Mapping[str, Any], pattern: re.Pattern,
                     trained: bool = True) -> Optional[str]:
  """`key is value` for the first loss of flat `metrics` that is NaN or Inf.

  A training loss counts only where clients trained: not when `trained` is
  False (every sampled client dropped out or sent a non-finite update, and
  was left out), nor when the `num_examples` beside it is 0 (a prototype
  that no client of the round had): such a loss averages nothing.
  """
  for key, value in metrics.items():
    if not pattern.search(key):
      continue
    if pattern is _TRAINING_LOSS:
      examples = metrics.get(key[:-len('loss')] + 'num_examples')
      if not trained or (examples is not None and not np.any(examples)):
        continue
    value = np.asarray(value)
    if (np.issubdtype(value.dtype, np.floating)
        and not np.all(np.isfinite(value))):
      return f'{key} is {value}'
  return None


def _check_finite(before: Any, after: Any, round_num: int,
                  last_checkpoint: str) -> None:
  """Raises if a float of the process state became NaN or Inf in a round.

  Values that were not finite before the round (a hyperparameter the user
  set to inf, say) are not the round's doing. Client states in a store are
  checked for the clients the round rewrote.
  """
  pairs = []
  if (isinstance(after, Mapping)
      and isinstance(after.get('clients'), client_store_lib.ClientStates)):
    old, new = before['clients'], after['clients']
    pairs += [(f'state of client {c!r}', old[c], new[c])
              for c in new.changed_from(old)]
    before = checkpoints.with_clients(before, ())
    after = checkpoints.with_clients(after, ())
  pairs.append(('process state', before, after))
  for label, old_state, new_state in pairs:
    for old, new in zip(tf.nest.flatten(old_state),
                        tf.nest.flatten(new_state)):
      old, new = np.asarray(old), np.asarray(new)
      if (np.issubdtype(new.dtype, np.floating) and new.shape == old.shape
          and np.any(np.isfinite(old) & ~np.isfinite(new))):
        raise _non_finite_error(
            round_num, f'the {label} has a NaN or Inf weight',
            last_checkpoint)


def run_experiment(
    process: tff.learning.templates.LearningProcess,
    task: tff.simulation.baselines.BaselineTask,
    *,
    total_rounds: int,
    clients_per_round: int,
    root_output_dir: str,
    experiment_name: str,
    seed: int = 0,
    rounds_per_eval: int = 1,
    rounds_per_checkpoint: int = 1,
    resume: bool = False,
    hparams: Optional[Mapping[str, Any]] = None,
    print_fn: Callable[[str], None] = print,
    client_dropout: float = 0.0,
    data_on_workers: bool = True,
    on_checkpoint: Optional[Callable[[Mapping[str, Any]], None]] = None,
    flagfile: Optional[str] = None,
) -> list[dict[str, str]]:
  """Trains `process` on `task` and returns the last round's metrics.

  Runs are never overwritten nor mislabelled: without `resume` a run whose
  checkpoint, results or log directory exists is an error; with `resume`, a
  run whose saved `hparams.json` differs from `hparams` (other than in
  `RESUMABLE_HPARAMS`) or that trained more rounds than `total_rounds` is an
  error, as is one whose results exist but whose checkpoints were deleted,
  or one with an entry `program_state_R` that holds no checkpoint. An output
  that cannot be written (a read-only directory, an immutable file) is an
  error before the first round. A lock on the results directory keeps two
  processes off one run. A round that makes the model non-finite stops the
  run with a `FloatingPointError` naming the round and what is NaN or Inf
  (a weight of the state, the clients' training loss, a test loss), before
  the round's metrics are written or its state saved (the last checkpoint
  kept); a fresh run that fails before its first checkpoint removes what it
  created, so it can be started again.

  Args:
    process: a process answering `tff_kd.process`'s protocol (every tff_kd
      builder's), or any TFF `LearningProcess` whose `next` takes the
      sampled clients' preprocessed datasets (evaluated with
      `task.model_fn`).
    task: a `BaselineTask` (ours or TFF's); its centralized test data is
      evaluated every `rounds_per_eval` rounds and after the last round.
    total_rounds: number of training rounds, >= 1.
    clients_per_round: clients sampled per round.
    root_output_dir: root of the output layout (see module docstring).
    experiment_name: name of this run under the root (a plain name).
    seed: seed of the client sampling.
    rounds_per_eval: evaluate every this many rounds (and the last round).
    rounds_per_checkpoint: checkpoint every this many rounds (and the last).
    resume: continue from the last checkpoint of `experiment_name` (a run not
      started yet starts).
    hparams: written to `hparams.json`, and checked against it on resume
      (except `RESUMABLE_HPARAMS` and the `RUNTIME_KEY` entry, which records
      how the run was executed and may change).
    print_fn: receives the progress line of each round.
    client_dropout: probability that a sampled client drops out of a round
      (seeded by (seed, round)): it trains on nothing and sends nothing that
      counts (weight 0). A round where all drop leaves the model unchanged.
    data_on_workers: when the task has a `client_data_computation` (ours)
      and the process `with_client_data` (every tff_kd process, TFF's too),
      a round takes the sampled clients' `client_data_key`s and each client's
      dataset is built where the round runs (TFF's
      `compose_dataset_computation_with_learning_process`); same batches in
      the same order as the trainer's `client_dataset`; the workers read the
      clients' examples from files written under the run's checkpoint
      directory (`client_data`, removed when the run ends), so it must be
      readable where they run (a shared filesystem for workers on other
      machines). False, or a task without it (a `BaselineTask` of TFF's
      own): the trainer builds every sampled client's dataset and the round
      carries it.
    on_checkpoint: called after each checkpoint with its `version`,
      `seconds`, `program_state_bytes`, and, for client states in a store,
      `store_commit_bytes` (its commit file) and `store_rows_bytes` (the
      client states written since the checkpoint before); for measurements.
    flagfile: the command line that started the run (a binary's flags, one
      per line), written to `results/NAME/flags.txt` beside hparams.json, to
      replay it with `--flagfile`.

  Returns:
    The rows of the metrics CSV (`read_metrics`), round 0 first.
  """
  for name, value in (
      ('total_rounds', total_rounds),
      ('rounds_per_eval', rounds_per_eval),
      ('rounds_per_checkpoint', rounds_per_checkpoint),
  ):
    if value < 1:
      raise ValueError(f'{name} must be >= 1; got {value}.')
  run_directory.check_experiment_name(experiment_name)
  if not 0 <= client_dropout < 1:
    raise ValueError(f'client_dropout must be in [0, 1); got {client_dropout}.')
  paths = run_directory.output_paths(root_output_dir, experiment_name)
  existing = [paths[k] for k in ('checkpoints', 'results', 'logdir')
              if tf.io.gfile.exists(paths[k])]
  if existing and not resume:
    raise FileExistsError(
        f'{existing[0]} exists: run {experiment_name!r} was started before. '
        'Pass resume=True (--resume) to continue it, or choose another '
        'experiment name.')
  if existing and resume and not tf.io.gfile.exists(paths['checkpoints']):
    raise FileExistsError(
        f'{existing[0]} exists but {paths["checkpoints"]} does not: run '
        f'{experiment_name!r} has no checkpoint to resume from, and its '
        'records are not overwritten. Choose another experiment name.')
  process = _protocol(process, task)
  _check_data_fits_process(process, task)
  keyed = data_on_workers and isinstance(task, ClientDataTask)
  client_ids = list(task.datasets.train_data.client_ids)
  sample = client_sampler(client_ids, clients_per_round, seed)
  hparams = dict(hparams or {})
  fresh = not existing
  try:
    run_directory.check_writable(paths)
  except BaseException:
    if fresh:
      run_directory.remove_outputs(paths)
    raise
  lock = run_directory.RunLock(paths['results'], experiment_name)
  manager = None
  store = None
  try:
    manager = checkpoints.CheckpointManager(
        paths['checkpoints'], every=rounds_per_checkpoint, last=total_rounds)
    if resume:
      run_directory.check_resumable(paths, experiment_name, hparams,
                                    total_rounds, manager.last_saved)
    if keyed:  # The clients' files, for the workers to read.
      process = process.with_client_data(
          task.client_data_computation(paths['client_data']))
    store = process.open_client_store(paths['client_store'])
    manager.client_store = store
    manager.on_checkpoint = on_checkpoint
    if flagfile is not None:
      with tf.io.gfile.GFile(paths['flagfile'], 'w') as f:
        f.write(flagfile)
    _train(process, task, paths, manager, hparams, sample,
           seed=seed, total_rounds=total_rounds,
           rounds_per_eval=rounds_per_eval, print_fn=print_fn,
           client_dropout=client_dropout, keyed=keyed)
  except BaseException:
    if fresh and (manager is None or manager.last_saved is None):
      run_directory.remove_outputs(paths)
    raise
  finally:
    if store is not None:
      store.close()
    if keyed and tf.io.gfile.exists(paths['client_data']):
      tf.io.gfile.rmtree(paths['client_data'])  # Written at every start.
    lock.release()
  return run_directory.read_metrics(paths['metrics_csv'])


def _train(process, task, paths, manager, hparams, sample, *,
           seed, total_rounds, rounds_per_eval, print_fn, client_dropout,
           keyed=False):
  """The program loop: round 0 evaluated and saved, then each round trained,
  checked, evaluated when due, released and saved.

  As `tff.simulation.run_training_process` (its metric keys), written out:
  the round is known where it is needed, the evaluation runs when due (every
  `rounds_per_eval` rounds and the last), and the checks sit between a
  round's result and its release.
  """
  dropped = {}  # round -> (clients dropped out, clients sampled)
  with tf.io.gfile.GFile(paths['hparams'], 'w') as f:
    json.dump(hparams, f, indent=2, sort_keys=True, default=str)
  releases = [
      tff.program.CSVFileReleaseManager(
          file_path=paths['metrics_csv'], key_fieldname='round_num'),
      tff.program.TensorBoardReleaseManager(summary_dir=paths['logdir']),
      ProgressReleaseManager(total_rounds, print_fn, dropped),
  ]
  evaluate = _Evaluation(process, task, manager)

  async def release_all(metrics, round_num):
    await asyncio.gather(*[m.release(metrics, key=round_num)
                           for m in releases])

  def release(metrics, round_num):
    checkpoints.run_sync(release_all(metrics, round_num))

  store = manager.client_store
  initial = (process.initialize() if store is None
             else process.initialize(client_store=store))
  state, last = checkpoints.run_sync(manager.load_latest(initial))
  if state is None:  # A fresh run: round 0 is the initial model.
    state, last = initial, 0
    release(evaluate(state, 0), 0)
    checkpoints.run_sync(manager.save(state, 0))
  for round_num in range(last + 1, total_rounds + 1):
    start = time.time()
    inputs = _round_inputs(process, task, sample, round_num, seed=seed,
                           client_dropout=client_dropout, keyed=keyed,
                           dropped=dropped)
    output = process.next(state, inputs)
    _check_round(state, output.state, output.metrics, round_num,
                 dropped[round_num], f'round {manager.last_saved}')
    metrics = collections.OrderedDict(output.metrics)
    metrics[tff.simulation.TRAINING_TIME_KEY] = time.time() - start
    metrics[tff.simulation.ROUND_NUMBER_KEY] = round_num
    state = output.state
    if round_num % rounds_per_eval == 0 or round_num == total_rounds:
      metrics.update(evaluate(state, round_num))
    release(metrics, round_num)
    checkpoints.run_sync(manager.save(state, round_num))


def _round_inputs(process, task, sample, round_num, *, seed, client_dropout,
                  keyed, dropped):
  """What `process.next` takes for the round's sampled clients.

  A client drops out with probability `client_dropout`, seeded by (seed,
  round): it trains on nothing. Records (dropped, sampled) in `dropped`.
  """
  clients = sample(round_num)
  drops = np.random.default_rng([seed, round_num, 7]).random(len(clients))
  drops = drops < client_dropout
  dropped[round_num] = (int(drops.sum()), len(clients))
  inputs = []
  for c, drop in zip(clients, drops):
    if keyed:  # Built on the worker.
      inputs.append(process.client_input(c, task.client_data_key(
          c, round_num, dropped=bool(drop))))
    else:
      dataset = client_dataset(task, c, round_num)
      inputs.append(process.client_input(
          c, dataset.take(0) if drop else dataset))
  return inputs


def _check_round(before, after, metrics, round_num, dropped, last_checkpoint):
  """Raises, before a round is released or saved, if it made the model
  non-finite: a weight of the state, or every client's update, or the
  training loss of clients that trained."""
  _check_finite(before, after, round_num, last_checkpoint)
  metrics = flatten(metrics)
  drops, sampled = dropped
  non_finite = int(metrics.get(NON_FINITE_KEY, 0))
  if non_finite and non_finite == sampled - drops:
    raise FloatingPointError(
        f'Round {round_num}: every client that trained ({non_finite}/'
        f'{non_finite}) sent a non-finite update (NaN or Inf), so the '
        'local training diverges; the run stops here and keeps its last '
        f'checkpoint ({last_checkpoint}). Lower the client learning rate '
        'or the distillation weights.')
  trained = sampled - drops - non_finite > 0
  bad = _non_finite_loss(metrics, _TRAINING_LOSS, trained)
  if bad is not None:
    raise _non_finite_error(round_num, bad, last_checkpoint)


class _Evaluation:
  """`evaluation_models(state)` on the test set (and the validation split),
  as `evaluation/...` metrics; a non-finite test loss stops the run."""

  def __init__(self, process, task, manager):
    self._process = process
    self._manager = manager
    self._test = task.datasets.get_centralized_test_data()
    self._validation = validation_dataset(task)
    self._evaluators = {}  # model_fn -> its evaluator
    self._finite = None  # The last round whose evaluation was finite.

  def __call__(self, state, round_num):
    start = time.time()
    metrics = _evaluate(self._process, state, self._test, self._evaluators)
    if self._validation is not None:
      validation = _evaluate(self._process, state, self._validation,
                             self._evaluators)
      for name, values in validation.items():
        metrics[name] = collections.OrderedDict(metrics[name]) | {
            f'{VALIDATION_PREFIX}{key}': value
            for key, value in values.items() if key != 'num_examples'}
    # A model whose weights are finite but whose outputs overflow (NaN loss).
    bad = _non_finite_loss(flatten(metrics, 'evaluation/'), _EVALUATION_LOSS)
    if bad is not None:
      checkpoint = f'round {self._manager.last_saved}'
      if self._finite is not None and self._finite < (
          self._manager.last_saved or 0):
        checkpoint += (f'; the last evaluation with finite losses was of '
                       f'round {self._finite}')
      raise _non_finite_error(round_num, bad, checkpoint)
    self._finite = round_num
    metrics[tff.simulation.EVALUATION_TIME_KEY] = time.time() - start
    return collections.OrderedDict(
        (tff.simulation.EVALUATION_METRICS_PREFIX + key, value)
        for key, value in metrics.items())
