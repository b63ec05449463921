"""Tasks: splits, element spec, preprocessing, models, TFF baseline tasks."""

import collections
import os
import re
from unittest import mock

from absl import logging
from absl.testing import parameterized
import numpy as np
from scipy import special
import tensorflow as tf
import tensorflow_federated as tff

import tasks

_SPEC = tff.simulation.baselines.ClientSpec(num_epochs=2, batch_size=16)


def _glorot(seed):
  return tf.keras.initializers.GlorotUniform(seed=seed)


def torch_style_cnn():
  """A PyTorch library's CNN as Keras layers, no input shape (inferred)."""
  return tf.keras.Sequential([
      tf.keras.layers.Conv2D(32, 3, padding='same', activation='relu',
                             kernel_initializer=_glorot(1)),
      tf.keras.layers.MaxPool2D(2),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(64, activation='relu',
                            kernel_initializer=_glorot(2)),
      tf.keras.layers.Dense(10, name='head', kernel_initializer=_glorot(3)),
  ])


# Conv 3*3*1*32 + 32; after the 2x2 pool 4*4*32 = 512 features: 512*64 + 64;
# head 64*10 + 10.
_TORCH_STYLE_CNN_PARAMS = 320 + 32_832 + 650


def linear():
  """A functional model that declares digits' input shape."""
  inputs = tf.keras.Input((8, 8, 1))
  flat = tf.keras.layers.Flatten()(inputs)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(
      10, kernel_initializer=_glorot(4))(flat))


def _dense(units, **kwargs):
  """A builder of Flatten + Dense(units): new layers on every call."""

  def dense():
    return tf.keras.Sequential([tf.keras.layers.Flatten(),
                                tf.keras.layers.Dense(units, **kwargs)])

  return dense


def returns_a_number():
  return 3


def needs_an_argument(width):
  return tf.keras.Sequential([tf.keras.layers.Dense(width)])


def compiled():
  model = linear()
  model.compile(optimizer='sgd', loss='mse')
  return model


def mnist_shaped():
  return tf.keras.Sequential([
      tf.keras.Input((28, 28, 1)), tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(10)])


def reshapes_to_49():
  return tf.keras.Sequential([
      tf.keras.layers.Reshape((7, 7)), tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(10)])


def seven_classes():
  return tf.keras.Sequential([
      tf.keras.layers.Flatten(), tf.keras.layers.Dense(7)])


def two_outputs():
  inputs = tf.keras.Input((8, 8, 1))
  flat = tf.keras.layers.Flatten()(inputs)
  return tf.keras.Model(
      inputs,
      [tf.keras.layers.Dense(10)(flat), tf.keras.layers.Dense(10)(flat)])


def probabilities():
  return tf.keras.Sequential([
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(10, activation='softmax')])


def cnn():  # The name of a built-in model.
  return linear()


_SHARED = [tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)]


