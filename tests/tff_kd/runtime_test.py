"""Two TFF workers (mergeable context), and one worker running a round's
clients in groups, give the numbers of one worker, for FedAvg, FedDF and FD
(stateful clients); the groups have the configured size; workers stop at
once, log privately, and fail fast on bad addresses or start-up failures;
worker settings (threads, concurrency) reach the worker, keep the numbers and
are checked; a worker killed or frozen mid-run ends the pending call within
seconds with one line naming it."""

import collections
import os
import shutil
import signal
import socket
import stat
import sys
import subprocess
import tempfile
import threading
import time
import unittest
from unittest import mock

import numpy as np
import portpicker
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import tiny
from tff_kd import algorithms
from tff_kd import runtime
from tff_kd import stateful_clients


def _two_rounds(process, client_data):
  state = process.initialize()
  for _ in range(2):
    output = process.next(state, client_data)
    state = output.state
  if isinstance(process, stateful_clients.StatefulClientsProcess):
    return tf.nest.flatten(state), output.metrics  # Every client's state.
  return process.get_model_weights(state).trainable, output.metrics


@pytest.mark.slow
class TwoWorkersTest(tf.test.TestCase):

  def test_fedavg_feddf_and_fd_match_a_single_worker(self):
    datasets = tiny.datasets(tiny.client_arrays([7, 12, 4, 9], seed=6), 4)
    distill_x = np.random.default_rng(0).normal(
        size=(6, tiny.NUM_FEATURES)).astype(np.float32)
    cases = [
        (algorithms.build_fedavg(tiny.model_fn, tiny.sgd(0.2)), datasets),
        (algorithms.build_feddf(
            {'linear': tiny.model_fn}, tiny.sgd(0.2),
            distillation_inputs=distill_x, distill_steps=3,
            distill_batch_size=2),
         [collections.OrderedDict(linear=ds) for ds in datasets]),
        # Client states in and out as CLIENTS-placed values.
        (algorithms.build_fd(
            {'linear': tiny.model_fn}, tiny.sgd(0.2),
            client_prototypes={str(c): 'linear' for c in range(4)}),
         [(str(c), ds) for c, ds in enumerate(datasets)]),
    ]
    for process, client_data in cases:
      one = _two_rounds(process, client_data)  # The session's one worker.
      with runtime.LocalRuntime(num_workers=2) as two_workers:
        self.assertLen(two_workers.workers, 2)
        two = _two_rounds(process, client_data)
      with runtime.LocalRuntime(clients_per_group=1):  # 4 groups of 1.
        grouped = _two_rounds(process, client_data)
      for other in (two, grouped):
        for a, b in zip(one[0], other[0]):
          self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)
        train = 'client_work'
        self.assertEqual(one[1][train]['non_finite_clients'],
                         other[1][train]['non_finite_clients'])
    for worker in two_workers.workers:
      self.assertIsNotNone(worker.process.poll())  # Stopped on exit.

  def test_a_call_runs_its_clients_in_groups_of_the_given_size(self):

    @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
    def mean(values):
      return tff.federated_mean(values)

    class Recording(tff.framework.AsyncExecutionContext):
      """Records the clients of each call of the part before the merge."""

      def __init__(self, address, calls):
        # pylint: disable=protected-access
        super().__init__(executor_fn=runtime._executor_factory(address),
                         **runtime._context_kwargs())
        # pylint: enable=protected-access
        self._calls = calls

      async def invoke(self, comp, arg):
        if comp.type_signature.parameter == mean.type_signature.parameter:
          self._calls.append(len(arg))
        return await super().invoke(comp, arg)

    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    with runtime.LocalWorker() as one, runtime.LocalWorker() as other:
      for addresses, group, expected in [
          ([one.address], 3, [3, 2, 2]),  # ceil(7 / 3) groups.
          ([one.address], None, [7]),
          ([one.address, other.address], None, [4, 3]),  # One per worker.
          ([one.address, other.address], 5, [4, 3]),
          ([one.address, other.address], 2, [2, 2, 2, 1]),
      ]:
        calls = []
        context = runtime.GroupingContext(
            [Recording(a, calls) for a in addresses], group)
        self.assertAllClose(context.invoke(mean, values), 4.0)
        self.assertEqual(sorted(calls, reverse=True), expected,
                         (addresses, group))


