"""Tasks: splits, element spec, preprocessing, models, TFF baseline tasks."""

import collections
import os
from unittest import mock

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
    self.assertCountEqual(os.listdir(directory),
                          [f'{k}.{s}' for k in range(5) for s in 'xy'])
    self.assertEqual(os.path.getsize(os.path.join(directory, '3.y')),
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

  def test_split_file_reproduces_another_librarys_split(self):
    canonical = tasks.data.load_canonical('digits')
    train_pool = np.setdiff1d(np.arange(len(canonical.y)),
                              canonical.test_indices)
    parts = [train_pool[:30], train_pool[100:140], train_pool[500:505]]
    path = os.path.join(self.get_temp_dir(), 'split.npz')
    np.savez(path, num_clients=3, **{f'train_{c}': p for c, p in
                                     enumerate(parts)})
    task = tasks.create_task('digits', train_client_spec=_SPEC, num_clients=3,
                             split_file=path, seed=0)
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
      ('unknown', lambda t: dict(train_0=np.arange(20, 30), notes=np.ones(2)),
       'has entries notes'),
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
                        model=seven_classes)


if __name__ == '__main__':
  tf.test.main()