def shares_its_layers():  # Layers made once, outside: not a new model.
  return tf.keras.Sequential(_SHARED)


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

  def test_client_dataset_reshuffles_every_round_and_epoch(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC, seed=0)
    n = len(task.client_indices[2])

    def order(client_id, round_num):
      return np.concatenate(
          [b['y'].numpy() for b in task.client_dataset(client_id, round_num)])

    first = order('2', 3)
    self.assertLen(first, 2 * n)  # Both epochs, every example twice.
    self.assertAllEqual(first, order('2', 3))  # Reproducible.
    self.assertNotAllEqual(first[:n], first[n:])  # Each epoch anew.
    self.assertNotAllEqual(first, order('2', 4))  # Each round anew.
    self.assertAllEqual(np.sort(first), np.sort(order('2', 4)))

  def test_client_data_computation_builds_the_client_dataset(self):
    # TFF's mechanism (a dataset computation of a key), run on the worker,
    # gives the trainer's client_dataset batch for batch.
    task = tasks.create_task('digits', train_client_spec=_SPEC, seed=0,
                             num_clients=5, partition='dirichlet', alpha=0.1)
    directory = os.path.join(self.create_tempdir().full_path, 'clients')
    computation = task.client_data_computation(directory)
    names = [tasks.task.client_file_name(str(k)) for k in range(5)]
    self.assertCountEqual(os.listdir(directory),
                          [f'{n}.{s}' for n in names for s in 'xy'])
    self.assertEqual(os.path.getsize(os.path.join(directory, f'{names[3]}.y')),
                     4 * len(task.client_indices[3]))
    tff.test.assert_types_equivalent(
        computation.type_signature.result,
        tff.SequenceType(tff.types.tensorflow_to_type(
            task.datasets.element_type_structure)))
    for client_id, round_num in (('0', 1), ('3', 2)):
      want = list(task.client_dataset(client_id, round_num).as_numpy_iterator())
      got = list(computation(task.client_data_key(client_id, round_num)))
      self.assertLen(got, len(want))
      for a, b in zip(got, want):
        self.assertAllEqual(a['x'], b['x'])
        self.assertAllEqual(a['y'], b['y'])
      dropped = task.client_data_key(client_id, round_num, dropped=True)
      self.assertEmpty(list(computation(dropped)))

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
      ('prototype', dict(prototypes=('cnn', 'vgg')),
       "Unknown prototype 'vgg'"),
      ('first_prototype', dict(model='cnn', prototypes=('mlp', 'cnn')),
       "start with the model 'cnn'"),
  )
  def test_errors_name_the_argument(self, kwargs, pattern):
    kwargs = dict(dict(name='digits', train_client_spec=_SPEC), **kwargs)
    with self.assertRaisesRegex(ValueError, pattern):
      tasks.create_task(**kwargs)

  def test_prototypes_are_assigned_in_turn_in_a_seeded_order(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC, model='cnn',
                             prototypes=('cnn', 'mlp', 'resnet8'),
                             num_clients=8, seed=4)
    assigned = [task.client_prototypes[str(k)] for k in range(8)]
    self.assertCountEqual(assigned, ['cnn'] * 3 + ['mlp'] * 3 + ['resnet8'] * 2)
    order = np.random.default_rng([4, 2]).permutation(8)
    self.assertEqual(task.client_prototypes[str(order[0])], 'cnn')
    self.assertEqual(task.client_prototypes[str(order[1])], 'mlp')
    again = tasks.create_task('digits', train_client_spec=_SPEC, model='cnn',
                              prototypes=('cnn', 'mlp', 'resnet8'),
                              num_clients=8, seed=4)
    self.assertEqual(again.client_prototypes, task.client_prototypes)
    single = tasks.create_task('digits', train_client_spec=_SPEC, model='mlp')
    self.assertEqual(set(single.client_prototypes.values()), {'mlp'})

  def test_distillation_inputs(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC, seed=0)
    self.assertIs(task.distillation_inputs('public'), task.public_x)
    # Out-of-domain: the 4,000 MNIST training images, area-resized to 8x8.
    mnist = task.distillation_inputs('mnist5k')
    self.assertEqual(mnist.shape, (4000, 8, 8, 1))
    full = tasks.data.load_arrays('mnist5k').x_train
    # Area resizing keeps each image's mean brightness.
    self.assertAllClose(mnist[:50].mean(axis=(1, 2, 3)),
                        full[:50].mean(axis=(1, 2, 3)), atol=1e-5)
    for source, pattern in [('digits', "use 'public'"),
                            ('mnist1d', 'cannot be resized'),
                            ('imagenet', 'Unknown distillation source')]:
      with self.assertRaisesRegex(ValueError, pattern):
        task.distillation_inputs(source)

  def test_a_second_dataset_is_read_from_the_tasks_data_dir(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC, seed=0,
                             data_dir='/my/tfds')
    self.assertEqual(task.data_dir, '/my/tfds')
    images = tasks.data.Arrays(*[np.zeros((3, 8, 8, 1), np.float32),
                                 np.zeros(3, np.int32)] * 2)
    with mock.patch.object(tasks.data, 'load_arrays',
                           return_value=images) as load:
      task.distillation_inputs('cifar10')
      task.distillation_inputs('cifar10', data_dir='/other')
    self.assertEqual([c.kwargs['data_dir'] for c in load.call_args_list],
                     ['/my/tfds', '/other'])

  def test_split_file_reproduces_another_librarys_split(self):
    canonical = tasks.data.load_canonical('digits')
    train_pool = np.setdiff1d(np.arange(len(canonical.y)),
                              canonical.test_indices)
    parts = [train_pool[:30], train_pool[100:140], train_pool[500:505]]
    path = os.path.join(self.get_temp_dir(), 'split.npz')
    # The generator's own settings beside the split: one warning names them.
    np.savez(path, num_clients=3, alpha=0.1, seed=3,
             **{f'train_{c}': p for c, p in enumerate(parts)})
    with self.assertLogs(level='WARNING') as logs:
      task = tasks.create_task('digits', train_client_spec=_SPEC,
                               num_clients=3, split_file=path, seed=0)
    self.assertLen(logs.output, 1)
    self.assertRegex(logs.output[0], 'split_file=.*entries alpha, seed are '
                     'not used')
    for c, part in enumerate(parts):
      xs = np.stack([e['x'].numpy() for e in
                     task.datasets.train_data.create_tf_dataset_for_client(
                         str(c))])
      self.assertAllEqual(xs, canonical.x[part])
    self.assertAllEqual(task.test[1], canonical.y[canonical.test_indices])
    # The server's splits come from the examples no client holds.
    held = {canonical.x[i].tobytes() for p in parts for i in p}
    for x in list(task.public_x) + list(task.validation[0]):
      self.assertNotIn(x.tobytes(), held)
    unused = len(train_pool) - 75
    self.assertLen(task.public_x, round(0.1 * unused))

    # With test arrays, their union is the test set.
    tests = [np.arange(0, 10), np.arange(5, 20), np.arange(1700, 1710)]
    path2 = os.path.join(self.get_temp_dir(), 'split2.npz')
    train2 = [np.arange(20, 60), np.arange(60, 90), np.arange(90, 95)]
    np.savez(path2, num_clients=3,
             **{f'train_{c}': p for c, p in enumerate(train2)},
             **{f'test_{c}': t for c, t in enumerate(tests)})
    task2 = tasks.create_task('digits', train_client_spec=_SPEC,
                              num_clients=3, split_file=path2, seed=0)
    expected_test = np.unique(np.concatenate(tests))
    self.assertAllEqual(task2.test[1], canonical.y[expected_test])
    self.assertLen(task2.test[0], 30)

  @parameterized.named_parameters(
      ('overlap_default_test', lambda t: dict(train_0=t[:5]),
       "default test set"),
      ('two_clients', lambda t: dict(train_0=np.arange(20, 30),
                                     train_1=np.arange(25, 35)),
       'two clients'),
      ('range', lambda t: dict(train_0=np.array([5000])), 'outside'),
      ('count', lambda t: dict(train_0=np.arange(20, 30), num_clients=3,
                               train_2=np.arange(60, 62)),
       'has 3 clients but num_clients=2'),
      ('extra', lambda t: dict(train_0=np.arange(20, 30), num_clients=1),
       'declares num_clients=1 but has train_1'),
      ('fractional', lambda t: dict(train_0=np.arange(20, 30),
                                    num_clients=4.9), 'one integer'),
      ('text', lambda t: dict(train_0=np.arange(20, 30), num_clients='2'),
       'one integer'),
      ('array', lambda t: dict(train_0=np.arange(20, 30),
                               num_clients=np.array([2, 2])), 'one integer'),
      ('huge', lambda t: dict(train_0=np.arange(20, 30),
                              num_clients=10**9), 'one integer'),
      ('missing', lambda t: dict(), 'lacks train_0'),
      ('empty', lambda t: dict(train_0=np.array([], np.int64)),
       'client 0 .train_0. has no examples'),
  )
  def test_split_file_errors_name_the_file(self, contents, pattern):
    test = tasks.data.load_canonical('digits').test_indices
    entries = dict(num_clients=2, train_1=np.setdiff1d(np.arange(40, 50), test))
    entries.update(contents(test))
    path = os.path.join(self.get_temp_dir(), 'bad.npz')
    np.savez(path, **entries)
    with self.assertRaisesRegex(ValueError, 'split_file=.*' + pattern):
      tasks.create_task('digits', train_client_spec=_SPEC, num_clients=2,
                        split_file=path)

  def test_labels_outside_the_classes_are_an_error(self):
    canonical = tasks.data.load_canonical('digits')
    bad = tasks.data.Canonical(canonical.x, canonical.y.copy(),
                               canonical.test_indices)
    bad.y[np.setdiff1d(np.arange(20), canonical.test_indices)[0]] = 12
    with mock.patch.object(tasks.data, 'load_canonical', return_value=bad):
      with self.assertRaisesRegex(ValueError,
                                  "'digits': a training label is 12, outside"
                                  r' \[0, 10\)'):
        tasks.create_task('digits', train_client_spec=_SPEC)

  def test_tff_baseline_task_by_name(self):
    task = tasks.create_task('emnist_character', train_client_spec=_SPEC,
                             use_synthetic_data=True)
    self.assertIsInstance(task, tff.simulation.baselines.BaselineTask)
    batch = next(iter(task.datasets.sample_train_clients(1, random_seed=0)[0]))
    model = task.model_fn()  # Keep a reference: forward_pass is a method.
    output = model.forward_pass(batch, training=False)
    self.assertEqual(output.predictions.shape[-1], 62)


