"""FedSSD: class credibility vs numpy, kd_weight=0 == FedAvg, argument checks."""

import numpy as np
import tensorflow as tf

import tiny
from tff_kd import algorithms
from tff_kd.algorithms import fedssd


def _validation(seed=7, n=30):
  return tiny.client_arrays([n], seed=seed)[0]


class FedSSDTest(tf.test.TestCase):

  def test_class_accuracy_matches_numpy(self):
    logits = np.array([[2, 1, 0], [0, 3, 1], [1, 0, 0], [0, 0, 5]], np.float32)
    labels = np.array([0, 1, 1, 2])
    self.assertAllClose(
        fedssd.class_accuracy(logits, labels, 4), [1.0, 0.5, 1.0, 0.0]
    )

  def test_broadcast_credibility_is_the_global_models_class_accuracy(self):
    x_val, y_val = _validation()
    process = algorithms.build_fedssd(
        tiny.model_fn, tiny.sgd(), validation_x=x_val, validation_y=y_val,
        num_classes=tiny.NUM_CLASSES,
    )
    state = process.initialize()
    kernel, bias = process.get_model_weights(state).trainable
    predicted = np.argmax(x_val @ kernel + bias, axis=1)
    expected = [np.mean(predicted[y_val == c] == c)
                for c in range(tiny.NUM_CLASSES)]
    data = tiny.datasets(tiny.client_arrays([9, 6]), batch_size=3)
    metrics = process.next(state, data).metrics
    self.assertAllClose(
        metrics['distributor']['class_credibility'], expected, atol=1e-6
    )

  def test_kd_weight_zero_equals_fedavg_exactly(self):
    x_val, y_val = _validation()
    data = tiny.datasets(tiny.client_arrays([10, 15], seed=5), batch_size=4)
    fedavg = algorithms.build_fedavg(tiny.model_fn, tiny.sgd())
    ssd = algorithms.build_fedssd(
        tiny.model_fn, tiny.sgd(), validation_x=x_val, validation_y=y_val,
        num_classes=tiny.NUM_CLASSES, kd_weight=0.0,
    )
    a, b = fedavg.initialize(), ssd.initialize()
    for _ in range(2):
      a, b = fedavg.next(a, data).state, ssd.next(b, data).state
    for x, y in zip(fedavg.get_model_weights(a).trainable,
                    ssd.get_model_weights(b).trainable):
      self.assertAllEqual(x, y)

  def test_rejects_labels_out_of_range(self):
    x_val, _ = _validation()
    with self.assertRaisesRegex(ValueError, r'validation_y must lie in \[0, 3\)'):
      algorithms.build_fedssd(
          tiny.model_fn, tiny.sgd(), validation_x=x_val,
          validation_y=np.full(len(x_val), 5), num_classes=3,
      )


if __name__ == '__main__':
  tf.test.main()
