"""Knowledge distillation for federated learning, on TensorFlow Federated.

Importing the package imports `tff_kd.runtime`, which replaces TFF 0.87's
default execution context (its worker outlives Python) by none: a program
runs TFF computations in a `runtime.LocalRuntime` or a context set there.
"""

from tff_kd import runtime  # pylint: disable=unused-import
