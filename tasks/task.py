"""Tasks: data split over clients, server splits, and models, as a BaselineTask.

Every task is a `Task`, a `tff.simulation.baselines.BaselineTask` (so a task
of ours and one of TFF's baselines are interchangeable) extended with what the
distillation algorithms need: a labelled validation split and an unlabeled
public split, both held by the server and disjoint from the clients' data,
and model builders for every architecture (prototypes). Its data come from
one of three places, all ending in the same arrays and the same rules:

- `create_task(name)`: a task by name (`TASK_NAMES`): our datasets
  (`tasks.data`), re-split over clients; TFF's federated datasets
  (`federated_emnist`, its 3,400 writers; `federated_emnist_digits`;
  `federated_cifar100`, its 500 clients), clients kept as they are; or
  `npz:PATH`, a file of your own (`tasks.data.load_npz`).
- `from_arrays(x_train, y_train, x_test, y_test)`: your arrays, re-split over
  clients, or with `client_ids` (one per training example) kept as clients.
- `from_client_data(train_data, test_data)`: any
  `tff.simulation.datasets.ClientData`, clients kept as they are.

Server data. Clients split by us: `validation_fraction` -> validation,
`public_fraction` -> public (labels dropped), of the training examples drawn
by `seed`; the rest -> clients with `tasks.partition` (or a split file).
Natural clients: round((validation_fraction + public_fraction) * K) clients
(at least one) never train; their examples, pooled and shuffled by `seed`,
are split into validation and public in the ratio validation_fraction :
public_fraction. Either way no training client sees a server example. A
second dataset or noise as distillation inputs: `Task.distillation_inputs`.
The test set is the dataset's own test split (centralized).

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
"""

import base64
import collections
from collections.abc import Callable, Mapping, Sequence
import functools
import hashlib
import inspect
import os
import shutil
import tempfile
from typing import Any, Optional, Union

from absl import logging
import attrs
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tasks import data
from tasks import models
from tasks import partition as partition_lib

from tasks import sources

OUR_TASKS = tuple(data.SPECS)
# TFF's federated datasets: name -> (loader's dataset, its variant).
FEDERATED_TASKS = tuple(sources.FEDERATED)
# A file of your own: `npz:PATH` (`tasks.data.load_npz`).
NPZ_PREFIX = 'npz:'
TASK_NAMES = OUR_TASKS + FEDERATED_TASKS
# Former names, accepted with a warning that gives the new one.
TASK_ALIASES = {
    'emnist': 'emnist_digits',
    'emnist_character': 'federated_emnist',
    'cifar100_image': 'federated_cifar100',
}


def canonical_task_name(name: str) -> str:
  """`name`, or the new name of a former one (with a warning line)."""
  if name in TASK_ALIASES:
    logging.warning('Task %r is now named %r.', name, TASK_ALIASES[name])
    return TASK_ALIASES[name]
  return name


def has_natural_clients(name: str) -> bool:
  """Whether task `name` keeps its dataset's clients (no re-split).

  TFF's federated datasets, and an .npz file with `client_ids`.
  """
  name = TASK_ALIASES.get(name, name)
  if name.startswith(NPZ_PREFIX):
    return data.npz_has_client_ids(name[len(NPZ_PREFIX):])
  return name in FEDERATED_TASKS


# What a task's `client_data_computation` takes: a client, the seed of its
# shuffle in the round, and how many batches (-1: all; 0: none).
CLIENT_DATA_KEY_TYPE = tff.StructWithPythonType(
    [('client_id', np.str_), ('shuffle_seed', np.int64),
     ('max_batches', np.int64)], collections.OrderedDict)