class KerasModelTest(tf.test.TestCase, parameterized.TestCase):
  """Your own Keras model as the task's model, its prototypes, and the
  public wrapper `tasks.model_fn_from_keras`."""

  def _batch(self, task, client='0'):
    return next(iter(task.datasets.train_preprocess_fn(
        task.datasets.train_data.create_tf_dataset_for_client(client))))

  def test_a_builder_is_the_tasks_model_with_the_tasks_loss(self):
    task = tasks.create_task('digits', train_client_spec=_SPEC,
                             model=torch_style_cnn, num_clients=5)
    self.assertEqual(task.model_name, 'torch_style_cnn')
    self.assertEqual(task.prototypes, ('torch_style_cnn',))
    self.assertEqual(task.custom_models, {'torch_style_cnn': torch_style_cnn})
    self.assertEqual(set(task.client_prototypes.values()),
                     {'torch_style_cnn'})
    keras_model = task.keras_model_fn()  # Built on the task's inputs.
    self.assertEqual(keras_model.input_shape, (None, 8, 8, 1))
    self.assertEqual(keras_model.count_params(), _TORCH_STYLE_CNN_PARAMS)

    model = task.model_fn()  # Keep a reference: forward_pass is a method.
    weights = [v.numpy() for v in model.trainable_variables]
    self.assertEqual(sum(w.size for w in weights), _TORCH_STYLE_CNN_PARAMS)
    # The builder's own (seeded) initial weights, in its layers' order.
    for w, expected in zip(weights, keras_model.get_weights(), strict=True):
      self.assertAllEqual(w, expected)
    batch = self._batch(task)
    output = model.forward_pass(batch, training=False)
    self.assertAllClose(output.predictions, keras_model(batch['x']),
                        rtol=1e-5, atol=1e-6)
    # Cross-entropy from logits, as the built-in models' loss.
    log_p = special.log_softmax(
        output.predictions.numpy().astype(np.float64), axis=1)
    labels = batch['y'].numpy()
    self.assertAllClose(output.loss,
                        -np.mean(log_p[np.arange(len(labels)), labels]),
                        rtol=1e-5)
    builtin = tasks.create_task('digits', train_client_spec=_SPEC,
                                model='mlp', num_clients=5).model_fn()
    self.assertEqual(list(model.metric_finalizers()),
                     list(builtin.metric_finalizers()))

  @parameterized.parameters('mlp', 'cnn')
  def test_built_in_models_keep_their_seeded_weights(self, name):
    task = tasks.create_task('digits', train_client_spec=_SPEC, model=name,
                             num_clients=5, seed=3)
    self.assertEqual((task.model_name, task.custom_models), (name, {}))
    expected = tasks.models.build_keras_model(
        name, input_shape=(8, 8, 1), num_classes=10, seed=3).get_weights()
    for fn in (task.model_fn, task.model_fn_for(name)):
      model = fn()
      for w, e in zip(model.trainable_variables, expected, strict=True):
        self.assertAllEqual(w, e)

  def test_prototypes_mix_builders_and_names(self):
    task = tasks.create_task(
        'digits', train_client_spec=_SPEC, model=torch_style_cnn,
        prototypes=(torch_style_cnn, 'mlp', linear), num_clients=6, seed=4)
    self.assertEqual(task.prototypes, ('torch_style_cnn', 'mlp', 'linear'))
    self.assertEqual(task.custom_models,
                     {'torch_style_cnn': torch_style_cnn, 'linear': linear})
    # Assigned as names are: the same clients as ('cnn', 'mlp', 'resnet8').
    by_name = tasks.create_task(
        'digits', train_client_spec=_SPEC, model='cnn',
        prototypes=('cnn', 'mlp', 'resnet8'), num_clients=6, seed=4)
    renamed = {'cnn': 'torch_style_cnn', 'mlp': 'mlp', 'resnet8': 'linear'}
    self.assertEqual(task.client_prototypes, {
        c: renamed[p] for c, p in by_name.client_prototypes.items()})
    sizes = {}
    for name in task.prototypes + ('cnn',):  # 'cnn': any built-in, too.
      model = task.model_fn_for(name)()
      sizes[name] = sum(int(np.prod(v.shape)) for v in
                        model.trainable_variables)
      self.assertEqual(
          model.forward_pass(self._batch(task), training=False)
          .predictions.shape[1:], (10,))
    self.assertEqual(sizes['torch_style_cnn'], _TORCH_STYLE_CNN_PARAMS)
    self.assertEqual(sizes['linear'], 64 * 10 + 10)
    self.assertEqual(sizes['mlp'], 64 * 200 + 200 + 200 * 200 + 200
                     + 200 * 10 + 10)
    self.assertEqual(task.keras_model_fn('linear').count_params(), 650)
    # A builder that is no prototype, checked as model_fn_from_keras does.
    self.assertLen(task.model_fn_for(linear)().trainable_variables, 2)
    with self.assertRaisesRegex(TypeError, 'model=returns_a_number must '
                                'return a tf.keras.Model'):
      task.model_fn_for(returns_a_number)
    with self.assertRaisesRegex(ValueError,
                                "Unknown model 'vgg'.*'torch_style_cnn', "
                                "'linear'"):
      task.model_fn_for('vgg')

  @parameterized.named_parameters(
      ('not_a_model', dict(model=returns_a_number), TypeError,
       'model=returns_a_number must return a tf.keras.Model; it returned int'),
      ('a_model_not_a_builder', dict(model=linear()), TypeError,
       'model is a Keras model .* pass the function that builds it'),
      ('not_callable', dict(prototypes=('cnn', 3)), TypeError,
       r'prototypes\[1\] must be one of .* or a no-arg function'),
      ('arguments', dict(model=needs_an_argument), TypeError,
       "model=needs_an_argument must be callable with no arguments: .*width"),
      ('shared_layers', dict(model=shares_its_layers), ValueError,
       'model=shares_its_layers returns the same model or layers on every '
       'call; create them inside the function'),
      ('compiled', dict(model=compiled), ValueError,
       'model=compiled returned a compiled model'),
      ('input_shape', dict(model=mnist_shaped), ValueError,
       r'model=mnist_shaped builds a model for inputs of shape \(28, 28, 1\), '
       r"but the task's inputs have shape \(8, 8, 1\)"),
      ('cannot_take_inputs', dict(model=reshapes_to_49), ValueError,
       r"model=reshapes_to_49 builds a model that cannot take the task's "
       r'inputs of shape \(8, 8, 1\)'),
      ('classes', dict(model=seven_classes), ValueError,
       r'model=seven_classes builds a model whose output has shape '
       r'\(None, 7\), but the task has 10 classes'),
      ('prototype_classes', dict(prototypes=('cnn', seven_classes)),
       ValueError, r'prototypes\[1\]=seven_classes .* 10 classes'),
      ('outputs', dict(model=two_outputs), ValueError,
       'model=two_outputs builds a model with 2 outputs; the task needs one'),
      ('softmax', dict(model=probabilities), ValueError,
       'model=probabilities builds a model that ends in a softmax'),
      ('lambda', dict(model=lambda: linear()), ValueError,
       "model=<lambda>: a custom model is named by its function's __name__"),
      ('built_in_name', dict(model=cnn), ValueError,
       "model=cnn is named 'cnn', a built-in model's name"),
      ('twice', dict(model=linear, prototypes=(linear, 'mlp', linear)),
       ValueError, "prototypes must be distinct and start with the model "
       "'linear'"),
      ('first_is_not_the_model', dict(model=linear, prototypes=('mlp', linear)),
       ValueError, "start with the model 'linear'"),
  )
  def test_errors_name_the_argument(self, kwargs, error, pattern):
    kwargs = dict(dict(name='digits', train_client_spec=_SPEC), **kwargs)
    with self.assertRaisesRegex(error, pattern):
      tasks.create_task(**kwargs)

  def test_model_fn_from_keras_wraps_any_input_spec(self):
    spec = collections.OrderedDict(x=tf.TensorSpec([None, 5], tf.float32),
                                   y=tf.TensorSpec([None], tf.int32))
    model_fn = tasks.model_fn_from_keras(
        _dense(3, kernel_initializer=_glorot(5)), input_spec=spec,
        num_classes=3)
    model = model_fn()
    self.assertIsInstance(model, tff.learning.models.VariableModel)
    kernel, bias = model.trainable_variables
    self.assertEqual((kernel.shape, bias.shape), ((5, 3), (3,)))
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    output = model.forward_pass(
        collections.OrderedDict(x=x, y=np.array([0, 2], np.int32)),
        training=False)
    self.assertAllClose(output.predictions, x @ kernel.numpy() + bias.numpy())
    self.assertEqual(output.num_examples, 2)

    with self.assertRaisesRegex(ValueError, 'keras_builder=dense builds a '
                                'model whose output has shape'):
      tasks.model_fn_from_keras(_dense(4), input_spec=spec, num_classes=3)
    with self.assertRaisesRegex(TypeError, 'input_spec must be the '
                                'tf.TensorSpecs of a batch'):
      tasks.model_fn_from_keras(_dense(3), input_spec=spec['x'],
                                num_classes=3)
    with self.assertRaisesRegex(ValueError, 'num_classes must be an integer'):
      tasks.model_fn_from_keras(_dense(3), input_spec=spec, num_classes=1)

  def test_tff_baseline_task_takes_a_builder(self):
    task = tasks.create_task(
        'emnist_character', train_client_spec=_SPEC, use_synthetic_data=True,
        model=_dense(62))
    model = task.model_fn()
    self.assertEqual([v.shape for v in model.trainable_variables],
                     [(28 * 28, 62), (62,)])
    batch = next(iter(task.datasets.sample_train_clients(1, random_seed=0)[0]))
    self.assertEqual(
        model.forward_pass(batch, training=False).predictions.shape[-1], 62)
    with self.assertRaisesRegex(ValueError, 'the task has 62 classes'):
      tasks.create_task('emnist_character', train_client_spec=_SPEC,
                        use_synthetic_data=True,
                        model=seven_classes)


