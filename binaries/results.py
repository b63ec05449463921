r"""Runs `compare` over tasks and label skews and writes one results page.

  python -m binaries.results --tasks=digits,mnist1d --alphas=0.05,0.1,0.5,iid \
    --seeds=0,1,2 --rounds=30 --root_output_dir=DIR --page=docs/RESULTS.md

For each task and each value of --alphas (a Dirichlet concentration, or `iid`)
this runs `binaries.compare` (`compare.run_comparison`, the other flags as
given) with every registered algorithm (or --algorithms) into
DIR/{task}_{alpha}/, then writes --page: the commit it ran at, the command
(every flag not at its default, and --algorithms), an overview of the final
test accuracy of every algorithm in every setting, and per setting the
summary table and the two plots (copied next to --page). An `iid` setting
keeps --alpha (unused by the IID split). Resumable: --resume continues every
run and reads finished ones back.

Everything is checked before the first setting trains: the flags (--task,
--partition and --split_file, which each setting sets, are refused), --page
and its plots' directory, --root_output_dir, and every setting's task and
client split for every seed.
"""

import dataclasses
import os
import re
import shutil
import tempfile

from absl import app
from absl import flags

import binaries
from binaries import common
from binaries import compare
from binaries import registry
import tasks

TASKS = flags.DEFINE_list(
    'tasks', ['digits', 'mnist1d'], 'Tasks to run, distinct, split over '
    'clients by --alphas: ' + ', '.join(tasks.OUR_TASKS) + ', or npz:PATH '
    '(without client_ids).'
)
ALPHAS = flags.DEFINE_list(
    'alphas', ['0.05', '0.1', '0.5', 'iid'],
    'Dirichlet label-skew concentrations in [0.001, 1000] (--alpha\'s '
    'range), distinct; `iid` for an IID split.'
)
PAGE = flags.DEFINE_string(
    'page', 'docs/RESULTS.md', 'The results page (plots go next to it).'
)

# A concentration as written: ASCII digits, at most one point, an optional
# exponent. It names its setting's directory (DIR/{task}_alpha{value}), so
# what float() would also take (`1_0`, other scripts' digits, `nan`) is not
# one.
_ALPHA = re.compile(r'(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?')
# --alpha's range (binaries/common.py): below it numpy's Dirichlet sampler
# crawls, above it the split is IID anyway.
_ALPHA_RANGE = (1e-3, 1e3)
# The shared flags that each setting sets from --tasks and --alphas: given
# as well, they would be ignored (or, --split_file, make every setting the
# same split).
_PER_SETTING_FLAGS = {
    'task': 'each setting runs one of --tasks',
    'partition': 'each setting splits by one of --alphas (a Dirichlet label '
                 'skew, or iid)',
    'split_file': 'each setting splits by one of --alphas (a Dirichlet '
                  'label skew, or iid)',
}


def _alpha(value: str):
  """One of --alphas as its setting uses it: 'iid' or the concentration."""
  if value == 'iid':
    return value
  if not _ALPHA.fullmatch(value):
    raise flags.ValidationError(
        f'--alphas: {value!r} is neither a number nor iid.')
  alpha = float(value)
  low, high = _ALPHA_RANGE
  if not low <= alpha <= high:
    raise flags.ValidationError(
        f'--alphas: {value} is outside [{low:g}, {high:g}] (--alpha\'s '
        'range).')
  return alpha


def _check_alphas(values) -> bool:
  if not values:
    raise flags.ValidationError('--alphas is empty: give at least one '
                                'concentration or iid.')
  seen = {}
  for value in values:
    alpha = _alpha(value)
    if alpha in seen:  # 0.5 and .5 would run the same setting twice.
      raise flags.ValidationError(
          f'--alphas lists one setting twice: {seen[alpha]!r} and {value!r}.')
    seen[alpha] = value
  return True


