"""The disk-backed client store: round trips bit for bit, writes only what
changed, keeps every committed version through a kill, reuses rows; a
damaged file (row, rows file, commit, manifest) is an error naming it."""

import collections
import json
import os
import re
import zlib

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import client_store


def _state(width, value):
  """A client state shaped like a real one: model weights and extra fields."""
  return collections.OrderedDict(
      model=tff.learning.models.ModelWeights(
          trainable=[np.full((width, 3), value, np.float32),
                     np.full((3,), value, np.float32)],
          non_trainable=[]),
      rounds=np.int32(value))


INITIAL = collections.OrderedDict(small=_state(2, 0), large=_state(5, 0))
OWNERS = collections.OrderedDict(
    a='small', b='large', c='small', d='large', e='small')


def _open(directory):
  return client_store.ClientStore(directory, initial_states=INITIAL,
                                  client_prototypes=OWNERS)


def _width(client):
  return 2 if OWNERS[client] == 'small' else 5


def _commit_path(directory, version):
  return os.path.join(directory, 'commits', f'{version:012d}.npz')


def _committed(directory):
  """A store with versions 0 and 1 committed; every client's state at 1."""
  store = _open(directory)
  view = store.initial().updated({'a': _state(2, 1), 'b': _state(5, 2)})
  store.commit(0, view)
  view = view.updated({'c': _state(2, 3), 'a': _state(2, 4)})
  store.commit(1, view)
  states = {c: view[c] for c in OWNERS}
  store.close()
  return states


def _row(directory, client):
  """The row of `client`'s state at version 1, from the commits."""
  p = 0 if OWNERS[client] == 'small' else 1
  position = [c for c in OWNERS if OWNERS[c] == OWNERS[client]].index(client)
  slot = None
  for version in (0, 1):
    with np.load(_commit_path(directory, version)) as f:
      found = np.flatnonzero(f[f'clients_{p}'] == position)
      if found.size:
        slot = int(f[f'slots_{p}'][found[0]])
  return slot


def _overwrite(path, offset, data):
  with open(path, 'r+b') as f:
    f.seek(offset)
    f.write(data)


