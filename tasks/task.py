"""Tasks: data split over clients, server splits, and models, as a BaselineTask.

`create_task` returns a `tff.simulation.baselines.BaselineTask` (so a task of
ours and one of TFF's baselines are interchangeable) extended with what the
distillation algorithms need: a labelled validation split and an unlabeled
public split, both held by the server and disjoint from the clients' data,
and model builders for every architecture (prototypes).

Models: a built-in architecture by name (`tasks.MODEL_NAMES`) or your own
Keras model, given as a no-arg function that builds it (uncompiled, logits
out); `model_fn_from_keras` wraps such a builder as a TFF `model_fn` with the
tasks' loss and metrics, checking it against the task's inputs and classes
first. A custom model is named by its function's `__name__`.

Model prototypes (heterogeneous architectures, FedDF/FedAUX): `prototypes`
names the architectures (built-in names or builders), the first being the
task's `model`; each client is assigned one by a seeded balanced rule: the
clients, in a permutation drawn from `seed`, take the prototypes in turn (so
counts differ by at most one).

Split of a task's canonical training examples (see `tasks.data`), by `seed`:
`validation_fraction` -> validation, `public_fraction` -> public (labels
dropped), the rest -> clients with `tasks.partition`. The test set is the
dataset's own test split (centralized).
"""

import collections
from collections.abc import Callable, Mapping, Sequence
import functools
import inspect
import os
import shutil
import tempfile
from typing import Any, Optional, Union

import attrs
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tasks import data
from tasks import models
from tasks import partition as partition_lib

OUR_TASKS = tuple(data.SPECS)
TFF_BASELINE_TASKS = ('emnist_character', 'cifar100_image')
TASK_NAMES = OUR_TASKS + TFF_BASELINE_TASKS


# What a task's `client_data_computation` takes: a client, the seed of its
# shuffle in the round, and how many batches (-1: all; 0: none).
CLIENT_DATA_KEY_TYPE = tff.StructWithPythonType(
    [('client_id', np.str_), ('shuffle_seed', np.int64),
     ('max_batches', np.int64)], collections.OrderedDict)

# A no-arg function building a new, uncompiled `tf.keras.Model` whose output
# is the logits over the task's classes.
KerasBuilder = Callable[[], tf.keras.Model]
# TFF's baseline tasks: their number of classes.
_TFF_BASELINE_CLASSES = {'emnist_character': 62, 'cifar100_image': 100}


def _keras_model(model_name, input_shape, num_classes, seed):
  return models.build_keras_model(
      model_name, input_shape=input_shape, num_classes=num_classes, seed=seed
  )


def _inputs_spec(input_spec: Any) -> tf.TensorSpec:
  """The model inputs' spec of a batch spec `{x, y}` or `(x, y)`."""
  x = input_spec.get('x') if isinstance(input_spec, Mapping) else (
      input_spec[0] if isinstance(input_spec, Sequence) and
      len(input_spec) == 2 else None)
  if not isinstance(x, tf.TensorSpec):
    raise TypeError(
        'input_spec must be the tf.TensorSpecs of a batch, OrderedDict(x=..., '
        f'y=...) or (x, y) (a task\'s datasets.element_type_structure); got '
        f'{input_spec!r}.'
    )
  return x


def _built(keras_model: tf.keras.Model, input_spec: Any) -> tf.keras.Model:
  """`keras_model`, built on the task's inputs if it declares no input shape.

  A model written as PyTorch modules are (layers only, shapes inferred)
  creates its weights when first called: here, on a symbolic batch of the
  task's inputs.
  """
  if not keras_model.built:
    x = _inputs_spec(input_spec)
    keras_model(tf.keras.Input(shape=x.shape[1:], dtype=x.dtype))
  return keras_model


def _keras_model_fn(keras_builder: KerasBuilder, input_spec: Any):
  """A builder's `model_fn`, unchecked (`model_fn_from_keras` checks)."""

  def model_fn():
    return tff.learning.models.from_keras_model(
        _built(keras_builder(), input_spec),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        input_spec=input_spec,
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
    )

  return model_fn


