"""A sweep's runs, checked against the config, and the command of each.

A sweep file defines `sweep(add)` and calls `add(**overrides)` once per run
(see sweep.py). `load_sweep` and `expand` turn it into one dict of overrides
per run; `plan` checks every override against the config (an unknown field or
a value of the wrong type fails before anything runs) and gives each run its
name and workdir; `command` is the beta_lasso.main command line of a run.
"""

import copy
import dataclasses
import importlib.util
import os
import pathlib
import re
import traceback
from typing import Any
from typing import Callable
from typing import Sequence

import ml_collections

from beta_lasso import errors

# Values a command line can carry and config_flags parses back to the same type.
_VALUE_TYPES = (bool, int, float, str)


class SweepError(errors.UserError, ValueError):
  """A sweep that cannot run as written; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep."""

  name: str  # Directory name under the workdir root, built from `overrides`.
  overrides: dict  # Config field (dotted) -> value, as cast by the config.
  workdir: str


def _error_in(path: str, error: Exception) -> SweepError:
  """`error`, raised by the code of file `path`, as one line naming its line.

  The line is the last one of `path` that the traceback passes through: the
  user's line, not the library's below it.
  """
  if isinstance(error, SyntaxError) and error.filename:
    where = f'{error.filename}:{error.lineno}'
    message = f'{type(error).__name__}: {error.msg}'
  else:
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if os.path.realpath(frame.filename) == os.path.realpath(path)
    ]
    where = f'{path}:{lines[-1]}' if lines else path
    message = errors.one_line(error, with_type=True)
  return SweepError(f'{where}: {message}')


def _load_module(path: str, name: str):
  if not pathlib.Path(path).is_file():
    raise SweepError(f'{path} is not a file')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    # The user's file: whatever it raises, the user fixes it there.
    raise _error_in(path, e) from None
  return module


def load_sweep(path: str):
  """Imports a sweep file; it must define `sweep(add)`.

  Raises:
    SweepError: no such file, or one that does not import (naming its line)
      or defines no sweep(add).
  """
  module = _load_module(path, 'sweep_file')
  if not callable(getattr(module, 'sweep', None)):
    raise SweepError(f'{path} does not define sweep(add)')
  return module


def expand(sweep_fn: Callable[[Callable[..., None]], None]) -> list[dict]:
  """The runs of a sweep, in order.

  Args:
    sweep_fn: a function that calls its argument, `add(**overrides)`, once per
      run.

  Returns:
    One dict of overrides (config field -> value) per call of `add`.
  """
  runs = []

  def add(**overrides):  # Named: a wrong call's message says add().
    runs.append(dict(overrides))

  sweep_fn(add)
  return runs


def load_config(config_arg: str) -> ml_collections.ConfigDict:
  """Calls `get_config` of `file.py[:arg]`, as beta_lasso.main's --config."""
  path, *arg = config_arg.split(':', 1)
  module = _load_module(path, 'sweep_config')
  if not callable(getattr(module, 'get_config', None)):
    raise SweepError(f'--config={config_arg}: {path} defines no get_config')
  try:
    return module.get_config(*arg)
  except (TypeError, ValueError) as e:
    raise SweepError(f'--config={config_arg}: {e}') from e
  except Exception as e:  # pylint: disable=broad-except
    raise _error_in(path, e) from None


def config_fields(
    config: ml_collections.ConfigDict, prefix: str = ''
) -> list[str]:
  """Every field of `config` that a command line can set, dotted."""
  fields = []
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      fields += config_fields(value, f'{prefix}{key}.')
    else:
      fields.append(f'{prefix}{key}')
  return sorted(fields)


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> dict:
  """Checks `overrides` against `config` and casts them to its field types.

  Args:
    config: the config every run of the sweep starts from; left unchanged.
    overrides: config field (dotted) -> value.

  Returns:
    `overrides` with each value as the config stores it (e.g. 0 -> 0.0 for a
    float field), so that names and commands show what the run uses.

  Raises:
    SweepError: an unknown field, a group of fields, or a value of the wrong
      type.
  """
  config = copy.deepcopy(config)
  cast = {}
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      if isinstance(node, ml_collections.ConfigDict):
        node = node.get(part)
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise SweepError(
          f'unknown config field {key!r}; valid fields: '
          f'{", ".join(config_fields(config))}'
      )
    if isinstance(node[leaf], ml_collections.ConfigDict):
      raise SweepError(
          f'config field {key!r} is a group; set its fields one '
          f'by one ({key}.NAME)'
      )
    if not isinstance(value, _VALUE_TYPES):
      raise SweepError(
          f'{key}={value!r}: a sweep value must be one of '
          f'{", ".join(t.__name__ for t in _VALUE_TYPES)}'
      )
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise SweepError(f'{key}={value!r}: {" ".join(str(e).split())}') from e
    cast[key] = node[leaf]
  return cast