# A no-arg function building a new, uncompiled `tf.keras.Model` whose output
# is the logits over the task's classes.
KerasBuilder = Callable[[], tf.keras.Model]


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
    arrays: the task's `tasks.data.Arrays`.
    client_ids: the training clients' ids, in `client_indices`' order.
    client_indices: per client, indices into `arrays.x_train`.
    validation: (x, y) numpy arrays, labelled, held by the server.
    public_x: numpy array of unlabeled server (distillation) inputs.
    prototypes: model architectures' names, the first is `model_name`.
    client_prototypes: client id -> its prototype.
    train_client_spec: epochs, batch size, ... of the clients' training data.
    data_dir: where `create_task` read the data (None: nowhere given); the
      default directory of a second dataset (`distillation_inputs`).
  """

  name: str
  model_name: str
  num_classes: int
  input_shape: tuple[int, ...]
  seed: int
  arrays: data.Arrays
  client_ids: tuple[str, ...]
  client_indices: list[np.ndarray]
  validation: tuple[np.ndarray, np.ndarray]
  public_x: np.ndarray
  prototypes: tuple[str, ...]
  client_prototypes: dict[str, str]
  train_client_spec: tff.simulation.baselines.ClientSpec
  custom_models: dict[str, KerasBuilder] = attrs.field(factory=dict)
  data_dir: Optional[str] = None

  @property
  def test(self) -> tuple[np.ndarray, np.ndarray]:
    return self.arrays.x_test, self.arrays.y_test

  def data_digest(self) -> str:
    """A digest of every example the task holds and where it goes.

    Equal digests, equal data: the clients' examples (and their ids), the
    validation, public and test splits. A run records it, so that its
    `--resume` refuses changed inputs (a split file, an .npz, a dataset).
    """
    h = hashlib.blake2b(digest_size=16)
    parts = [self.arrays.x_train, self.arrays.y_train, self.arrays.x_test,
             self.arrays.y_test, *self.validation, self.public_x,
             *self.client_indices]
    for part in parts:
      part = np.ascontiguousarray(part)
      h.update(f'{part.dtype.str}{part.shape}'.encode())
      h.update(part.tobytes())
    h.update('\0'.join(self.client_ids).encode())
    return h.hexdigest()

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

    `OrderedDict(client_id, shuffle_seed, max_batches)`: the id as UTF-8
    bytes (TFF serializes a Python str as ASCII), the seed `client_dataset`
    shuffles with, and -1 (all batches) or 0 (a client that dropped out: no
    data).
    """
    return collections.OrderedDict(
        client_id=client_id.encode('utf-8'),
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
    rewritten if there): per client `<name>.x` and `<name>.y` (the name is
    the client id in URL-safe base64, any id a file name), its inputs
    (float32) and labels (int32), raw little-endian arrays in the client's
    order. The worker reads only its clients' files, so
    `directory` must be readable at the same path where the workers run
    (local workers: always; other machines: a shared filesystem).

    Args:
      directory: where to write the clients' files.
    """
    directory = os.path.abspath(directory)
    _write_client_files(directory, self.arrays.x_train, self.arrays.y_train,
                        self.client_ids, self.client_indices)
    spec = self.train_client_spec
    shape = tuple(self.arrays.x_train.shape[1:])

    @tff.tensorflow.computation(CLIENT_DATA_KEY_TYPE)
    def client_data(key):
      # Each file read whole and decoded at once (a client's examples are a
      # few KB), not record by record: one read and one decode per client.
      prefix = tf.strings.join(
          [directory, '/', tf.io.encode_base64(key['client_id'])])
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
      source: `public` (the task's public split), the name of another of our
        datasets (`tasks.data.SPECS`) or `npz:PATH` (a second dataset: its
        training inputs, images resized to this task's height and width; the
        channels must match). (Data-free noise is drawn by the algorithms:
        `tff_kd.server_distillation.noise_inputs`.)
      data_dir: tensorflow-datasets directory, for tfds sources; default
        the task's `data_dir`.
    """
    if source == 'public':
      if not len(self.public_x):
        raise ValueError(
            f'Task {self.name!r} has an empty public split: its '
            'public_fraction is 0.')
      return self.public_x
    if source == self.name:
      raise ValueError(
          f'Distillation source {source!r} is the task itself: use '
          "'public' (the held-out public split, disjoint from the clients')."
      )
    if source.startswith(NPZ_PREFIX):
      x = data.load_npz(source[len(NPZ_PREFIX):])[0].x_train
    elif source in data.SPECS:
      x = data.load_arrays(source, data_dir=data_dir or self.data_dir).x_train
    else:
      raise ValueError(
          f'Unknown distillation source {source!r}; choose public, '
          f'{NPZ_PREFIX}PATH or one of {tuple(data.SPECS)}.'
      )
    shape = tuple(x.shape[1:])
    if shape == self.input_shape:
      return x
    if len(shape) != 3 or len(self.input_shape) != 3 or (
        shape[2] != self.input_shape[2]):
      raise ValueError(
          f'Distillation source {source!r} has inputs of shape {shape}, which'
          f' cannot be resized to task {self.name!r}\'s {self.input_shape}.'
      )
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


