"""TFF execution contexts whose worker processes this program owns and stops.

TFF 0.87's default local context (`tff.backends.native.
set_sync_local_cpp_execution_context`) starts its C++ worker binary lazily and
relies on a `__del__` to stop it. That finalizer runs during interpreter
teardown, after the `subprocess` module is gone, so the worker outlives Python
(holding ~750 MB and the parent's stdout). Here we start the same worker binary
ourselves and stop it explicitly: through `close()`, the context manager, or
an `atexit` hook registered at start. Stopping is SIGTERM, then SIGKILL after
a short grace; a `LocalRuntime` signals all its workers before waiting for any.

A worker's output goes to a log in a private directory (`tempfile.mkdtemp`,
mode 0700, so no other user can plant or read files there), one directory per
`LocalRuntime` (or per `LocalWorker` used alone). Closing removes the logs and
the directory, except the log of a worker that failed to start, which the
error names.

Importing this module replaces TFF's leaking default context by "no
context", so a computation run outside a `LocalRuntime` (or a context set
here) fails at once instead of silently starting an unowned worker.

A worker must not outlive its program even when the program is killed
(SIGKILL runs no Python): on Linux each worker is started with
PR_SET_PDEATHSIG, so the kernel kills it when its parent dies. SIGTERM is
turned into a normal exit, so the `atexit` hooks stop the workers.

The context itself is TFF's: a `SyncExecutionContext` over a
`tff.framework.RemoteExecutor` that talks to the worker over gRPC.

A worker lost during a run (killed, crashed, or its machine gone) ends the
pending call with a `WorkerLostError` naming it, instead of TFF's silent
retrying, which hangs the run forever (`_WorkerStub`): within milliseconds
when the worker's process dies (its kernel closes the connection), and
within about 6.5 minutes when nothing closes it (a machine gone from the
network, a frozen process), by gRPC keepalive pings (`_KEEPALIVE_TIME_MS`).
There is no deadline on a call: a round may take as long as it takes.

Worker settings (`LocalWorker` and `LocalRuntime` arguments; default: none,
TFF's and TensorFlow's defaults). The worker is TensorFlow's C++ runtime, and
its thread pools are sized, when the computation's session options leave
them at 0 (TFF's do), by the environment variables TF_NUM_INTRAOP_THREADS
(threads within one op, e.g. a matmul's blocks) and TF_NUM_INTEROP_THREADS
(ops run side by side), read by `tensorflow/core/common_runtime/
process_util.cc`; unset, each is one per core. `intra_op_threads` and
`inter_op_threads` set them in the worker's environment only (unset, the
worker inherits this process's). `max_concurrent_computation_calls` is the
worker binary's flag of that name: at most that many calls of one
computation at once, e.g. the clients of a `federated_map` (default: no
limit, so a round's clients train concurrently, sharing the cores).
`benchmarks.benchmark` measures them against the defaults
(`--worker_settings`, docs/PERFORMANCE.md).
The concurrency settings keep a round's numbers bit for bit; the intra-op
thread count decides how some kernels split their float sums, so a count
other than another run's changes the last bits (FedAvg weights, intra-op
threads 1 against 2: 3e-8 after a round; 1.2e-7 and 1.2e-4 after 23 rounds
in two runs).
"""

import atexit
import contextlib
import ipaddress
import os
import re
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
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler
from tensorflow_federated.python.core.environments.tensorflow_frontend import tensorflow_computation
from tensorflow_federated.python.core.impl.context_stack import set_default_context
from tensorflow_federated.python.core.impl.executors import cardinalities_utils

_GRPC_OPTIONS = [
    ('grpc.max_message_length', 2 * 1000 * 1000 * 1000),
    ('grpc.max_receive_message_length', 2 * 1000 * 1000 * 1000),
    ('grpc.max_send_message_length', 2 * 1000 * 1000 * 1000),
]
# HTTP/2 keepalive while a call is pending: a ping after this many ms
# without a frame from the worker, and the call fails (UNAVAILABLE) when one
# goes unanswered for _KEEPALIVE_TIMEOUT_MS. This catches a worker whose machine vanished without
# closing the connection (power loss, network cut), where no error would ever
# come. A worker that is merely busy still answers pings (gRPC does, off the
# computation's threads), so a long round is not cut. The worker binary keeps
# gRPC's server defaults, which close a connection (too_many_pings) that
# pings more often than every 5 minutes while no data flows, as during a long
# call; hence 6 minutes, not seconds. A dead process needs none of this: its
# kernel closes the connection, and the call fails at once.
_KEEPALIVE_TIME_MS = 6 * 60 * 1000
_KEEPALIVE_TIMEOUT_MS = 20 * 1000
_STARTUP_TIMEOUT_SECONDS = 120.0
_STOP_GRACE_SECONDS = 5.0
_EXIT_WAIT_SECONDS = 1.0
_LOG_TAIL_LINES = 20

