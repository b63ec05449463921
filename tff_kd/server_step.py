"""The server's learning step, and where it runs: the TFF worker or the program.

FedDF's and FedAUX's distillation, FedGen's generator training and DS-FL's
and FedAD's server models are learning done at the server between one round
of client work and the next broadcast. Where it runs is a setting:

- `worker` (default): a `tff.tensorflow.computation` inside the round, as any
  TFF server step. TFF 0.87 runs every computation in its C++ worker, built
  without CUDA (google-parfait/tensorflow-federated #4600, #3709): on the
  worker's CPU. The process is a plain TFF process.
- `program`: the same Python function as a `tf.function` in the program's
  own process, on the devices TensorFlow sees there (a GPU when present).
  The round hands the step's inputs to the program as TFF values (the
  round's state and results, which every TFF round returns to the program
  anyway), the program runs the step and puts its outputs into the state
  the next round starts from.

The two run the same ops on the same values, but the worker's TensorFlow and
the program's round floating-point sums differently: they agree to float
rounding per step and drift apart over long runs, as any two float orders do
(tests/tff_kd/server_step_test.py). `worker` stays the default: it keeps
every published number.
"""

from collections.abc import Callable
import dataclasses
import inspect
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

PLACEMENTS = ('worker', 'program')
DEFAULT_PLACEMENT = 'worker'  # Of every builder and of --server_step.


def check_placement(where: str) -> None:
  if where not in PLACEMENTS:
    raise ValueError(f'server_step must be one of {PLACEMENTS}; got '
                     f'{where!r}.')


@dataclasses.dataclass(frozen=True)
class ServerStep:
  """A server step over arguments of `parameter_types`.

  `build()` makes what the step needs (its models' variables) and returns
  the step, a function of TF ops. The worker builds it in the computation's
  trace; the program once, outside the `tf.function` (which may not create
  variables when it retraces).
  """

  build: Callable[[], Callable[..., Any]]
  parameter_types: tuple[tff.Type, ...]

  def computation(self) -> tff.Computation:
    """The step as a `tff.tensorflow.computation` (on the TFF worker)."""

    # TFF takes no varargs: one named parameter per type.
    signature = inspect.Signature([
        inspect.Parameter(f'arg{i}', inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for i in range(len(self.parameter_types))])

    def fn(*args, **kwargs):
      return self.build()(*signature.bind(*args, **kwargs).args)

    fn.__signature__ = signature
    return tff.tensorflow.computation(*self.parameter_types)(fn)

  def function(self) -> Callable[..., Any]:
    """The step as a `tf.function` of this process: numpy in, numpy out.

    Built and traced at its first call, once (a fixed signature): Keras
    swaps its layer classes between graph and eager versions whenever a
    model is made in a graph (as TFF's tracing does), which breaks calling
    a model made before; the traced function no longer calls Keras.
    """
    signature = [tff.types.type_to_tf_tensor_specs(tff.to_type(t))
                 for t in self.parameter_types]
    traced = []

    def run(*args):
      if not traced:
        traced.append(tf.function(self.build(), input_signature=signature))
      return tf.nest.map_structure(np.asarray, traced[0](*args))

    return run


def step(*parameter_types) -> Callable[[Callable[[], Any]], ServerStep]:
  """Decorator: `@step(T1, T2, ...)` on a step's `build` function makes the
  `ServerStep`."""

  def wrap(build):
    return ServerStep(build, tuple(parameter_types))

  return wrap