def _from_split_file(canonical, name, split_file, num_clients):
  """(arrays, client indices into arrays.x_train, unused training indices)."""
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


def _check_fractions(validation_fraction, public_fraction):
  for arg, value in (('validation_fraction', validation_fraction),
                     ('public_fraction', public_fraction)):
    if not 0 <= value < 1:
      raise ValueError(f'{arg} must be in [0, 1); got {value}.')
  if validation_fraction + public_fraction >= 1:
    raise ValueError(
        'validation_fraction + public_fraction must be < 1; got'
        f' {validation_fraction} + {public_fraction}.'
    )


def _natural_split(example_clients, *, seed, validation_fraction,
                   public_fraction):
  """(client ids, their indices, validation indices, public indices).

  The held-out clients (module docstring) give the server splits; the others
  train, in the order of their first example.
  """
  _, first = np.unique(example_clients, return_index=True)
  ids = example_clients[np.sort(first)]
  share = validation_fraction + public_fraction
  held = 0 if share == 0 else max(1, int(round(share * len(ids))))
  if held >= len(ids):
    raise ValueError(
        f'The task has {len(ids)} client(s) and would hold out {held} for the '
        'server data (validation_fraction + public_fraction of the clients, '
        'at least one), leaving none to train: set both fractions to 0 or '
        'use a dataset with more clients.')
  rng = np.random.default_rng([seed, 1])
  order = rng.permutation(len(ids))
  heldout = set(ids[order[:held]])
  pool = rng.permutation(np.flatnonzero(
      np.isin(example_clients, list(heldout))))
  num_validation = int(round(validation_fraction / share * len(pool))) if (
      held) else 0
  training = [c for c in ids if c not in heldout]
  by_client = collections.defaultdict(list)
  for index, client in enumerate(example_clients):
    by_client[client].append(index)
  return (tuple(str(c) for c in training),
          [np.asarray(by_client[c], np.int64) for c in training],
          np.sort(pool[:num_validation]), np.sort(pool[num_validation:]))


def _resplit(labels, server_pool, *, seed, validation_fraction,
             public_fraction, partition, alpha=None, classes_per_client=None,
             num_clients=None):
  """(client indices, validation indices, public indices) of a re-split.

  `server_pool`, already permuted, gives the server splits first; the rest
  is partitioned over the clients (None: `server_pool`'s rest is unused,
  the clients come from a split file).
  """
  num_validation = int(round(validation_fraction * len(server_pool)))
  num_public = int(round(public_fraction * len(server_pool)))
  validation_idx = np.sort(server_pool[:num_validation])
  public_idx = np.sort(server_pool[num_validation:num_validation + num_public])
  if partition is None:
    return None, validation_idx, public_idx
  client_pool = np.sort(server_pool[num_validation + num_public:])
  parts = partition_lib.partition(
      labels[client_pool], num_clients=num_clients, method=partition,
      seed=seed, alpha=alpha, classes_per_client=classes_per_client)
  return [client_pool[p] for p in parts], validation_idx, public_idx


