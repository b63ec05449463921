"""TFF execution contexts whose worker processes this program owns and stops.

TFF 0.87's default local context (`tff.backends.native.
set_sync_local_cpp_execution_context`) starts its C++ worker binary lazily and
relies on a `__del__` to stop it. That finalizer runs during interpreter
teardown, after the `subprocess` module is gone, so the worker outlives Python
(holding ~750 MB and the parent's stdout). Here we start the same worker binary
ourselves, with its output sent to a log file, and stop it explicitly: through
`close()`, the context manager, or an `atexit` hook registered at start.

Importing this module replaces TFF's leaking default context by "no
context", so a computation run outside a `LocalRuntime` (or a context set
here) fails at once instead of silently starting an unowned worker.

A worker must not outlive its program even when the program is killed
(SIGKILL runs no Python): on Linux each worker is started with
PR_SET_PDEATHSIG, so the kernel kills it when its parent dies. SIGTERM is
turned into a normal exit, so the `atexit` hooks stop the workers.

The context itself is TFF's: a `SyncExecutionContext` over a
`tff.framework.RemoteExecutor` that talks to the worker over gRPC.
"""

import atexit
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Optional

import grpc
import portpicker
import tensorflow_federated as tff
from tensorflow_federated.python.core.backends.native import compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.context_stack import set_default_context

_GRPC_OPTIONS = [
    ('grpc.max_message_length', 2 * 1000 * 1000 * 1000),
    ('grpc.max_receive_message_length', 2 * 1000 * 1000 * 1000),
    ('grpc.max_send_message_length', 2 * 1000 * 1000 * 1000),
]
_STARTUP_TIMEOUT_SECONDS = 120.0

set_default_context.set_no_default_context()

_PR_SET_PDEATHSIG = 1
_LIBC = (ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
         if sys.platform.startswith('linux') else None)


def _die_with_parent() -> None:
  """Runs in the forked child before exec: SIGKILL it when the parent dies."""
  _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _exit_on_sigterm() -> None:
  """SIGTERM exits like sys.exit, so the atexit hooks stop the workers."""
  if (threading.current_thread() is threading.main_thread()
      and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def worker_binary_path() -> str:
  """Returns the path of the C++ worker binary in the installed TFF wheel."""
  path = os.path.join(os.path.dirname(tff.__file__), 'data', 'worker_binary')
  if not os.path.isfile(path):
    raise RuntimeError(f'No TFF worker binary at {path}.')
  return path


class LocalWorker:
  """A TFF worker binary serving on a loopback port, owned by this process.

  Use as a context manager, or call `close()`; an `atexit` hook also stops it,
  so a program that exits without closing leaves no worker behind.
  """

  def __init__(self, port: Optional[int] = None, log_path: Optional[str] = None):
    self.port = port or portpicker.pick_unused_port()
    if log_path is None:
      log_path = os.path.join(
          tempfile.gettempdir(), f'tff_kd_worker_{self.port}.log'
      )
    self.log_path = log_path
    self._log = open(log_path, 'wb')
    self.process = subprocess.Popen(
        [worker_binary_path(), f'--port={self.port}'],
        stdin=subprocess.DEVNULL,
        stdout=self._log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if _LIBC is not None else None,
    )
    atexit.register(self.close)
    _exit_on_sigterm()

  @property
  def address(self) -> str:
    return f'localhost:{self.port}'

  def close(self) -> None:
    """Stops the worker (SIGINT, then SIGKILL after 10 s); idempotent."""
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGINT)
      try:
        self.process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    self._log.close()
    atexit.unregister(self.close)

  def __enter__(self) -> 'LocalWorker':
    return self

  def __exit__(self, *unused_exc_info) -> None:
    self.close()


def _ready_stub(address: str) -> tff.framework.RemoteExecutorGrpcStub:
  """Returns a gRPC stub to the worker at `address`, once it answers."""
  channel = grpc.insecure_channel(address, _GRPC_OPTIONS)
  stub = tff.framework.RemoteExecutorGrpcStub(channel)
  deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
  while not stub.is_ready:
    if time.monotonic() > deadline:
      raise RuntimeError(
          f'The TFF worker at {address} did not answer within '
          f'{_STARTUP_TIMEOUT_SECONDS:.0f} s.'
      )
    time.sleep(0.05)
  return stub


def _executor_factory(address: str) -> tff.framework.ExecutorFactory:
  stub = _ready_stub(address)

  def stack_fn(cardinalities):
    cardinalities.setdefault(tff.CLIENTS, 0)
    executor = tff.framework.RemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  return tff.framework.ResourceManagingExecutorFactory(stack_fn)


def _context_kwargs():
  return dict(
      compiler_fn=compiler.desugar_and_transform_to_native,
      transform_args=tensorflow_computation.transform_args,
      transform_result=tensorflow_computation.transform_result,
  )


def set_remote_context(addresses: Sequence[str]) -> None:
  """Makes the TFF workers at `addresses` run every computation from now on.

  One address: TFF's `SyncExecutionContext` over a `RemoteExecutor`. Several:
  one `AsyncExecutionContext` per worker, joined by TFF's mergeable-computation
  context (`tff.backends.native.set_mergeable_comp_execution_context`), which
  splits each round's clients across the workers and merges their partial
  aggregates.
  """
  if isinstance(addresses, str):
    addresses = [addresses]
  if not addresses:
    raise ValueError('set_remote_context needs at least one worker address.')
  if len(addresses) == 1:
    context = tff.framework.SyncExecutionContext(
        executor_fn=_executor_factory(addresses[0]), **_context_kwargs()
    )
    tff.framework.set_default_context(context)
    return
  contexts = [
      tff.framework.AsyncExecutionContext(
          executor_fn=_executor_factory(address), **_context_kwargs()
      )
      for address in addresses
  ]
  tff.backends.native.set_mergeable_comp_execution_context(contexts)


class RemoteRuntime:
  """Runs every computation on the TFF workers at `addresses` (not owned).

  Start a worker on each machine with the binary shipped in the
  tensorflow-federated wheel (`worker_binary_path()`): `worker_binary
  --port=PORT`. On exit the context that was the default before is restored.
  """

  def __init__(self, addresses: Sequence[str]):
    self._previous_context = tff.framework.get_context_stack().current
    set_remote_context(addresses)

  def close(self) -> None:
    tff.framework.set_default_context(self._previous_context)

  def __enter__(self):
    return self

  def __exit__(self, *unused_exc_info) -> None:
    self.close()


class LocalRuntime:
  """Starts `num_workers` local workers and makes them TFF's default context.

  ```
  with runtime.LocalRuntime():
    state = process.initialize()
  ```
  On exit (or at interpreter exit) the workers are stopped and the context
  that was the default before is the default again (as `RemoteRuntime`), so
  runtimes nest.
  """

  def __init__(self, num_workers: int = 1):
    if num_workers < 1:
      raise ValueError(f'num_workers must be >= 1; got {num_workers}.')
    self.workers = []
    self._remote = None
    try:
      for _ in range(num_workers):
        self.workers.append(LocalWorker())
      self._remote = RemoteRuntime([w.address for w in self.workers])
    except Exception:
      self.close()
      raise

  def close(self) -> None:
    if self._remote is not None:
      self._remote.close()
    for worker in self.workers:
      worker.close()

  def __enter__(self) -> 'LocalRuntime':
    return self

  def __exit__(self, *unused_exc_info) -> None:
    self.close()