def _check_tasks(names) -> bool:
  if not names:
    raise flags.ValidationError('--tasks is empty: give at least one task.')
  for name in names:
    resolved = tasks.TASK_ALIASES.get(name, name)
    if resolved.startswith(tasks.NPZ_PREFIX):
      path = resolved[len(tasks.NPZ_PREFIX):]
      if not os.path.isfile(path):
        raise flags.ValidationError(f'--tasks: {name}: no file at {path!r}.')
    elif resolved not in tasks.TASK_NAMES:
      raise flags.ValidationError(
          f'--tasks: {name!r} is not a task; choose from '
          f'{", ".join(tasks.TASK_NAMES)}, or npz:PATH.')
    if tasks.has_natural_clients(resolved):
      raise flags.ValidationError(
          f'--tasks: {name} keeps its own clients, so --alphas cannot split '
          'it: give tasks we split over clients, and compare the algorithms '
          f'on {name} with binaries.compare --task={name}.')
  resolved = [tasks.TASK_ALIASES.get(n, n) for n in names]
  if len(set(resolved)) != len(resolved):
    raise flags.ValidationError(
        f'--tasks lists a task twice: {",".join(names)}.')
  return True


def _check_page(path) -> bool:
  if not path or path.endswith(os.sep):
    raise flags.ValidationError(f'--page={path!r} is not a file name.')
  return True


flags.register_validator('tasks', _check_tasks)
flags.register_validator('alphas', _check_alphas)
flags.register_validator('page', _check_page)


def _assets(page: str) -> str:
  """The directory of the page's plots: beside it, named after it."""
  return os.path.join(
      os.path.dirname(os.path.abspath(page)),
      os.path.splitext(os.path.basename(page))[0].lower())


def _check_page_writable(page: str) -> None:
  """--page and its plots' directory can be written (made if missing).

  Checked before the first setting trains: the page is written after the
  last.
  """
  assets = _assets(page)
  if os.path.isdir(page):
    raise flags.ValidationError(f'--page={page!r} is a directory; give the '
                                'file to write (e.g. DIR/RESULTS.md).')
  if assets == os.path.abspath(page):
    raise flags.ValidationError(
        f'--page={page!r} has no extension: its plots\' directory '
        '(named after it, beside it) would be the page itself; add one '
        '(e.g. .md).')
  try:
    os.makedirs(assets, exist_ok=True)
    for directory in (os.path.dirname(assets), assets):
      with tempfile.TemporaryFile(dir=directory):
        pass
  except OSError as e:
    raise flags.ValidationError(
        f'--page={page!r}: its directory or its plots\' directory {assets!r} '
        f'cannot be written: {e.strerror or e}.') from None
  if os.path.exists(page) and not (os.path.isfile(page)
                                   and os.access(page, os.W_OK)):
    raise flags.ValidationError(f'--page={page!r} exists and is not a '
                                'writable file.')


def _check_split(settings: common.Settings, alpha: str) -> None:
  """The setting's task and client split can be built (`common.create_task`).

  A task's data missing, or a split that cannot be drawn (a small alpha with
  many clients), fails here, before any setting trains.
  """
  try:
    common.create_task(settings)
  except flags.ValidationError as e:
    raise flags.ValidationError(
        f'--tasks={settings.task} with --alphas={alpha} (seed '
        f'{settings.seed}): {e}') from None


def _command(page: str, algorithms: list[str]) -> str:
  """The invocation: every flag of the binaries not at its default, and the
  algorithms run."""
  by_module = flags.FLAGS.flags_by_module_dict()
  per_setting = {'task', 'partition', 'alpha', 'seed', 'root_output_dir',
                 'page', 'algorithms'}
  # How absl keys this module's flags (the script path when run as __main__).
  this_module = flags.FLAGS.find_module_defining_flag('tasks')
  args = sorted(
      [flag.serialize()
       for module in (common.__name__, compare.__name__, this_module)
       for flag in by_module.get(module, [])
       if not flag.using_default_value and flag.name not in per_setting]
      + [f'--algorithms={",".join(algorithms)}'])
  return ' '.join(['python -m binaries.results'] + args
                  + ['--root_output_dir=DIR', f'--page={page}'])


