r"""Trains one algorithm on one task: checkpoints, metrics CSV, TensorBoard.

  python -m binaries.train --task=digits --algorithm=fedavg \
    --partition=dirichlet --alpha=0.1 --num_clients=20 --clients_per_round=10 \
    --local_epochs=1 --batch_size=32 --rounds=50 --seed=0 \
    --root_output_dir=/tmp/tff_kd --experiment_name=fedavg_digits [--resume]

Outputs under --root_output_dir (see tff_kd.experiment): checkpoints/NAME,
results/NAME/experiment.metrics.csv and hparams.json, logdir/NAME.
"""

from absl import app  # For app.UsageError.
from absl import flags

from binaries import common
from binaries import registry
from tff_kd import experiment

ALGORITHM = flags.DEFINE_enum(
    'algorithm', 'fedavg', sorted(registry.ALGORITHMS), 'Algorithm to run.'
)
EXPERIMENT_NAME = flags.DEFINE_string(
    'experiment_name', None,
    'Name of the run under --root_output_dir; default '
    '{task}_{algorithm}_{partition}_seed{seed}.'
)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  common.quiet_logging()
  algorithm = registry.get(ALGORITHM.value)
  common.check_algorithm_flags([algorithm])
  common.check_output_dir()
  name = EXPERIMENT_NAME.value or (
      f'{common.TASK.value}_{algorithm.name}_{common.PARTITION.value}'
      f'_seed{common.SEED.value}'
  )
  task = common.create_task()
  with common.tff_runtime():
    process = common.build_process(task, algorithm)
    experiment.run_experiment(
        process,
        task,
        total_rounds=common.ROUNDS.value,
        clients_per_round=common.CLIENTS_PER_ROUND.value,
        root_output_dir=common.ROOT_OUTPUT_DIR.value,
        experiment_name=name,
        seed=common.SEED.value,
        rounds_per_eval=common.ROUNDS_PER_EVAL.value,
        rounds_per_checkpoint=common.ROUNDS_PER_CHECKPOINT.value,
        resume=common.RESUME.value,
        hparams=common.run_hparams(algorithm),
        client_dropout=common.CLIENT_DROPOUT.value,
    )


if __name__ == '__main__':
  common.run(main)
