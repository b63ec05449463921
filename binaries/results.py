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
"""

import dataclasses
import os
import shutil
import subprocess

from absl import app
from absl import flags

from binaries import common
from binaries import compare
from binaries import registry

TASKS = flags.DEFINE_list('tasks', ['digits', 'mnist1d'], 'Tasks to run.')
ALPHAS = flags.DEFINE_list(
    'alphas', ['0.05', '0.1', '0.5', 'iid'],
    'Dirichlet label-skew concentrations; `iid` for an IID split.'
)
PAGE = flags.DEFINE_string(
    'page', 'docs/RESULTS.md', 'The results page (plots go next to it).'
)

flags.register_validator(
    'alphas',
    lambda values: bool(values) and all(
        v == 'iid' or v.replace('.', '', 1).isdigit() and float(v) > 0
        for v in values),
    '--alphas must be positive numbers or iid.',
)


def _commit() -> str:
  try:
    return subprocess.run(
        ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
        text=True, check=True, cwd=os.path.dirname(__file__),
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


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
  base = compare.Config.from_flags()
  if flags.FLAGS['algorithms'].using_default_value:
    base = dataclasses.replace(base, algorithms=tuple(registry.ALGORITHMS))
  base = dataclasses.replace(base, runtime=dict(
      tasks=TASKS.value, alphas=ALPHAS.value, page=PAGE.value))
  common.check_algorithm_flags(
      [registry.get(name) for name in base.algorithms])
  root = base.settings.root_output_dir
  out_dir = os.path.dirname(os.path.abspath(PAGE.value))
  assets = os.path.splitext(os.path.basename(PAGE.value))[0].lower()
  os.makedirs(os.path.join(out_dir, assets), exist_ok=True)
  sections, summaries = [], {}
  for task in TASKS.value:
    for alpha in ALPHAS.value:
      setting = f'{task}_{"iid" if alpha == "iid" else "alpha" + alpha}'
      settings = dataclasses.replace(
          base.settings, task=task,
          partition='iid' if alpha == 'iid' else 'dirichlet',
          alpha=base.settings.alpha if alpha == 'iid' else float(alpha),
          root_output_dir=os.path.join(root, setting))
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
        f'Generated at commit {_commit()} by\n\n'
        f'```\n{_command(PAGE.value, list(base.algorithms))}\n```\n\n'
        'Other flags at their defaults (see README). Final test accuracy, '
        'mean +- std over seeds (`algorithm[clients]`: the mean over all '
        'client models, for algorithms whose clients keep their own):\n\n'
        + _overview(summaries) +
        '\nEach setting\'s table: final and best test accuracy (mean +- std '
        'over seeds), accuracy at fixed rounds, rounds to the target '
        'accuracy, MB communicated and training seconds (these depend on '
        'what else ran on the machine: speed is measured in '
        'docs/PERFORMANCE.md).\n\n'
        + '\n'.join(sections)
    )
  print(f'Wrote {PAGE.value}')


if __name__ == '__main__':
  common.run(main)