set_default_context.set_no_default_context()

# Starts the worker binary (argv[3:]) from a fresh Python process, so no
# code runs between fork and exec in this process: its gRPC threads make a
# forked copy of it unsafe (a `preexec_fn` forks, and gRPC's fork handlers
# crashed workers at start), while `subprocess` without one uses vfork. The
# worker dies of SIGKILL when its parent dies (PR_SET_PDEATHSIG, kept across
# exec; a parent already gone is caught by the getppid check) and of SIGTERM
# even when the parent ignores SIGTERM. It ignores SIGINT: a Ctrl-C reaches
# the whole process group, and the parent, which owns the worker, handles it
# (it stops cleanly, then stops its workers); a worker that died of it first
# would turn the clean stop into a gRPC error.
_LAUNCHER = """
import ctypes, os, signal, sys
parent, started = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGINT, signal.SIG_IGN)
if sys.platform.startswith('linux'):
  ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  if os.getppid() != parent:
    sys.exit('the parent of the TFF worker exited before it started')
os.set_inheritable(started, False)  # Closed by the exec: the parent's EOF.
os.execv(sys.argv[3], sys.argv[3:])
"""


def start_owned(command: Sequence[str], **popen_kwargs) -> subprocess.Popen:
  """Starts `command` (a worker binary's) so that it dies with this process.

  Returns once the command runs (the launcher has exec'ed it, or failed).
  """
  read_end, write_end = os.pipe()
  with os.fdopen(read_end, 'rb') as started:
    try:
      process = subprocess.Popen(
          [sys.executable, '-I', '-S', '-c', _LAUNCHER, str(os.getpid()),
           str(write_end), *command], pass_fds=(write_end,), **popen_kwargs)
    finally:
      os.close(write_end)
    started.read()  # EOF: the exec closed the launcher's end.
  return process


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


def check_worker_address(address: str) -> None:
  """Raises ValueError unless `address` is a worker address, host:port.

  The port is a number in 1..65535 in ASCII digits. The host is a name or an
  IPv4 address (ASCII letters, digits, '.', '-', '_'), or an IPv6 address in
  brackets, as in `[::1]:8000`.
  """
  host, colon, port = address.rpartition(':')
  if not colon:
    problem = 'no ":port"'
  elif not re.fullmatch('[0-9]{1,5}', port) or not 1 <= int(port) <= 65535:
    problem = f'port {port!r} is not a number in 1..65535'
  elif not _is_host(host):
    problem = (f'host {host!r} is not a name, an IPv4 address or an IPv6 '
               'address in brackets')
  else:
    return
  raise ValueError(
      f'Bad TFF worker address {address!r}: {problem} (expected host:port, '
      'as localhost:8000 or [::1]:8000).'
  )


def _is_host(host: str) -> bool:
  """Whether `host` is a name, an IPv4 address or a bracketed IPv6 address."""
  if host.startswith('[') and host.endswith(']'):
    try:
      ipaddress.IPv6Address(host[1:-1])
    except ValueError:
      return False
    return True
  return re.fullmatch('[A-Za-z0-9._-]+', host) is not None


def _stop(processes: Sequence[subprocess.Popen]) -> None:
  """Stops `processes` all at once: SIGTERM, SIGKILL after a shared grace."""
  running = [process for process in processes if process.poll() is None]
  for process in running:
    process.terminate()
  deadline = time.monotonic() + _STOP_GRACE_SECONDS
  for process in running:
    try:
      process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


def _remove_if_empty(directory: str) -> None:
  with contextlib.suppress(OSError):  # Not empty: keeps a failed worker's log.
    os.rmdir(directory)


