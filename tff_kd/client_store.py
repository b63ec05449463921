"""A disk-backed store of client states, for clients that keep state (FD, ...).

The processes whose clients keep their own models
(`tff_kd.stateful_clients.StatefulClientsProcess`) would otherwise hold every
client's state in the trainer's memory and rewrite all of them in every
checkpoint. A `ClientStore` keeps them on disk instead: a round reads only its
sampled clients' states and writes back only the ones that changed; a
checkpoint commits which rows are current (a few bytes per changed client), so
memory, checkpoint time and checkpoint size do not grow with the population.

Layout (no pickles; numpy arrays and JSON):

  DIR/manifest.json        the format, and per prototype: its clients (ids, in
                           order), the dtype and shape of every leaf of its state
                           (`tf.nest.flatten` order) and the row size in bytes
  DIR/rows_<i>.bin         prototype i's rows: fixed-size records, each one
                           client state, its leaves' bytes back to back (C
                           order, the manifest's dtypes); row s at byte s * size
  DIR/commits/<v>.npz      version v (`np.savez`, integer arrays only): `parent`
                           (the version it follows, -1 for the first) and, per
                           prototype i, `clients_<i>` (positions in the
                           manifest's list) and `slots_<i>` (their rows) of the
                           clients whose row changed since `parent`

A client that no commit names is at its prototype's initial state (kept in
memory, never written). Version v is the replay of the commits up to v.

Rows are copy-on-write: a new state goes to a free row, never over a row that
the current or previous view, or one of the last `KEPT_VERSIONS` commits,
points to. A commit flushes the rows (`fsync`) before it writes its file (under
a temporary name, renamed when complete), so a process killed at any moment
leaves every committed version intact: rows written after the last commit are
free again on `restore`, and `restore(v)` deletes the commits after v (written
by a run killed before its program-state checkpoint of that version). The
program-state checkpoint of round v records `v`; `tff_kd.experiment` commits
the store before it writes that checkpoint, so the two always agree.

Reads and writes are `os.pread`/`os.pwrite`, not memory maps, so rows never
count in the trainer's resident memory (they live in the OS page cache).

A view of the store at one moment is a `ClientStates`, a read-only
`Mapping(client id -> state)` that loads a state when it is looked up.
"""

import collections
from collections.abc import Iterator, Mapping
import json
import os
import re
from typing import Any

import numpy as np
import tensorflow as tf

FORMAT = 'tff_kd.client_store/1'
# Commits whose rows are never reused: the program-state manager keeps two
# checkpoints, and a third may be written when the process is killed.
KEPT_VERSIONS = 3
_COMMIT = re.compile(r'^(\d+)\.npz$')


def _leaf_specs(state: Any) -> list[dict[str, Any]]:
  return [dict(dtype=np.asarray(leaf).dtype.str,
               shape=list(np.shape(leaf)))
          for leaf in tf.nest.flatten(state)]


def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