def _model_fn(model_name, input_shape, num_classes, seed, input_spec):
  """A no-arg `model_fn` building a new `VariableModel` of `model_name`."""
  if model_name not in models.MODEL_NAMES:
    raise ValueError(
        f'Unknown model {model_name!r}; choose one of {models.MODEL_NAMES}.'
    )
  return _keras_model_fn(
      functools.partial(
          _keras_model, model_name, input_shape, num_classes, seed),
      input_spec,
  )


def _ends_in_softmax(keras_model: tf.keras.Model) -> bool:
  if not keras_model.layers:
    return False
  last = keras_model.layers[-1]
  return isinstance(last, tf.keras.layers.Softmax) or getattr(
      last, 'activation', None) in (tf.keras.activations.softmax,
                                    tf.nn.softmax)


def _describe(keras_builder: Any) -> str:
  """A builder as errors name it: its name, else its repr."""
  name = getattr(keras_builder, '__name__', None)
  return name if isinstance(name, str) else repr(keras_builder)


def _check_is_builder(value: Any, argument: str, expected: str) -> None:
  if isinstance(value, tf.keras.Model):
    raise TypeError(
        f'{argument} is a Keras model ({type(value).__name__} {value.name!r}); '
        'pass the function that builds it: TFF builds the model anew in each '
        'computation.'
    )
  if not callable(value):
    raise TypeError(
        f'{argument} must be {expected} that builds a new tf.keras.Model; '
        f'got {value!r}.'
    )


def _check_keras_builder(
    keras_builder: Any, input_spec: Any, num_classes: int, argument: str
) -> None:
  """Raises an error naming `argument` unless `keras_builder` builds a new,
  uncompiled Keras model from the task's inputs to `num_classes` logits."""
  _check_is_builder(keras_builder, argument, 'a no-arg function')
  what = f'{argument}={_describe(keras_builder)}'
  try:
    inspect.signature(keras_builder).bind()
  except TypeError as e:
    raise TypeError(
        f'{what} must be callable with no arguments: {e}.') from None
  except ValueError:  # No signature to inspect (a builtin): call it below.
    pass
  x = _inputs_spec(input_spec)
  shape = tuple(x.shape[1:])
  with tf.Graph().as_default():  # Its variables go nowhere.
    keras_model = keras_builder()
    if not isinstance(keras_model, tf.keras.Model):
      raise TypeError(f'{what} must return a tf.keras.Model; it returned '
                      f'{type(keras_model).__name__}.')
    again = keras_builder()
    if again is keras_model or {id(l) for l in keras_model.layers} & {
        id(l) for l in getattr(again, 'layers', ())}:
      raise ValueError(
          f'{what} returns the same model or layers on every call; create '
          'them inside the function: TFF builds the model anew in each '
          'computation.'
      )
    if keras_model._is_compiled:  # pylint: disable=protected-access
      raise ValueError(
          f'{what} returned a compiled model; return it uncompiled: the task '
          'gives the loss and metrics, the algorithm the optimizer.'
      )
    if keras_model.built and keras_model.inputs is not None:
      if len(keras_model.inputs) != 1:
        raise ValueError(
            f'{what} builds a model of {len(keras_model.inputs)} inputs; the '
            f'task\'s batches have one, x of shape {shape}.'
        )
      declared = keras_model.inputs[0].shape[1:]
      if not declared.is_compatible_with(shape):
        raise ValueError(
            f'{what} builds a model for inputs of shape {tuple(declared)}, '
            f'but the task\'s inputs have shape {shape}.'
        )
    try:
      outputs = keras_model(tf.keras.Input(shape=shape, dtype=x.dtype))
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
      raise ValueError(
          f'{what} builds a model that cannot take the task\'s inputs of '
          f'shape {shape}: {e}'
      ) from e
    outputs = tf.nest.flatten(outputs)
    if len(outputs) != 1:
      raise ValueError(
          f'{what} builds a model with {len(outputs)} outputs; the task needs '
          f'one: logits of shape (batch, {num_classes}).'
      )
    out_shape = tuple(outputs[0].shape)
    if len(out_shape) != 2 or out_shape[1] != num_classes:
      raise ValueError(
          f'{what} builds a model whose output has shape {out_shape}, but the '
          f'task has {num_classes} classes: its output must be logits of '
          f'shape (batch, {num_classes}), e.g. a last layer '
          f'Dense({num_classes}).'
      )
    if _ends_in_softmax(keras_model):
      raise ValueError(
          f'{what} builds a model that ends in a softmax; output logits '
          'instead (no activation on the last layer): the loss is '
          'cross-entropy from logits.'
      )


