"""tff_kd: knowledge distillation for federated learning on TensorFlow Federated.

A shim: the metadata, dependencies and packages are declared in pyproject.toml.
Dependencies are pinned in requirements.lock and installed with --no-deps (see
the Makefile): tensorflow-federated 0.87.0 pins jax/jaxlib 0.4.14, which cannot
be installed, so its metadata cannot be satisfied by a resolver.
"""

import setuptools

setuptools.setup()
