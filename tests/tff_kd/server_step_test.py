"""The server step in the program gives the worker's numbers, for each of the
five algorithms that learn at the server; a bad placement is an error."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tiny
from tff_kd import algorithms
from tff_kd import process as process_lib
from tff_kd import server_distillation
from tff_kd import server_step
from tff_kd import stateful_clients

IDS = ['a', 'b', 'c']
OWNERS = {c: 'model' for c in IDS}


def _public(rows=6):
  return np.random.default_rng(1).normal(
      size=(rows, tiny.NUM_FEATURES)).astype(np.float32)


def _build(name, where):
  sgd = tiny.sgd(0.2)
  config = server_distillation.DistillationConfig(steps=5, batch_size=2)
  attention = {'model': tiny.attention_model_fn}
  x, y = tiny.client_arrays([8], seed=9)[0]
  return {
      'feddf': lambda: algorithms.build_feddf(
          collections.OrderedDict(linear=tiny.model_fn,
                                  mlp=tiny.mlp_model_fn),
          sgd, distillation_inputs=_public(), validation=(x, y),
          distill_steps=5, distill_batch_size=2, eval_every=1,
          client_prototypes={'a': 'linear', 'b': 'mlp', 'c': 'mlp'},
          server_step=where),
      'fedaux': lambda: algorithms.build_fedaux(
          attention, sgd, distillation_inputs=_public(),
          negative_inputs=_public(3) + 1.0, server_step=where),
      'fedgen': lambda: algorithms.build_fedgen(
          tiny.attention_model_fn, sgd, num_classes=tiny.NUM_CLASSES,
          clients_per_round=3, noise_dim=2, hidden_dim=4, generator_steps=3,
          generator_batch_size=2, server_step=where),
      'dsfl': lambda: algorithms.build_dsfl(
          {'model': tiny.model_fn}, sgd, client_prototypes=OWNERS,
          public_inputs=_public(), subset_size=4, distill_batch_size=2,
          server_distillation=config, server_step=where),
      'fedad': lambda: algorithms.build_fedad(
          attention, sgd, client_prototypes=OWNERS, public_inputs=_public(),
          server_distillation=config, server_step=where),
  }[name]()


def _inputs(process):
  arrays = tiny.client_arrays([9, 12, 7], seed=3)
  return [process.client_input(c, d) for c, d in
          zip(IDS, tiny.datasets(arrays, batch_size=4))]


def _flat(structure):
  return [np.asarray(v) for v in tf.nest.flatten(structure)]


class ServerStepTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      (n, n) for n in ('feddf', 'fedaux', 'fedgen', 'dsfl', 'fedad'))
  def test_program_step_gives_the_worker_numbers(self, name):
    runs = {}
    for where in server_step.PLACEMENTS:
      process = _build(name, where)
      expected_type = (
          stateful_clients.StatefulClientsProcess
          if name in ('dsfl', 'fedad') else
          process_lib.ProgramStepProcess if where == 'program' else
          process_lib.GlobalModelsProcess)
      self.assertIsInstance(process, expected_type)
      state = process.initialize()
      metrics = []
      for _ in range(2):
        output = process.next(state, _inputs(process))
        state = output.state
        metrics.append(output.metrics)
      runs[where] = (state, metrics)
    (worker_state, worker_metrics), (program_state, program_metrics) = (
        runs['worker'], runs['program'])
    # The same structures: a checkpoint of one resumes in the other.
    tf.nest.assert_same_structure(
        tf.nest.map_structure(np.asarray, worker_metrics),
        tf.nest.map_structure(np.asarray, program_metrics))
    self.assertEqual(list(worker_metrics[-1]), list(program_metrics[-1]))
    if name in ('dsfl', 'fedad'):
      worker_state, program_state = (
          (s['server'], [s['clients'][c] for c in IDS])
          for s in (worker_state, program_state))
    worker, program = _flat(worker_state), _flat(program_state)
    self.assertLen(program, len(worker))
    for a, b in zip(worker, program):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(_flat(worker_metrics), _flat(program_metrics)):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)
    # The step ran: the server's model moved in the program too.
    if name in ('feddf', 'fedaux'):
      self.assertGreater(program_metrics[-1]['finalizer'][
          'linear' if name == 'feddf' else 'model']['steps'], 0)
    if name in ('dsfl', 'fedad'):
      server = program_metrics[-1]['server']
      self.assertGreater((server['server_distillation'] if name == 'dsfl'
                          else server)['steps'], 0)

  def test_bad_placement_names_the_setting(self):
    with self.assertRaisesRegex(ValueError, "server_step must be one of "
                                r"\('worker', 'program'\); got 'gpu'"):
      _build('fedad', 'gpu')


if __name__ == '__main__':
  tf.test.main()