def _indexed(n, shape=(3, 3), num_classes=4, seed=0):
  """`n` uint8 inputs whose pixel [0, 0] is their index, and labels."""
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n,) + shape).astype(np.uint8)
  x[(slice(None),) + (0,) * len(shape)] = np.arange(n)
  return x, rng.permutation(np.arange(n) % num_classes)


def _origin(x):
  """The indices of `_indexed` rows, scaled to [0, 1] with a channel axis."""
  return np.rint(x[(slice(None),) + (0,) * (x.ndim - 1)] * 255).astype(int)


def _examples(task, client_id):
  """(x, y) of a client's raw dataset in `task`."""
  elements = list(task.datasets.train_data.create_tf_dataset_for_client(
      client_id).as_numpy_iterator())
  return (np.stack([e['x'] for e in elements]),
          np.array([e['y'] for e in elements]))


# Client ids with '/', spaces and non-ASCII characters; '~~~' and '???' are
# '-' and '_' in URL-safe base64, 'a/b' needs padding.
_IDS = ('a/b', 'ü', '客户 1', '~~~', '???', 'x', 'y', 'z', 'w', 'v')


def _owners(ids=_IDS, seed=0):
  """Each example's client: client k has 3 + k % 4 examples, interleaved."""
  sizes = 3 + np.arange(len(ids)) % 4
  return np.asarray(ids)[np.random.default_rng(seed).permutation(
      np.repeat(np.arange(len(ids)), sizes))]


class FromArraysTest(tf.test.TestCase, parameterized.TestCase):
  """`tasks.from_arrays`, re-split by a partition."""

  def test_resplit_over_num_clients_with_disjoint_server_splits(self):
    x, y = _indexed(100)
    x_test, y_test = _indexed(10, seed=1)
    task = tasks.from_arrays(
        x, y, x_test, y_test, train_client_spec=_SPEC, model='mlp',
        partition='iid', num_clients=7, validation_fraction=0.1,
        public_fraction=0.2, seed=5)
    self.assertEqual(task.name, 'arrays')
    self.assertEqual(task.client_ids, tuple(str(k) for k in range(7)))
    self.assertEqual((task.num_classes, task.input_shape), (4, (3, 3, 1)))
    # uint8 (N, H, W) inputs: scaled to [0, 1], with a channel axis.
    self.assertEqual(task.arrays.x_train.dtype, np.float32)
    self.assertAllClose(task.arrays.x_train, x[..., None] / 255.0)
    self.assertAllClose(task.test[0], x_test[..., None] / 255.0)
    self.assertAllEqual(task.test[1], y_test)
    validation = _origin(task.validation[0])
    public = _origin(task.public_x)
    self.assertLen(validation, 10)
    self.assertLen(public, 20)
    self.assertAllEqual(task.validation[1], y[validation])
    clients = np.concatenate(task.client_indices)
    self.assertAllEqual(
        np.sort(np.concatenate([validation, public, clients])),
        np.arange(100))  # Disjoint and covering.
    self.assertEqual(sorted(len(p) for p in task.client_indices),
                     [10] * 7)  # iid: near-equal parts of the 70 left.
    for k in (0, 6):
      got_x, got_y = _examples(task, str(k))
      self.assertAllEqual(_origin(got_x), task.client_indices[k])
      self.assertAllEqual(got_y, y[task.client_indices[k]])

  def test_partition_arguments_are_honoured(self):
    x, y = _indexed(80)
    task = tasks.from_arrays(
        x, y, x[:4], y[:4], train_client_spec=_SPEC, model='mlp',
        partition='shards', classes_per_client=1, num_clients=4, seed=2)
    self.assertLen(task.client_indices, 4)
    classes = [np.unique(y[part]) for part in task.client_indices]
    self.assertEqual([len(c) for c in classes], [1, 1, 1, 1])
    self.assertCountEqual(np.concatenate(classes), [0, 1, 2, 3])

  @parameterized.named_parameters(
      ('signals', (12, 5), np.float64, (5,)),
      ('images_with_channels', (12, 4, 4, 2), np.float32, (4, 4, 2)),
      ('images_without_channels', (12, 4, 4), np.float32, (4, 4, 1)),
  )
  def test_float_inputs_keep_their_values(self, shape, dtype, input_shape):
    x = np.random.default_rng(0).normal(size=shape).astype(dtype)
    y = np.arange(12) % 3
    task = tasks.from_arrays(x, y, x[:2], y[:2], train_client_spec=_SPEC,
                             model='mlp', partition='iid', num_clients=2)
    self.assertEqual(task.input_shape, input_shape)
    self.assertAllEqual(task.arrays.x_train.reshape(x.shape),
                        x.astype(np.float32))
    self.assertEqual(task.datasets.element_type_structure['x'].shape[1:],
                     input_shape)

  @parameterized.named_parameters(
      ('test_shape', dict(x_test=np.zeros((5, 4, 4))),
       r'^x_train examples have shape \(3, 3, 1\) but x_test examples '
       r'\(4, 4, 1\)'),
      ('x_train', dict(x_train=np.zeros(40)), '^x_train must be numbers'),
      ('x_test_nan', dict(x_test=np.full((5, 3, 3), np.nan)),
       '^x_test has values that are not finite'),
      ('y_train_length', dict(y_train=np.zeros(39, int)),
       r'^y_train must be 40 integer labels in \[0, 2\*\*31\) .*shape \(39,\)'),
      ('y_test_floats', dict(y_test=np.zeros(5)),
       r'^y_test must be 5 integer labels in \[0, 2\*\*31\) .*got float64'),
      ('client_ids_length', dict(client_ids=np.zeros(39, int)),
       r'^client_ids must hold one client per training example \(40\); got '
       r'shape \(39,\)'),
      ('client_ids_shape', dict(client_ids=np.zeros((40, 1), int)),
       r'^client_ids must hold one client .*got shape \(40, 1\)'),
      ('num_classes', dict(num_classes=3),
       r"^Task 'arrays': a training label is 3, outside \[0, 3\)"),
  )
  def test_errors_name_the_argument(self, overrides, pattern):
    x, y = _indexed(40)
    kwargs = dict(x_train=x, y_train=y, x_test=x[:5], y_test=y[:5],
                  train_client_spec=_SPEC, model='mlp', num_clients=2)
    kwargs.update(overrides)
    with self.assertRaisesRegex(ValueError, pattern):
      tasks.from_arrays(**kwargs)