def model_fn_from_keras(
    keras_builder: KerasBuilder,
    *,
    input_spec: Any,
    num_classes: int,
    argument: str = 'keras_builder',
) -> Callable[[], tff.learning.models.VariableModel]:
  """Wraps a Keras model builder as a TFF `model_fn`, with the tasks' loss.

  The `model_fn` returns `tff.learning.models.from_keras_model(model,
  loss=SparseCategoricalCrossentropy(from_logits=True), metrics=
  [SparseCategoricalAccuracy()], input_spec=input_spec)` on a new model from
  `keras_builder` each call, as the built-in models' `model_fn` does. A model
  that declares no input shape (layers only, as a PyTorch module) is built on
  the task's inputs.

  Args:
    keras_builder: a no-arg function returning a new, uncompiled
      `tf.keras.Model` whose output is the logits over the classes.
    input_spec: the `tf.TensorSpec`s of a batch, `OrderedDict(x=..., y=...)`
      or `(x, y)`: a task's `datasets.element_type_structure`.
    num_classes: the number of classes (the model's output size).
    argument: the argument name errors give (e.g. `model` of `create_task`).

  Returns:
    A no-arg function returning a new `tff.learning.models.VariableModel`.

  Raises:
    TypeError: `keras_builder` is not a no-arg function (a Keras model itself
      is not one) or does not return a `tf.keras.Model`.
    ValueError: the builder returns the same model or layers on every call,
      the model is compiled, declares inputs of another shape than
      the task's or cannot take them, does not give one output of
      `num_classes` logits per example, or ends in a softmax.
  """
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
    raise ValueError(
        f'num_classes must be an integer >= 2; got {num_classes!r}.')
  _check_keras_builder(keras_builder, input_spec, num_classes, argument)
  return _keras_model_fn(keras_builder, input_spec)


