"""Runs made once and stored as curves, from which a page is written.

The page generators (`benchmarks.claims`, `benchmarks.privacy`) name each run
by a key (setting, variant, seed), make the runs their store lacks with
`binaries.train --resume` (`run_missing`), append each finished run's
evaluated rounds to a CSV store with the commit that ran it, and write their
page from the store alone, so a page is regenerated without rerunning
anything. The accuracy a page compares is the *selected* one (`selected`)
beside the final round's (`final`), and a difference is judged by the paired
95% t-interval of its mean over seeds (`interval`).
"""

from collections.abc import Callable, Mapping, Sequence
import concurrent.futures
import csv
import os
import re
import subprocess
import sys
from typing import Optional

import numpy as np
from scipy import stats

import binaries
from tff_kd import experiment
from tff_kd import privacy
from tff_kd import run_directory
from tff_kd import runtime  # pylint: disable=unused-import

# `runtime` is imported for its effect: it replaces TFF's default context,
# whose worker object's finalizer fails at exit in a program that only reads
# metrics.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_VALIDATION_KEY = f'evaluation/test/{experiment.VALIDATION_PREFIX}accuracy'
_CLIENTS_VALIDATION_KEY = (
    f'evaluation/clients/{experiment.VALIDATION_PREFIX}accuracy')
# A run stopped by a model gone non-finite (`experiment`'s error): a result
# (the setting diverges), stored with its status, not a failure to retry.
_NON_FINITE = re.compile(r'Round (\d+) made the model non-finite')

Key = tuple[str, str, int]  # (setting, variant, seed)


def run_name(key: Key) -> str:
  setting, variant, seed = key
  return f'{setting}_{variant}_seed{seed}'


def command(key: Key, run_flags: Sequence[str], root: str) -> list[str]:
  """The `binaries.train` command of a run: its flags, resumable in ROOT."""
  return ([sys.executable, '-m', 'binaries.train', *run_flags,
           f'--root_output_dir={root}', '--resume',
           f'--experiment_name={run_name(key)}'])


def curves(rows: Sequence[Mapping[str, str]]) -> list[dict]:
  """A run's evaluated rounds from its metrics rows.

  Per evaluated round: test and validation accuracy of the global model,
  of the clients' own models where they have them (else empty), the MB
  communicated so far (up, at encoded sizes, and down), the MB uploaded so
  far encoded and plain, and the epsilon spent (empty without DP).
  """
  mb = mb_up = mb_up_plain = 0.0
  epsilon, out = None, []
  for row in rows:
    if row.get(experiment.BYTES_UPLOADED_KEY):
      up = privacy.bytes_uploaded(row, experiment.BYTES_UPLOADED_KEY) / 1e6
      mb += up + float(row[experiment.BYTES_DOWNLOADED_KEY]) / 1e6
      mb_up += up
      mb_up_plain += float(row[experiment.BYTES_UPLOADED_KEY]) / 1e6
      epsilon = privacy.epsilon(row)
    if row.get(experiment.ACCURACY_KEY):
      out.append(dict(
          round=int(row['round_num']),
          test_accuracy=float(row[experiment.ACCURACY_KEY]),
          validation_accuracy=float(row[_VALIDATION_KEY]),
          clients_accuracy=row.get(experiment.CLIENTS_ACCURACY_KEY, ''),
          clients_validation_accuracy=row.get(_CLIENTS_VALIDATION_KEY, ''),
          mb=round(mb, 4), mb_up=round(mb_up, 4),
          mb_up_plain=round(mb_up_plain, 4),
          epsilon='' if epsilon is None else round(epsilon, 4)))
  return out


def read_store(path: str) -> dict[Key, list[dict]]:
  """(setting, variant, seed) -> its rows, from the store."""
  runs = {}
  if os.path.exists(path):
    with open(path, newline='') as f:
      for row in csv.DictReader(f):
        key = (row['setting'], row['variant'], int(row['seed']))
        runs.setdefault(key, []).append(row)
  return runs


