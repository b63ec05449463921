"""FedGen as a LearningProcess: alpha=beta=0 equals FedAvg, head split errors,
generator state (parameters and running statistics), smoothed label counts,
checkpoint round trip."""

import asyncio
import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tasks
import tiny
from tff_kd import algorithms
from tff_kd import local_training
from tff_kd.algorithms import fedgen

_SPEC = tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=16)


def _digits_task():
  return tasks.create_task('digits', train_client_spec=_SPEC, model='mlp',
                           num_clients=6, alpha=0.5, seed=0)


def _clients(task, ids):
  data = task.datasets
  return [data.train_preprocess_fn(
      data.train_data.create_tf_dataset_for_client(str(i))) for i in ids]


class FedGenTest(tf.test.TestCase):

  def test_zero_alpha_beta_equals_fedavg_exactly(self):
    task = _digits_task()
    clients = _clients(task, [0, 1, 2])
    sgd = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
    fedgen = algorithms.build_fedgen(
        task.model_fn, sgd, num_classes=10, clients_per_round=3,
        alpha=0.0, beta=0.0, generator_steps=2,
    )
    fedavg = algorithms.build_fedavg(task.model_fn, sgd)
    a, b = fedavg.initialize(), fedgen.initialize()
    for _ in range(2):
      a, b = fedavg.next(a, clients).state, fedgen.next(b, clients).state
    for x, y in zip(fedavg.get_model_weights(a).trainable,
                    fedgen.get_model_weights(b).trainable):
      self.assertAllEqual(x, y)

  def test_round_trains_the_generator_and_tracks_labels(self):
    task = _digits_task()
    clients = _clients(task, [0, 3])
    process = algorithms.build_fedgen(
        task.model_fn, tff.learning.optimizers.build_sgdm(learning_rate=0.1),
        num_classes=10, clients_per_round=4, generator_steps=20,
    )
    state = process.initialize()
    output = process.next(state, clients)
    generator_metrics = output.metrics['finalizer']
    self.assertEqual(generator_metrics['clients_collected'], 2)
    self.assertLess(generator_metrics['loss_last_step'],
                    generator_metrics['loss_first_step'])
    self.assertEqual(output.state.finalizer['round'], 1)
    self.assertEqual(output.state.client_work, 1)
    old, new = (state.global_model_weights['generator'],
                output.state.global_model_weights['generator'])
    self.assertNotAllClose(new['params']['w1'], old['params']['w1'])
    # The server trained G in training mode: its running statistics moved.
    self.assertNotAllClose(new['running_mean'], old['running_mean'])
    self.assertNotAllClose(new['running_var'], old['running_var'])
    # The state survives a checkpoint.
    manager = tff.program.FileProgramStateManager(self.get_temp_dir())
    loop = asyncio.new_event_loop()
    loop.run_until_complete(manager.save(output.state, 1))
    loaded, _ = loop.run_until_complete(manager.load_latest(state))
    loop.close()
    for x, y in zip(tf.nest.flatten(output.state), tf.nest.flatten(loaded)):
      self.assertAllEqual(x, y)

  def test_label_distribution_is_broadcast_from_the_trained_labels(self):
    task = _digits_task()
    clients = _clients(task, [0, 3])
    process = algorithms.build_fedgen(
        task.model_fn, tff.learning.optimizers.build_sgdm(learning_rate=0.1),
        num_classes=10, clients_per_round=4, generator_steps=2,
        noise='normal', client_batchnorm='batch', client_draws='shared',
        sampled_labels='label_distribution', smooth_counts=False)
    state = process.initialize()
    self.assertAllClose(state.global_model_weights['label_probs'],
                        np.full(10, 0.1))
    output = process.next(state, clients)
    # One epoch each: the labels of clients 0 and 3, normalized.
    labels = np.concatenate([task.arrays.y_train[task.client_indices[k]]
                             for k in (0, 3)])
    self.assertAllClose(output.state.global_model_weights['label_probs'],
                        np.bincount(labels, minlength=10) / len(labels))
    self.assertEqual(output.metrics['finalizer']['clients_collected'], 2)

  def test_label_counts_are_smoothed_counts_of_the_trained_labels(self):
    task = _digits_task()
    model = task.model_fn()
    update = local_training.build_client_update(
        model, tiny.sgd(), observe_fn=fedgen._count_labels)
    weights = tff.learning.models.ModelWeights.from_model(model)
    *_, counts = update(
        (weights.trainable, weights.non_trainable),
        task.client_dataset('3', 0), collections.OrderedDict(learning_rate=0.1),
        observed=tf.ones([10]))
    labels = task.arrays.y_train[task.client_indices[3]]
    self.assertAllEqual(counts, 1 + np.bincount(labels, minlength=10))

  def test_model_without_a_head_is_a_clear_error(self):
    with self.assertRaisesRegex(ValueError, "Dense layer with bias named 'head'"):
      algorithms.build_fedgen(
          tiny.model_fn, tiny.sgd(), num_classes=3, clients_per_round=2
      )
    emnist = tff.simulation.baselines.emnist.create_character_recognition_task(
        _SPEC, model_id='cnn_dropout', only_digits=True,
        use_synthetic_data=True,
    )
    with self.assertRaisesRegex(ValueError, 'feature extractor and head'):
      algorithms.build_fedgen(
          emnist.model_fn, tiny.sgd(), num_classes=10, clients_per_round=2
      )

  def test_rejects_bad_arguments(self):
    task = _digits_task()
    with self.assertRaisesRegex(ValueError, 'clients_per_round must be >= 1'):
      algorithms.build_fedgen(task.model_fn, tiny.sgd(), num_classes=10,
                              clients_per_round=0)
    with self.assertRaisesRegex(ValueError, 'num_classes=7 but the head has 10'):
      algorithms.build_fedgen(task.model_fn, tiny.sgd(), num_classes=7,
                              clients_per_round=2)
    with self.assertRaisesRegex(ValueError,
                                'generator_batch_size must be >= 2'):
      algorithms.build_fedgen(task.model_fn, tiny.sgd(), num_classes=10,
                              clients_per_round=2, generator_batch_size=1)


if __name__ == '__main__':
  tf.test.main()
