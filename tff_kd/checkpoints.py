"""A run's checkpoints: the program state of a round, written atomically, and
the clients' store committed with it (`CheckpointManager`)."""

import asyncio
import collections
import os
import time
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_kd import client_store as client_store_lib


def run_sync(coroutine):
  """Runs `coroutine` on a loop of its own (the current loop is untouched)."""
  loop = asyncio.new_event_loop()
  try:
    return loop.run_until_complete(coroutine)
  finally:
    loop.close()


class CheckpointManager(tff.program.ProgramStateManager):
  """A run's checkpoints, `ROOT/program_state_R`, written atomically.

  Each version is saved by TFF's `tff.program.FileProgramStateManager` into a
  scratch root beside the checkpoints and renamed into place when complete,
  so a run killed mid-save leaves the previous checkpoint as the latest; the
  last `keep_total` versions are kept. A version that cannot be read
  (truncated or corrupted on disk) raises an error naming its directory, and
  an entry named as a version that no save wrote is refused. With `every`,
  only versions 0, multiples of `every` and `last` are written (the loop
  offers every round): the last round is always checkpointed.

  With a `client_store` (`tff_kd.client_store`), the state's `clients` view is
  committed to the store as the same version before the program state is
  written, and the program state records only that version
  (`clients=OrderedDict(store_version=v)`); `load` restores the store's
  version v. A run killed at any moment thus leaves a checkpoint and a store
  that agree: a store version without its checkpoint is discarded on load.
  """

  PREFIX = 'program_state_'
  _SCRATCH = '.partial'

  def __init__(self, root_dir: str, *, keep_total: int = 2, every: int = 1,
               last: Optional[int] = None,
               client_store: Optional[client_store_lib.ClientStore] = None):
    self._root = root_dir
    self._reader = tff.program.FileProgramStateManager(
        root_dir, prefix=self.PREFIX)
    self._keep_total = keep_total
    self._every = every
    self._last = last
    self.client_store = client_store
    versions = run_sync(self.get_versions())
    self.last_saved = max(versions) if versions else None
    # Seconds and bytes of the last save: program state, store commit file
    # and store rows written since the save before (by the rounds, as they
    # return); `on_checkpoint` is called with them after each save.
    self.last_save = {}
    self.on_checkpoint = None
    self._rows_saved = 0

  def path(self, version: int) -> str:
    return os.path.join(self._root, f'{self.PREFIX}{version}')

  async def get_versions(self) -> Optional[list[int]]:
    """The saved versions; raises if an entry named as one holds none.

    TFF counts every entry `program_state_R` as version R, even an empty file
    or directory (our saves rename a complete one into place, so such an
    entry was not written by a save). Taken as the latest, it would make a
    resumed run claim R rounds it never trained.
    """
    versions = await self._reader.get_versions()
    for version in versions or ():
      path = self.path(version)
      if not tf.saved_model.contains_saved_model(path):
        kind = ('an empty directory' if tf.io.gfile.isdir(path)
                and not tf.io.gfile.listdir(path) else
                'a directory without a saved program state'
                if tf.io.gfile.isdir(path) else 'not a directory')
        raise RuntimeError(
            f'{path} is not a checkpoint ({kind}): no save wrote it, so '
            f'round {version} was not trained. Remove it; the run then '
            'resumes from the latest valid checkpoint beside it.')
    return versions

  async def save(self, program_state, version: int) -> None:
    if version % self._every and version != self._last:
      return
    start = time.perf_counter()
    commit_bytes = 0
    if self.client_store is not None:
      commit_bytes = self.client_store.commit(version, program_state['clients'])
      program_state = with_clients(
          program_state,
          collections.OrderedDict(store_version=np.int64(version)))
    scratch = os.path.join(self._root, self._SCRATCH)
    if tf.io.gfile.exists(scratch):  # Left by a run killed mid-save.
      tf.io.gfile.rmtree(scratch)
    await tff.program.FileProgramStateManager(
        scratch, prefix=self.PREFIX).save(program_state, version)
    final = self.path(version)
    tf.io.gfile.rename(os.path.join(scratch, f'{self.PREFIX}{version}'),
                       final)
    tf.io.gfile.rmtree(scratch)
    self.last_saved = version
    for old in sorted(await self.get_versions())[:-self._keep_total]:
      tf.io.gfile.rmtree(self.path(old))  # Now that `final` counts.
    rows_bytes = 0
    if self.client_store is not None:
      rows_bytes = self.client_store.bytes_written - self._rows_saved
      self._rows_saved = self.client_store.bytes_written
    self.last_save = dict(
        version=version, seconds=time.perf_counter() - start,
        program_state_bytes=_directory_bytes(final),
        store_commit_bytes=commit_bytes, store_rows_bytes=rows_bytes)
    if self.on_checkpoint is not None:
      self.on_checkpoint(dict(self.last_save))

  async def load(self, version: int, structure):
    if self.client_store is not None:
      structure = with_clients(
          structure, collections.OrderedDict(store_version=np.int64(0)))
    try:
      state = await self._reader.load(version, structure)
    except tff.program.ProgramStateNotFoundError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise RuntimeError(
          f'Checkpoint {self.path(version)} cannot be read ({type(e).__name__}'
          f': {e}). The run\'s settings match it (they were checked first), '
          'so it is truncated or corrupt: remove that directory to resume '
          'from the checkpoint before it.'
      ) from e
    if self.client_store is not None:
      stored = int(np.asarray(state['clients']['store_version']))
      if stored != version:
        raise RuntimeError(
            f'Checkpoint {self.path(version)} records client store version '
            f'{stored}, not {version}.')
      state = with_clients(state, self.client_store.restore(version))
    return state


def with_clients(state, clients):
  """`state` (an `OrderedDict(server, fusion, clients)`) with `clients`."""
  new = collections.OrderedDict(state)
  new['clients'] = clients
  return new


def _directory_bytes(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      total += os.path.getsize(os.path.join(root, name))
  return total