class ClientStoreTest(tf.test.TestCase, parameterized.TestCase):

  def assertCorrupt(self, path, reason=''):
    """The block raises the corrupt-store error naming `path`, for `reason`."""
    return self.assertRaisesRegex(
        client_store.CorruptStoreError,
        rf'{re.escape(path)} is corrupt \({reason}.*\); the store cannot be '
        r'trusted: delete the run\'s checkpoints')

  def assertStateEqual(self, got, want):
    self.assertEqual(tf.nest.map_structure(lambda x: np.asarray(x).dtype, got),
                     tf.nest.map_structure(lambda x: np.asarray(x).dtype, want))
    for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
      self.assertAllEqual(a, b)

  def test_round_trip_only_own_prototype_and_only_changes_written(self):
    directory = self.create_tempdir().full_path
    store = _open(directory)
    view = store.initial()
    self.assertEqual(list(view), list(OWNERS))
    self.assertIs(view['a'], INITIAL['small'])  # Never written.
    changes = {'a': _state(2, 1.5), 'd': _state(5, -2)}
    new = view.updated(changes)
    self.assertCountEqual(new.changed_from(view), ['a', 'd'])
    for c, state in changes.items():
      self.assertStateEqual(new[c], state)
    self.assertIs(view['a'], INITIAL['small'])  # The old view is unchanged.
    # Each row holds its own prototype's state only: 2x3+3 or 5x3+3 floats
    # and the int32.
    self.assertEqual(store.bytes_written, (9 + 1) * 4 + (18 + 1) * 4)
    self.assertEqual(os.path.getsize(os.path.join(directory, 'rows_0.bin')), 40)
    self.assertEqual(os.path.getsize(os.path.join(directory, 'rows_1.bin')), 76)
    store.commit(0, new)
    with np.load(os.path.join(directory, 'commits', '000000000000.npz')) as f:
      self.assertAllEqual(f['clients_0'], [0])  # a, the first small client.
      self.assertAllEqual(f['clients_1'], [1])  # d, the second large one.
      # Each row's checksum is kept with its number, not in the rows file.
      with open(os.path.join(directory, 'rows_0.bin'), 'rb') as rows:
        self.assertEqual(int(f['crcs_0'][0]),
                         zlib.crc32(rows.read(40)))
    newer = new.updated({'c': _state(2, 7)})
    store.commit(1, newer)
    with np.load(os.path.join(directory, 'commits', '000000000001.npz')) as f:
      self.assertAllEqual(f['clients_0'], [1])  # Only c changed since 0.
      self.assertEqual(f['clients_1'].size, 0)
      self.assertEqual(int(f['parent']), 0)
    expected = {c: newer[c] for c in OWNERS}
    store.close()

    reopened = _open(directory)
    restored = reopened.restore(1)
    for c in OWNERS:
      self.assertStateEqual(restored[c], expected[c])
    on_disk = client_store.read_version(directory, 1)
    self.assertCountEqual(on_disk, ['a', 'c', 'd'])
    self.assertAllEqual(on_disk['c'][0], np.full((2, 3), 7, np.float32))

  def test_a_kill_at_any_moment_leaves_the_committed_versions(self):
    directory = self.create_tempdir().full_path
    store = _open(directory)
    view = store.initial()
    history = {}
    for version in range(4):
      view = view.updated({'a': _state(2, version + 1),
                           'b': _state(5, 10 * version)})
      store.commit(version, view)
      history[version] = {c: view[c] for c in OWNERS}
    # Uncommitted writes after version 3, then a commit (4) whose program
    # state was never written: the process is killed (no close).
    view = view.updated({'a': _state(2, 99), 'e': _state(2, 98)})
    view = view.updated({'a': _state(2, 97)})
    store.commit(4, view)
    del store
    for version in (3, 2):  # The latest, or the one before (removed 3).
      store = _open(directory)
      restored = store.restore(version)
      for c in OWNERS:
        self.assertStateEqual(restored[c], history[version][c])
      self.assertEqual(store.versions(), list(range(version + 1)))
      # Rows written after the version are reused, not appended.
      rows = os.path.getsize(os.path.join(directory, 'rows_0.bin'))
      restored.updated({'e': _state(2, 5)})
      self.assertEqual(
          os.path.getsize(os.path.join(directory, 'rows_0.bin')), rows)
      store.close()
    with self.assertRaisesRegex(RuntimeError, 'has no version 3'):
      _open(directory).restore(3)

  def test_rows_are_reused_and_the_file_stays_bounded(self):
    directory = self.create_tempdir().full_path
    store = _open(directory)
    view = store.initial()
    for version in range(50):
      client = 'ace'[version % 3]
      view = view.updated({client: _state(2, version)})
      if version % 2:
        store.commit(version, view)
    rows = os.path.getsize(os.path.join(directory, 'rows_0.bin')) // 40
    # 3 clients, each protected in the 3 kept commits and 2 views: at most a
    # handful of rows, not 50.
    self.assertLessEqual(rows, 12)
    self.assertStateEqual(view['c'], _state(2, 49))

  def test_stale_views_and_other_stores_are_refused(self):
    directory = self.create_tempdir().full_path
    store = _open(directory)
    first = store.initial()
    second = first.updated({'a': _state(2, 1)})
    third = second.updated({'a': _state(2, 2)})
    with self.assertRaisesRegex(RuntimeError, 'stale'):
      first['a']  # pylint: disable=pointless-statement
    with self.assertRaisesRegex(RuntimeError, 'newest view'):
      second.updated({'a': _state(2, 3)})
    with self.assertRaisesRegex(ValueError, 'layout of prototype'):
      third.updated({'a': _state(5, 3)})
    store.close()
    with self.assertRaisesRegex(ValueError, 'other clients or client states'):
      client_store.ClientStore(
          directory, initial_states=INITIAL,
          client_prototypes=dict(OWNERS, f='small'))
    with self.assertRaisesRegex(ValueError, 'other clients or client states'):
      client_store.ClientStore(
          directory, initial_states=dict(INITIAL, small=_state(3, 0)),
          client_prototypes=OWNERS)

  # Damaged files: each is named, with what to do, never loaded silently.

  @parameterized.named_parameters(
      ('random_bytes', lambda: np.random.default_rng(0).bytes(40)),
      ('nan', lambda: np.full(9, np.nan, np.float32).tobytes()),
  )
  def test_a_damaged_row_is_named_when_it_is_read(self, damage):
    directory = self.create_tempdir().full_path
    want = _committed(directory)
    rows = os.path.join(directory, 'rows_0.bin')
    row = _row(directory, 'a')
    _overwrite(rows, row * 40, damage())
    store = _open(directory)
    restored = store.restore(1)  # Rows are verified as they are read.
    with self.assertCorrupt(
        rows, rf"checksum mismatch in row {row}, the state of client 'a'"):
      restored['a']  # pylint: disable=pointless-statement
    self.assertStateEqual(restored['c'], want['c'])  # Its own row is intact.
    with self.assertCorrupt(rows):
      client_store.read_version(directory, 1)
    store.close()

  @parameterized.named_parameters(('cut', 50), ('emptied', 0))
  def test_a_truncated_rows_file_is_named_on_restore(self, size):
    directory = self.create_tempdir().full_path
    _committed(directory)
    rows = os.path.join(directory, 'rows_0.bin')
    with open(rows, 'r+b') as f:
      f.truncate(size)
    store = _open(directory)
    with self.assertCorrupt(rows, 'it is cut short'):
      store.restore(1)
    store.close()

  @parameterized.named_parameters(
      ('emptied', lambda raw: b'', 'it is empty'),
      ('truncated', lambda raw: raw[:len(raw) // 2], 'not valid JSON'),
      ('garbled', lambda raw: raw.replace(b'"a"', b'"z"'), 'checksum mismatch'),
      ('not_an_object', lambda raw: b'[1, 2]', 'a JSON list, not an object'),
  )
  def test_a_damaged_manifest_is_named_on_open(self, damage, reason):
    directory = self.create_tempdir().full_path
    _committed(directory)
    path = os.path.join(directory, 'manifest.json')
    with open(path, 'rb') as f:
      raw = f.read()
    with open(path, 'wb') as f:
      f.write(damage(raw))
    with self.assertCorrupt(path, reason):
      _open(directory)
    with self.assertCorrupt(path):
      client_store.read_version(directory, 1)

  def test_a_missing_manifest_beside_commits_is_named(self):
    directory = self.create_tempdir().full_path
    _committed(directory)
    path = os.path.join(directory, 'manifest.json')
    os.remove(path)
    with self.assertCorrupt(path, 'it is missing'):
      _open(directory)

  @parameterized.named_parameters(
      ('emptied', lambda raw: b'', 'it is empty'),
      ('truncated', lambda raw: raw[:len(raw) // 2],
       'not a readable .npz archive'),
      ('garbled', lambda raw: raw[:100] + bytes([raw[100] ^ 1]) + raw[101:],
       'not a readable .npz archive'),
  )
  def test_a_damaged_commit_is_named_on_restore(self, damage, reason):
    directory = self.create_tempdir().full_path
    _committed(directory)
    path = _commit_path(directory, 0)
    with open(path, 'rb') as f:
      raw = f.read()
    with open(path, 'wb') as f:
      f.write(damage(raw))
    store = _open(directory)
    with self.assertCorrupt(path, reason):
      store.restore(1)
    store.close()
    with self.assertCorrupt(path):
      client_store.read_version(directory, 1)

  def test_a_commit_rewritten_without_its_checksum_is_named(self):
    # A well-formed archive (the zip's own CRCs match) whose rows were
    # changed: only the commit's checksum tells.
    directory = self.create_tempdir().full_path
    _committed(directory)
    path = _commit_path(directory, 1)
    with np.load(path) as f:
      arrays = dict(f)
    arrays['slots_0'] = arrays['slots_0'][::-1].copy()
    with open(path, 'wb') as f:
      np.savez(f, **arrays)
    store = _open(directory)
    with self.assertCorrupt(path, 'checksum mismatch'):
      store.restore(1)
    store.close()

  def test_a_missing_commit_is_named_by_the_one_after_it(self):
    directory = self.create_tempdir().full_path
    _committed(directory)
    os.remove(_commit_path(directory, 0))
    store = _open(directory)
    with self.assertCorrupt(_commit_path(directory, 1),
                            'its parent is version 0, but it is the first'):
      store.restore(1)
    store.close()

  def test_a_store_without_checksums_is_refused_by_name(self):
    directory = self.create_tempdir().full_path
    _committed(directory)
    path = os.path.join(directory, 'manifest.json')
    with open(path) as f:
      manifest = json.load(f)
    del manifest['crc32']
    manifest['format'] = 'tff_kd.client_store/1'
    with open(path, 'w') as f:
      json.dump(manifest, f)
    with self.assertRaisesRegex(
        ValueError, rf'{re.escape(path)} is of format tff_kd.client_store/1, '
        'written before rows were checksummed'):
      _open(directory)

  def test_updated_of_a_dict_is_a_new_dict(self):
    clients = collections.OrderedDict(a=1, b=2)
    self.assertEqual(client_store.updated(clients, {'b': 3}),
                     collections.OrderedDict(a=1, b=3))
    self.assertEqual(clients, collections.OrderedDict(a=1, b=2))


if __name__ == '__main__':
  tf.test.main()