class WorkerSettingsTest(tf.test.TestCase):

  @unittest.skipUnless(sys.platform.startswith('linux'), 'reads /proc')
  def test_settings_reach_the_worker(self):
    with runtime.LocalWorker(intra_op_threads=1, inter_op_threads=2,
                             max_concurrent_computation_calls=3) as worker:
      pid = worker.process.pid
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        command = f.read().split(b'\0')
      with open(f'/proc/{pid}/environ', 'rb') as f:
        environment = f.read().split(b'\0')
      self.assertEqual(worker.settings, dict(
          intra_op_threads=1, inter_op_threads=2,
          max_concurrent_computation_calls=3))
    self.assertIn(b'--max_concurrent_computation_calls=3', command)
    self.assertIn(b'TF_NUM_INTRAOP_THREADS=1', environment)
    self.assertIn(b'TF_NUM_INTEROP_THREADS=2', environment)
    with runtime.LocalWorker() as worker:  # None: nothing passed.
      with open(f'/proc/{worker.process.pid}/cmdline', 'rb') as f:
        command = f.read()
      self.assertEqual(worker.settings, {})
    self.assertNotIn(b'max_concurrent', command)

  def test_a_round_gives_the_same_numbers_on_a_set_worker(self):
    datasets = tiny.datasets(tiny.client_arrays([7, 12, 4, 9], seed=6), 4)
    process = algorithms.build_fedavg(tiny.model_fn, tiny.sgd(0.2))
    default = _two_rounds(process, datasets)  # The session's worker.
    with runtime.LocalRuntime(
        intra_op_threads=1, inter_op_threads=1,
        max_concurrent_computation_calls=1) as local:
      self.assertEqual(local.workers[0].settings['intra_op_threads'], 1)
      set_worker = _two_rounds(process, datasets)
      # `context` is the one it installed; a `with` block can install it.
      self.assertIs(tff.framework.get_context_stack().current, local.context)
    with tff.framework.get_context_stack().install(local.context):
      self.assertIs(tff.framework.get_context_stack().current, local.context)
    self.assertIsNot(tff.framework.get_context_stack().current, local.context)
    self.assertAllClose(default[0], set_worker[0], rtol=1e-6, atol=1e-7)

  def test_bad_settings_are_refused_before_a_worker_starts(self):
    workers = dict(runtime._LOCAL_WORKERS)  # pylint: disable=protected-access
    for name, value in [('intra_op_threads', 0), ('inter_op_threads', -2),
                        ('max_concurrent_computation_calls', 1.5),
                        ('intra_op_threads', True),
                        ('inter_op_threads', '2'),
                        ('clients_per_group', 0)]:
      for start in (runtime.LocalRuntime, runtime.LocalWorker):
        if name == 'clients_per_group' and start is runtime.LocalWorker:
          continue  # A context's setting, not a worker's.
        with self.assertRaises(ValueError) as error:
          start(**{name: value})
        self.assertEqual(
            str(error.exception),
            f'{name} must be None (the default) or an integer >= 1; got '
            f'{value!r}.')
    self.assertEqual(runtime._LOCAL_WORKERS, workers)  # pylint: disable=protected-access


