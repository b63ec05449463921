"""Peak resident memory of a process and of its children (TFF workers)."""

import threading
import time
from typing import Optional

import psutil


class PeakRss:
  """Samples resident memory every 20 ms while in its `with` block.

  `trainer`: the peak bytes of `process` (default this one); `workers`: the
  peak of the summed bytes of its descendants (the TFF workers a
  `LocalRuntime` started), sampled at the same moment.
  """

  def __init__(self, process: Optional[psutil.Process] = None):
    self._me = process or psutil.Process()
    self.trainer = 0
    self.workers = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      try:
        self.trainer = max(self.trainer, self._me.memory_info().rss)
        children = self._me.children(recursive=True)
      except psutil.Error:  # `process` has exited.
        return
      total = 0
      for child in children:
        try:
          total += child.memory_info().rss
        except psutil.Error:  # It exited since listed.
          pass
      self.workers = max(self.workers, total)
      time.sleep(0.02)

  def __enter__(self) -> 'PeakRss':
    self._thread.start()
    return self

  def __exit__(self, *unused_exc_info) -> None:
    self._stop.set()
    self._thread.join()
