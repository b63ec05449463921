"""The package's metadata (pyproject.toml) against the code, the lock and the
installed distribution.

Every third-party module that tff_kd, tasks and binaries import is declared
(tff_kd's as dependencies, the programs' as the `experiments` extra), every
declared range admits the version requirements.lock pins, and the
distribution installs the library `tff_kd` only: tasks/ and binaries/ are the
repository's programs, importable from its root, not installed top-level.
Needs no TFF worker.
"""

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import tomllib

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version
import pytest
import setuptools

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIBRARY = 'tff_kd'
_PROGRAMS = ('tasks', 'binaries')
_EXTRA = 'experiments'  # The programs' own dependencies.
_PYTHON = SpecifierSet('>=3.11,<3.12')

# Top-level module -> the distribution that provides it (checked against the
# installed distributions' own records below). A new third-party import fails
# the test until it is added here and declared in pyproject.toml.
_DISTRIBUTIONS = {
    'absl': 'absl-py',
    'attrs': 'attrs',
    'dp_accounting': 'dp-accounting',
    'grpc': 'grpcio',
    'matplotlib': 'matplotlib',
    'mnist1d': 'mnist1d',
    'numpy': 'numpy',
    'portpicker': 'portpicker',
    'sklearn': 'scikit-learn',
    'tensorflow': 'tensorflow',
    'tensorflow_datasets': 'tensorflow-datasets',
    'tensorflow_federated': 'tensorflow-federated',
    'tensorflow_model_optimization': 'tensorflow-model-optimization',
    'tensorflow_privacy': 'tensorflow-privacy',
    'tqdm': 'tqdm',
}


@pytest.fixture(autouse=True)
def tff_runtime():
  """Overrides conftest's session worker: nothing here runs TFF."""
  yield None


def _pyproject() -> dict:
  with open(os.path.join(_REPO, 'pyproject.toml'), 'rb') as f:
    return tomllib.load(f)


def _requirements(strings) -> dict[str, Requirement]:
  requirements = [Requirement(s) for s in strings]
  return {canonicalize_name(r.name): r for r in requirements}


def _declared() -> tuple[dict[str, Requirement], dict[str, Requirement]]:
  """pyproject's (dependencies, the programs' extra)."""
  project = _pyproject()['project']
  return (_requirements(project['dependencies']),
          _requirements(project['optional-dependencies'][_EXTRA]))


def _third_party_imports(package: str) -> dict[str, set[str]]:
  """Top-level module -> files of `package` that import it, but for the
  standard library and the repository's own packages."""
  ours = {_LIBRARY, *_PROGRAMS}
  found = {}
  for directory, _, names in os.walk(os.path.join(_REPO, package)):
    for name in names:
      if not name.endswith('.py'):
        continue
      path = os.path.join(directory, name)
      with open(path) as f:
        tree = ast.parse(f.read(), path)
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
          modules = [node.module]
        else:
          continue
        for module in modules:
          top = module.split('.')[0]
          if top not in sys.stdlib_module_names and top not in ours:
            found.setdefault(top, set()).add(os.path.relpath(path, _REPO))
  return found


def _distributions(package: str) -> set[str]:
  imports = _third_party_imports(package)
  unmapped = {m: sorted(files) for m, files in imports.items()
              if m not in _DISTRIBUTIONS}
  assert not unmapped, (
      f'Imported but not in _DISTRIBUTIONS (declare them in pyproject.toml '
      f'and map them here): {unmapped}')
  return {canonicalize_name(_DISTRIBUTIONS[m]) for m in imports}


def _lock() -> dict[str, Version]:
  pins = {}
  with open(os.path.join(_REPO, 'requirements.lock')) as f:
    for line in f:
      line = line.split('#')[0].strip()
      if line:
        name, version = line.split('==')
        pins[canonicalize_name(name)] = Version(version)
  return pins


def _installed() -> importlib.metadata.Distribution:
  return importlib.metadata.distribution(_LIBRARY)


def test_python_range():
  project = _pyproject()['project']
  assert SpecifierSet(project['requires-python']) == _PYTHON
  assert SpecifierSet(_installed().metadata['Requires-Python']) == _PYTHON
  assert _PYTHON.contains('.'.join(map(str, sys.version_info[:3])))