class WorkerLifecycleTest(tf.test.TestCase):

  def test_close_stops_workers_at_once_when_sigint_is_ignored(self):
    # As a background job (`cmd &`): SIGINT ignored, inherited by the workers.
    # SIGTERM ignored too: the workers must still die of it.
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = [signal.signal(s, signal.SIG_IGN) for s in signals]
    try:
      local = runtime.LocalRuntime(num_workers=3)
    finally:
      for s, handler in zip(signals, previous):
        signal.signal(s, handler)
    start = time.monotonic()
    local.close()
    self.assertLess(time.monotonic() - start, 3.0)
    for worker in local.workers:
      self.assertIsNotNone(worker.process.poll())
      with self.assertRaises(ProcessLookupError):
        os.kill(worker.process.pid, 0)

  def test_logs_are_private_and_removed_on_close(self):
    port = portpicker.pick_unused_port()
    old_path = os.path.join(tempfile.gettempdir(),
                            f'tff_kd_worker_{port}.log')
    victim = self.create_tempfile(content='precious')
    os.symlink(victim.full_path, old_path)
    self.addCleanup(os.remove, old_path)
    with runtime.LocalWorker(port=port) as worker:
      runtime.RemoteRuntime([worker.address]).close()
      self.assertEqual(stat.S_IMODE(os.stat(worker.log_dir).st_mode), 0o700)
      self.assertTrue(os.path.isfile(worker.log_path))
    self.assertEqual(victim.read_text(), 'precious')
    self.assertFalse(os.path.exists(worker.log_dir))
    with runtime.LocalRuntime(num_workers=2) as local:
      self.assertLen(os.listdir(local.log_dir), 2)
    self.assertFalse(os.path.exists(local.log_dir))

  def test_worker_dying_at_start_fails_at_once_and_keeps_its_log(self):
    with socket.socket(socket.AF_INET6) as taken:  # The worker's port.
      taken.bind(('::', 0))
      taken.listen()
      worker = runtime.LocalWorker(port=taken.getsockname()[1])
      self.addCleanup(os.rmdir, worker.log_dir)
      self.addCleanup(os.remove, worker.log_path)
      self.addCleanup(worker.close)
      start = time.monotonic()
      with self.assertRaises(RuntimeError) as error:
        runtime.RemoteRuntime([worker.address])
      self.assertLess(time.monotonic() - start, 30.0)
    self.assertIn('exited during start-up', str(error.exception))
    self.assertIn(f'{worker.log_path} ends with:', str(error.exception))
    self.assertIn('Address already in use', str(error.exception))
    worker.close()
    self.assertTrue(os.path.isfile(worker.log_path))


def _spin():
  """A computation that runs for as many loop steps as its argument says.

  Each step is a few microseconds on the worker; 10**12 steps are days, so a
  call of it is pending until the worker is lost.
  """

  @tff.tensorflow.computation(np.int64)
  def spin(steps):
    return tf.while_loop(
        lambda i, x: i < steps, lambda i, x: (i + 1, tf.sin(x) + 1.0),
        (tf.constant(0, tf.int64), tf.constant(0.0)))[1]

  return spin


def _outcome_within(fn, seconds):
  """`fn()`'s exception (None if it returned) and seconds taken, or a timeout.

  Runs `fn` in a daemon thread, so a call that hangs (the bug this guards
  against) fails the test instead of hanging it. TFF's context stack is per
  thread: the thread gets the caller's context.
  """
  context = tff.framework.get_context_stack().current
  outcome = []

  def run():
    start = time.monotonic()
    try:
      with tff.framework.get_context_stack().install(context):
        fn()
      outcome.append((None, time.monotonic() - start))
    except Exception as e:  # pylint: disable=broad-except
      outcome.append((e, time.monotonic() - start))

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(seconds)
  if not outcome:
    raise AssertionError(f'The call was still pending after {seconds} s.')
  return outcome[0]