class NaturalClientsTest(tf.test.TestCase, parameterized.TestCase):
  """`tasks.from_arrays` with `client_ids`: the clients as they are."""

  def _task(self, owners, **kwargs):
    x, y = _indexed(len(owners))
    kwargs = dict(dict(train_client_spec=_SPEC, model='mlp',
                       validation_fraction=0.2, public_fraction=0.1,
                       seed=0), **kwargs)
    return tasks.from_arrays(x, y, x[:4], y[:4], client_ids=owners,
                             **kwargs), x, y

  @parameterized.named_parameters(
      ('strings', _IDS),
      ('ints', (7, 123, 0, 45, 9, 1000, 3, 2, 88, 12)),
  )
  def test_clients_are_kept_and_held_out_clients_are_the_servers(self, ids):
    owners = _owners(ids)
    task, x, y = self._task(owners)
    names = np.asarray(owners).astype(str)
    # First appearance order of every client.
    _, first = np.unique(names, return_index=True)
    appearance = list(names[np.sort(first)])
    held = set(appearance) - set(task.client_ids)
    self.assertLen(held, round(0.3 * 10))  # max(1, round((vf + pf) * K)).
    self.assertEqual(list(task.client_ids),
                     [c for c in appearance if c not in held])
    self.assertEqual(set(task.client_prototypes), set(task.client_ids))
    for client_id, part in zip(task.client_ids, task.client_indices):
      self.assertAllEqual(part, np.flatnonzero(names == client_id))
      got_x, got_y = _examples(task, client_id)
      self.assertAllEqual(_origin(got_x), part)
      self.assertAllEqual(got_y, y[part])
    self.assertEqual(task.datasets.train_data.client_ids,
                     list(task.client_ids))
    # The held-out clients' examples, pooled: validation and public, 2:1.
    pool = np.flatnonzero(np.isin(names, list(held)))
    validation = _origin(task.validation[0])
    public = _origin(task.public_x)
    self.assertLen(validation, round(2 / 3 * len(pool)))
    self.assertAllEqual(np.sort(np.concatenate([validation, public])), pool)
    self.assertAllEqual(task.validation[1], y[validation])
    training = np.concatenate(task.client_indices)
    self.assertEmpty(np.intersect1d(training, pool))
    self.assertLen(training, len(owners) - len(pool))
    self.assertAllClose(task.arrays.x_train, x[..., None] / 255.0)

  @parameterized.named_parameters(
      ('at_least_one', 5, 0.05, 0.05, 1),  # round(0.5) = 0, at least one.
      ('rounded', 10, 0.25, 0.1, 4),  # round(3.5) = 4.
      ('public_only', 10, 0.0, 0.2, 2),
      ('validation_only', 10, 0.2, 0.0, 2),
      ('none', 10, 0.0, 0.0, 0),
  )
  def test_held_out_count(self, num_clients, vf, pf, held):
    owners = _owners(tuple(f'c{k}' for k in range(num_clients)))
    task, _, _ = self._task(owners, validation_fraction=vf,
                            public_fraction=pf)
    self.assertLen(task.client_ids, num_clients - held)
    pool = np.flatnonzero(~np.isin(owners, task.client_ids))
    self.assertLen(task.validation[0],
                   0 if not held else round(vf / (vf + pf) * len(pool)))
    self.assertLen(task.validation[0], len(task.validation[1]))
    self.assertLen(task.public_x, len(pool) - len(task.validation[0]))
    if not held:
      self.assertEqual(task.validation[0].shape, (0, 3, 3, 1))

  @parameterized.named_parameters(
      ('one_client', 1, 0.1, 0.1, 1),
      ('all_held_out', 3, 0.5, 0.4, 3),
  )
  def test_no_client_left_to_train_is_an_error(self, num_clients, vf, pf,
                                               held):
    owners = _owners(tuple(f'c{k}' for k in range(num_clients)))
    with self.assertRaisesRegex(
        ValueError, f'^The task has {num_clients} client.s. and would hold '
        f'out {held} for the server data .*leaving none to train'):
      self._task(owners, validation_fraction=vf, public_fraction=pf)

  def test_deterministic_for_a_seed(self):
    owners = _owners()
    a, _, _ = self._task(owners, seed=0)
    b, _, _ = self._task(owners, seed=0)
    c, _, _ = self._task(owners, seed=1)
    self.assertEqual(a.client_ids, b.client_ids)
    self.assertAllEqual(a.validation[0], b.validation[0])
    self.assertAllEqual(a.public_x, b.public_x)
    self.assertEqual(a.client_prototypes, b.client_prototypes)
    # Another seed, other held-out clients: ('???', 'a/b', '客户 1') at
    # seed 0, ('x', 'y', 'ü') at seed 1.
    self.assertEqual(set(_IDS) - set(a.client_ids), {'???', 'a/b', '客户 1'})
    self.assertEqual(set(_IDS) - set(c.client_ids), {'x', 'y', 'ü'})

  def test_client_file_name(self):
    self.assertEqual(
        [tasks.task.client_file_name(c) for c in ('~~~', '???', 'a/b', 'ü')],
        ['fn5-', 'Pz8_', 'YS9i', 'w7w'])

  def _check_client_data_computation(self, client_ids):
    """The worker's files give each of `client_ids` its client_dataset."""
    owners = _owners()
    task, _, y = self._task(owners, seed=1)
    self.assertContainsSubset(client_ids + ('客户 1',), task.client_ids)
    directory = os.path.join(self.create_tempdir().full_path, 'clients')
    computation = task.client_data_computation(directory)
    names = [tasks.task.client_file_name(c) for c in task.client_ids]
    self.assertCountEqual(os.listdir(directory),
                          [f'{n}.{s}' for n in names for s in 'xy'])
    for round_num, client_id in enumerate(client_ids):
      part = task.client_indices[task.client_ids.index(client_id)]
      want = list(task.client_dataset(client_id, round_num)
                  .as_numpy_iterator())
      # Both epochs: every example twice.
      self.assertAllEqual(np.sort(np.concatenate([b['y'] for b in want])),
                          np.sort(np.tile(y[part], 2)))
      got = list(computation(task.client_data_key(client_id, round_num)))
      self.assertLen(got, len(want))
      for a, b in zip(got, want):
        self.assertAllEqual(a['x'], b['x'])
        self.assertAllEqual(a['y'], b['y'])

  def test_client_data_computation_reads_any_ascii_id(self):
    self._check_client_data_computation(('???', 'a/b', '~~~'))

  def test_client_data_computation_reads_a_non_ascii_id(self):
    self._check_client_data_computation(('客户 1',))


