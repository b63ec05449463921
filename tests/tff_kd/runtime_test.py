"""Two TFF workers (mergeable context) give the numbers of one worker, for
FedAvg, FedDF and FD (stateful clients)."""

import collections

import numpy as np
import tensorflow as tf

import tiny
from tff_kd import algorithms
from tff_kd import runtime
from tff_kd import stateful_clients


def _two_rounds(process, client_data):
  state = process.initialize()
  for _ in range(2):
    output = process.next(state, client_data)
    state = output.state
  if isinstance(process, stateful_clients.StatefulClientsProcess):
    return tf.nest.flatten(state), output.metrics  # Every client's state.
  return process.get_model_weights(state).trainable, output.metrics


class TwoWorkersTest(tf.test.TestCase):

  def test_fedavg_feddf_and_fd_match_a_single_worker(self):
    datasets = tiny.datasets(tiny.client_arrays([7, 12, 4, 9], seed=6), 4)
    distill_x = np.random.default_rng(0).normal(
        size=(6, tiny.NUM_FEATURES)).astype(np.float32)
    cases = [
        (algorithms.build_fedavg(tiny.model_fn, tiny.sgd(0.2)), datasets),
        (algorithms.build_feddf(
            {'linear': tiny.model_fn}, tiny.sgd(0.2),
            distillation_inputs=distill_x, distill_steps=3,
            distill_batch_size=2),
         [collections.OrderedDict(linear=ds) for ds in datasets]),
        # Client states in and out as CLIENTS-placed values.
        (algorithms.build_fd(
            {'linear': tiny.model_fn}, tiny.sgd(0.2),
            client_prototypes={str(c): 'linear' for c in range(4)}),
         [(str(c), ds) for c, ds in enumerate(datasets)]),
    ]
    for process, client_data in cases:
      one = _two_rounds(process, client_data)  # The session's one worker.
      with runtime.LocalRuntime(num_workers=2) as two_workers:
        self.assertLen(two_workers.workers, 2)
        two = _two_rounds(process, client_data)
      for a, b in zip(one[0], two[0]):
        self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)
      train = 'client_work'
      self.assertEqual(one[1][train]['non_finite_clients'],
                       two[1][train]['non_finite_clients'])
    for worker in two_workers.workers:
      self.assertIsNotNone(worker.process.poll())  # Stopped on exit.


if __name__ == '__main__':
  tf.test.main()