_THREAD_VARIABLES = (
    ('intra_op_threads', 'TF_NUM_INTRAOP_THREADS'),
    ('inter_op_threads', 'TF_NUM_INTEROP_THREADS'),
)


def _checked_settings(**settings: Optional[int]) -> dict[str, Optional[int]]:
  """`settings`, each None or an integer >= 1; ValueError naming one if not."""
  for name, value in settings.items():
    if value is not None and (isinstance(value, bool)
                              or not isinstance(value, int) or value < 1):
      raise ValueError(
          f'{name} must be None (the default) or an integer >= 1; got '
          f'{value!r}.'
      )
  return settings


# The running `LocalWorker`s by address: waiting for one of them fails at once
# if it exits.
_LOCAL_WORKERS = {}


class LocalWorker:
  """A TFF worker binary serving on a loopback port, owned by this process.

  Use as a context manager, or call `close()`; an `atexit` hook also stops it,
  so a program that exits without closing leaves no worker behind. Its output
  goes to `log_path` in `log_dir`, a directory private to this user (by
  default one of its own, removed on close).

  Args:
    port: to serve on; default: a free one.
    log_dir: where its log goes; default: a private directory of its own.
    intra_op_threads: TF_NUM_INTRAOP_THREADS of the worker (module
      docstring); None: inherited, else TensorFlow's default.
    inter_op_threads: TF_NUM_INTEROP_THREADS of the worker; None: inherited.
    max_concurrent_computation_calls: the worker binary's flag; None: not
      passed (no limit).

  Raises:
    ValueError: a setting that is not None or an integer >= 1.
  """

  def __init__(
      self,
      port: Optional[int] = None,
      log_dir: Optional[str] = None,
      *,
      intra_op_threads: Optional[int] = None,
      inter_op_threads: Optional[int] = None,
      max_concurrent_computation_calls: Optional[int] = None,
  ):
    settings = _checked_settings(
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        max_concurrent_computation_calls=max_concurrent_computation_calls,
    )
    # The settings given (not None), for reports.
    self.settings = {k: v for k, v in settings.items() if v is not None}
    binary = worker_binary_path()
    command = [binary]
    if max_concurrent_computation_calls is not None:
      command.append('--max_concurrent_computation_calls='
                     f'{max_concurrent_computation_calls}')
    environment = dict(os.environ)
    for name, variable in _THREAD_VARIABLES:
      if settings[name] is not None:
        environment[variable] = str(settings[name])
    self.port = port or portpicker.pick_unused_port()
    self._own_log_dir = log_dir is None
    self.log_dir = log_dir or tempfile.mkdtemp(prefix='tff_kd_workers_')
    self.log_path = os.path.join(self.log_dir, f'worker_{self.port}.log')
    self._keep_log = False
    with open(self.log_path, 'xb') as log:  # 'x': O_EXCL, follows no symlink.
      self.process = start_owned(
          command + [f'--port={self.port}'],
          env=environment,
          stdin=subprocess.DEVNULL,
          stdout=log,
          stderr=subprocess.STDOUT,
      )
    _LOCAL_WORKERS[self.address] = self
    atexit.register(self.close)
    _exit_on_sigterm()

  @property
  def address(self) -> str:
    return f'localhost:{self.port}'

  def keep_log(self) -> None:
    """Keeps the log on close: the worker failed, and an error names it."""
    self._keep_log = True

  def startup_error(self, problem: str) -> RuntimeError:
    """Keeps the log (on close) and returns the error of a failed start."""
    self.keep_log()
    with open(self.log_path, 'rb') as log:
      lines = log.read().decode(errors='replace').splitlines()
    return RuntimeError(
        f'The TFF worker at {self.address} {problem}. Its log '
        f'{self.log_path} ends with:\n' + '\n'.join(lines[-_LOG_TAIL_LINES:])
    )

  def close(self) -> None:
    """Stops the worker (SIGTERM, SIGKILL after 5 s); idempotent.

    Removes the log unless the worker failed to start or died during a run
    (an error names the log).
    """
    _stop([self.process])
    atexit.unregister(self.close)
    _LOCAL_WORKERS.pop(self.address, None)
    if not self._keep_log:
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.log_path)
    if self._own_log_dir:
      _remove_if_empty(self.log_dir)

  def __enter__(self) -> 'LocalWorker':
    return self

  def __exit__(self, *unused_exc_info) -> None:
    self.close()