def _build(
    name: str,
    arrays: data.Arrays,
    *,
    train_client_spec: tff.simulation.baselines.ClientSpec,
    model: Union[str, KerasBuilder],
    prototypes: Optional[Sequence[Union[str, KerasBuilder]]],
    num_classes: Optional[int],
    seed: int,
    validation_fraction: float,
    public_fraction: float,
    eval_batch_size: int,
    example_clients: Optional[np.ndarray] = None,
    split: Optional[tuple[list[np.ndarray], np.ndarray]] = None,
    partition: Optional[Mapping[str, Any]] = None,
) -> Task:
  """A `Task` of `arrays`, its clients natural, split by a file, or re-split.

  Exactly one of `example_clients` (each training example's client),
  `split` (client indices and the training examples no client holds) and
  `partition` (`tasks.partition.partition`'s arguments) says the clients.
  """
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
  _check_fractions(validation_fraction, public_fraction)
  if eval_batch_size < 1:
    raise ValueError(f'eval_batch_size must be >= 1; got {eval_batch_size}.')
  found = int(max(arrays.y_train.max(initial=0), arrays.y_test.max(initial=0)))
  if num_classes is None:
    num_classes = max(2, found + 1)
  for split_name, labels in (('training', arrays.y_train),
                             ('test', arrays.y_test)):
    outside = labels[(labels < 0) | (labels >= num_classes)]
    if outside.size:
      raise ValueError(
          f'Task {name!r}: a {split_name} label is {outside[0]}, outside [0, '
          f'{num_classes}).'
      )
  rng = np.random.default_rng([seed, 1])
  if example_clients is not None:
    client_ids, client_indices, validation_idx, public_idx = _natural_split(
        np.asarray(example_clients).astype(str), seed=seed,
        validation_fraction=validation_fraction,
        public_fraction=public_fraction)
  else:
    if split is None:
      server_pool = rng.permutation(len(arrays.y_train))
    else:
      client_indices, unused = split
      server_pool = rng.permutation(unused)
    resplit, validation_idx, public_idx = _resplit(
        arrays.y_train, server_pool, seed=seed,
        validation_fraction=validation_fraction,
        public_fraction=public_fraction,
        partition=None if partition is None else partition['method'],
        **{k: v for k, v in (partition or {}).items() if k != 'method'})
    if split is None:
      client_indices = resplit
    client_ids = tuple(str(k) for k in range(len(client_indices)))
  validation = (arrays.x_train[validation_idx], arrays.y_train[validation_idx])
  datasets = tff.simulation.baselines.BaselineTaskDatasets(
      train_data=_client_data(arrays.x_train, arrays.y_train, client_ids,
                              client_indices),
      test_data=_centralized(arrays.x_test, arrays.y_test),
      validation_data=_centralized(*validation),
      train_preprocess_fn=functools.partial(
          _train_preprocess, spec=train_client_spec, shuffle_seed=seed),
      eval_preprocess_fn=lambda dataset: dataset.batch(eval_batch_size),
  )
  spec = datasets.element_type_structure
  input_shape = tuple(arrays.x_train.shape[1:])
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
      client_ids=client_ids,
      client_indices=client_indices,
      validation=validation,
      public_x=arrays.x_train[public_idx],
      prototypes=prototypes,
      client_prototypes=_assign_prototypes(prototypes, client_ids, seed),
      train_client_spec=train_client_spec,
      custom_models=custom_models,
  )