def _run(key: Key, run_flags: Sequence[str], root: str,
         keep_non_finite: bool) -> tuple[list[dict], str]:
  """Makes one run: its metrics rows and its status ('' when it finished)."""
  name = run_name(key)
  log = os.path.join(root, f'{name}.log')
  with open(log, 'w') as f:
    done = subprocess.run(command(key, run_flags, root), cwd=_REPO, stdout=f,
                          stderr=subprocess.STDOUT)
  status = ''
  if done.returncode:
    with open(log) as f:
      non_finite = _NON_FINITE.search(f.read())
    if not (keep_non_finite and non_finite):
      raise RuntimeError(f'Run {name} failed (exit {done.returncode}); see '
                         f'{log}.')
    status = f'non-finite at round {non_finite.group(1)}'
  return run_directory.read_metrics(
      run_directory.output_paths(root, name)['metrics_csv']), status


def run_missing(runs: Mapping[Key, Sequence[str]], root: str, store: str,
                fields: Sequence[str], jobs: int,
                keep_non_finite: bool = False,
                prepare: Optional[Callable[[str], None]] = None) -> None:
  """Makes the runs (key -> `binaries.train` flags, in the order given) that
  the store lacks, --jobs at a time, and appends each one's curves.

  `fields`: the store's columns (setting, variant, seed, commit and those of
  `curves` it keeps). `keep_non_finite`: a run stopped by a non-finite
  model is stored, with a `status` field saying so, instead of failing.
  `prepare(root)`: called once before the first run (e.g. to write shared
  inputs).
  """
  stored = read_store(store)
  missing = [key for key in runs if key not in stored]
  print(f'{len(missing)} runs to make ({len(runs) - len(missing)} stored).',
        flush=True)
  os.makedirs(root, exist_ok=True)
  if prepare is not None:
    prepare(root)
  commit = binaries.git_commit()
  new_file = not os.path.exists(store)
  os.makedirs(os.path.dirname(os.path.abspath(store)), exist_ok=True)
  with concurrent.futures.ThreadPoolExecutor(jobs) as pool, \
      open(store, 'a', newline='') as f:
    writer = csv.DictWriter(f, fields, extrasaction='ignore')
    if new_file:
      writer.writeheader()
    futures = {pool.submit(_run, key, runs[key], root, keep_non_finite): key
               for key in missing}
    for future in concurrent.futures.as_completed(futures):
      setting, variant, seed = futures[future]
      try:
        rows, status = future.result()
      except RuntimeError as e:  # The others go on; a rerun retries it.
        print(e, flush=True)
        continue
      for point in curves(rows):
        writer.writerow(dict(point, setting=setting, variant=variant,
                             seed=seed, commit=commit, status=status))
      f.flush()
      print(f'stored {setting} {variant} seed {seed}'
            + (f' ({status})' if status else ''), flush=True)


# Which accuracy: of the global model, or the mean of the clients' own.
_ACCURACY = {'global': ('test_accuracy', 'validation_accuracy'),
             'clients': ('clients_accuracy', 'clients_validation_accuracy')}


def _curve(rows, key):
  return {int(r['round']): float(r[key]) for r in rows}


def selected(rows, max_mb=None, model='global') -> float:
  """The selected test accuracy of `model`, over the rounds within `max_mb`."""
  test, validation = _ACCURACY[model]
  rows = [r for r in rows if max_mb is None or float(r['mb']) <= max_mb]
  value = experiment.selected_accuracy(_curve(rows, test),
                                       _curve(rows, validation))
  if value is None:  # Only round 0 fits the budget.
    return _curve(rows, test)[0]
  return value


def final(rows, model='global') -> float:
  last = max(rows, key=lambda r: int(r['round']))
  return float(last[_ACCURACY[model][0]])


def interval(differences) -> tuple[float, float, float]:
  """Mean and 95% t-interval of paired differences."""
  d = np.asarray(differences, float)
  half = (stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
          if len(d) > 1 else np.inf)
  return d.mean(), d.mean() - half, d.mean() + half


def points(x) -> str:
  """A difference of accuracies in accuracy points, signed."""
  return f'{100 * x:+.1f}'
