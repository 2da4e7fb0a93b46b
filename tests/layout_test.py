"""The package's import rules, read from the source (no module is imported).

The layout keeps each concern in its subpackage (`data/`, `training/`,
`metrics/`, `sparse/`, `report/`, `models/`); these tests hold the rules that
keep it readable: no cycles, nothing depends on the report package or on a
command line, data code knows nothing of training, absl flags live in entry
points, and the project's own modules are imported at the top of a file.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ('beta_lasso', 'launch', 'benchmarks')

# Modules that are only a command line: importing one would define its flags.
# They may import the report package; nothing imports them.
COMMAND_LINES = (
    'beta_lasso.main',
    'beta_lasso.params',
    'beta_lasso.report.__main__',
    'launch.paper',
)


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts.pop()
  return '.'.join(parts)


SOURCES = {
    _module_name(p): p
    for package in PACKAGES
    for p in sorted((ROOT / package).rglob('*.py'))
}


def _resolve(name: str) -> str | None:
  """The project module that `import name` loads last, or None if external."""
  while name and name not in SOURCES:
    name = name.rpartition('.')[0]
  return name or None


class _Imports(ast.NodeVisitor):
  """Project imports of one module, split into top-level and function-level."""

  def __init__(self, module: str, is_package: bool):
    self.package = module if is_package else module.rpartition('.')[0]
    self.top: set[str] = set()
    self.nested: set[str] = set()
    self._depth = 0

  def _add(self, names):
    for name in names:
      target = _resolve(name)
      if target:
        (self.nested if self._depth else self.top).add(target)

  def visit_FunctionDef(self, node):  # pylint: disable=invalid-name
    self._depth += 1
    self.generic_visit(node)
    self._depth -= 1

  visit_AsyncFunctionDef = visit_FunctionDef  # pylint: disable=invalid-name

  def visit_Import(self, node):  # pylint: disable=invalid-name
    self._add(alias.name for alias in node.names)

  def visit_ImportFrom(self, node):  # pylint: disable=invalid-name
    base = node.module or ''
    if node.level:
      base = '.'.join(
          self.package.split('.')[
              : len(self.package.split('.')) - node.level + 1
          ]
          + ([base] if base else [])
      )
    # `from a import b` loads a, and a.b when b is a module.
    self._add([base] + [f'{base}.{alias.name}' for alias in node.names])


def _imports(module: str) -> _Imports:
  path = SOURCES[module]
  visitor = _Imports(module, path.name == '__init__.py')
  visitor.visit(ast.parse(path.read_text()))
  # Importing a.b.c runs a/__init__ and a/b/__init__ first: not an edge
  # worth a rule, and a package re-exporting its modules is not a cycle.
  for imported in (visitor.top, visitor.nested):
    imported.discard(module)
  return visitor


IMPORTS = {module: _imports(module) for module in SOURCES}


def _edges(module: str) -> set[str]:
  imports = IMPORTS[module]
  return {
      m for m in imports.top | imports.nested if not module.startswith(m + '.')
  }


def test_the_rules_see_the_package():
  # A reader that found nothing would pass every rule.
  assert {
      'beta_lasso.train',
      'beta_lasso.data.input_pipeline',
      'beta_lasso.training.checkpointing',
      'beta_lasso.report.plots',
      'beta_lasso.sparse.export',
  } <= set(SOURCES)
  assert 'beta_lasso.optim' in IMPORTS['beta_lasso.train'].top
  assert 'beta_lasso.data.input_pipeline' in IMPORTS['beta_lasso.train'].top


def test_no_import_cycles():
  state: dict[str, str] = {}
  cycles = []

  def visit(module, stack):
    state[module] = 'open'
    for target in sorted(_edges(module)):
      if state.get(target) == 'open':
        cycles.append(' -> '.join(stack[stack.index(target) :] + [target]))
      elif target not in state:
        visit(target, stack + [target])
    state[module] = 'done'

  for module in sorted(SOURCES):
    if module not in state:
      visit(module, [module])
  assert not cycles


def test_only_command_lines_import_the_report_package():
  offenders = {
      m: sorted(t for t in _edges(m) if t.startswith('beta_lasso.report'))
      for m in SOURCES
      if not m.startswith('beta_lasso.report') and m not in COMMAND_LINES
  }
  assert not {m: t for m, t in offenders.items() if t}


def test_nothing_imports_a_command_line():
  offenders = {m: sorted(set(COMMAND_LINES) & _edges(m)) for m in SOURCES}
  assert not {m: t for m, t in offenders.items() if t}


def test_data_code_imports_nothing_of_training():
  training = (
      'beta_lasso.training',
      'beta_lasso.train',
      'beta_lasso.main',
      'beta_lasso.optim',
      'beta_lasso.report',
      'beta_lasso.sparse',
  )
  offenders = {
      m: sorted(t for t in _edges(m) if t.startswith(training))
      for m in SOURCES
      if m.startswith('beta_lasso.data')
  }
  assert not {m: t for m, t in offenders.items() if t}


def _defines_flags_at_top(tree: ast.Module) -> bool:
  for node in tree.body:
    if isinstance(node, ast.FunctionDef | ast.ClassDef):
      continue
    for call in ast.walk(node):
      if (
          isinstance(call, ast.Call)
          and isinstance(call.func, ast.Attribute)
          and call.func.attr.startswith('DEFINE')
      ):
        return True
  return False


@pytest.mark.parametrize('package', ['beta_lasso'])
def test_flags_are_defined_only_in_entry_points(package):
  # A module that defines flags when imported cannot be imported twice, or by
  # a program with flags of its own; library modules with a command line
  # define theirs in a function called under `if __name__ == '__main__'`.
  offenders = [
      m
      for m in SOURCES
      if m.startswith(package)
      and m not in COMMAND_LINES
      and _defines_flags_at_top(ast.parse(SOURCES[m].read_text()))
  ]
  assert not offenders


# Project modules that need an optional package, imported where it is there.
OPTIONAL = {'benchmarks.train_step': {'benchmarks.torch_models'}}  # torch.


def test_own_modules_are_imported_at_the_top():
  # TensorFlow and TFDS are imported inside functions to keep them lazy; the
  # project's own modules need no such care, and a nested import hides a
  # dependency (or a cycle) from the reader.
  nested = {m: IMPORTS[m].nested - OPTIONAL.get(m, set()) for m in SOURCES}
  offenders = {m: sorted(n) for m, n in nested.items() if n}
  assert not offenders


def test_public_names_survive_the_layout():
  # The README shows these; they keep working where their modules moved.
  # pylint: disable=g-import-not-at-top
  from beta_lasso import optim
  from beta_lasso import sparse
  from beta_lasso.metrics import locality
  from beta_lasso.report import locality as report_locality
  from beta_lasso.sparse import inference
  # pylint: enable=g-import-not-at-top
  assert callable(optim.beta_lasso)
  assert sparse.load is inference.load
  assert report_locality.unit_locality is locality.unit_locality