@attrs.define(frozen=True, kw_only=True)
class Task(tff.simulation.baselines.BaselineTask):
  """A `BaselineTask` with server-side splits and per-architecture models.

  Attributes (beyond `datasets` and `model_fn`):
    name, model_name, num_classes, input_shape, seed.
    custom_models: name -> Keras builder of each prototype that is not a
      built-in architecture (named by its function's `__name__`).
    arrays: the task's `tasks.data.Arrays` (canonical order).
    client_indices: per client, indices into `arrays.x_train`.
    validation: (x, y) numpy arrays, labelled, held by the server.
    public_x: numpy array of unlabeled server (distillation) inputs.
    prototypes: model architectures' names, the first is `model_name`.
    client_prototypes: client id -> its prototype.
    train_client_spec: epochs, batch size, ... of the clients' training data.
  """

  name: str
  model_name: str
  num_classes: int
  input_shape: tuple[int, ...]
  seed: int
  arrays: data.Arrays
  client_indices: list[np.ndarray]
  validation: tuple[np.ndarray, np.ndarray]
  public_x: np.ndarray
  prototypes: tuple[str, ...]
  client_prototypes: dict[str, str]
  train_client_spec: tff.simulation.baselines.ClientSpec
  custom_models: dict[str, KerasBuilder] = attrs.field(factory=dict)

  @property
  def test(self) -> tuple[np.ndarray, np.ndarray]:
    return self.arrays.x_test, self.arrays.y_test

  def client_dataset(self, client_id: str, round_num: int) -> tf.data.Dataset:
    """Client `client_id`'s training data in round `round_num`, preprocessed.

    Shuffled by a seed drawn from (task seed, round, client id): each round
    and client has its own order (and each epoch within a round, as
    `reshuffle_each_iteration` reshuffles every pass), and the same flags give
    the same orders, on resume too. `datasets.train_preprocess_fn` (a
    `BaselineTask`'s round-free interface) shuffles by the task seed alone:
    every round would see the same order.
    """
    return _train_preprocess(
        self.datasets.train_data.create_tf_dataset_for_client(client_id),
        spec=self.train_client_spec,
        shuffle_seed=_shuffle_seed(self.seed, round_num, client_id),
    )

  def client_data_key(self, client_id: str, round_num: int, *,
                      dropped: bool = False) -> collections.OrderedDict:
    """What `client_data_computation` takes for a client in a round.

    `OrderedDict(client_id, shuffle_seed, max_batches)`: the seed
    `client_dataset` shuffles with, and -1 (all batches) or 0 (a client that
    dropped out: no data).
    """
    return collections.OrderedDict(
        client_id=client_id,
        shuffle_seed=np.int64(_shuffle_seed(self.seed, round_num, client_id)),
        max_batches=np.int64(0 if dropped else -1))

  def client_data_computation(self, directory: str) -> tff.Computation:
    """`(<client_id, shuffle_seed, max_batches> -> B*)`: a client's round data.

    TFF's mechanism for data built where the computation runs (a
    `ClientData`'s `dataset_computation`, composed with a learning process by
    `tff.simulation.compose_dataset_computation_with_learning_process`): it
    takes a `client_data_key` and builds the client's dataset on the TFF
    worker, preprocessed as `client_dataset` is, from files it reads:
    `client_dataset(c, r)` and this computation of `client_data_key(c, r)`
    give the same batches in the same order.

    The clients' examples are written to `directory` first (made if missing,
    rewritten if there): per client `<id>.x` and `<id>.y`, its inputs
    (float32) and labels (int32), raw little-endian arrays in the client's
    order. The worker reads only its clients' files, so
    `directory` must be readable at the same path where the workers run
    (local workers: always; other machines: a shared filesystem).

    Args:
      directory: where to write the clients' files.
    """
    directory = os.path.abspath(directory)
    _write_client_files(directory, self.arrays.x_train, self.arrays.y_train,
                        self.client_indices)
    spec = self.train_client_spec
    shape = tuple(self.arrays.x_train.shape[1:])

    @tff.tensorflow.computation(CLIENT_DATA_KEY_TYPE)
    def client_data(key):
      # Each file read whole and decoded at once (a client's examples are a
      # few KB), not record by record: one read and one decode per client.
      prefix = tf.strings.join([directory, '/', key['client_id']])
      x = tf.reshape(tf.io.decode_raw(tf.io.read_file(prefix + '.x'),
                                      tf.float32), (-1,) + shape)
      y = tf.io.decode_raw(tf.io.read_file(prefix + '.y'), tf.int32)
      dataset = tf.data.Dataset.from_tensor_slices(
          collections.OrderedDict(x=x, y=y))
      dataset = _train_preprocess(dataset, spec=spec,
                                  shuffle_seed=key['shuffle_seed'])
      return dataset.take(key['max_batches'])

    return client_data

  def keras_model_fn(self, model_name: Optional[str] = None) -> tf.keras.Model:
    """A new Keras model (logits out) of `model_name` (default the task's).

    A built-in architecture is initialized by the task's seed; a custom model
    is its builder's, built on the task's inputs.
    """
    model_name = model_name or self.model_name
    if model_name in self.custom_models:
      return _built(self.custom_models[model_name](),
                    self.datasets.element_type_structure)
    return _keras_model(
        model_name, self.input_shape, self.num_classes, self.seed,
    )

  def model_fn_for(
      self, model: Union[str, KerasBuilder]
  ) -> Callable[[], tff.learning.models.VariableModel]:
    """A no-arg `model_fn` for `model`, with the task's loss and metrics.

    Args:
      model: a prototype's name (a built-in architecture, or one of
        `custom_models`), or a Keras builder (checked as
        `model_fn_from_keras` does).
    """
    spec = self.datasets.element_type_structure
    if not isinstance(model, str):
      return model_fn_from_keras(model, input_spec=spec,
                                 num_classes=self.num_classes,
                                 argument='model')
    if model in self.custom_models:
      return _keras_model_fn(self.custom_models[model], spec)
    if model not in models.MODEL_NAMES:
      raise ValueError(
          f'Unknown model {model!r}; choose one of '
          f'{models.MODEL_NAMES + tuple(self.custom_models)}.'
      )
    return _model_fn(
        model, self.input_shape, self.num_classes, self.seed, spec,
    )

  def distillation_inputs(
      self, source: str, data_dir: Optional[str] = None
  ) -> np.ndarray:
    """Unlabeled server inputs for distillation, by `source`.

    Args:
      source: `public` (the task's public split) or the name of another of
        our tasks (out-of-domain data: its training inputs, images resized to
        this task's height and width; the channels must match). (Data-free
        noise is drawn by the algorithms: `tff_kd.server_distillation.
        noise_inputs`.)
      data_dir: tensorflow-datasets directory, for tfds sources.
    """
    if source == 'public':
      if not len(self.public_x):
        raise ValueError(f'Task {self.name!r} has an empty public split.')
      return self.public_x
    if source == self.name:
      raise ValueError(
          f'Distillation source {source!r} is the task itself: use '
          "'public' (the held-out public split, disjoint from the clients')."
      )
    if source not in data.SPECS:
      raise ValueError(
          f'Unknown distillation source {source!r}; choose public or '
          f'one of {tuple(data.SPECS)}.'
      )
    shape = data.SPECS[source][0]
    if shape == self.input_shape:
      return data.load_arrays(source, data_dir=data_dir).x_train
    if len(shape) != 3 or len(self.input_shape) != 3 or (
        shape[2] != self.input_shape[2]):
      raise ValueError(
          f'Distillation source {source!r} has inputs of shape {shape}, which'
          f' cannot be resized to task {self.name!r}\'s {self.input_shape}.'
      )
    x = data.load_arrays(source, data_dir=data_dir).x_train
    return tf.image.resize(x, self.input_shape[:2], method='area').numpy()