class WorkerLostError(RuntimeError):
  """A TFF worker stopped answering during a run: it died or is unreachable.

  Its message is one line naming the worker (`address`) and what gRPC saw,
  and saying how to go on: a run (`tff_kd.experiment`) keeps its last
  checkpoint. A worker this program started (`local`) is started afresh by
  the next run; one started by hand must be restarted first. Deliberately not
  a `tff.framework.RetryableError`: see `_WorkerStub`.
  """

  def __init__(self, address: str, problem: str, local: bool = False):
    restart = '' if local else 'restart the worker and '
    super().__init__(
        f'TFF worker {address} stopped answering ({problem}); a run keeps its '
        f'last checkpoint: {restart}continue with --resume.'
    )
    self.address = address


def _unavailable(error: grpc.RpcError) -> bool:
  """Whether a call failed with UNAVAILABLE: the worker is not reachable."""
  return (isinstance(error, grpc.Call)
          and error.code() == grpc.StatusCode.UNAVAILABLE)


class _WorkerStub(tff.framework.RemoteExecutorGrpcStub):
  """TFF's gRPC stub to one worker, whose loss ends the call with an error.

  TFF turns a call's gRPC UNAVAILABLE (the connection closed or refused: the
  worker process died, or keepalive found its machine gone) into a
  `RetryableError`, and its execution context retries the whole computation
  on it, every 30 s at most, forever and silently: a run whose worker died
  hangs. Here UNAVAILABLE raises `WorkerLostError` instead, which TFF does
  not retry, so the run stops within seconds, naming the worker. Other codes
  keep TFF's handling. The error discards the call's executor (TFF's
  context does), so once a worker is serving at the address again, the next
  computation runs on it.

  Until a call succeeds again, the stub skips the calls that free the
  worker's values and executors (TFF makes them while unwinding from the
  error): a lost worker has nothing to free, and such a call to a machine
  that vanished would wait for a reconnection (20 s) first.
  """

  def __init__(self, channel: grpc.Channel, address: str):
    super().__init__(channel)
    self._address = address
    self._lost = False

  def _call(self, method, request):
    try:
      response = method(request)
    except grpc.RpcError as e:
      if not _unavailable(e):
        raise
      self._lost = True
      raise self._lost_error(e) from None
    self._lost = False
    return response

  def _free(self, method, request):
    """A call that frees memory on the worker: skipped on a lost worker."""
    if self._lost:
      return None
    try:
      return method(request)
    except grpc.RpcError as e:
      if not _unavailable(e):
        raise
      self._lost = True
      return None

  def _lost_error(self, error: grpc.Call) -> WorkerLostError:
    """The error: gRPC's details, and a `LocalWorker`'s exit and log."""
    details = ' '.join((error.details() or '').split())  # One line.
    problem = f'gRPC UNAVAILABLE: {details}' if details else 'gRPC UNAVAILABLE'
    worker = _LOCAL_WORKERS.get(self._address)
    if worker is None:
      return WorkerLostError(self._address, problem)
    try:  # Its kernel closes the connection an instant before it exits.
      status = worker.process.wait(timeout=_EXIT_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
      return WorkerLostError(self._address, problem, local=True)
    worker.keep_log()
    if status >= 0:
      exit_text = f'exited with status {status}'
    else:
      try:
        exit_text = f'killed by {signal.Signals(-status).name}'
      except ValueError:
        exit_text = f'killed by signal {-status}'
    return WorkerLostError(
        self._address, f'{exit_text}, log {worker.log_path}; {problem}',
        local=True)

  def get_executor(self, request):
    return self._call(super().get_executor, request)

  def create_value(self, request):
    return self._call(super().create_value, request)

  def create_struct(self, request):
    return self._call(super().create_struct, request)

  def create_call(self, request):
    return self._call(super().create_call, request)

  def create_selection(self, request):
    return self._call(super().create_selection, request)

  def compute(self, request):
    return self._call(super().compute, request)

  def dispose(self, request):
    # Also called from TFF's finalizers of remote values, where an error
    # would only be printed ("Exception ignored in ...").
    return self._free(super().dispose, request)

  def dispose_executor(self, request):
    return self._free(super().dispose_executor, request)


def _channel_options() -> list[tuple[str, int]]:
  """The gRPC options of a channel to a worker: message sizes, keepalive."""
  return _GRPC_OPTIONS + [
      ('grpc.keepalive_time_ms', _KEEPALIVE_TIME_MS),
      ('grpc.keepalive_timeout_ms', _KEEPALIVE_TIMEOUT_MS),
      # In this gRPC (1.74) an unanswered keepalive ping fails the
      # connection by this timeout (default: 1 minute), not by the one
      # above (seen with a frozen worker).
      ('grpc.http2.ping_timeout_ms', _KEEPALIVE_TIMEOUT_MS),
      # Only while calls are pending: the server refuses pings otherwise.
      ('grpc.keepalive_permit_without_calls', 0),
      # No cap on pings while no data flows (a long call sends none).
      ('grpc.http2.max_pings_without_data', 0),
  ]


def _ready_stub(address: str) -> tff.framework.RemoteExecutorGrpcStub:
  """Returns a gRPC stub to the worker at `address`, once it answers.

  Fails at once if the worker is a `LocalWorker` that exits meanwhile. The
  stub raises `WorkerLostError` when the worker is lost later (`_WorkerStub`).
  """
  worker = _LOCAL_WORKERS.get(address)
  channel = grpc.insecure_channel(address, _channel_options())
  stub = _WorkerStub(channel, address)
  deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
  while not stub.is_ready:
    if worker is not None and worker.process.poll() is not None:
      raise worker.startup_error(
          f'exited during start-up (status {worker.process.returncode})'
      )
    if time.monotonic() > deadline:
      problem = f'did not answer within {_STARTUP_TIMEOUT_SECONDS:.0f} s'
      if worker is not None:
        raise worker.startup_error(problem)
      raise RuntimeError(f'The TFF worker at {address} {problem}.')
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


class GroupingContext(tff.framework.MergeableCompExecutionContext):
  """TFF's mergeable-computation context, a call's clients in groups.

  A call with n clients runs as max(workers, ceil(n / clients_per_group))
  subrounds (`clients_per_group` None: one per worker, TFF's default), each
  on the next free worker; a worker runs its subrounds one after the other,
  and each subround's partial aggregate is merged as it comes. TFF's C++
  executor keeps every client value of a call alive until the call's
  aggregation (docs/POPULATION.md), so a worker holds
  one group's clients instead of the round's. TFF's context fixes the number
  of subrounds when built; this one sets it for each call from the call's
  clients (TFF's `cardinalities_utils.infer_cardinalities`, as the context
  itself counts them). The numbers equal one worker's up to float rounding
  (the order of the aggregation's sums).
  """

  def __init__(self, async_contexts: Sequence[tff.framework.AsyncContext],
               clients_per_group: Optional[int] = None):
    _checked_settings(clients_per_group=clients_per_group)
    super().__init__(
        async_contexts,
        compiler_fn=mergeable_comp_compiler.compile_to_mergeable_comp_form)
    self._workers = len(async_contexts)
    self._clients_per_group = clients_per_group

  def invoke(self, comp, arg=None):
    clients = 0
    if arg is not None and self._clients_per_group is not None:
      clients = cardinalities_utils.infer_cardinalities(
          arg, comp.type_signature.parameter).get(tff.CLIENTS, 0)
      clients = -(-clients // self._clients_per_group)
    # TFF's attribute (`num_subrounds` of its constructor), read per call.
    self._num_subrounds = max(self._workers, clients)
    return super().invoke(comp, arg)


def build_remote_context(addresses: Sequence[str],
                         clients_per_group: Optional[int] = None):
  """The TFF context that runs computations on the workers at `addresses`.

  One address and no `clients_per_group`: TFF's `SyncExecutionContext` over
  a `RemoteExecutor`. Otherwise one `AsyncExecutionContext` per worker,
  joined by a `GroupingContext` (TFF's mergeable-computation context), which
  splits each call's clients across the workers, in groups of at most
  `clients_per_group` when given, and merges their partial aggregates.
  Raises ValueError for a malformed address (`check_worker_address`) or a
  `clients_per_group` that is not None or an integer >= 1, before connecting
  to any. Waits until every worker answers. Installs nothing: see
  `set_remote_context`, or `tff.framework.get_context_stack().install(
  context)` for a `with` block.
  """
  if isinstance(addresses, str):
    addresses = [addresses]
  if not addresses:
    raise ValueError('A remote context needs at least one worker address.')
  for address in addresses:
    check_worker_address(address)
  _checked_settings(clients_per_group=clients_per_group)
  if len(addresses) == 1 and clients_per_group is None:
    return tff.framework.SyncExecutionContext(
        executor_fn=_executor_factory(addresses[0]), **_context_kwargs()
    )
  contexts = [
      tff.framework.AsyncExecutionContext(
          executor_fn=_executor_factory(address), **_context_kwargs()
      )
      for address in addresses
  ]
  return GroupingContext(contexts, clients_per_group)


def set_remote_context(addresses: Sequence[str],
                       clients_per_group: Optional[int] = None) -> None:
  """Makes the TFF workers at `addresses` run every computation from now on.

  The context is `build_remote_context(addresses, clients_per_group)`'s.
  """
  tff.framework.set_default_context(
      build_remote_context(addresses, clients_per_group))


class RemoteRuntime:
  """Runs every computation on the TFF workers at `addresses` (not owned).

  Start a worker on each machine with the binary shipped in the
  tensorflow-federated wheel (`worker_binary_path()`): `worker_binary
  --port=PORT`. On exit the context that was the default before is restored.
  `clients_per_group`: see `GroupingContext`. A computation whose worker is
  lost raises `WorkerLostError` (module docstring).
  """

  def __init__(self, addresses: Sequence[str],
               clients_per_group: Optional[int] = None):
    self._previous_context = tff.framework.get_context_stack().current
    # The context it made the default (`build_remote_context`); a program
    # that alternates between runtimes installs it for a `with` block:
    # `tff.framework.get_context_stack().install(runtime.context)`.
    self.context = build_remote_context(addresses, clients_per_group)
    tff.framework.set_default_context(self.context)

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
  On exit (or at interpreter exit) the workers are stopped, all at once, and
  the context that was the default before is the default again (as
  `RemoteRuntime`), so runtimes nest; `context` is the one it installed. The
  workers' logs are in `log_dir`.

  Args:
    num_workers: workers to start (>= 1); several split each round's clients.
    intra_op_threads: each worker's TF_NUM_INTRAOP_THREADS (module
      docstring); None: inherited from this process, else one per core.
    inter_op_threads: each worker's TF_NUM_INTEROP_THREADS; None: inherited.
    max_concurrent_computation_calls: each worker's flag of that name; None:
      no limit.
    clients_per_group: at most this many of a call's clients at once on a
      worker (`GroupingContext`); None: all of them.

  Raises:
    ValueError: `num_workers` < 1, or a setting that is not None or an
      integer >= 1 (before any worker starts).
  """

  def __init__(
      self,
      num_workers: int = 1,
      *,
      intra_op_threads: Optional[int] = None,
      inter_op_threads: Optional[int] = None,
      max_concurrent_computation_calls: Optional[int] = None,
      clients_per_group: Optional[int] = None,
  ):
    if num_workers < 1:
      raise ValueError(f'num_workers must be >= 1; got {num_workers}.')
    settings = _checked_settings(
        intra_op_threads=intra_op_threads,
        inter_op_threads=inter_op_threads,
        max_concurrent_computation_calls=max_concurrent_computation_calls,
    )
    _checked_settings(clients_per_group=clients_per_group)
    self.log_dir = tempfile.mkdtemp(prefix='tff_kd_workers_')
    self.workers = []
    self._remote = None
    self.context = None
    try:
      for _ in range(num_workers):
        self.workers.append(LocalWorker(log_dir=self.log_dir, **settings))
      atexit.register(self.close)  # After the workers' hooks: runs first.
      self._remote = RemoteRuntime([w.address for w in self.workers],
                                   clients_per_group)
      self.context = self._remote.context
    except Exception:
      self.close()
      raise

  def close(self) -> None:
    """Stops the workers, all at once, and restores the context; idempotent."""
    atexit.unregister(self.close)
    if self._remote is not None:
      self._remote.close()
      self._remote = None
    _stop([worker.process for worker in self.workers])
    for worker in self.workers:
      worker.close()
    _remove_if_empty(self.log_dir)

  def __enter__(self) -> 'LocalRuntime':
    return self

  def __exit__(self, *unused_exc_info) -> None:
    self.close()