def _emnist_like(num_clients=30, *, input_key='pixels', label_key='label',
                 shape=(28, 28), dtype=np.float32, tuples=False):
  """A TestClientData as TFF's EMNIST: client k has 2 + k % 3 examples.

  Example j of client k has label (3 * k + j) % 62 and pixel [0, 0] equal
  to its position in the clients' order / 255.
  """
  rng = np.random.default_rng(0)
  slices = collections.OrderedDict()
  position = 0
  for k in range(num_clients):
    n = 2 + k % 3
    x = rng.integers(0, 256, (n,) + shape)
    x[(slice(None),) + (0,) * len(shape)] = position + np.arange(n)
    x = x.astype(dtype) if dtype == np.uint8 else (x / 255).astype(dtype)
    labels = ((3 * k + np.arange(n)) % 62).astype(np.int32)
    position += n
    slices[f'f{k:04d}_{k % 7}'] = (
        (x, labels) if tuples else
        collections.OrderedDict([(input_key, x), (label_key, labels)]))
  return tff.simulation.datasets.TestClientData(slices)


class FromClientDataTest(tf.test.TestCase, parameterized.TestCase):
  """`tasks.from_client_data`: a ClientData's clients as they are."""

  def _check_clients(self, task, client_data, num_held, **keys):
    held = set(client_data.client_ids) - set(task.client_ids)
    self.assertLen(held, num_held)
    self.assertEqual(list(task.client_ids),
                     [c for c in client_data.client_ids if c not in held])
    for client_id in task.client_ids:
      want = list(client_data.create_tf_dataset_for_client(client_id)
                  .as_numpy_iterator())
      got_x, got_y = _examples(task, client_id)
      want_x = np.stack([e[0] if isinstance(e, tuple) else e.get(
          'pixels', e.get('image', e.get('img'))) for e in want])
      want_y = [e[1] if isinstance(e, tuple) else e.get(
          'label', e.get('target')) for e in want]
      if want_x.dtype == np.uint8:
        want_x = want_x / 255.0
      self.assertAllClose(got_x.reshape(want_x.shape), want_x)
      self.assertAllEqual(got_y, want_y)
    # The server's splits: the held-out clients' examples.
    x_held, _, _ = tasks.sources.client_data_arrays(
        _only(client_data, held), **keys)
    self.assertAllEqual(
        np.sort(_origin(np.concatenate([task.validation[0],
                                        task.public_x]))),
        np.sort(_origin(x_held)))
    self.assertLen(task.validation[0], round(0.5 * len(x_held)))

  def test_pixels_and_labels_as_tffs_emnist(self):
    client_data = _emnist_like()
    task = tasks.from_client_data(client_data, client_data,
                                  train_client_spec=_SPEC, model='mlp',
                                  num_classes=62)
    self.assertEqual(task.name, 'client_data')
    self.assertEqual((task.num_classes, task.input_shape), (62, (28, 28, 1)))
    self._check_clients(task, client_data, 6)  # round(0.2 * 30).
    self.assertLen(task.test[1], 90)  # The test clients pooled.
    x, y, _ = tasks.sources.client_data_arrays(client_data)
    self.assertAllEqual(task.test[0], x)
    self.assertAllEqual(task.test[1], y)
    self.assertAllEqual(task.arrays.x_train, x)

  def test_image_label_uint8_and_a_test_dataset(self):
    client_data = _emnist_like(12, input_key='image', shape=(5, 5, 3),
                               dtype=np.uint8)
    images = np.arange(2 * 75, dtype=np.uint8).reshape(2, 5, 5, 3)
    test = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        image=images, label=np.array([1, 61])))
    task = tasks.from_client_data(client_data, test, train_client_spec=_SPEC,
                                  model='mlp', seed=3)
    self.assertEqual((task.num_classes, task.input_shape), (62, (5, 5, 3)))
    self.assertAllClose(task.test[0], images / 255.0)
    self.assertAllEqual(task.test[1], [1, 61])  # Default classes: 62.
    self._check_clients(task, client_data, 2)  # round(0.2 * 12).

  def test_named_keys(self):
    client_data = _emnist_like(10, input_key='img', label_key='target')
    task = tasks.from_client_data(
        client_data, client_data, train_client_spec=_SPEC, model='mlp',
        input_key='img', label_key='target', num_classes=62)
    self._check_clients(task, client_data, 2, input_key='img',
                        label_key='target')
    with self.assertRaisesRegex(
        ValueError, r"^train_data has elements with keys \['img', 'target'\],"
        ' none of the known layouts .*: give input_key and label_key'):
      tasks.from_client_data(client_data, client_data,
                             train_client_spec=_SPEC, model='mlp')

  def test_tuples(self):
    client_data = _emnist_like(10, tuples=True)
    test = tf.data.Dataset.from_tensor_slices(
        (np.zeros((3, 28, 28), np.float32), np.array([0, 1, 61])))
    task = tasks.from_client_data(client_data, test, train_client_spec=_SPEC,
                                  model='mlp')
    self.assertEqual(task.num_classes, 62)
    self.assertAllEqual(task.test[1], [0, 1, 61])
    self._check_clients(task, client_data, 2)

  def test_errors(self):
    client_data = _emnist_like(4)
    with self.assertRaisesRegex(
        TypeError, '^train_data must be a tff.simulation.datasets.ClientData;'
        ' got dict'):
      tasks.from_client_data({'a': np.zeros(3)}, client_data,
                             train_client_spec=_SPEC)
    with self.assertRaisesRegex(
        TypeError, '^test_data must be a tff.simulation.datasets.ClientData '
        'or a tf.data.Dataset; got ndarray'):
      tasks.from_client_data(client_data, np.zeros((3, 28, 28)),
                             train_client_spec=_SPEC)
    with self.assertRaisesRegex(ValueError, r"^label_key='y' is not a key "
                                "of train_data's elements"):
      tasks.from_client_data(client_data, client_data, input_key='pixels',
                             label_key='y', train_client_spec=_SPEC)
    # Labels 0, 1, 3, 4, 5, 6, 7, 8, 9, 9, 10: the first outside is 10.
    with self.assertRaisesRegex(ValueError, r"^Task 'client_data': a "
                                r'training label is 10, outside \[0, 10\)'):
      tasks.from_client_data(client_data, client_data, num_classes=10,
                             train_client_spec=_SPEC, model='mlp')