def _resolve_model(
    model: Union[str, KerasBuilder], argument: str, kind: str = 'model'
) -> tuple[str, Optional[KerasBuilder]]:
  """(name, None) of a built-in architecture; (name, builder) of a custom one.

  A custom model is named by its function's `__name__` (it names its
  prototype and its metrics), which must be an identifier and not a built-in
  architecture's name.
  """
  if isinstance(model, str):
    if model not in models.MODEL_NAMES:
      raise ValueError(
          f'Unknown {kind} {model!r}; choose one of {models.MODEL_NAMES}, or '
          'pass a function that builds a Keras model.'
      )
    return model, None
  _check_is_builder(model, argument,
                    f'one of {models.MODEL_NAMES} or a no-arg function')
  name = getattr(model, '__name__', None)
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(
        f'{argument}={_describe(model)}: a custom model is named by its '
        f'function\'s __name__, and {name!r} is not a name; define it with '
        '`def`.'
    )
  if name in models.MODEL_NAMES:
    raise ValueError(
        f'{argument}={_describe(model)} is named {name!r}, a built-in '
        'model\'s name; rename the function.'
    )
  return name, model


def _from_split_file(name, split_file, num_clients, data_dir):
  """(arrays, client indices into arrays.x_train, unused training indices)."""
  canonical = data.load_canonical(name, data_dir=data_dir)
  train_parts, test = data.load_split_file(split_file, len(canonical.y))
  if len(train_parts) != num_clients:
    raise ValueError(
        f'split_file={split_file!r} has {len(train_parts)} clients but '
        f'num_clients={num_clients}; make them equal.'
    )
  if test is None:
    test = canonical.test_indices
    overlap = np.intersect1d(np.concatenate(train_parts), test)
    if overlap.size:
      raise ValueError(
          f'split_file={split_file!r} trains on {overlap.size} examples of '
          f'{name}\'s default test set (e.g. index {overlap[0]}); give test_{{c}}'
          ' arrays, whose union then is the test set.'
      )
  pool = np.setdiff1d(np.arange(len(canonical.y)), test)
  arrays = data.Arrays(canonical.x[pool], canonical.y[pool],
                       canonical.x[test], canonical.y[test])
  client_indices = [np.searchsorted(pool, part) for part in train_parts]
  unused = np.setdiff1d(np.arange(len(pool)), np.concatenate(client_indices))
  return arrays, client_indices, unused


