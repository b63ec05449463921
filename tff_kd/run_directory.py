"""A run's directory: where its files go, its lock, the checks before it
starts or resumes, and the cleanup of a fresh run that failed.

  ROOT/checkpoints/NAME/   checkpoints (`tff_kd.checkpoints`), client store
  ROOT/results/NAME/       experiment.metrics.csv, hparams.json, flags.txt
  ROOT/logdir/NAME/        TensorBoard
"""

import csv
import fcntl
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any, Optional

import tensorflow as tf

# hparams that may change when a run is resumed; any other change is refused.
RESUMABLE_HPARAMS = ('rounds', 'rounds_per_eval', 'rounds_per_checkpoint')
# The key of hparams.json that records how the run was executed (workers,
# addresses, ...): written, never compared on resume.
RUNTIME_KEY = 'runtime'


def read_metrics(metrics_csv: str) -> list[dict[str, str]]:
  """The rows of an experiment's metrics CSV, one per released round."""
  with tf.io.gfile.GFile(metrics_csv, 'r') as f:
    return list(csv.DictReader(f))


def output_paths(root_output_dir: str, experiment_name: str) -> dict[str, str]:
  """The files and directories of one experiment."""
  results = os.path.join(root_output_dir, 'results', experiment_name)
  checkpoints = os.path.join(root_output_dir, 'checkpoints', experiment_name)
  return dict(
      checkpoints=checkpoints,
      client_store=os.path.join(checkpoints, 'client_store'),
      client_data=os.path.join(checkpoints, 'client_data'),
      results=results,
      metrics_csv=os.path.join(results, 'experiment.metrics.csv'),
      hparams=os.path.join(results, 'hparams.json'),
      flagfile=os.path.join(results, 'flags.txt'),
      logdir=os.path.join(root_output_dir, 'logdir', experiment_name),
  )


def check_experiment_name(name: str) -> None:
  if not name or name in ('.', '..') or '/' in name or os.sep in name:
    raise ValueError(
        'experiment_name must be a plain directory name under the root (no '
        f'"/", not "." or ".."); got {name!r}.')


def _json_normalized(values: Mapping[str, Any]) -> dict[str, Any]:
  """`values` as hparams.json stores them (tuples become lists, ...)."""
  return json.loads(json.dumps(dict(values), sort_keys=True, default=str))


def _changed_settings(hparams_path, hparams):
  """(saved, now, keys whose values differ outside `RESUMABLE_HPARAMS`)."""
  with tf.io.gfile.GFile(hparams_path) as f:
    saved = json.load(f)
  now = _json_normalized(hparams)
  changed = [k for k in sorted(set(saved) | set(now))
             if k not in RESUMABLE_HPARAMS + (RUNTIME_KEY,)
             and saved.get(k) != now.get(k)]
  return saved, now, changed


def check_resumable(paths, name, hparams, total_rounds, latest_version):
  """Raises unless the run on disk is this configuration and can continue."""
  if tf.io.gfile.exists(paths['hparams']):
    saved, now, changed = _changed_settings(paths['hparams'], hparams)
    if changed:
      raise ValueError(
          f'Run {name!r} belongs to another configuration; nothing was '
          'changed. Its saved settings differ in: '
          + ', '.join(f'{k}={saved.get(k)!r} (now {now.get(k)!r})'
                      for k in changed)
          + f'. Resume with its settings (only {", ".join(RESUMABLE_HPARAMS)}'
          ' may change) or choose another experiment name.')
  if latest_version is not None and total_rounds < latest_version:
    raise ValueError(
        f'Run {name!r} has already trained {latest_version} rounds; the '
        f'total of {total_rounds} rounds asked for is fewer. Resume with at '
        f'least {latest_version} rounds.')


def finished_run(
    root_output_dir: str, experiment_name: str, total_rounds: int,
    hparams: Mapping[str, Any],
) -> Optional[list[dict[str, str]]]:
  """The metrics rows of a run that trained `total_rounds` rounds with
  `hparams` (as its hparams.json says, up to `RESUMABLE_HPARAMS`), else None.
  """
  paths = output_paths(root_output_dir, experiment_name)
  if not (tf.io.gfile.exists(paths['hparams'])
          and tf.io.gfile.exists(paths['metrics_csv'])):
    return None
  if _changed_settings(paths['hparams'], hparams)[2]:
    return None
  rows = read_metrics(paths['metrics_csv'])
  if not rows or int(rows[-1]['round_num']) != total_rounds:
    return None
  return rows


def check_writable(paths: Mapping[str, str]) -> None:
  """Raises, before any round, unless every output of the run can be written.

  Otherwise a read-only directory or an immutable file shows only when first
  written to: the metrics CSV after a round has trained, a checkpoint after
  its round. Each directory is created and a file created in it and removed
  (what the CSV manager's and the checkpoints' renames need); each existing
  file is opened for appending, which writes nothing. The directories are
  left created.
  """
  directories = [('results', 'metrics and hparams'),
                  ('checkpoints', 'checkpoints'),
                  ('logdir', 'TensorBoard logs')]
  directories += [(key, what) for key, what in (
      ('client_store', 'client states'), ('client_data', 'clients\' examples'))
                  if os.path.isdir(paths[key])]
  for key, what in directories:
    path = paths[key]
    try:
      os.makedirs(path, exist_ok=True)
      with tempfile.NamedTemporaryFile(dir=path, prefix='.writable_'):
        pass
    except OSError as e:
      raise PermissionError(
          f'{path} is not a writable directory ({e.strerror or e}); the run '
          f'writes its {what} there. Make it writable or choose another '
          'root_output_dir.') from e
  for key in ('metrics_csv', 'hparams'):
    path = paths[key]
    if os.path.lexists(path):
      try:
        with open(path, 'a', encoding='utf-8'):
          pass
      except OSError as e:
        raise PermissionError(
            f'{path} is not writable ({e.strerror or e}), and the run '
            'rewrites it (an immutable file: chattr -i). Make it writable or '
            'choose another root_output_dir.') from e


def remove_outputs(paths: Mapping[str, str]) -> None:
  """Removes what a fresh run created, as far as it can (an error leaves
  the rest: the error that made the run stop is the one to report)."""
  for key in ('checkpoints', 'results', 'logdir'):
    try:
      if tf.io.gfile.exists(paths[key]):
        tf.io.gfile.rmtree(paths[key])
    except (OSError, tf.errors.OpError):
      pass


class RunLock:
  """An exclusive lock on a run's results directory (`fcntl.flock`).

  A second process on the same run fails at once with an error naming the
  process holding it. The lock goes with the process (a killed run leaves
  none behind).
  """

  def __init__(self, results_dir: str, name: str):
    path = os.path.join(results_dir, '.lock')
    self._file = open(path, 'a+')  # pylint: disable=consider-using-with
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      self._file.seek(0)
      holder = self._file.read().strip() or 'unknown'
      self._file.close()
      raise RuntimeError(
          f'Run {name!r} is in use by another process (pid {holder}); wait '
          'for it to finish or choose another experiment name.') from None
    self._file.seek(0)
    self._file.truncate()
    self._file.write(str(os.getpid()))
    self._file.flush()

  def release(self) -> None:
    self._file.close()  # Closing releases the lock.
