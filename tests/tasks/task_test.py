"""Tasks: splits, element spec, preprocessing, models, TFF baseline tasks."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tasks

_SPEC = tff.simulation.baselines.ClientSpec(num_epochs=2, batch_size=16)


class TaskTest(tf.test.TestCase, parameterized.TestCase):

  def test_is_a_baseline_task_with_disjoint_covering_splits(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC, seed=3)
    self.assertIsInstance(task, tff.simulation.baselines.BaselineTask)
    n_train = len(task.arrays.y_train)
    clients = np.concatenate(task.client_indices)
    self.assertLen(task.client_indices, 20)
    self.assertLen(task.validation[0], round(0.1 * n_train))
    self.assertLen(task.public_x, round(0.1 * n_train))
    self.assertLen(clients, n_train - 2 * round(0.1 * n_train))
    self.assertLen(np.unique(clients), len(clients))
    # The server's splits hold no client example: compare rows.
    client_rows = {task.arrays.x_train[i].tobytes() for i in clients}
    for x in list(task.public_x) + list(task.validation[0]):
      self.assertNotIn(x.tobytes(), client_rows)
    self.assertEqual(task.test[0].shape[0], 359)

  def test_client_datasets_hold_their_indices(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC, seed=0)
    data = task.datasets.train_data
    self.assertEqual(data.client_ids, [str(k) for k in range(20)])
    for k in (0, 7):
      ys = [int(e['y']) for e in data.create_tf_dataset_for_client(str(k))]
      self.assertAllEqual(ys, task.arrays.y_train[task.client_indices[k]])

  def test_preprocess_follows_the_client_spec(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC, seed=0)
    raw = task.datasets.train_data.create_tf_dataset_for_client('2')
    n = len(task.client_indices[2])
    batches = list(task.datasets.train_preprocess_fn(raw))
    self.assertEqual(sum(int(b['y'].shape[0]) for b in batches), 2 * n)
    self.assertEqual(batches[0]['x'].shape[1:], (8, 8, 1))
    self.assertLessEqual(max(int(b['y'].shape[0]) for b in batches), 16)
    again = list(task.datasets.train_preprocess_fn(raw))
    self.assertAllEqual(batches[0]['y'], again[0]['y'])  # Seeded shuffle.

  def test_same_seed_same_task_other_seed_other_split(self):
    a = tasks.create_task('digits', train_client_spec=_SPEC, seed=1)
    b = tasks.create_task('digits', train_client_spec=_SPEC, seed=1)
    c = tasks.create_task('digits', train_client_spec=_SPEC, seed=2)
    for x, y in zip(a.client_indices, b.client_indices):
      self.assertAllEqual(x, y)
    self.assertNotAllClose(a.public_x, c.public_x)

  @parameterized.parameters(('mnist1d', 'cnn', (40,)),
                            ('digits', 'resnet8', (8, 8, 1)))
  def test_model_fn_runs_a_forward_pass(self, name, model, shape):
    task = tasks.create_task(name, train_client_spec=_SPEC, model=model,
                             num_clients=5)
    batch = next(iter(task.datasets.train_preprocess_fn(
        task.datasets.train_data.create_tf_dataset_for_client('0'))))
    model = task.model_fn()  # Keep a reference: forward_pass is a method.
    output = model.forward_pass(batch, training=False)
    self.assertEqual(output.predictions.shape[1:], (10,))
    self.assertEqual(task.input_shape, shape)
    self.assertEqual(task.keras_model_fn('mlp').name, 'mlp')

  @parameterized.named_parameters(
      ('task', dict(name='imagenet'), "Unknown task 'imagenet'"),
      ('model', dict(model='vgg'), "Unknown model 'vgg'"),
      ('alpha', dict(alpha=-1.0), 'alpha must be > 0; got -1.0'),
      ('fraction', dict(public_fraction=1.5), 'public_fraction must be in'),
      ('data_dir', dict(name='cifar10'), 'data_dir'),
  )
  def test_errors_name_the_argument(self, kwargs, pattern):
    kwargs = dict(dict(name='digits', train_client_spec=_SPEC), **kwargs)
    with self.assertRaisesRegex(ValueError, pattern):
      tasks.create_task(**kwargs)

  def test_tff_baseline_task_by_name(self):
    task = tasks.create_task('emnist_character', train_client_spec=_SPEC,
                             use_synthetic_data=True)
    self.assertIsInstance(task, tff.simulation.baselines.BaselineTask)
    batch = next(iter(task.datasets.sample_train_clients(1, random_seed=0)[0]))
    model = task.model_fn()  # Keep a reference: forward_pass is a method.
    output = model.forward_pass(batch, training=False)
    self.assertEqual(output.predictions.shape[-1], 62)


if __name__ == '__main__':
  tf.test.main()
