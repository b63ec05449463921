"""Federated data from TFF: its datasets, and any `ClientData`, as arrays.

A `tff.simulation.datasets.ClientData` is read once, client by client, into
numpy arrays and each example's client (`client_data_arrays`), so that a task
of natural clients is held as a task we split ourselves is (`tasks.task`):
the same server splits, client files for the workers and digests.

TFF's federated datasets by task name (`FEDERATED`): the real data are read
from TFF's cache (`tff.simulation.datasets.*.load_data(cache_dir)`: by
default `~/.tff`, else `data_dir`), never downloaded here; the synthetic ones
(`use_synthetic_data`, 2 clients each) need nothing.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import os
from typing import Any, Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tasks import data


@dataclasses.dataclass(frozen=True)
class Federated:
  """One of TFF's federated datasets: how to load it, what it holds."""

  description: str
  cache_file: str  # The uncompressed file TFF's loader keeps in its cache.
  load: Any  # cache_dir -> (train ClientData, test ClientData).
  synthetic: Any  # () -> ClientData, TFF's synthetic stand-in.
  num_classes: int
  label_key: str = 'label'


def _emnist(only_digits):
  return lambda cache_dir: tff.simulation.datasets.emnist.load_data(
      only_digits=only_digits, cache_dir=cache_dir)


FEDERATED = {
    'federated_emnist': Federated(
        'TFF\'s federated EMNIST: 3,400 writers, 62 classes',
        'emnist_all.sqlite', _emnist(False),
        tff.simulation.datasets.emnist.get_synthetic, 62),
    'federated_emnist_digits': Federated(
        'TFF\'s federated EMNIST digits: 3,383 writers, 10 classes',
        'emnist_all.sqlite', _emnist(True),
        tff.simulation.datasets.emnist.get_synthetic, 10),
    'federated_cifar100': Federated(
        'TFF\'s federated CIFAR-100: 500 clients, 100 classes',
        'cifar100.sqlite',
        lambda cache_dir: tff.simulation.datasets.cifar100.load_data(
            cache_dir=cache_dir),
        tff.simulation.datasets.cifar100.get_synthetic, 100),
}
# Element layouts known without naming the keys: (input key, label key).
KNOWN_KEYS = (('pixels', 'label'), ('image', 'label'), ('x', 'y'))


def tff_cache_dir(data_dir: Optional[str]) -> str:
  """Where TFF's loaders keep their files: `data_dir`, else `~/.tff`."""
  return data_dir or os.path.join(os.path.expanduser('~'), '.tff')


def load_federated(
    name: str, *, data_dir: Optional[str], use_synthetic_data: bool
) -> tuple[tff.simulation.datasets.ClientData,
           tff.simulation.datasets.ClientData]:
  """(train, test) ClientData of TFF's federated dataset `name`.

  Synthetic: TFF's 2-client stand-in, for both. Real: read from TFF's cache,
  never downloaded (a missing file is an error naming the path).
  """
  source = FEDERATED[name]
  if use_synthetic_data:
    synthetic = source.synthetic()
    return synthetic, synthetic
  cache_dir = tff_cache_dir(data_dir)
  path = os.path.join(cache_dir, source.cache_file)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'--task={name}: {source.description}, is not in TFF\'s cache: '
        f'looked for {path} (--data_dir sets the directory). Download it '
        'where there is internet (tff.simulation.datasets.'
        f'{"cifar100" if "cifar" in name else "emnist"}.load_data(cache_dir='
        'DIR)) and copy DIR here, or pass --use_synthetic_data.')
  return source.load(cache_dir)


def _keys(element_spec: Any, input_key: Optional[str],
          label_key: Optional[str], argument: str) -> tuple[Any, Any]:
  """The (input, label) keys (or positions) of a dataset's elements."""
  if isinstance(element_spec, Mapping):
    keys = list(element_spec)
    if input_key is None and label_key is None:
      known = [pair for pair in KNOWN_KEYS if set(pair) <= set(keys)]
      if not known:
        raise ValueError(
            f'{argument} has elements with keys {keys}, none of the known '
            f'layouts {KNOWN_KEYS}: give input_key and label_key.')
      return known[0]
    for arg, key in (('input_key', input_key), ('label_key', label_key)):
      if key not in keys:
        raise ValueError(
            f'{arg}={key!r} is not a key of {argument}\'s elements; they have'
            f' {keys}.')
    return input_key, label_key
  if isinstance(element_spec, Sequence) and len(element_spec) == 2:
    if input_key is not None or label_key is not None:
      raise ValueError(
          f'{argument} has (input, label) tuples; input_key and label_key '
          'name the keys of dict elements.')
    return 0, 1
  raise ValueError(
      f'{argument} has elements {element_spec}: give dict elements (with '
      'input_key and label_key) or (input, label) tuples.')


def _arrays(dataset: tf.data.Dataset, keys) -> tuple[np.ndarray, np.ndarray]:
  xs, ys = [], []
  for batch in dataset.batch(100_000).as_numpy_iterator():
    xs.append(batch[keys[0]])
    ys.append(batch[keys[1]])
  if not xs:
    return None, None
  return np.concatenate(xs), np.concatenate(ys)


def client_data_arrays(
    client_data: tff.simulation.datasets.ClientData, *,
    input_key: Optional[str] = None, label_key: Optional[str] = None,
    argument: str = 'train_data',
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(inputs, labels, each example's client id) of every client, in order.

  Clients in `client_data.client_ids`' order, each one's examples in its
  dataset's order. Inputs as `tasks.data.as_inputs` makes them (float32,
  8-bit images scaled to [0, 1], a channel axis on 2-D images); clients with
  no examples are left out.
  """
  keys = _keys(client_data.element_type_structure, input_key, label_key,
               argument)
  xs, ys, owners = [], [], []
  for client_id in client_data.client_ids:
    x, y = _arrays(client_data.create_tf_dataset_for_client(client_id), keys)
    if x is None:
      continue
    xs.append(x)
    ys.append(y)
    owners.append(np.full(len(y), client_id, dtype=object))
  if not xs:
    raise ValueError(f'{argument} has no examples.')
  x = data.as_inputs(np.concatenate(xs), f'{argument} inputs')
  return (x, data.as_labels(np.concatenate(ys), f'{argument} labels', len(x)),
          np.concatenate(owners).astype(str))


def test_arrays(
    test_data: Union[tff.simulation.datasets.ClientData, tf.data.Dataset], *,
    input_key: Optional[str] = None, label_key: Optional[str] = None,
) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, labels) of a centralized test set: a `ClientData`'s clients
  pooled, or a `tf.data.Dataset` of examples."""
  if isinstance(test_data, tff.simulation.datasets.ClientData):
    x, y, _ = client_data_arrays(test_data, input_key=input_key,
                                 label_key=label_key, argument='test_data')
    return x, y
  if not isinstance(test_data, tf.data.Dataset):
    raise TypeError('test_data must be a tff.simulation.datasets.ClientData '
                    f'or a tf.data.Dataset; got {type(test_data).__name__}.')
  keys = _keys(test_data.element_spec, input_key, label_key, 'test_data')
  x, y = _arrays(test_data, keys)
  if x is None:
    raise ValueError('test_data has no examples.')
  x = data.as_inputs(x, 'test_data inputs')
  return x, data.as_labels(y, 'test_data labels', len(x))
