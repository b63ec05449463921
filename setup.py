"""tff_kd: knowledge distillation for federated learning on TensorFlow Federated.

Dependencies are pinned in requirements.lock and installed with --no-deps (see
the Makefile): tensorflow-federated 0.87.0 pins jax/jaxlib 0.4.14, which cannot
be installed, so its metadata cannot be satisfied by a resolver.
"""

import setuptools

setuptools.setup(
    name='tff_kd',
    version='0.1.0',
    description='Knowledge distillation algorithms for federated learning on TFF.',
    python_requires='>=3.11,<3.12',
    packages=setuptools.find_packages(include=['tff_kd*', 'tasks*', 'binaries*']),
)