def test_the_mapping_names_the_installed_distributions():
  installed = importlib.metadata.packages_distributions()
  for module, distribution in _DISTRIBUTIONS.items():
    assert canonicalize_name(distribution) in {
        canonicalize_name(d) for d in installed.get(module, [])}, module


def test_the_library_declares_exactly_what_it_imports():
  dependencies, _ = _declared()
  assert set(dependencies) == _distributions(_LIBRARY)


def test_the_programs_imports_are_declared_in_their_extra():
  dependencies, extra = _declared()
  imported = set().union(*(_distributions(p) for p in _PROGRAMS))
  assert imported <= set(dependencies) | set(extra)
  assert set(extra) == imported - set(dependencies)  # Nothing stale.


def test_declared_ranges_admit_the_lock():
  project = _pyproject()['project']
  pins = _lock()
  extras = project['optional-dependencies'].values()
  for requirement in _requirements(
      project['dependencies'] + [r for e in extras for r in e]).values():
    name = canonicalize_name(requirement.name)
    assert name in pins, f'{name} is declared but not in requirements.lock'
    assert requirement.specifier.contains(pins[name], prereleases=True), (
        f'{requirement} excludes the lock\'s {name}=={pins[name]}')


def test_the_installed_metadata_is_pyprojects():
  """Else reinstall: pip install --no-deps --no-build-isolation -e ."""
  project = _pyproject()['project']
  dist = _installed()

  def key(requirement):
    return (canonicalize_name(requirement.name), requirement.specifier,
            str(requirement.marker or ''))

  expected = {key(Requirement(r)) for r in project['dependencies']}
  for extra, requirements in project['optional-dependencies'].items():
    expected |= {key(Requirement(f'{r}; extra == "{extra}"'))
                 for r in requirements}
  assert {key(Requirement(r)) for r in dist.requires or []} == expected
  assert dist.version == project['version']
  assert dist.metadata['License'] == project['license']['text']
  scripts = {e.name: e.value
             for e in dist.entry_points.select(group='console_scripts')}
  assert scripts == project['scripts']


def test_console_scripts_run_the_checkouts_binaries_from_anywhere():
  script = os.path.join(os.path.dirname(sys.executable), 'tff-kd-train')
  with tempfile.TemporaryDirectory() as elsewhere:
    done = subprocess.run([script, '--helpshort'], cwd=elsewhere,
                          capture_output=True, text=True, timeout=300)
  assert '--algorithm' in done.stdout + done.stderr, done.stderr[-2000:]


def test_only_the_library_is_installed():
  packages = setuptools.find_packages(
      _REPO, **_pyproject()['tool']['setuptools']['packages']['find'])
  subpackages = sorted(
      os.path.relpath(d, _REPO).replace(os.sep, '.')
      for d, _, names in os.walk(os.path.join(_REPO, _LIBRARY))
      if '__init__.py' in names)
  assert sorted(packages) == subpackages

  dist = _installed()
  top_level = (dist.read_text('top_level.txt') or _LIBRARY).split()
  assert top_level == [_LIBRARY]
  installed_files = {f.parts[0] for f in dist.files or []}
  assert not installed_files & set(_PROGRAMS)

  # What a fresh interpreter outside the checkout finds (-I: neither the
  # working directory nor PYTHONPATH on sys.path).
  probe = ('import importlib.util, json, sys; print(json.dumps({n: '
           'getattr(importlib.util.find_spec(n), "origin", None) '
           'for n in sys.argv[1:]}))')
  with tempfile.TemporaryDirectory() as outside:
    origins = json.loads(subprocess.run(
        [sys.executable, '-I', '-c', probe, _LIBRARY, *_PROGRAMS],
        cwd=outside, capture_output=True, text=True, check=True).stdout)
  assert origins[_LIBRARY], f'{_LIBRARY} is not installed'
  for program in _PROGRAMS:
    origin = origins[program]
    assert origin is None or not origin.startswith(_REPO + os.sep), (
        f'{program} is installed from the checkout: {origin}')


def test_license_is_apache_2():
  with open(os.path.join(_REPO, 'LICENSE')) as f:
    head = f.read(200).split()
  assert head[:5] == ['Apache', 'License', 'Version', '2.0,', 'January']
  project = _pyproject()['project']
  assert project['license'] == {'text': 'Apache-2.0'}
  assert ('License :: OSI Approved :: Apache Software License'
          in project['classifiers'])
