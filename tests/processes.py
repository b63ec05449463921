"""Finding the TFF worker processes a test's subprocesses started."""

import psutil


def workers_with(marker: str) -> list[int]:
  """Worker processes whose environment carries TFF_KD_TEST_MARKER=marker."""
  found = []
  for process in psutil.process_iter(['cmdline']):
    try:
      if ('worker_binary' in ' '.join(process.info['cmdline'] or [])
          and process.environ().get('TFF_KD_TEST_MARKER') == marker):
        found.append(process.pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      pass
  return found
