r"""Trains one algorithm on one task: checkpoints, metrics CSV, TensorBoard.

  python -m binaries.train --task=digits --algorithm=fedavg \
    --partition=dirichlet --alpha=0.1 --num_clients=20 --clients_per_round=10 \
    --local_epochs=1 --batch_size=32 --rounds=50 --seed=0 \
    --root_output_dir=/tmp/tff_kd --experiment_name=fedavg_digits [--resume]

Outputs under --root_output_dir (see tff_kd.experiment): checkpoints/NAME,
results/NAME/experiment.metrics.csv, hparams.json (every flag; see
`common.run_hparams`) and flags.txt (the flags given: `--flagfile=` replays
the run), logdir/NAME. `--helpshort` shows the flags most runs set,
`--helpfull` every flag.
"""

from absl import app  # For app.UsageError.
from absl import flags

from binaries import common
from binaries import registry
from tff_kd import experiment

ALGORITHM = flags.DEFINE_enum(
    'algorithm', 'fedavg', sorted(registry.ALGORITHMS), 'Algorithm to run.'
)
for _name in common.KEY_FLAGS:
  flags.declare_key_flag(_name)
EXPERIMENT_NAME = flags.DEFINE_string(
    'experiment_name', None,
    'Name of the run under --root_output_dir; default '
    '{task}_{algorithm}_{partition}_seed{seed} ({task}_{algorithm}_seed{seed} '
    'for a task with natural clients; npz:PATH is named npz_{file stem}).'
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  common.quiet_logging()
  algorithm = registry.get(ALGORITHM.value)
  common.check_algorithm_flags([algorithm])
  settings = common.Settings.from_flags()
  common.check_output_dir(settings.root_output_dir)
  name = EXPERIMENT_NAME.value or common.default_run_name(settings,
                                                         algorithm.name)
  task = common.create_task(settings)
  with common.tff_runtime(settings):
    process = common.build_process(settings, task, algorithm)
    experiment.run_experiment(
        process,
        task,
        total_rounds=settings.rounds,
        clients_per_round=settings.clients_per_round,
        root_output_dir=settings.root_output_dir,
        experiment_name=name,
        seed=settings.seed,
        rounds_per_eval=settings.rounds_per_eval,
        rounds_per_checkpoint=settings.rounds_per_checkpoint,
        resume=settings.resume,
        hparams=common.run_hparams(
            settings, algorithm, run_name=name, task=task,
            experiment_name=EXPERIMENT_NAME.value),
        client_dropout=settings.client_dropout,
        flagfile=common.flagfile(),
    )


if __name__ == '__main__':
  common.run(main)
