"""Studies and measurements of tff_kd, run from the repository as modules
(`python -m benchmarks.claims`, `benchmarks.benchmark`, `benchmarks.population`);
not part of the installed package. Each writes its page under docs/."""

import binaries  # pylint: disable=unused-import  (quiets TF's C++ logs first)