@pytest.mark.slow
class WorkerLossTest(tf.test.TestCase):
  """A worker lost mid-run: `WorkerLostError` within seconds, not a hang."""

  def _start_worker_by_hand(self):
    """A worker binary as a user starts one: `worker_binary --port=PORT`."""
    port = portpicker.pick_unused_port()
    log = self.create_tempfile()
    # Dies with this process, as `LocalWorker`s do.
    with open(log.full_path, 'wb') as output:
      worker = runtime.start_owned(
          [runtime.worker_binary_path(), f'--port={port}'],
          stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    self.addCleanup(worker.wait)
    self.addCleanup(worker.kill)  # Also ends a stopped (SIGSTOP) worker.
    return worker, f'localhost:{port}'

  def _signal_in_a_second(self, pid, signum):
    timer = threading.Timer(1.0, os.kill, (pid, signum))
    timer.start()
    self.addCleanup(timer.cancel)

  def _assert_lost(self, error, address, advice):
    self.assertIsInstance(error, runtime.WorkerLostError)
    message = str(error)
    self.assertStartsWith(message, f'TFF worker {address} stopped answering (')
    self.assertEndsWith(message, f'last checkpoint: {advice}continue with '
                        '--resume.')
    self.assertNotIn('\n', message)
    self.assertEqual(error.address, address)

  def test_a_killed_remote_worker_fails_the_pending_call_and_the_next(self):
    worker, address = self._start_worker_by_hand()
    spin = _spin()
    datasets = tiny.datasets(tiny.client_arrays([7, 12, 4], seed=6), 4)
    process = algorithms.build_fedavg(tiny.model_fn, tiny.sgd(0.2))
    with runtime.RemoteRuntime([address]):
      state = process.initialize()
      state = process.next(state, datasets).state  # A round on the worker.
      self.assertAllClose(spin(1), 1.0)  # sin(0) + 1; ends the warm-up.
      self._signal_in_a_second(worker.pid, signal.SIGKILL)
      error, seconds = _outcome_within(lambda: spin(10**12), 30.0)
      self._assert_lost(error, address, 'restart the worker and ')
      self.assertBetween(seconds, 0.5, 15.0)  # Pending until the kill.
      self.assertIn('UNAVAILABLE', str(error))
      # The next round (the worker was killed between rounds): at once too.
      error, seconds = _outcome_within(
          lambda: process.next(state, datasets), 30.0)
      self._assert_lost(error, address, 'restart the worker and ')
      self.assertLess(seconds, 10.0)
    self.assertEqual(worker.wait(), -signal.SIGKILL)

  def test_keepalive_finds_a_worker_that_stopped_answering(self):
    # A frozen worker (or a machine gone from the network) closes nothing;
    # only unanswered keepalive pings tell. Minutes in a run, seconds here.
    worker, address = self._start_worker_by_hand()
    spin = _spin()
    with mock.patch.multiple(runtime, _KEEPALIVE_TIME_MS=1000,
                             _KEEPALIVE_TIMEOUT_MS=2000):
      remote = runtime.RemoteRuntime([address])
    with remote:
      self._signal_in_a_second(worker.pid, signal.SIGSTOP)
      error, seconds = _outcome_within(lambda: spin(10**12), 30.0)
    self._assert_lost(error, address, 'restart the worker and ')
    self.assertBetween(seconds, 0.5, 20.0)

  def test_a_killed_local_worker_is_named_with_its_exit_and_kept_log(self):
    spin = _spin()
    with runtime.LocalRuntime() as local:
      self.addCleanup(shutil.rmtree, local.log_dir, ignore_errors=True)
      worker = local.workers[0]
      self.assertAllClose(spin(1), 1.0)
      self._signal_in_a_second(worker.process.pid, signal.SIGKILL)
      error, _ = _outcome_within(lambda: spin(10**12), 30.0)
    self._assert_lost(error, worker.address, '')  # Its run starts a new one.
    self.assertIn(f'(killed by SIGKILL, log {worker.log_path}; gRPC '
                  'UNAVAILABLE', str(error))
    self.assertTrue(os.path.isfile(worker.log_path))  # Kept on close.


class CheckWorkerAddressTest(tf.test.TestCase):

  def test_accepts_host_port(self):
    for address in ['localhost:8000', '10.0.0.1:1', 'w-1.example.org:65535',
                    '[::1]:8000', '[fe80::1%eth0]:80']:
      runtime.check_worker_address(address)

  def test_rejects_malformed_addresses(self):
    for address, problem in [
        ('h:1:2', "host 'h:1' is not"),
        ('::1:8000', "host '::1' is not"),
        ('[::1:8000', "host '[::1' is not"),
        ('[x]:8000', "host '[x]' is not"),
        (':8000', "host '' is not"),
        ('a b:80', "host 'a b' is not"),
        ('localhost:99999', "port '99999' is not"),
        ('localhost:0', "port '0' is not"),
        ('localhost:١٢٣', "port '١٢٣' is not"),
        ('localhost:', "port '' is not"),
        ('localhost:' + '9' * 5000, "port '999"),
        ('localhost', 'no ":port"'),
    ]:
      with self.assertRaises(ValueError) as error:
        runtime.check_worker_address(address)
      self.assertStartsWith(
          str(error.exception),
          f'Bad TFF worker address {address!r}: {problem}')

  def test_remote_runtime_rejects_a_bad_address_before_connecting(self):
    context = tff.framework.get_context_stack().current
    start = time.monotonic()
    with self.assertRaisesRegex(ValueError, 'localhost:0'):
      runtime.RemoteRuntime(['localhost:8000', 'localhost:0'])
    self.assertLess(time.monotonic() - start, 1.0)
    self.assertIs(tff.framework.get_context_stack().current, context)


if __name__ == '__main__':
  tf.test.main()
