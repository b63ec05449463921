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
                           (`tf.nest.flatten` order) and the row size in bytes;
                           `crc32`: the CRC-32 of the rest (`_json_crc`)
  DIR/rows_<i>.bin         prototype i's rows: fixed-size records, each one
                           client state, its leaves' bytes back to back (C
                           order, the manifest's dtypes); row s at byte s * size
  DIR/commits/<v>.npz      version v (`np.savez`, integer arrays only):
                           `version` (v), `parent` (the version it follows, -1
                           for the first) and, per prototype i, `clients_<i>`
                           (positions in the manifest's list), `slots_<i>`
                           (their rows) and `crcs_<i>` (uint32: the CRC-32 of
                           each of those rows' bytes) of the clients whose row
                           changed since `parent`; `checksum`: the CRC-32 of
                           the other arrays (`_arrays_crc`)

A client that no commit names is at its prototype's initial state (kept in
memory, never written). Version v is the replay of the commits up to v.

Checksums. A row's CRC-32 is computed when it is written and kept beside the
row's number (in the views, then in the commit that names it), not in the rows
file, so a row that is damaged, cut short, or another (valid) row in its place
is detected. A row is verified when it is read, so a round still reads only its
sampled clients; the commits are verified when `restore` replays them, the
manifest when the store is opened. Any of these that fails (a checksum that
does not match, a file that cannot be parsed or is too short) raises a
`CorruptStoreError` (a `ValueError`) naming the file, the client and row where
one applies, and saying what to do: the store cannot be trusted, so delete the
run's checkpoints and start again, or restore the file. A corrupt row of a
client that no round samples is found when that client is read (by a round or
an evaluation), never used unverified.

Stores of format 1 (`tff_kd.client_store/1`, written before the checksums) are
refused when opened, with an error naming their manifest: their rows cannot be
verified, and loading unverified rows is how corruption went unnoticed (NaN
losses on resume). Resume such a run with the code that wrote it, or start it
again.

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
import zlib

import numpy as np
import tensorflow as tf

FORMAT = 'tff_kd.client_store/2'
# The format before checksums, refused when opened (module docstring).
_UNCHECKED_FORMAT = 'tff_kd.client_store/1'
# Commits whose rows are never reused: the program-state manager keeps two
# checkpoints, and a third may be written when the process is killed.
KEPT_VERSIONS = 3
_COMMIT = re.compile(r'^(\d+)\.npz$')


class CorruptStoreError(ValueError):
  """A file of a client store is damaged: its message names it."""


def _corrupt(path: str, reason: str) -> CorruptStoreError:
  return CorruptStoreError(
      f'Client store file {path} is corrupt ({reason}); the store cannot be '
      'trusted: delete the run\'s checkpoints and start again, or restore '
      'the file.')


def _json_crc(body: Mapping[str, Any]) -> int:
  """The CRC-32 of `body`'s canonical JSON (the same after a round trip)."""
  text = json.dumps(body, sort_keys=True, separators=(',', ':'))
  return zlib.crc32(text.encode('utf-8'))


def _arrays_crc(arrays: Mapping[str, np.ndarray]) -> int:
  """The CRC-32 of `arrays`' names, dtypes, shapes and bytes, by name."""
  crc = 0
  for name in sorted(arrays):
    array = np.ascontiguousarray(arrays[name])
    crc = zlib.crc32(f'{name}:{array.dtype.str}:{array.shape};'.encode(), crc)
    crc = zlib.crc32(array.tobytes(), crc)
  return crc


def _read_manifest(path: str) -> dict[str, Any]:
  """The manifest in `path`, its checksum verified and removed.

  Raises:
    CorruptStoreError: it cannot be parsed or its checksum does not match.
    ValueError: it is of format 1, which has no checksums.
  """
  with open(path, 'rb') as f:
    raw = f.read()
  if not raw:
    raise _corrupt(path, 'it is empty')
  try:
    manifest = json.loads(raw)
  except ValueError as e:  # JSONDecodeError, UnicodeDecodeError.
    raise _corrupt(path, f'not valid JSON, {e}') from e
  if not isinstance(manifest, dict):
    raise _corrupt(path, f'a JSON {type(manifest).__name__}, not an object')
  if manifest.get('format') == _UNCHECKED_FORMAT:
    raise ValueError(
        f'The client store manifest {path} is of format {_UNCHECKED_FORMAT}, '
        f'written before rows were checksummed; this code reads {FORMAT} '
        'only, so that store\'s rows could not be verified. Resume the run '
        'with the code that wrote it, or delete the run\'s checkpoints and '
        'start again.')
  crc = manifest.pop('crc32', None)
  if crc is None:
    raise _corrupt(path, 'it has no checksum')
  if crc != _json_crc(manifest):
    raise _corrupt(path, 'checksum mismatch')
  return manifest


def _write_manifest(path: str, manifest: Mapping[str, Any]) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(dict(manifest, crc32=_json_crc(manifest)), f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _read_commit(path: str, version: int,
                 num_clients: list[int]) -> dict[str, np.ndarray]:
  """Commit `version`'s arrays from `path`, verified against its checksum.

  Args:
    path: the commit file.
    version: the version its name says it is.
    num_clients: per prototype, its number of clients (to check positions).

  Raises:
    CorruptStoreError: the file cannot be parsed, its checksum does not match,
      or its contents do not fit the store.
  """
  if os.path.getsize(path) == 0:
    raise _corrupt(path, 'it is empty')
  try:
    npz = np.load(path, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):
      raise ValueError(f'one array of shape {np.shape(npz)}')
    with npz:
      arrays = {name: npz[name] for name in npz.files}
  # np.load picks the zip, .npy or pickle reader by the first bytes, and the
  # zip reader checks each member's CRC as it reads it: damage shows as any of
  # BadZipFile, EOFError, ValueError, NotImplementedError, zlib.error, ...
  except Exception as e:  # pylint: disable=broad-except
    raise _corrupt(path, f'not a readable .npz archive, {type(e).__name__}: '
                         f'{e}') from e
  checksum = arrays.pop('checksum', None)
  expected = {'version', 'parent'} | {
      f'{kind}_{i}' for i in range(len(num_clients))
      for kind in ('clients', 'slots', 'crcs')}
  if checksum is None:
    raise _corrupt(path, 'it has no checksum')
  if set(arrays) != expected:
    raise _corrupt(path, f'it has arrays {sorted(arrays)}, not '
                         f'{sorted(expected)}')
  if checksum.shape or int(checksum) != _arrays_crc(arrays):
    raise _corrupt(path, 'checksum mismatch')
  if int(arrays['version']) != version:
    raise _corrupt(path, f'it is version {int(arrays["version"])}, not the '
                         f'{version} of its name')
  for i, n in enumerate(num_clients):
    clients, slots = arrays[f'clients_{i}'], arrays[f'slots_{i}']
    if not (clients.shape == slots.shape == arrays[f'crcs_{i}'].shape
            and clients.ndim == 1 and np.all((clients >= 0) & (clients < n))
            and np.all(slots >= 0)):
      raise _corrupt(path, f'prototype {i}\'s clients, rows and checksums do '
                           f'not fit its {n} clients')
  return arrays


def _check_parent(path: str, arrays: Mapping[str, np.ndarray],
                  parent: int) -> None:
  """Raises if commit `path` does not follow `parent`, the version before it.

  `parent` is the version before `path` on disk (-1: none); another parent
  means that a commit in between is missing.
  """
  if int(arrays['parent']) != parent:
    found = 'it is the first' if parent < 0 else (
        f'the one before it is {parent}')
    raise _corrupt(path, f'its parent is version {int(arrays["parent"])}, '
                         f'but {found} on disk: a commit is missing')


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


def _read_row(fd: int, path: str, row_bytes: int, slot: int, crc: int,
              client_id: str) -> bytes:
  """Row `slot` of the rows file `path` (open as `fd`), verified.

  Raises:
    CorruptStoreError: the row is cut short or its checksum is not `crc`.
  """
  data = os.pread(fd, row_bytes, slot * row_bytes)
  if len(data) != row_bytes:
    raise _corrupt(path, f'row {slot}, the state of client {client_id!r}, is '
                         f'cut short: {len(data)} of {row_bytes} bytes')
  if zlib.crc32(data) != crc:
    raise _corrupt(path, f'checksum mismatch in row {slot}, the state of '
                         f'client {client_id!r}')
  return data


def _decode(data: bytes, dtypes: list[np.dtype],
            shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
  """A row's leaves (read-only arrays over `data`)."""
  leaves, offset = [], 0
  for dtype, shape in zip(dtypes, shapes):
    count = int(np.prod(shape, dtype=np.int64))
    leaves.append(np.frombuffer(data, dtype, count, offset).reshape(shape))
    offset += count * dtype.itemsize
  return leaves


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
    self.path = None  # The rows file, and its descriptor, once opened.
    self.fd = None
    self.free = []  # Rows no protected view or commit points to.
    self.high = 0  # Rows in the file.

  def manifest(self) -> dict[str, Any]:
    return dict(name=self.name, file=f'rows_{self.index}.bin',
                row_bytes=self.row_bytes, leaves=self.leaves,
                num_clients=len(self.ids), clients=self.ids)

  def read(self, slot: int, crc: int, client_id: str) -> Any:
    data = _read_row(self.fd, self.path, self.row_bytes, slot, crc, client_id)
    leaves = [leaf if shape else leaf[()] for leaf, shape in
              zip(_decode(data, self.dtypes, self.shapes), self.shapes)]
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


def _empty(prototypes: list[_Prototype]) -> tuple[list[np.ndarray],
                                                  list[np.ndarray]]:
  """Every client at its initial state: no row (-1), checksum 0."""
  return ([np.full(len(p.ids), -1, np.int64) for p in prototypes],
          [np.zeros(len(p.ids), np.uint32) for p in prototypes])


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
      ValueError: the directory holds a store of other clients or states,
        or of format 1 (module docstring).
      CorruptStoreError: its manifest is damaged, or missing beside commits.
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
      saved = _read_manifest(path)
      if saved != manifest:
        raise ValueError(
            f'The client store in {directory} was written for other clients '
            'or client states (another model, task or split): '
            f'{_manifest_difference(saved, manifest)}.')
    elif self.versions():
      # The manifest is written (atomically) before any commit.
      raise _corrupt(path, 'it is missing, and the store has commits')
    else:
      _write_manifest(path, manifest)
    for p in self._prototypes:
      p.path = os.path.join(directory, f'rows_{p.index}.bin')
      p.fd = os.open(p.path, os.O_RDWR | os.O_CREAT, 0o644)
      p.high = os.fstat(p.fd).st_size // p.row_bytes
    self._generation = 0
    self._current = None  # The newest view's index, and the one before it.
    self._previous = None
    # (version, index, crcs), the last KEPT_VERSIONS.
    self._commits = collections.deque(maxlen=KEPT_VERSIONS)
    self._restored = False
    self._retired = []  # (prototype, position, slot) no longer current.

  # Views.

  def _view(self, index: list[np.ndarray],
            crcs: list[np.ndarray]) -> 'ClientStates':
    self._generation += 1
    self._previous, self._current = self._current, index
    self._release_retired()
    return ClientStates(self, self._generation, index, crcs)

  def initial(self) -> 'ClientStates':
    """Every client at its prototype's initial state."""
    return self._view(*_empty(self._prototypes))

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
    if slot < 0:
      return proto.initial
    return proto.read(slot, int(view.crcs[p][k]), client_id)

  def _update(self, view: 'ClientStates',
              changes: Mapping[str, Any]) -> 'ClientStates':
    if view.generation != self._generation:
      raise RuntimeError('Only the newest view of the client store can be '
                         'updated.')
    index = [a.copy() for a in view.index]
    crcs = [a.copy() for a in view.crcs]
    for client_id, state in changes.items():
      if client_id not in self._where:
        raise KeyError(f'Client {client_id!r} is not in the client store.')
      p, k = self._where[client_id]
      proto = self._prototypes[p]
      data = proto.encode(client_id, state)
      slot = proto.allocate()
      written = os.pwrite(proto.fd, data, slot * proto.row_bytes)
      if written != len(data):
        raise OSError(f'Short write to the client store file {proto.path} '
                      f'({written} of {len(data)} bytes).')
      self.bytes_written += written
      old = int(index[p][k])
      if old >= 0:
        self._retired.append((p, k, old))
      index[p][k] = slot
      crcs[p][k] = zlib.crc32(data)
    return self._view(index, crcs)

  def _release_retired(self) -> None:
    """Returns to the free lists the retired rows nothing protects."""
    protected = [i for i in (self._current, self._previous) if i is not None]
    protected += [index for _, index, _ in self._commits]
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
    whose row changed since the last commit, with their rows' checksums) is
    written and renamed into place. Commits after the last restored or
    committed version (left by a killed run) are deleted first.
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
    before_index, before_crcs = (last[1], last[2]) if last else _empty(
        self._prototypes)
    arrays = dict(version=np.int64(version),
                  parent=np.int64(last[0] if last else -1))
    for p in self._prototypes:
      index, crcs = view.index[p.index], view.crcs[p.index]
      changed = np.flatnonzero((index != before_index[p.index])
                               | (crcs != before_crcs[p.index]))
      arrays[f'clients_{p.index}'] = changed.astype(np.int64)
      arrays[f'slots_{p.index}'] = index[changed]
      arrays[f'crcs_{p.index}'] = crcs[changed]
    arrays['checksum'] = np.uint32(_arrays_crc(arrays))
    path = self._commit_path(version)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))
    self._commits.append((version, [a.copy() for a in view.index],
                          [a.copy() for a in view.crcs]))
    self._release_retired()
    return os.path.getsize(path)

  def restore(self, version: int) -> 'ClientStates':
    """The view committed as `version`; later commits are deleted.

    Raises:
      RuntimeError: the store has no `version` (it does not match the
        program-state checkpoint).
      CorruptStoreError: a commit up to `version` is damaged or missing, or a
        rows file is too short for the rows they name. (Rows themselves are
        verified when read.)
    """
    versions = self.versions()
    if version not in versions:
      raise RuntimeError(
          f'The client store in {self.directory} has no version {version} '
          f'(it has {versions[-5:]}): it does not match the checkpoint.')
    for v in versions:
      if v > version:
        os.remove(self._commit_path(v))
    index, crcs = _empty(self._prototypes)
    self._commits.clear()
    parent = -1
    num_clients = [len(p.ids) for p in self._prototypes]
    for v in versions:
      if v > version:
        break
      path = self._commit_path(v)
      arrays = _read_commit(path, v, num_clients)
      _check_parent(path, arrays, parent)
      for p in self._prototypes:
        clients = arrays[f'clients_{p.index}']
        index[p.index][clients] = arrays[f'slots_{p.index}']
        crcs[p.index][clients] = arrays[f'crcs_{p.index}']
      parent = v
      self._commits.append((v, [a.copy() for a in index],
                            [a.copy() for a in crcs]))
    self._restored = True
    self._current = self._previous = None
    self._retired = []
    for p in self._prototypes:
      used = set()
      for _, committed, _ in self._commits:
        used.update(committed[p.index][committed[p.index] >= 0].tolist())
      if used and max(used) >= p.high:
        raise _corrupt(
            p.path, f'it is cut short: {os.fstat(p.fd).st_size} bytes, '
            f'{p.high} whole rows of {p.row_bytes} bytes, but the commits '
            f'name row {max(used)}')
      p.free = sorted(set(range(p.high)) - used, reverse=True)
    return self._view(index, crcs)

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
  newest) writes states and returns the next view. A state is verified against
  its row's checksum when it is looked up (`CorruptStoreError` if it does not
  match).
  """

  def __init__(self, store: ClientStore, generation: int,
               index: list[np.ndarray], crcs: list[np.ndarray]):
    self.store = store
    self.generation = generation
    self.index = index  # Per prototype, each client's row (-1: initial).
    self.crcs = crcs  # Per prototype, each client's row's CRC-32.

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
  and tools: it replays the commits and reads the rows the manifest
  describes, verifying each file as `ClientStore` does.

  Args:
    directory: the store's directory.
    version: a committed version.

  Raises:
    ValueError: `directory` has no `version`, or its manifest is of format 1.
    CorruptStoreError: a file it reads is damaged.
  """
  manifest = _read_manifest(os.path.join(directory, 'manifest.json'))
  prototypes = manifest['prototypes']
  index = [np.full(p['num_clients'], -1, np.int64) for p in prototypes]
  crcs = [np.zeros(p['num_clients'], np.uint32) for p in prototypes]
  commits = os.path.join(directory, 'commits')
  versions = sorted(int(m.group(1)) for m in map(_COMMIT.match,
                                                 os.listdir(commits)) if m)
  if version not in versions:
    raise ValueError(f'{directory} has no version {version}: {versions}.')
  parent = -1
  for v in versions:
    if v > version:
      break
    path = os.path.join(commits, f'{v:012d}.npz')
    arrays = _read_commit(path, v, [p['num_clients'] for p in prototypes])
    _check_parent(path, arrays, parent)
    for i in range(len(index)):
      index[i][arrays[f'clients_{i}']] = arrays[f'slots_{i}']
      crcs[i][arrays[f'clients_{i}']] = arrays[f'crcs_{i}']
    parent = v
  states = {}
  for i, proto in enumerate(prototypes):
    dtypes = [np.dtype(leaf['dtype']) for leaf in proto['leaves']]
    shapes = [tuple(leaf['shape']) for leaf in proto['leaves']]
    path = os.path.join(directory, proto['file'])
    fd = os.open(path, os.O_RDONLY)
    try:
      for k in np.flatnonzero(index[i] >= 0):
        client_id = proto['clients'][k]
        data = _read_row(fd, path, proto['row_bytes'], int(index[i][k]),
                         int(crcs[i][k]), client_id)
        states[client_id] = _decode(data, dtypes, shapes)
    finally:
      os.close(fd)
  return states