def _assign_prototypes(
    prototypes: tuple[str, ...], num_clients: int, seed: int
) -> dict[str, str]:
  """Client id -> prototype: a seeded permutation takes them in turn."""
  order = np.random.default_rng([seed, 2]).permutation(num_clients)
  return {
      str(client): prototypes[i % len(prototypes)]
      for i, client in enumerate(order)
  }


def _write_client_files(directory, x, y, client_indices):
  """Client k's rows of (x, y) as `k.x` and `k.y` (raw records).

  Written into a new directory renamed into place, so a reader never sees a
  partial one.
  """
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.partial_', dir=parent)
  for k, rows in enumerate(client_indices):
    for suffix, values, dtype in (('x', x, '<f4'), ('y', y, '<i4')):
      with open(os.path.join(tmp, f'{k}.{suffix}'), 'wb') as f:
        f.write(np.ascontiguousarray(values[rows], dtype).tobytes())
  if os.path.exists(directory):
    shutil.rmtree(directory)
  os.rename(tmp, directory)


def _shuffle_seed(seed: int, round_num: int, client_id: str) -> int:
  """The seed of a client's shuffle in a round, from (task seed, round, id)."""
  return int(np.random.default_rng(
      [seed, round_num, 5, *client_id.encode()]).integers(2**63 - 1))


def _train_preprocess(
    dataset: tf.data.Dataset,
    *,
    spec: tff.simulation.baselines.ClientSpec,
    shuffle_seed: int,
) -> tf.data.Dataset:
  """Shuffles (each epoch anew), repeats and batches as `spec` says."""
  dataset = dataset.shuffle(spec.shuffle_buffer_size or 10_000,
                            seed=shuffle_seed)
  dataset = dataset.repeat(spec.num_epochs).batch(spec.batch_size)
  if spec.max_elements is not None and spec.max_elements > 0:
    dataset = dataset.take(spec.max_elements)
  return dataset


def _client_data(x, y, parts) -> tff.simulation.datasets.ClientData:
  """ClientData '0'..'K-1' over the rows `parts[k]` of (x, y).

  Its `serializable_dataset_fn` slices the clients' rows (one array, in
  client order) by the client id: eagerly, from numpy; traced (TFF's
  `dataset_computation`, `Task.client_data_computation`), from the arrays as
  the graph's constants.
  """
  order = np.concatenate(parts)
  offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(
      np.int64)
  x_all = x[order]
  y_all = y[order]

  def dataset_fn(client_id):
    if tf.executing_eagerly():
      k = int(client_id)
      start, end = offsets[k], offsets[k + 1]
      return tf.data.Dataset.from_tensor_slices(
          collections.OrderedDict(x=x_all[start:end], y=y_all[start:end]))
    k = tf.strings.to_number(client_id, tf.int64)
    bounds = tf.constant(offsets)
    start, end = bounds[k], bounds[k + 1]
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=tf.constant(x_all)[start:end], y=tf.constant(y_all)[start:end]))

  return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
      [str(k) for k in range(len(parts))], dataset_fn
  )