class _Prototype:
  """One prototype's rows file, its clients and its layout."""

  def __init__(self, index: int, name: str, ids: list[str], initial: Any):
    self.index = index
    self.name = name
    self.ids = ids
    self.initial = initial
    self.leaves = _leaf_specs(initial)
    self.dtypes = [np.dtype(leaf['dtype']) for leaf in self.leaves]
    self.shapes = [tuple(leaf['shape']) for leaf in self.leaves]
    self.sizes = [int(np.prod(s, dtype=np.int64)) * d.itemsize
                  for s, d in zip(self.shapes, self.dtypes)]
    self.row_bytes = sum(self.sizes)
    self.fd = None
    self.free = []  # Rows no protected view or commit points to.
    self.high = 0  # Rows in the file.

  def manifest(self) -> dict[str, Any]:
    return dict(name=self.name, file=f'rows_{self.index}.bin',
                row_bytes=self.row_bytes, leaves=self.leaves,
                num_clients=len(self.ids), clients=self.ids)

  def read(self, slot: int) -> Any:
    data = os.pread(self.fd, self.row_bytes, slot * self.row_bytes)
    if len(data) != self.row_bytes:
      raise RuntimeError(
          f'Client store row {slot} of prototype {self.name!r} is truncated '
          f'({len(data)} of {self.row_bytes} bytes): the store is corrupt.')
    leaves, offset = [], 0
    for dtype, shape, size in zip(self.dtypes, self.shapes, self.sizes):
      leaf = np.frombuffer(data, dtype, size // dtype.itemsize, offset)
      leaves.append(leaf.reshape(shape) if shape else leaf[0])
      offset += size
    return tf.nest.pack_sequence_as(self.initial, leaves)

  def encode(self, client_id: str, state: Any) -> bytes:
    leaves = tf.nest.flatten(state)
    parts = []
    if len(leaves) == len(self.shapes):
      for leaf, dtype, shape in zip(leaves, self.dtypes, self.shapes):
        leaf = np.asarray(leaf)
        if leaf.dtype != dtype or leaf.shape != shape:
          break
        parts.append(np.ascontiguousarray(leaf).tobytes())
    if len(parts) != len(self.shapes):
      raise ValueError(
          f'Client {client_id!r}\'s new state does not have the layout of '
          f'prototype {self.name!r}\'s states ({self.leaves}); got '
          f'{[(np.asarray(l).dtype.str, np.shape(l)) for l in leaves]}.')
    return b''.join(parts)

  def allocate(self) -> int:
    if self.free:
      return self.free.pop()
    self.high += 1
    return self.high - 1


class ClientStore:
  """Client states on disk (module docstring).

  Attributes:
    directory: the store's directory.
    bytes_written: row bytes written since the store was opened.
  """

  def __init__(self, directory: str, *, initial_states: Mapping[str, Any],
               client_prototypes: Mapping[str, str]):
    """Opens the store in `directory`, creating it if it does not exist.

    Args:
      directory: where the store lives (created if missing).
      initial_states: prototype name -> the state every client of that
        prototype starts from (numpy values).
      client_prototypes: client id -> prototype name, every client.

    Raises:
      ValueError: the directory holds a store of other clients or states.
    """
    self.directory = directory
    self.bytes_written = 0
    names = list(initial_states)
    unknown = sorted(set(client_prototypes.values()) - set(names))
    if unknown:
      raise ValueError(f'client_prototypes names prototypes {unknown} that '
                       f'have no initial state (there are {names}).')
    ids = {n: [] for n in names}
    # client id -> (prototype index, position), in client_prototypes' order.
    self._where = {}
    for client_id, name in client_prototypes.items():
      self._where[client_id] = (names.index(name), len(ids[name]))
      ids[name].append(client_id)
    self._prototypes = [_Prototype(i, n, ids[n], initial_states[n])
                        for i, n in enumerate(names)]
    os.makedirs(os.path.join(directory, 'commits'), exist_ok=True)
    manifest = dict(format=FORMAT,
                    prototypes=[p.manifest() for p in self._prototypes])
    path = os.path.join(directory, 'manifest.json')
    if os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      if saved != manifest:
        raise ValueError(
            f'The client store in {directory} was written for other clients '
            'or client states (another model, task or split): '
            f'{_manifest_difference(saved, manifest)}.')
    else:
      tmp = path + '.tmp'
      with open(tmp, 'w') as f:
        json.dump(manifest, f)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, path)
    for p in self._prototypes:
      p.fd = os.open(os.path.join(directory, f'rows_{p.index}.bin'),
                     os.O_RDWR | os.O_CREAT, 0o644)
      p.high = os.fstat(p.fd).st_size // p.row_bytes
    self._generation = 0
    self._current = None  # The newest view's index, and the one before it.
    self._previous = None
    self._commits = collections.deque(maxlen=KEPT_VERSIONS)  # (version, index)
    self._restored = False
    self._retired = []  # (prototype, position, slot) no longer current.

  # Views.

  def _view(self, index: list[np.ndarray]) -> 'ClientStates':
    self._generation += 1
    self._previous, self._current = self._current, index
    self._release_retired()
    return ClientStates(self, self._generation, index)

  def initial(self) -> 'ClientStates':
    """Every client at its prototype's initial state."""
    return self._view([np.full(len(p.ids), -1, np.int64)
                       for p in self._prototypes])

  def _check_readable(self, view: 'ClientStates') -> None:
    if view.generation < self._generation - 1:
      raise RuntimeError(
          'This view of the client store is stale: only the newest view and '
          'the one before it can be read (their rows may have been reused).')

  def _read(self, view: 'ClientStates', client_id: str) -> Any:
    self._check_readable(view)
    p, k = self._where[client_id]
    slot = int(view.index[p][k])
    proto = self._prototypes[p]
    return proto.initial if slot < 0 else proto.read(slot)

  def _update(self, view: 'ClientStates',
              changes: Mapping[str, Any]) -> 'ClientStates':
    if view.generation != self._generation:
      raise RuntimeError('Only the newest view of the client store can be '
                         'updated.')
    index = [a.copy() for a in view.index]
    for client_id, state in changes.items():
      if client_id not in self._where:
        raise KeyError(f'Client {client_id!r} is not in the client store.')
      p, k = self._where[client_id]
      proto = self._prototypes[p]
      data = proto.encode(client_id, state)
      slot = proto.allocate()
      written = os.pwrite(proto.fd, data, slot * proto.row_bytes)
      if written != len(data):
        raise OSError(f'Short write to the client store ({written} of '
                      f'{len(data)} bytes).')
      self.bytes_written += written
      old = int(index[p][k])
      if old >= 0:
        self._retired.append((p, k, old))
      index[p][k] = slot
    return self._view(index)

  def _release_retired(self) -> None:
    """Returns to the free lists the retired rows nothing protects."""
    protected = [i for i in (self._current, self._previous) if i is not None]
    protected += [index for _, index in self._commits]
    kept = []
    for p, k, slot in self._retired:
      if any(index[p][k] == slot for index in protected):
        kept.append((p, k, slot))
      else:
        self._prototypes[p].free.append(slot)
    self._retired = kept

  # Versions.

  def _commit_path(self, version: int) -> str:
    return os.path.join(self.directory, 'commits', f'{version:012d}.npz')

  def versions(self) -> list[int]:
    """The committed versions on disk, ascending."""
    found = []
    for name in os.listdir(os.path.join(self.directory, 'commits')):
      match = _COMMIT.match(name)
      if match:
        found.append(int(match.group(1)))
    return sorted(found)

  def commit(self, version: int, view: 'ClientStates') -> int:
    """Makes `view` durable as `version`; returns the bytes of the commit file.

    The rows are flushed to disk first, then the commit file (the clients
    whose row changed since the last commit) is written and renamed into
    place. Commits after the last restored or committed version (left by a
    killed run) are deleted first.
    """
    if view.generation != self._generation:
      raise RuntimeError('Only the newest view of the client store can be '
                         'committed.')
    last = self._commits[-1] if self._commits else None
    if last is not None and version <= last[0]:
      raise ValueError(f'Client store version {version} is not after the last '
                       f'committed version {last[0]}.')
    for v in self.versions():
      if not self._restored or v >= version:
        os.remove(self._commit_path(v))
    self._restored = True
    for p in self._prototypes:
      os.fsync(p.fd)
    arrays = dict(parent=np.int64(last[0] if last else -1))
    for p, index in zip(self._prototypes, view.index):
      before = last[1][p.index] if last else np.full(len(p.ids), -1, np.int64)
      changed = np.flatnonzero(index != before)
      arrays[f'clients_{p.index}'] = changed.astype(np.int64)
      arrays[f'slots_{p.index}'] = index[changed]
    path = self._commit_path(version)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))
    self._commits.append((version, [a.copy() for a in view.index]))
    self._release_retired()
    return os.path.getsize(path)

  def restore(self, version: int) -> 'ClientStates':
    """The view committed as `version`; later commits are deleted."""
    versions = self.versions()
    if version not in versions:
      raise RuntimeError(
          f'The client store in {self.directory} has no version {version} '
          f'(it has {versions[-5:]}): it does not match the checkpoint.')
    for v in versions:
      if v > version:
        os.remove(self._commit_path(v))
    index = [np.full(len(p.ids), -1, np.int64) for p in self._prototypes]
    self._commits.clear()
    parent = -1
    for v in versions:
      if v > version:
        break
      try:
        with np.load(self._commit_path(v), allow_pickle=False) as npz:
          if int(npz['parent']) != parent:
            raise ValueError(f'its parent is {int(npz["parent"])}, not the '
                             f'version before it, {parent}')
          for p in self._prototypes:
            index[p.index][npz[f'clients_{p.index}']] = npz[f'slots_{p.index}']
      except (OSError, ValueError, KeyError) as e:
        raise RuntimeError(
            f'Client store commit {self._commit_path(v)} cannot be read: {e}.'
        ) from e
      parent = v
      self._commits.append((v, [a.copy() for a in index]))
    self._restored = True
    self._current = self._previous = None
    self._retired = []
    for p in self._prototypes:
      used = set()
      for _, committed in self._commits:
        used.update(committed[p.index][committed[p.index] >= 0].tolist())
      if used and max(used) >= p.high:
        raise RuntimeError(
            f'Client store rows of prototype {p.name!r} are missing (row '
            f'{max(used)} of a file of {p.high} rows): the store is corrupt.')
      p.free = sorted(set(range(p.high)) - used, reverse=True)
    return self._view(index)

  def disk_bytes(self) -> int:
    """Bytes of the store's files on disk."""
    total = 0
    for root, _, files in os.walk(self.directory):
      for name in files:
        total += os.path.getsize(os.path.join(root, name))
    return total

  def close(self) -> None:
    for p in self._prototypes:
      if p.fd is not None:
        os.close(p.fd)
        p.fd = None


