"""FedNTD: reduction to FedAvg at beta=0, effect of beta, argument checks.

The not-true distillation term itself is checked against numpy in
tests/tff_kd/losses_test.py.
"""

import tensorflow as tf

import tiny
from tff_kd import algorithms


class FedNTDTest(tf.test.TestCase):

  def test_beta_zero_equals_fedavg_exactly(self):
    data = tiny.datasets(tiny.client_arrays([10, 15], seed=5), batch_size=4)
    fedavg = algorithms.build_fedavg(tiny.model_fn, tiny.sgd())
    fedntd = algorithms.build_fedntd(tiny.model_fn, tiny.sgd(), beta=0.0)
    a_state, b_state = fedavg.initialize(), fedntd.initialize()
    for _ in range(2):
      a_state = fedavg.next(a_state, data).state
      b_state = fedntd.next(b_state, data).state
    for a, b in zip(
        fedavg.get_model_weights(a_state).trainable,
        fedntd.get_model_weights(b_state).trainable,
    ):
      self.assertAllEqual(a, b)

  def test_positive_beta_changes_the_update(self):
    data = tiny.datasets(tiny.client_arrays([10, 15], seed=5), batch_size=4)
    fedavg = algorithms.build_fedavg(tiny.model_fn, tiny.sgd())
    fedntd = algorithms.build_fedntd(tiny.model_fn, tiny.sgd(), beta=1.0)
    a = fedavg.next(fedavg.initialize(), data).state
    b = fedntd.next(fedntd.initialize(), data).state
    # The first local step has teacher == student, so the terms only differ
    # after it; with 3 batches per client the results must differ.
    self.assertNotAllClose(
        fedavg.get_model_weights(a).trainable[0],
        fedntd.get_model_weights(b).trainable[0],
    )

  def test_rejects_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, 'beta must be >= 0; got -1'):
      algorithms.build_fedntd(tiny.model_fn, tiny.sgd(), beta=-1.0)
    with self.assertRaisesRegex(ValueError, 'temperature must be > 0; got 0'):
      algorithms.build_fedntd(tiny.model_fn, tiny.sgd(), temperature=0.0)


if __name__ == '__main__':
  tf.test.main()