def _centralized(x, y) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y))


def _tff_baseline(name, train_client_spec, use_synthetic_data):
  if name == 'emnist_character':
    return tff.simulation.baselines.emnist.create_character_recognition_task(
        train_client_spec, model_id='cnn_dropout', only_digits=False,
        use_synthetic_data=use_synthetic_data,
    )
  return tff.simulation.baselines.cifar100.create_image_classification_task(
      train_client_spec, model_id='resnet18',
      use_synthetic_data=use_synthetic_data,
  )


def create_task(
    name: str,
    *,
    train_client_spec: tff.simulation.baselines.ClientSpec,
    model: Union[str, KerasBuilder] = 'cnn',
    prototypes: Optional[Sequence[Union[str, KerasBuilder]]] = None,
    partition: str = 'dirichlet',
    alpha: float = 0.5,
    classes_per_client: int = 2,
    num_clients: int = 20,
    seed: int = 0,
    validation_fraction: float = 0.1,
    public_fraction: float = 0.1,
    data_dir: Optional[str] = None,
    split_file: Optional[str] = None,
    eval_batch_size: int = 256,
    use_synthetic_data: bool = True,
) -> tff.simulation.baselines.BaselineTask:
  """Creates task `name` (see `TASK_NAMES`).

  Args:
    name: one of `TASK_NAMES`. `emnist_character` and `cifar100_image` are
      TFF's own baseline tasks, returned as TFF builds them (naturally
      partitioned; no public split); the other arguments but
      `train_client_spec`, `use_synthetic_data` and a custom `model` do not
      apply to them.
    train_client_spec: a `tff.simulation.baselines.ClientSpec` (epochs, batch
      size, max elements, shuffle buffer) for client training data.
    model: architecture, one of `tasks.MODEL_NAMES`, or your own: a no-arg
      function building a new, uncompiled `tf.keras.Model` with logits out
      (see `model_fn_from_keras`; checked here against the task's inputs and
      classes), named by its `__name__`.
    prototypes: architectures of the clients' models (FedDF, FedAUX, FD,
      DS-FL, FedAD), names or builders as `model`, the first equal to
      `model`; default `(model,)`.
    partition: one of `tasks.partition.METHODS`.
    alpha: Dirichlet concentration for `dirichlet` and `quantity`, > 0.
    classes_per_client: classes per client for `shards`.
    num_clients: number of clients K.
    seed: seed of the splits, the partition, model init and local shuffling.
    validation_fraction: share of training examples held out, labelled.
    public_fraction: share of training examples held out, unlabeled.
    data_dir: tensorflow-datasets directory (tasks mnist, emnist, cifar*).
    split_file: an `.npz` naming each client's examples by canonical index
      (`tasks.data.load_split_file`), to reproduce another library's split;
      it replaces `partition` (`num_clients` must match it). The validation
      and public splits are then drawn from the training examples no client
      holds (fractions of those).
    eval_batch_size: batch size of the centralized test/validation data.
    use_synthetic_data: TFF baseline tasks only.

  Returns:
    A `Task` (a `tff.simulation.baselines.BaselineTask`), or TFF's
    `BaselineTask` for the TFF baseline names.
  """
  if name not in TASK_NAMES:
    raise ValueError(f'Unknown task {name!r}; choose one of {TASK_NAMES}.')
  if name in TFF_BASELINE_TASKS:
    baseline = _tff_baseline(name, train_client_spec, use_synthetic_data)
    if isinstance(model, str):
      return baseline
    return attrs.evolve(baseline, model_fn=model_fn_from_keras(
        model, input_spec=baseline.datasets.element_type_structure,
        num_classes=_TFF_BASELINE_CLASSES[name], argument='model'))
  model_name, builder = _resolve_model(model, 'model')
  entries = [model] if prototypes is None else list(prototypes)
  resolved = [_resolve_model(p, f'prototypes[{i}]', kind='prototype')
              for i, p in enumerate(entries)]
  prototypes = tuple(n for n, _ in resolved)
  if (prototypes[0] != model_name or resolved[0][1] is not builder
      or len(set(prototypes)) != len(prototypes)):
    raise ValueError(
        'prototypes must be distinct and start with the model '
        f'{model_name!r}; got {prototypes}.'
    )
  custom_models = {n: b for n, b in resolved if b is not None}
  for arg, value in (('validation_fraction', validation_fraction),
                     ('public_fraction', public_fraction)):
    if not 0 <= value < 1:
      raise ValueError(f'{arg} must be in [0, 1); got {value}.')
  if validation_fraction + public_fraction >= 1:
    raise ValueError(
        'validation_fraction + public_fraction must be < 1; got'
        f' {validation_fraction} + {public_fraction}.'
    )
  if eval_batch_size < 1:
    raise ValueError(f'eval_batch_size must be >= 1; got {eval_batch_size}.')
  if partition in ('dirichlet', 'quantity') and not alpha > 0:
    raise ValueError(f'alpha must be > 0; got {alpha}.')
  input_shape, num_classes = data.SPECS[name]
  rng = np.random.default_rng([seed, 1])
  if split_file is None:
    arrays = data.load_arrays(name, data_dir=data_dir)
    server_pool = rng.permutation(len(arrays.y_train))
  else:
    arrays, client_indices, server_pool = _from_split_file(
        name, split_file, num_clients, data_dir)
    server_pool = rng.permutation(server_pool)
  for split, labels in (('training', arrays.y_train), ('test', arrays.y_test)):
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if outside.size:
      raise ValueError(
          f'Task {name!r}: a {split} label is {outside[0]}, outside [0, '
          f'{num_classes}).'
      )
  num_validation = int(round(validation_fraction * len(server_pool)))
  num_public = int(round(public_fraction * len(server_pool)))
  validation_idx = np.sort(server_pool[:num_validation])
  public_idx = np.sort(server_pool[num_validation:num_validation + num_public])
  if split_file is None:
    client_pool = np.sort(server_pool[num_validation + num_public:])
    parts = partition_lib.partition(
        arrays.y_train[client_pool],
        num_clients=num_clients,
        method=partition,
        seed=seed,
        alpha=alpha,
        classes_per_client=classes_per_client,
    )
    client_indices = [client_pool[p] for p in parts]
  validation = (arrays.x_train[validation_idx], arrays.y_train[validation_idx])

  datasets = tff.simulation.baselines.BaselineTaskDatasets(
      train_data=_client_data(arrays.x_train, arrays.y_train, client_indices),
      test_data=_centralized(arrays.x_test, arrays.y_test),
      validation_data=_centralized(*validation),
      train_preprocess_fn=functools.partial(
          _train_preprocess, spec=train_client_spec, shuffle_seed=seed),
      eval_preprocess_fn=lambda dataset: dataset.batch(eval_batch_size),
  )
  spec = datasets.element_type_structure
  for i, (_, prototype_builder) in enumerate(resolved):
    if prototype_builder is not None:
      _check_keras_builder(prototype_builder, spec, num_classes,
                           'model' if i == 0 else f'prototypes[{i}]')
  return Task(
      name=name,
      datasets=datasets,
      model_fn=(_model_fn(model_name, input_shape, num_classes, seed, spec)
                if builder is None else _keras_model_fn(builder, spec)),
      model_name=model_name,
      num_classes=num_classes,
      input_shape=input_shape,
      seed=seed,
      arrays=arrays,
      client_indices=client_indices,
      validation=validation,
      public_x=arrays.x_train[public_idx],
      prototypes=prototypes,
      client_prototypes=_assign_prototypes(prototypes, num_clients, seed),
      train_client_spec=train_client_spec,
      custom_models=custom_models,
  )
