"""FedGKD: the model buffer and its teacher, resume, and gamma=0 == FedAvg."""

import asyncio

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import algorithms


def _trainable(process, state):
  return [np.asarray(w) for w in process.get_model_weights(state).trainable]


class FedGKDTest(tf.test.TestCase):

  def test_buffer_holds_the_last_aggregates_newest_first(self):
    data = tiny.datasets(tiny.client_arrays([8, 5], seed=1), batch_size=4)
    process = algorithms.build_fedgkd(
        tiny.model_fn, tiny.sgd(), buffer_size=3, gamma=0.5
    )
    state = process.initialize()
    seen = []
    for _ in range(3):
      seen.append(_trainable(process, state))
      state = process.next(state, data).state
    buffer = state.distributor
    # Rounds 1 and 2 buffered their aggregates; round 0's initial model is
    # never buffered (the official master buffers aggregates only).
    self.assertEqual(buffer['count'], 2)
    for layer in range(2):  # Kernel and bias.
      stacked = buffer['models'].trainable[layer]
      self.assertAllClose(stacked[0], seen[2][layer])
      self.assertAllClose(stacked[1], seen[1][layer])
      self.assertAllEqual(stacked[2], np.zeros_like(seen[0][layer]))

  def test_round_zero_does_not_distill(self):
    data = tiny.datasets(tiny.client_arrays([10, 15], seed=5), batch_size=4)
    fedavg = algorithms.build_fedavg(tiny.model_fn, tiny.sgd())
    fedgkd = algorithms.build_fedgkd(tiny.model_fn, tiny.sgd(), gamma=0.5)
    a = fedavg.next(fedavg.initialize(), data).state
    b = fedgkd.next(fedgkd.initialize(), data).state
    for x, y in zip(_trainable(fedavg, a), _trainable(fedgkd, b)):
      self.assertAllEqual(x, y)
    # From round 1 on the teacher term acts.
    a, b = fedavg.next(a, data).state, fedgkd.next(b, data).state
    self.assertNotAllClose(_trainable(fedavg, a)[0], _trainable(fedgkd, b)[0])

  def test_teacher_is_the_mean_of_the_buffer(self):
    weights_type = tff.learning.models.weights_type_from_model(tiny.model_fn())
    distributor = algorithms.fedgkd.build_teacher_buffer_distributor(
        weights_type, buffer_size=3
    )

    # A CLIENTS-placed dummy argument gives the broadcast its 2 clients.
    @tff.federated_computation(
        distributor.initialize.type_signature.result,
        tff.FederatedType(weights_type, tff.SERVER),
        tff.FederatedType(np.int32, tff.CLIENTS),
    )
    def step(state, weights, unused_clients):
      output = distributor.next(state, weights)
      return output.state, output.result

    state = distributor.initialize()
    models = []
    for k in range(4):
      kernel = np.full((tiny.NUM_FEATURES, tiny.NUM_CLASSES), k, np.float32)
      bias = np.full(tiny.NUM_CLASSES, 10 * k, np.float32)
      models.append(
          tff.learning.models.ModelWeights(trainable=(kernel, bias),
                                           non_trainable=())
      )
      state, broadcast = step(state, models[-1], [0, 0])
      teacher = broadcast['teacher']  # all_equal at CLIENTS: one value.
      # Round 0's model is the initial one: not buffered, no distillation.
      self.assertEqual(broadcast['extra'], float(k > 0))
      expected = np.mean(range(max(1, k - 2), k + 1)) if k else 0.0
      self.assertAllClose(teacher.trainable[0], np.full_like(kernel, expected))
      self.assertAllClose(teacher.trainable[1], np.full_like(bias, 10 * expected))
      self.assertAllClose(broadcast['model'].trainable[0], kernel)

  def test_buffer_survives_a_checkpoint(self):
    data = tiny.datasets(tiny.client_arrays([8, 5], seed=1), batch_size=4)
    process = algorithms.build_fedgkd(tiny.model_fn, tiny.sgd(), buffer_size=3)
    state = process.initialize()
    for _ in range(2):
      state = process.next(state, data).state
    manager = tff.program.FileProgramStateManager(self.get_temp_dir())
    loop = asyncio.new_event_loop()
    loop.run_until_complete(manager.save(state, 2))
    loaded, version = loop.run_until_complete(
        manager.load_latest(process.initialize())
    )
    loop.close()
    self.assertEqual(version, 2)
    self.assertEqual(loaded.distributor['count'], 1)  # Round 1's aggregate.
    for a, b in zip(tf.nest.flatten(state.distributor),
                    tf.nest.flatten(loaded.distributor)):
      self.assertAllEqual(a, b)
    # The next round from the loaded state equals the one from the original.
    for a, b in zip(
        _trainable(process, process.next(state, data).state),
        _trainable(process, process.next(loaded, data).state),
    ):
      self.assertAllEqual(a, b)

  def test_gamma_zero_equals_fedavg_exactly(self):
    data = tiny.datasets(tiny.client_arrays([10, 15], seed=5), batch_size=4)
    fedavg = algorithms.build_fedavg(tiny.model_fn, tiny.sgd())
    fedgkd = algorithms.build_fedgkd(tiny.model_fn, tiny.sgd(), gamma=0.0)
    a, b = fedavg.initialize(), fedgkd.initialize()
    for _ in range(2):
      a, b = fedavg.next(a, data).state, fedgkd.next(b, data).state
    for x, y in zip(_trainable(fedavg, a), _trainable(fedgkd, b)):
      self.assertAllEqual(x, y)

  def test_rejects_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'buffer_size must be >= 1; got 0'):
      algorithms.build_fedgkd(tiny.model_fn, tiny.sgd(), buffer_size=0)
    with self.assertRaisesRegex(ValueError, 'gamma must be >= 0; got -0.1'):
      algorithms.build_fedgkd(tiny.model_fn, tiny.sgd(), gamma=-0.1)


if __name__ == '__main__':
  tf.test.main()