def _manifest_difference(saved, now) -> str:
  if saved.get('format') != now['format']:
    return f'format {saved.get("format")!r}, now {now["format"]!r}'
  names = [p['name'] for p in saved.get('prototypes', [])]
  if names != [p['name'] for p in now['prototypes']]:
    return f'prototypes {names}, now {[p["name"] for p in now["prototypes"]]}'
  for old, new in zip(saved['prototypes'], now['prototypes']):
    for key in ('num_clients', 'clients', 'leaves'):
      if old.get(key) != new[key]:
        return f'prototype {new["name"]!r}: its {key} differ'
  return 'the manifests differ'


class ClientStates(Mapping):
  """A view of a `ClientStore`: client id -> state, loaded when looked up.

  Only the newest view and the one before it can be read; `updated` (on the
  newest) writes states and returns the next view.
  """

  def __init__(self, store: ClientStore, generation: int,
               index: list[np.ndarray]):
    self.store = store
    self.generation = generation
    self.index = index

  def __getitem__(self, client_id: str) -> Any:
    if client_id not in self.store._where:  # pylint: disable=protected-access
      raise KeyError(client_id)
    return self.store._read(self, client_id)  # pylint: disable=protected-access

  def __iter__(self) -> Iterator[str]:
    return iter(self.store._where)  # pylint: disable=protected-access

  def __len__(self) -> int:
    return len(self.store._where)  # pylint: disable=protected-access

  def __contains__(self, client_id) -> bool:
    return client_id in self.store._where  # pylint: disable=protected-access

  def updated(self, changes: Mapping[str, Any]) -> 'ClientStates':
    """The next view, with `changes` (client id -> new state) written."""
    return self.store._update(self, changes)  # pylint: disable=protected-access

  def changed_from(self, other: 'ClientStates') -> list[str]:
    """The clients whose state differs from (was rewritten since) `other`."""
    ids = []
    for p, mine, theirs in zip(self.store._prototypes, self.index,  # pylint: disable=protected-access
                               other.index):
      ids += [p.ids[k] for k in np.flatnonzero(mine != theirs)]
    return ids


