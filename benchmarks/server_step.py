r"""Server distillation on the TFF worker against the program's process.

  python -m benchmarks.server_step --output=docs/SERVER_STEP.md

Times FedDF's server distillation loop (`tff_kd.server_distillation`, the
step `--server_step` places) with the same model, inputs, teacher and seed in
the two places it can run: a `tff.tensorflow.computation` on the TFF worker
(`--server_step=worker`) and a `tf.function` of this process
(`--server_step=program`), repeats interleaved, for the mnist1d CNN and for
ResNet-8 on 32x32x3 inputs (FedDF's paper's model; random inputs and
teacher). It also times what the program step adds to a round besides the
loop: handing the round's state and update to the program and back (a TFF
identity computation over the same values). Writes a page with the load
average at the start and end; run it on an idle machine.
"""

import os
import statistics
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import binaries
import tasks
from tasks import models
from tff_kd import runtime
from tff_kd import server_distillation

_MODELS = {  # name -> (model, input shape)
    'cnn_mnist1d': ('cnn', (40,)),
    'resnet8_32x32x3': ('resnet8', (32, 32, 3)),
}


def _define_flags():
  flags.DEFINE_string('output', 'docs/SERVER_STEP.md', 'The page written.')
  flags.DEFINE_integer('repeats', 3, 'Interleaved repeats per place.')
  flags.DEFINE_integer('steps', 200, 'Distillation steps per call.')
  flags.DEFINE_integer('inputs', 5000, 'Distillation inputs.')
  flags.DEFINE_integer('batch_size', 128, 'Distillation batch size.')


def _measure(name, input_shape, values):
  """Median and spread of seconds per call, worker and program."""
  model_fn = tasks.model_fn_from_keras(
      lambda: models.build_keras_model(name, input_shape=input_shape,
                                       num_classes=10, seed=0),
      input_spec=(tf.TensorSpec((None,) + input_shape, tf.float32),
                  tf.TensorSpec((None,), tf.int32)),
      num_classes=10)
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(values.inputs,) + input_shape).astype(np.float32)
  teacher = rng.normal(size=(values.inputs, 10)).astype(np.float32)
  config = server_distillation.DistillationConfig(
      steps=values.steps, batch_size=values.batch_size, sampling='shuffled')
  start = tf.nest.map_structure(
      lambda v: v.numpy(),
      tff.learning.models.ModelWeights.from_model(model_fn()))
  weights_type = tff.types.tensorflow_to_type(tf.nest.map_structure(
      lambda a: tf.TensorSpec(a.shape, a.dtype), start))
  seed, steps = np.array([0, 7], np.int32), np.int32(values.steps)

  logits_type = tff.TensorType(np.float32, [values.inputs, 10])

  @tff.tensorflow.computation(weights_type, logits_type)
  def on_worker(weights, logits):
    distill = server_distillation.build_server_distillation(model_fn(), config)
    return distill(weights, x, logits, None, seed, steps)

  @tff.tensorflow.computation(weights_type, logits_type)
  def handed_over(weights, logits):  # The state and update, there and back.
    return weights, logits

  distill = server_distillation.build_server_distillation(model_fn(), config)
  in_program = tf.function(
      lambda w, t: distill(w, x, t, None, seed, steps))
  calls = {'worker': lambda: on_worker(start, teacher),
           'program': lambda: tf.nest.map_structure(
               np.asarray, in_program(start, teacher)),
           'hand-over': lambda: handed_over(start, teacher)}
  for call in calls.values():  # Traces and first runs.
    call()
  seconds = {place: [] for place in calls}
  for _ in range(values.repeats):
    for place, call in calls.items():
      began = time.perf_counter()
      call()
      seconds[place].append(time.perf_counter() - began)
  return seconds


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  values = flags.FLAGS
  load_start = os.getloadavg()
  rows = []
  with runtime.LocalRuntime():
    for label, (name, shape) in _MODELS.items():
      seconds = _measure(name, shape, values)
      examples = values.steps * values.batch_size
      worker, program = (statistics.median(seconds[p])
                         for p in ('worker', 'program'))
      rows.append(
          f'| {label} | {worker:.2f} [{min(seconds["worker"]):.2f}, '
          f'{max(seconds["worker"]):.2f}] | {program:.2f} '
          f'[{min(seconds["program"]):.2f}, {max(seconds["program"]):.2f}] | '
          f'{examples / worker:,.0f} | {examples / program:,.0f} | '
          f'{program / worker:.2f} | '
          f'{statistics.median(seconds["hand-over"]) * 1000:.0f} |')
  load_end = os.getloadavg()
  command = ' '.join(['python -m benchmarks.server_step'] + [
      values[name].serialize() for name in
      ('output', 'repeats', 'steps', 'inputs', 'batch_size')])
  lines = [
      '# Server distillation: TFF worker against the program\'s process', '',
      f'Generated at commit {binaries.git_commit()} by', '', '```',
      command, '```', '',
      f'Load average (1, 5, 15 min) at the start: '
      f'{" ".join(f"{x:.2f}" for x in load_start)}; at the end: '
      f'{" ".join(f"{x:.2f}" for x in load_end)}. '
      f'{tf.config.list_physical_devices("GPU") and "A GPU" or "No GPU"} '
      'was visible to the program.', '',
      f'FedDF\'s distillation loop, {values.steps} steps of batch '
      f'{values.batch_size} on {values.inputs:,} inputs (Adam, cosine, '
      'shuffled epochs), timed per call: seconds (median [min, max] of '
      f'{values.repeats} interleaved repeats), examples per second, the '
      'program\'s seconds over the worker\'s, and the milliseconds a round '
      'spends handing the weights and the fused logits to the program and '
      'back (a TFF identity computation over them).', '',
      '| model | worker s | program s | worker examples/s | program '
      'examples/s | program / worker | hand-over ms |',
      '|---|---|---|---|---|---|---|', *rows, '']
  with open(values.output, 'w') as f:
    f.write('\n'.join(lines))
  print(f'Wrote {values.output}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
