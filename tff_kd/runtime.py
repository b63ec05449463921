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

The context itself is TFF's: a `SyncExecutionContext` over a
`tff.framework.RemoteExecutor` that talks to the worker over gRPC.
"""

import atexit
import os
import signal
import subprocess
import tempfile
import time
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
    )
    atexit.register(self.close)

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


def set_remote_context(address: str) -> None:
  """Makes the TFF worker at `address` run every computation from now on."""
  context = tff.framework.SyncExecutionContext(
      executor_fn=_executor_factory(address), **_context_kwargs()
  )
  tff.framework.set_default_context(context)


class LocalRuntime:
  """Starts a local worker and installs it as TFF's default context.

  ```
  with runtime.LocalRuntime():
    state = process.initialize()
  ```
  On exit (or at interpreter exit) the worker is stopped and the context that
  was the default before is the default again, so runtimes nest.
  """

  def __init__(self):
    self._previous_context = tff.framework.get_context_stack().current
    self.worker = LocalWorker()
    try:
      set_remote_context(self.worker.address)
    except Exception:
      self.close()
      raise

  def close(self) -> None:
    tff.framework.set_default_context(self._previous_context)
    self.worker.close()

  def __enter__(self) -> 'LocalRuntime':
    return self

  def __exit__(self, *unused_exc_info) -> None:
    self.close()