def _overview(summaries: dict[str, compare.Summary]) -> str:
  """Final test accuracy (mean +- std over seeds): algorithms x settings."""
  settings = list(summaries)
  cells, rows = {}, []
  for setting, summary in summaries.items():
    for row in summary.rows:
      name = row['algorithm'] + (compare.LABELLED_MARK if int(
          row['labelled_server_data']) else '')
      if name not in rows:
        rows.append(name)
      cells[name, setting] = (
          f'{float(row["final_accuracy_mean"]):.3f} +- '
          f'{float(row["final_accuracy_std"]):.3f}')
  lines = ['| algorithm | ' + ' | '.join(settings) + ' |',
           '|---' * (len(settings) + 1) + '|']
  lines += ['| ' + ' | '.join([name] + [cells.get((name, s), '')
                                         for s in settings]) + ' |'
            for name in rows]
  if any(name.endswith(compare.LABELLED_MARK) for name in rows):
    lines += ['', compare.LABELLED_NOTE]
  return '\n'.join(lines) + '\n'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  common.quiet_logging()
  for name, why in _PER_SETTING_FLAGS.items():
    if flags.FLAGS[name].present:
      raise flags.ValidationError(
          f'--{name}={flags.FLAGS[name].value} is not a flag of '
          f'binaries.results: {why}.')
  base = compare.Config.from_flags()
  if flags.FLAGS['algorithms'].using_default_value:
    base = dataclasses.replace(base, algorithms=tuple(registry.ALGORITHMS))
  base = dataclasses.replace(base, runtime=dict(
      tasks=TASKS.value, alphas=ALPHAS.value, page=PAGE.value))
  common.check_algorithm_flags(
      [registry.get(name) for name in base.algorithms])
  root = base.settings.root_output_dir
  common.check_output_dir(root)
  _check_page_writable(PAGE.value)
  out_dir = os.path.dirname(os.path.abspath(PAGE.value))
  assets = os.path.basename(_assets(PAGE.value))
  setups = {}  # Setting name -> its settings.
  for task in map(tasks.canonical_task_name, TASKS.value):
    for alpha in ALPHAS.value:
      iid = _alpha(alpha) == 'iid'
      setting = (f'{common.task_label(task)}_'
                 f'{"iid" if iid else "alpha" + alpha}')
      setups[setting] = dataclasses.replace(
          base.settings, task=task, partition='iid' if iid else 'dirichlet',
          alpha=base.settings.alpha if iid else _alpha(alpha),
          root_output_dir=os.path.join(root, setting))
      # Every split of every seed, before the first setting trains.
      for seed in base.seeds:
        _check_split(dataclasses.replace(setups[setting], seed=seed), alpha)
  sections, summaries = [], {}
  for setting, settings in setups.items():
    summary = compare.run_comparison(
        dataclasses.replace(base, settings=settings))
    summaries[setting] = summary
    for png in ('accuracy', 'communication'):
      shutil.copy(os.path.join(settings.root_output_dir, f'{png}.png'),
                  os.path.join(out_dir, assets, f'{setting}_{png}.png'))
    sections.append(
        f'## {setting}\n\n{summary.markdown}\n'
        f'![accuracy]({assets}/{setting}_accuracy.png)'
        f' ![communication]({assets}/{setting}_communication.png)\n'
    )
  with open(PAGE.value, 'w') as f:
    f.write(
        '# Results: every algorithm, every setting\n\n'
        f'Generated at commit {binaries.git_commit()} by\n\n'
        f'```\n{_command(PAGE.value, list(base.algorithms))}\n```\n\n'
        'Other flags at their defaults (see README). Final test accuracy, '
        'mean +- std over seeds (`algorithm[clients]`: the mean over all '
        'client models, for algorithms whose clients keep their own):\n\n'
        + _overview(summaries) +
        '\nEach setting\'s table: final and selected test accuracy (the '
        'round with the best accuracy on the labelled validation split, '
        'reported on test; mean +- std over seeds), accuracy at fixed '
        'rounds, rounds to the target '
        'accuracy, MB communicated and training seconds (these depend on '
        'what else ran on the machine: speed is measured in '
        'docs/PERFORMANCE.md).\n\n'
        + '\n'.join(sections)
    )
  print(f'Wrote {PAGE.value}')


if __name__ == '__main__':
  common.run(main)