def from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    train_client_spec: tff.simulation.baselines.ClientSpec,
    client_ids: Optional[np.ndarray] = None,
    name: str = 'arrays',
    num_classes: Optional[int] = None,
    model: Union[str, KerasBuilder] = 'cnn',
    prototypes: Optional[Sequence[Union[str, KerasBuilder]]] = None,
    partition: str = 'dirichlet',
    alpha: float = 0.5,
    classes_per_client: int = 2,
    num_clients: int = 20,
    seed: int = 0,
    validation_fraction: float = 0.1,
    public_fraction: float = 0.1,
    eval_batch_size: int = 256,
) -> Task:
  """A task of your arrays: clients as `client_ids` says, or split by us.

  Args:
    x_train, y_train, x_test, y_test: inputs (N, L), (N, H, W) or (N, H, W, C)
      (8-bit integers are scaled to [0, 1]) and integer labels.
    train_client_spec: as `create_task`.
    client_ids: one client per training example (ints or strings): the
      clients as they are, with held-out clients as the server's data
      (module docstring); `partition`, `alpha`, `classes_per_client` and
      `num_clients` then do not apply. None: split by `partition`.
    name: the task's name (it names its runs).
    num_classes: default the largest label + 1.
    model, prototypes, partition, alpha, classes_per_client, num_clients,
      seed, validation_fraction, public_fraction, eval_batch_size: as
      `create_task`.
  """
  x_train = data.as_inputs(x_train, 'x_train')
  x_test = data.as_inputs(x_test, 'x_test')
  if x_train.shape[1:] != x_test.shape[1:]:
    raise ValueError(
        f'x_train examples have shape {x_train.shape[1:]} but x_test examples'
        f' {x_test.shape[1:]}.')
  arrays = data.Arrays(
      x_train, data.as_labels(y_train, 'y_train', len(x_train)),
      x_test, data.as_labels(y_test, 'y_test', len(x_test)))
  if client_ids is not None and np.shape(client_ids) != (len(x_train),):
    raise ValueError(
        f'client_ids must hold one client per training example '
        f'({len(x_train)}); got shape {np.shape(client_ids)}.')
  return _build(
      name, arrays, train_client_spec=train_client_spec, model=model,
      prototypes=prototypes, num_classes=num_classes, seed=seed,
      validation_fraction=validation_fraction,
      public_fraction=public_fraction, eval_batch_size=eval_batch_size,
      example_clients=client_ids,
      partition=None if client_ids is not None else _partition_args(
          partition, alpha, classes_per_client, num_clients))


def from_client_data(
    train_data: tff.simulation.datasets.ClientData,
    test_data: Union[tff.simulation.datasets.ClientData, tf.data.Dataset],
    *,
    train_client_spec: tff.simulation.baselines.ClientSpec,
    input_key: Optional[str] = None,
    label_key: Optional[str] = None,
    name: str = 'client_data',
    num_classes: Optional[int] = None,
    model: Union[str, KerasBuilder] = 'cnn',
    prototypes: Optional[Sequence[Union[str, KerasBuilder]]] = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    public_fraction: float = 0.1,
    eval_batch_size: int = 256,
) -> Task:
  """A task of a `ClientData`, its clients kept as they are.

  The clients' examples are read once into arrays
  (`tasks.sources.client_data_arrays`); held-out clients give the server's
  data (module docstring).

  Args:
    train_data: the clients' training data.
    test_data: the test set: a `ClientData` (its clients pooled) or a
      `tf.data.Dataset` of examples.
    train_client_spec: as `create_task`.
    input_key, label_key: the keys of the input and the label in the
      elements; default one of TFF's layouts (`tasks.sources.KNOWN_KEYS`:
      `pixels`/`label`, `image`/`label`, `x`/`y`); (input, label) tuples
      need none.
    name, num_classes: as `from_arrays`.
    model, prototypes, seed, validation_fraction, public_fraction,
      eval_batch_size: as `create_task`.
  """
  if not isinstance(train_data, tff.simulation.datasets.ClientData):
    raise TypeError('train_data must be a tff.simulation.datasets.ClientData;'
                    f' got {type(train_data).__name__}.')
  x_train, y_train, owners = sources.client_data_arrays(
      train_data, input_key=input_key, label_key=label_key)
  x_test, y_test = sources.test_arrays(test_data, input_key=input_key,
                                       label_key=label_key)
  return from_arrays(
      x_train, y_train, x_test, y_test, train_client_spec=train_client_spec,
      client_ids=owners, name=name, num_classes=num_classes, model=model,
      prototypes=prototypes, seed=seed,
      validation_fraction=validation_fraction,
      public_fraction=public_fraction, eval_batch_size=eval_batch_size)