def updated(clients: Mapping[str, Any],
            changes: Mapping[str, Any]) -> Mapping[str, Any]:
  """`clients` with `changes`: a new view of a store, or a new OrderedDict."""
  if isinstance(clients, ClientStates):
    return clients.updated(changes)
  new = collections.OrderedDict(clients)
  new.update(changes)
  return new


def read_version(directory: str, version: int) -> dict[str, list[np.ndarray]]:
  """Every client's state at `version` as flat leaves, without a process.

  Clients at their initial state (never written) are left out. For tests
  and tools: it replays the commits and reads the rows the manifest describes.
  """
  with open(os.path.join(directory, 'manifest.json')) as f:
    manifest = json.load(f)
  index = [np.full(p['num_clients'], -1, np.int64)
           for p in manifest['prototypes']]
  commits = os.path.join(directory, 'commits')
  versions = sorted(int(m.group(1)) for m in map(_COMMIT.match,
                                                 os.listdir(commits)) if m)
  if version not in versions:
    raise ValueError(f'{directory} has no version {version}: {versions}.')
  for v in versions:
    if v > version:
      break
    with np.load(os.path.join(commits, f'{v:012d}.npz'),
                 allow_pickle=False) as npz:
      for i in range(len(index)):
        index[i][npz[f'clients_{i}']] = npz[f'slots_{i}']
  states = {}
  for i, proto in enumerate(manifest['prototypes']):
    with open(os.path.join(directory, proto['file']), 'rb') as f:
      for k in np.flatnonzero(index[i] >= 0):
        f.seek(int(index[i][k]) * proto['row_bytes'])
        data = f.read(proto['row_bytes'])
        leaves, offset = [], 0
        for leaf in proto['leaves']:
          dtype = np.dtype(leaf['dtype'])
          count = int(np.prod(leaf['shape'], dtype=np.int64))
          leaves.append(np.frombuffer(data, dtype, count, offset).reshape(
              leaf['shape']))
          offset += count * dtype.itemsize
        states[proto['clients'][k]] = leaves
  return states