def _only(client_data, client_ids):
  """`client_data` restricted to `client_ids`, in its order."""
  kept = [c for c in client_data.client_ids if c in client_ids]
  return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
      kept, client_data.serializable_dataset_fn)


class NpzTaskTest(tf.test.TestCase):
  """`create_task('npz:PATH')`."""

  def _save(self, **entries):
    path = os.path.join(self.create_tempdir().full_path, 'data.npz')
    x, y = _indexed(60, shape=(8, 8))
    contents = dict(x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    contents.update(entries)
    np.savez(path, **{k: v for k, v in contents.items() if v is not None})
    return path, x, y

  def test_without_client_ids_it_is_resplit(self):
    path, x, y = self._save()
    self.assertFalse(tasks.has_natural_clients(f'npz:{path}'))
    task = tasks.create_task(f'npz:{path}', train_client_spec=_SPEC,
                             model='mlp', num_clients=4, partition='iid',
                             seed=1)
    self.assertEqual(task.name, f'npz:{path}')
    self.assertEqual(task.client_ids, ('0', '1', '2', '3'))
    self.assertEqual((task.num_classes, task.input_shape), (4, (8, 8, 1)))
    self.assertLen(task.validation[0], 6)
    self.assertLen(task.public_x, 6)
    self.assertEqual(sorted(len(p) for p in task.client_indices),
                     [12] * 4)
    self.assertAllClose(task.arrays.x_train, x[..., None] / 255.0)
    self.assertAllEqual(task.test[1], y[:6])
    # As from_arrays of the same arrays.
    same = tasks.from_arrays(x, y, x[:6], y[:6], train_client_spec=_SPEC,
                             model='mlp', num_clients=4, partition='iid',
                             seed=1)
    self.assertEqual(task.data_digest(), same.data_digest())

  def test_with_client_ids_the_clients_are_natural(self):
    owners = _owners()
    x, y = _indexed(len(owners), shape=(8, 8))
    path, _, _ = self._save(x_train=x, y_train=y, x_test=x[:6],
                            y_test=y[:6], client_ids=owners)
    name = f'npz:{path}'
    self.assertTrue(tasks.has_natural_clients(name))
    task = tasks.create_task(name, train_client_spec=_SPEC, model='mlp',
                             num_clients=2, partition='shards',
                             validation_fraction=0.2, public_fraction=0.1)
    self.assertLen(task.client_ids, 7)  # num_clients does not apply.
    self.assertContainsSubset(task.client_ids, _IDS)
    for client_id, part in zip(task.client_ids, task.client_indices):
      self.assertAllEqual(part, np.flatnonzero(owners == client_id))
    same = tasks.from_arrays(x, y, x[:6], y[:6], client_ids=owners,
                             train_client_spec=_SPEC, model='mlp',
                             validation_fraction=0.2, public_fraction=0.1)
    self.assertEqual(task.client_ids, same.client_ids)
    self.assertEqual(task.data_digest(), same.data_digest())
    split = os.path.join(self.create_tempdir().full_path, 'split.npz')
    np.savez(split, num_clients=1, train_0=np.arange(5))
    with self.assertRaisesRegex(
        ValueError, f'^--task={re.escape(name)} names its clients '
        r'\(client_ids\); split_file does not apply'):
      tasks.create_task(name, train_client_spec=_SPEC, model='mlp',
                        split_file=split, num_clients=1)

  def test_has_natural_clients_of_files_that_are_no_npz(self):
    directory = self.create_tempdir()
    one = os.path.join(directory.full_path, 'one.npy')
    np.save(one, np.arange(3))
    text = directory.create_file('text.npz', content='client_ids').full_path
    path, _, _ = self._save(client_ids=np.arange(60) % 3)
    with open(path, 'rb') as f:
      content = f.read()
    truncated = os.path.join(directory.full_path, 'truncated.npz')
    with open(truncated, 'wb') as f:
      f.write(content[:len(content) // 2])
    self.assertTrue(tasks.has_natural_clients(f'npz:{path}'))
    for name in (one, text, truncated, f'{directory.full_path}/missing.npz'):
      self.assertFalse(tasks.has_natural_clients(f'npz:{name}'), name)

  def test_a_missing_key_names_the_file_and_the_key(self):
    path, _, _ = self._save(y_test=None)
    with self.assertRaisesRegex(
        ValueError, f'^--task=npz:{re.escape(path)} lacks y_test;'):
      tasks.create_task(f'npz:{path}', train_client_spec=_SPEC, model='mlp')

  def test_extra_entries_give_one_warning(self):
    path, _, _ = self._save(origin=np.array('scraped'), version=np.array(2))
    with self.assertLogs(level='WARNING') as logs:
      task = tasks.create_task(f'npz:{path}', train_client_spec=_SPEC,
                               model='mlp', num_clients=3)
    self.assertEqual(logs.output, [
        f'WARNING:absl:--task=npz:{path}: entries origin, version are not '
        'used.'])
    self.assertLen(task.client_ids, 3)

  def test_a_split_file_names_x_train_then_x_test(self):
    path, x, _ = self._save()
    split = os.path.join(self.create_tempdir().full_path, 'split.npz')
    # 60 training then 6 test examples: 60..65 are the default test set.
    np.savez(split, num_clients=2, train_0=np.array([5, 0, 7]),
             train_1=np.arange(20, 30))
    task = tasks.create_task(f'npz:{path}', train_client_spec=_SPEC,
                             model='mlp', num_clients=2, split_file=split)
    self.assertAllEqual(_origin(_examples(task, '0')[0]), [5, 0, 7])
    self.assertAllEqual(_origin(_examples(task, '1')[0]), np.arange(20, 30))
    self.assertAllClose(task.test[0], x[:6, ..., None] / 255.0)
    np.savez(split, num_clients=1, train_0=np.array([3, 61]))
    with self.assertRaisesRegex(ValueError, 'trains on 1 examples of .*'
                                'default test set .e.g. index 61'):
      tasks.create_task(f'npz:{path}', train_client_spec=_SPEC,
                        model='mlp', num_clients=1, split_file=split)

  def test_synthetic_data_does_not_apply(self):
    path, _, _ = self._save()
    with self.assertRaisesRegex(
        ValueError, f"use_synthetic_data applies to .*, not to task "
        f"'npz:{re.escape(path)}'"):
      tasks.create_task(f'npz:{path}', train_client_spec=_SPEC,
                        use_synthetic_data=True)


class TaskNamesTest(tf.test.TestCase, parameterized.TestCase):
  """Former names, TFF's federated datasets, and where their data are."""

  @parameterized.parameters(('emnist', 'emnist_digits'),
                            ('emnist_character', 'federated_emnist'),
                            ('cifar100_image', 'federated_cifar100'))
  def test_former_names_give_one_warning(self, former, new):
    self.assertEqual(tasks.TASK_ALIASES[former], new)
    with self.assertLogs(level='WARNING') as logs:
      self.assertEqual(tasks.canonical_task_name(former), new)
    self.assertEqual(logs.output, [
        f"WARNING:absl:Task '{former}' is now named '{new}'."])

  def test_names(self):
    for name in tasks.TASK_NAMES + ('npz:/a/b.npz', 'imagenet'):
      with self.assertNoLogs(level='WARNING'):
        self.assertEqual(tasks.canonical_task_name(name), name)
    self.assertEqual(tasks.FEDERATED_TASKS, (
        'federated_emnist', 'federated_emnist_digits', 'federated_cifar100'))
    self.assertContainsSubset(tasks.FEDERATED_TASKS, tasks.TASK_NAMES)
    self.assertEqual(tasks.NPZ_PREFIX, 'npz:')
    natural = {name: tasks.has_natural_clients(name) for name in (
        'federated_emnist', 'emnist_character', 'cifar100_image', 'emnist',
        'digits', 'cifar100', 'npz:/nonexistent.npz')}
    self.assertEqual(natural, {
        'federated_emnist': True, 'emnist_character': True,
        'cifar100_image': True, 'emnist': False, 'digits': False,
        'cifar100': False, 'npz:/nonexistent.npz': False})

  @parameterized.parameters(
      ('emnist_character', 'federated_emnist', 62, (28, 28, 1)),
      ('federated_emnist_digits', 'federated_emnist_digits', 10, (28, 28, 1)),
      ('cifar100_image', 'federated_cifar100', 100, (32, 32, 3)))
  def test_synthetic_federated_tasks(self, name, canonical, classes, shape):
    with self.assertLogs(level='WARNING') as logs:
      task = tasks.create_task(name, train_client_spec=_SPEC, model='mlp',
                               use_synthetic_data=True)
      logging.warning('built')  # A record for assertLogs either way.
    renamed = [line for line in logs.output if 'is now named' in line]
    self.assertEqual(renamed, [] if name == canonical else [
        f"WARNING:absl:Task '{name}' is now named '{canonical}'."])
    self.assertEqual(task.name, canonical)
    self.assertEqual((task.num_classes, task.input_shape), (classes, shape))
    # TFF's two synthetic clients: one held out (at least one), one trains.
    self.assertLen(task.client_ids, 1)
    self.assertIn(task.client_ids[0], ('synthetic1', 'synthetic2'))
    train, _ = tasks.sources.load_federated(
        canonical, data_dir=None, use_synthetic_data=True)
    held = ({'synthetic1', 'synthetic2'} - set(task.client_ids)).pop()
    num_held = len(list(train.create_tf_dataset_for_client(held)))
    self.assertEqual(len(task.validation[1]) + len(task.public_x), num_held)
    self.assertLen(task.validation[1], round(0.5 * num_held))

  def test_synthetic_data_is_for_federated_tasks_only(self):
    with self.assertRaisesRegex(
        ValueError, r"^use_synthetic_data applies to \('federated_emnist', "
        r"'federated_emnist_digits', 'federated_cifar100'\), not to task "
        r"'digits'"):
      tasks.create_task('digits', train_client_spec=_SPEC,
                        use_synthetic_data=True)

  @parameterized.parameters(('emnist_character', 'emnist_all.sqlite'),
                            ('federated_cifar100', 'cifar100.sqlite'))
  def test_missing_federated_data_names_where_it_looked(self, name, file_name):
    data_dir = self.create_tempdir().full_path
    path = os.path.join(data_dir, file_name)
    with self.assertRaises(FileNotFoundError) as raised:
      tasks.create_task(name, train_client_spec=_SPEC, data_dir=data_dir)
    message = str(raised.exception)
    self.assertIn(f'looked for {path} ', message)
    self.assertIn('--data_dir', message)
    self.assertIn('--use_synthetic_data', message)
    self.assertStartsWith(
        message, f'--task={tasks.canonical_task_name(name)}: ')
    self.assertEmpty(os.listdir(data_dir))

  def test_a_split_file_does_not_apply_to_federated_tasks(self):
    with self.assertRaisesRegex(ValueError, "^Task 'federated_emnist' keeps "
                                'its clients; split_file does not apply'):
      tasks.create_task('federated_emnist', train_client_spec=_SPEC,
                        use_synthetic_data=True, split_file='split.npz')


class DataDigestTest(tf.test.TestCase):
  """`Task.data_digest`: equal data, equal digests."""

  def _task(self, x=None, y=None, x_test=None, y_test=None, **kwargs):
    x0, y0 = _indexed(60)
    x = x0 if x is None else x
    y = y0 if y is None else y
    kwargs = dict(dict(train_client_spec=_SPEC, model='mlp',
                       partition='iid', num_clients=4, seed=0), **kwargs)
    return tasks.from_arrays(
        x, y, x0[:5] if x_test is None else x_test,
        y0[:5] if y_test is None else y_test, **kwargs)

  def test_equal_builds_equal_digests(self):
    digest = self._task().data_digest()
    self.assertRegex(digest, '^[0-9a-f]{32}$')
    self.assertEqual(self._task().data_digest(), digest)
    # The task's name, model and client spec are no data.
    other = self._task(name='other', train_client_spec=(
        tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=2)))
    self.assertEqual(other.data_digest(), digest)

  def test_one_changed_example_changes_the_digest(self):
    base = self._task()
    x, y = _indexed(60)
    client_example = base.client_indices[0][0]
    y_changed = y.copy()
    y_changed[client_example] = (y[client_example] + 1) % 4
    x_changed = x.copy()
    x_changed[client_example, 2, 2] ^= 1
    x_test, y_test = x[:5].copy(), y[:5].copy()
    y_test[0] = (y_test[0] + 1) % 4
    x_test[0, 1, 1] ^= 1
    for task in (self._task(y=y_changed), self._task(x=x_changed),
                 self._task(y_test=y_test), self._task(x_test=x_test)):
      # The same split (iid does not look at the labels), other data.
      for a, b in zip(task.client_indices, base.client_indices, strict=True):
        self.assertAllEqual(a, b)
      self.assertNotEqual(task.data_digest(), base.data_digest())

  def test_another_split_changes_the_digest(self):
    base = self._task()
    digests = {base.data_digest()}
    for kwargs in (dict(seed=1), dict(num_clients=5),
                   dict(partition='dirichlet', alpha=1.0),
                   dict(validation_fraction=0.2)):
      digests.add(self._task(**kwargs).data_digest())
    self.assertLen(digests, 5)

  def test_a_renamed_client_changes_the_digest(self):
    owners = _owners()
    x, y = _indexed(len(owners))
    base = tasks.from_arrays(x, y, x[:4], y[:4], client_ids=owners,
                             train_client_spec=_SPEC, model='mlp')
    renamed = np.where(owners == base.client_ids[2], 'renamed', owners)
    task = tasks.from_arrays(x, y, x[:4], y[:4], client_ids=renamed,
                             train_client_spec=_SPEC, model='mlp')
    self.assertEqual(task.client_ids[2], 'renamed')
    self.assertEqual(task.client_ids[:2] + task.client_ids[3:],
                     base.client_ids[:2] + base.client_ids[3:])
    for a, b in zip(task.client_indices, base.client_indices, strict=True):
      self.assertAllEqual(a, b)
    self.assertAllEqual(task.public_x, base.public_x)
    self.assertNotEqual(task.data_digest(), base.data_digest())


if __name__ == '__main__':
  tf.test.main()