def _partition_args(partition, alpha, classes_per_client, num_clients):
  if partition in ('dirichlet', 'quantity') and not alpha > 0:
    raise ValueError(f'alpha must be > 0; got {alpha}.')
  return dict(method=partition, alpha=alpha,
              classes_per_client=classes_per_client, num_clients=num_clients)


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
    use_synthetic_data: bool = False,
) -> Task:
  """Creates task `name`: one of `TASK_NAMES`, or `npz:PATH`.

  Args:
    name: one of `TASK_NAMES` (a former name in `TASK_ALIASES` is accepted
      with a warning), or `npz:PATH` (`tasks.data.load_npz`). Tasks with
      natural clients (`has_natural_clients`: TFF's federated datasets, an
      .npz with `client_ids`) keep them; `partition`, `alpha`,
      `classes_per_client`, `num_clients` and `split_file` do not apply.
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
    validation_fraction: share held out, labelled (natural clients: of the
      clients; module docstring).
    public_fraction: share held out, unlabeled (likewise).
    data_dir: tensorflow-datasets directory (tasks mnist, emnist_digits,
      cifar*); TFF's cache directory for its federated datasets (default
      `~/.tff`).
    split_file: an `.npz` naming each client's examples by canonical index
      (`tasks.data.load_split_file`), to reproduce another library's split;
      it replaces `partition` (`num_clients` must match it). The validation
      and public splits are then drawn from the training examples no client
      holds (fractions of those).
    eval_batch_size: batch size of the centralized test/validation data.
    use_synthetic_data: TFF's federated datasets only: TFF's synthetic
      stand-in (2 clients) instead of the real data.

  Returns:
    A `Task` (a `tff.simulation.baselines.BaselineTask`).
  """
  task = _create_task(
      canonical_task_name(name), train_client_spec=train_client_spec,
      model=model, prototypes=prototypes, partition=partition, alpha=alpha,
      classes_per_client=classes_per_client, num_clients=num_clients,
      seed=seed, validation_fraction=validation_fraction,
      public_fraction=public_fraction, data_dir=data_dir,
      split_file=split_file, eval_batch_size=eval_batch_size,
      use_synthetic_data=use_synthetic_data)
  return attrs.evolve(task, data_dir=data_dir)


def _create_task(
    name: str,
    *,
    train_client_spec: tff.simulation.baselines.ClientSpec,
    model: Union[str, KerasBuilder],
    prototypes: Optional[Sequence[Union[str, KerasBuilder]]],
    partition: str,
    alpha: float,
    classes_per_client: int,
    num_clients: int,
    seed: int,
    validation_fraction: float,
    public_fraction: float,
    data_dir: Optional[str],
    split_file: Optional[str],
    eval_batch_size: int,
    use_synthetic_data: bool,
) -> Task:
  """`create_task` of a canonical name."""
  common = dict(train_client_spec=train_client_spec, model=model,
                prototypes=prototypes, seed=seed,
                validation_fraction=validation_fraction,
                public_fraction=public_fraction,
                eval_batch_size=eval_batch_size)
  if name in FEDERATED_TASKS:
    if split_file is not None:
      raise ValueError(f'Task {name!r} keeps its clients; split_file does '
                       'not apply.')
    train_data, test_data = sources.load_federated(
        name, data_dir=data_dir, use_synthetic_data=use_synthetic_data)
    return from_client_data(
        train_data, test_data, name=name,
        label_key=sources.FEDERATED[name].label_key,
        input_key='image' if 'cifar' in name else 'pixels',
        num_classes=sources.FEDERATED[name].num_classes, **common)
  if use_synthetic_data:
    raise ValueError(f'use_synthetic_data applies to {FEDERATED_TASKS}, not '
                     f'to task {name!r}.')
  if name.startswith(NPZ_PREFIX):
    path = name[len(NPZ_PREFIX):]
    arrays, client_ids = data.load_npz(path)
    canonical = data.Canonical(
        np.concatenate([arrays.x_train, arrays.x_test]),
        np.concatenate([arrays.y_train, arrays.y_test]),
        np.arange(len(arrays.y_train), len(arrays.y_train) + len(
            arrays.y_test)))
    num_classes = None
    if client_ids is not None:
      if split_file is not None:
        raise ValueError(f'--task={name} names its clients (client_ids); '
                         'split_file does not apply.')
      return _build(name, arrays, num_classes=None,
                    example_clients=client_ids, **common)
  elif name in OUR_TASKS:
    num_classes = data.SPECS[name][1]
    canonical = None
  else:
    raise ValueError(f'Unknown task {name!r}; choose one of {TASK_NAMES} or '
                     f'{NPZ_PREFIX}PATH.')
  if split_file is not None:
    if canonical is None:
      canonical = data.load_canonical(name, data_dir=data_dir)
    arrays, client_indices, unused = _from_split_file(
        canonical, name, split_file, num_clients)
    return _build(name, arrays, num_classes=num_classes,
                  split=(client_indices, unused), **common)
  if canonical is None:
    arrays = data.load_arrays(name, data_dir=data_dir)
  return _build(name, arrays, num_classes=num_classes,
                partition=_partition_args(partition, alpha,
                                          classes_per_client, num_clients),
                **common)


