"""Each algorithm's settings as one frozen dataclass: the one source of their
defaults, help and valid ranges.

A setting is a dataclass field made by `setting(default, help, ...)`. The
algorithm's builder takes the same names as keyword arguments with the
config's defaults (`beta: float = FedNTDConfig.beta`), the binaries define
one flag per field, `--{algorithm}_{field}`, with its help and range
(`binaries/registry.py`), and a run records the flags' values. Adding a
setting is adding a field.
"""

from collections.abc import Callable, Sequence
import dataclasses
from typing import Any, Optional


def setting(default: Any, help: str,  # pylint: disable=redefined-builtin
            check: Optional[Callable[[Any], bool]] = None,
            requirement: str = '') -> Any:
  """A config field: its default, help and range (`check`, in words)."""
  return dataclasses.field(default=default, metadata=dict(
      help=help, check=check, requirement=requirement))


def at_least(low: float) -> dict:
  return dict(check=lambda v: v >= low, requirement=f'>= {low:g}')


POSITIVE = dict(check=lambda v: v > 0, requirement='> 0')
TEMPERATURE = dict(check=lambda v: 1e-3 <= v <= 1e3,
                   requirement='in [0.001, 1000]')
OPEN_UNIT = dict(check=lambda v: 0 < v < 1, requirement='in (0, 1)')


def count(low: int, high: int) -> dict:
  """An integer range; counts are capped where more hangs or exhausts memory."""
  return dict(check=lambda v: low <= v <= high,
              requirement=f'in [{low}, {high}]')


def choice(choices: Sequence[str],
           help: str) -> Any:  # pylint: disable=redefined-builtin
  """A setting among `choices`; the first is the default."""
  return setting(choices[0], help, lambda v: v in choices,
                 f'one of {", ".join(choices)}')