def format_value(value: Any) -> str:
  """A value as `--config.field=` parses it back (repr keeps floats exact)."""
  return repr(value) if isinstance(value, float) else str(value)


def run_name(overrides: dict) -> str:
  """`key=value,...` in the order given, with only file-name-safe characters."""
  if not overrides:
    return 'default'
  name = ','.join(f'{k}={format_value(v)}' for k, v in overrides.items())
  return re.sub(r'[^A-Za-z0-9._,=+-]', '_', name)


def command(
    config_arg: str,
    workdir: str,
    overrides: dict,
    extra_args: Sequence[str] = (),
    python: str = 'python',
) -> list[str]:
  """The beta_lasso.main command line of one run.

  Args:
    config_arg: `file.py[:arg]`, passed as --config.
    workdir: the run's workdir.
    overrides: config field (dotted) -> value, each passed as --config.field.
    extra_args: appended as they are (e.g. --jax_distributed).
    python: the interpreter.

  Returns:
    The argv list.
  """
  return [
      python,
      '-m',
      'beta_lasso.main',
      f'--config={config_arg}',
      f'--workdir={workdir}',
      *(f'--config.{k}={format_value(v)}' for k, v in overrides.items()),
      *extra_args,
  ]


def check_extra_args(
    config: ml_collections.ConfigDict,
    extra_args: Sequence[str],
    swept: set[str],
):
  """Rejects extra arguments that name unknown fields or fight the sweep."""
  for arg in extra_args:
    flag = arg.split('=', 1)[0]
    if flag in ('--config', '--workdir'):
      raise SweepError(
          f'{arg!r} after --: the sweep sets {flag} of each run '
          '(use --config / --workdir_root of launch.sweep)'
      )
    if flag.startswith('--config.'):
      key = flag[len('--config.') :]
      if key not in config_fields(config):
        raise SweepError(
            f'unknown config field {key!r} in {arg!r}; valid '
            f'fields: {", ".join(config_fields(config))}'
        )
      if key in swept:
        raise SweepError(f'{arg!r} after -- sets a field that the sweep varies')


def plan(
    overrides_list: Sequence[dict],
    config: ml_collections.ConfigDict,
    workdir_root: str,
) -> list[Run]:
  """Checks every run against `config` and gives each its workdir.

  Raises:
    SweepError: no runs, a bad override, or two runs with the same name.
  """
  if not overrides_list:
    raise SweepError('the sweep adds no runs')
  runs, seen = [], {}
  root = workdir_root.rstrip('/')
  for i, overrides in enumerate(overrides_list, 1):
    try:
      cast = apply_overrides(config, overrides)
    except SweepError as e:
      raise SweepError(f'run {i} ({run_name(overrides)}): {e}') from e
    name = run_name(cast)
    if len(name) > 255:  # The longest file name most file systems allow.
      raise SweepError(
          f'run {i}: workdir name {name[:40]}... is longer than '
          '255 characters; override fewer fields'
      )
    if name in seen:
      raise SweepError(
          f'runs {seen[name]} and {i} have the same workdir name '
          f'{name!r}; every run needs different overrides'
      )
    seen[name] = i
    runs.append(Run(name=name, overrides=cast, workdir=f'{root}/{name}'))
  return runs


def load_runs(
    sweep_path: str,
    config_arg: str | None,
    workdir_root: str,
    extra_args: Sequence[str],
) -> tuple[str, list[Run]]:
  """(config argument, runs) of a sweep file, every run and extra arg checked.

  Args:
    sweep_path: the sweep file.
    config_arg: `file.py[:arg]`; None: the sweep file's CONFIG.
    workdir_root: where the runs' workdirs go.
    extra_args: the arguments every run gets (after `--`).

  Raises:
    SweepError: no config, a bad override or extra argument.
  """
  module = load_sweep(sweep_path)
  config_arg = config_arg or getattr(module, 'CONFIG', None)
  if not config_arg:
    raise SweepError(f'give --config: {sweep_path} sets no CONFIG')
  config = load_config(config_arg)
  try:
    overrides = expand(module.sweep)
  except Exception as e:  # pylint: disable=broad-except
    raise _error_in(sweep_path, e) from None
  runs = plan(overrides, config, workdir_root)
  check_extra_args(
      config, extra_args, {k for run in runs for k in run.overrides}
  )
  return config_arg, runs