def _assign_prototypes(
    prototypes: tuple[str, ...], client_ids: Sequence[str], seed: int
) -> dict[str, str]:
  """Client id -> prototype: a seeded permutation takes them in turn."""
  order = np.random.default_rng([seed, 2]).permutation(len(client_ids))
  return {
      client_ids[client]: prototypes[i % len(prototypes)]
      for i, client in enumerate(order)
  }


def client_file_name(client_id: str) -> str:
  """A client's file name: its id in URL-safe base64, unpadded.

  As `tf.io.encode_base64` writes it, so any id names a file.
  """
  return base64.urlsafe_b64encode(client_id.encode()).decode().rstrip('=')


def _write_client_files(directory, x, y, client_ids, client_indices):
  """Each client's rows of (x, y) as `<name>.x` and `<name>.y` (raw records).

  Written into a new directory renamed into place, so a reader never sees a
  partial one.
  """
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.partial_', dir=parent)
  for client_id, rows in zip(client_ids, client_indices):
    name = client_file_name(client_id)
    for suffix, values, dtype in (('x', x, '<f4'), ('y', y, '<i4')):
      with open(os.path.join(tmp, f'{name}.{suffix}'), 'wb') as f:
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


def _client_data(x, y, client_ids,
                 parts) -> tff.simulation.datasets.ClientData:
  """ClientData `client_ids[k]` over the rows `parts[k]` of (x, y).

  Its `serializable_dataset_fn` slices the clients' rows (one array, in
  client order) by the client's position: eagerly, from numpy; traced (TFF's
  `dataset_computation`), from the arrays as the graph's constants.
  """
  order = np.concatenate(parts)
  offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(
      np.int64)
  x_all = x[order]
  y_all = y[order]
  position = {client_id: k for k, client_id in enumerate(client_ids)}

  def dataset_fn(client_id):
    if tf.executing_eagerly():
      k = position[client_id.numpy().decode() if tf.is_tensor(client_id)
                   else client_id]
      start, end = offsets[k], offsets[k + 1]
      return tf.data.Dataset.from_tensor_slices(
          collections.OrderedDict(x=x_all[start:end], y=y_all[start:end]))
    k = tf.argmax(tf.cast(tf.equal(tf.constant(client_ids), client_id),
                          tf.int32))
    bounds = tf.constant(offsets)
    start, end = bounds[k], bounds[k + 1]
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=tf.constant(x_all)[start:end], y=tf.constant(y_all)[start:end]))

  return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
      list(client_ids), dataset_fn
  )


def _centralized(x, y) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y))


