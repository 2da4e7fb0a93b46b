r"""Runs a sweep: one `beta_lasso.main` run per set of config overrides.

  python -m launch.sweep --sweep=launch/sweeps/table2.py \
      --config=configs/sfc_beta_lasso.py:cpu --workdir_root=/tmp/sweeps/table2

A sweep file defines `sweep(add)` and calls `add(**overrides)` once per run,
with config field names as keys (`add(beta=50.0)`; dotted names through a dict,
`add(**{'model_kwargs.kernel_size': 7})`). It may also set `CONFIG`, the config
it is written for, which `--config` then defaults to.

Each run trains in `WORKDIR_ROOT/NAME`, NAME built from its overrides (e.g.
`l1=5e-06,l1_conv=2e-05`), with

  python -m beta_lasso.main --config=CONFIG --workdir=WORKDIR_ROOT/NAME \
      --config.l1=5e-06 --config.l1_conv=2e-05 [EXTRA...]

where EXTRA are the arguments after `--` (e.g. `-- --jax_distributed` on a
multi-host TPU slice, `-- --config.dataset=cifar100` for every run). Runs whose
workdir has a results.json are skipped, so running the same sweep again
resumes it; an unfinished run resumes from its own checkpoints. A failed run is
reported and the sweep goes on; the exit status is 1 if any run did not finish.
At the end a table of test accuracy and non-zero weights is printed and written
to `WORKDIR_ROOT/summary.csv`.

Every override is checked against the config before anything runs, so a typo
fails in a second with one line naming the field and the valid ones.
"""
import collections
import copy
import csv
import dataclasses
import importlib.util
import io
import json
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

from absl import app
from absl import flags
from etils import epath
import ml_collections

_SWEEP = flags.DEFINE_string(
    'sweep', None, 'Sweep file: a Python file that defines sweep(add).')
_CONFIG = flags.DEFINE_string(
    'config', None, 'Config file[:arg] of every run, as for beta_lasso.main '
    '(default: the sweep file\'s CONFIG).')
_WORKDIR_ROOT = flags.DEFINE_string(
    'workdir_root', None,
    'Each run trains in WORKDIR_ROOT/NAME (local or gs://).')
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Print the command of every run and exit.')
_PARALLEL = flags.DEFINE_integer(
    'parallel', 1, 'Runs at once. Above 1 each run logs to WORKDIR/sweep.log '
    'instead of the terminal.')
_SUMMARY_ONLY = flags.DEFINE_bool(
    'summary_only', False, 'Run nothing: print the table of what has finished '
    'and write summary.csv.')
flags.mark_flags_as_required(['sweep', 'workdir_root'])

RESULTS_FILE = 'results.json'  # Written by beta_lasso.main at the end of a run.
SUMMARY_FILE = 'summary.csv'
LOG_FILE = 'sweep.log'

# Values a command line can carry and config_flags parses back to the same type.
_VALUE_TYPES = (bool, int, float, str)


class SweepError(ValueError):
  """A sweep that cannot run as written; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep."""
  name: str  # Directory name under the workdir root, built from `overrides`.
  overrides: dict  # Config field (dotted) -> value, as cast by the config.
  workdir: str


# ----------------------------------------------------------------------------
# Sweep files, overrides and commands.
# ----------------------------------------------------------------------------
def _load_module(path: str, name: str):
  if not pathlib.Path(path).is_file():
    raise SweepError(f'{path} is not a file')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_sweep(path: str):
  """Imports a sweep file; it must define `sweep(add)`."""
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
  sweep_fn(lambda **overrides: runs.append(dict(overrides)))
  return runs


def load_config(config_arg: str) -> ml_collections.ConfigDict:
  """Calls `get_config` of `file.py[:arg]`, as beta_lasso.main's --config."""
  path, *arg = config_arg.split(':', 1)
  module = _load_module(path, 'sweep_config')
  try:
    return module.get_config(*arg)
  except (TypeError, ValueError) as e:
    raise SweepError(f'--config={config_arg}: {e}') from e


def config_fields(config: ml_collections.ConfigDict,
                  prefix: str = '') -> list[str]:
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
      raise SweepError(f'unknown config field {key!r}; valid fields: '
                       f'{", ".join(config_fields(config))}')
    if isinstance(node[leaf], ml_collections.ConfigDict):
      raise SweepError(f'config field {key!r} is a group; set its fields one '
                       f'by one ({key}.NAME)')
    if not isinstance(value, _VALUE_TYPES):
      raise SweepError(f'{key}={value!r}: a sweep value must be one of '
                       f'{", ".join(t.__name__ for t in _VALUE_TYPES)}')
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


def command(config_arg: str, workdir: str, overrides: dict,
            extra_args: Sequence[str] = (),
            python: str = 'python') -> list[str]:
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
  return [python, '-m', 'beta_lasso.main', f'--config={config_arg}',
          f'--workdir={workdir}',
          *(f'--config.{k}={format_value(v)}' for k, v in overrides.items()),
          *extra_args]


def check_extra_args(config: ml_collections.ConfigDict,
                     extra_args: Sequence[str], swept: set[str]):
  """Rejects extra arguments that name unknown fields or fight the sweep."""
  for arg in extra_args:
    flag = arg.split('=', 1)[0]
    if flag in ('--config', '--workdir'):
      raise SweepError(f'{arg!r} after --: the sweep sets {flag} of each run '
                       '(use --config / --workdir_root of launch.sweep)')
    if flag.startswith('--config.'):
      key = flag[len('--config.'):]
      if key not in config_fields(config):
        raise SweepError(f'unknown config field {key!r} in {arg!r}; valid '
                         f'fields: {", ".join(config_fields(config))}')
      if key in swept:
        raise SweepError(f'{arg!r} after -- sets a field that the sweep varies')


def plan(overrides_list: Sequence[dict], config: ml_collections.ConfigDict,
         workdir_root: str) -> list[Run]:
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
      raise SweepError(f'run {i}: workdir name {name[:40]}... is longer than '
                       '255 characters; override fewer fields')
    if name in seen:
      raise SweepError(f'runs {seen[name]} and {i} have the same workdir name '
                       f'{name!r}; every run needs different overrides')
    seen[name] = i
    runs.append(Run(name=name, overrides=cast, workdir=f'{root}/{name}'))
  return runs


# ----------------------------------------------------------------------------
# Results and the summary.
# ----------------------------------------------------------------------------
def read_results(workdir: str) -> Optional[dict]:
  """The run's results.json, or None while it has not finished."""
  path = epath.Path(workdir) / RESULTS_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {'unreadable': True}


def summarize(runs: Sequence[Run],
              statuses: Optional[dict[str, str]] = None) -> list[dict]:
  """One row per run, from its results.json.

  Args:
    runs: the sweep's runs.
    statuses: run name -> what happened in this invocation ('failed (exit 1)',
      ...), shown for runs without results; the rest are 'missing'.

  Returns:
    Rows with the run's name, overrides, status, test_accuracy,
    nonzero_weights and weights (None where there are no results), epochs,
    wall_seconds and workdir.
  """
  statuses = statuses or {}
  rows = []
  for run in runs:
    results = read_results(run.workdir)
    row = {'name': run.name, **run.overrides, 'status': 'finished',
           'test_accuracy': None, 'nonzero_weights': None, 'weights': None,
           'epochs': None, 'wall_seconds': None, 'workdir': run.workdir}
    if results is None:
      row['status'] = statuses.get(run.name, 'missing')
    elif results.get('unreadable'):
      row['status'] = f'unreadable {RESULTS_FILE}'
    else:
      row['test_accuracy'] = results.get('test_accuracy')
      # Totals over layers; the per-layer counts stay in results.json.
      if 'nnz' in results:
        row['nonzero_weights'] = sum(results['nnz'].values())
      if 'weights' in results:
        row['weights'] = sum(results['weights'].values())
      row['epochs'] = results.get('epochs')
      row['wall_seconds'] = results.get('wall_seconds')
    rows.append(row)
  return rows


def format_table(rows: Sequence[dict]) -> str:
  """A fixed-width text table: run, status, test accuracy, non-zero weights."""
  header = ('run', 'status', 'test_acc', 'non-zero', 'weights')
  lines = [header]
  for row in rows:
    acc = row['test_accuracy']
    lines.append((
        row['name'], row['status'],
        '-' if acc is None else f'{acc:.4f}',
        *('-' if row[k] is None else f'{row[k]:,}'
          for k in ('nonzero_weights', 'weights'))))
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  return '\n'.join(
      '  '.join(cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
      for line in lines)


def write_summary(rows: Sequence[dict], workdir_root: str) -> str:
  """Writes the rows to WORKDIR_ROOT/summary.csv; returns its path."""
  fixed = ('status', 'test_accuracy', 'nonzero_weights', 'weights', 'epochs',
           'wall_seconds', 'workdir')
  columns = ['name']
  for row in rows:  # The union of the runs' overrides, in the order first seen.
    columns += [k for k in row if k not in columns and k not in fixed]
  columns += fixed
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=columns, lineterminator='\n')
  writer.writeheader()
  writer.writerows(rows)
  path = epath.Path(workdir_root) / SUMMARY_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text.getvalue())
  return str(path)


# ----------------------------------------------------------------------------
# Running.
# ----------------------------------------------------------------------------
def _clock(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}'


def _last_line(path: pathlib.Path) -> str:
  try:
    lines = path.read_text(errors='replace').strip().splitlines()
  except OSError:
    return ''
  return lines[-1] if lines else ''


class _Stopper:
  """Turns SIGINT/SIGTERM/SIGHUP into: start nothing more, and tell the runs.

  Runs are started in their own session, so Ctrl-C (or a dropped ssh
  connection) reaches only the sweep, which passes on one SIGTERM per signal:
  beta_lasso.main checkpoints and exits on the first, stops at once on the
  second. No run outlives the sweep to collide with the next one in its workdir.
  """

  def __init__(self):
    self.signals = 0
    self._sent = {}  # Popen -> SIGTERMs sent to it.
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame):
    # Only counted here: the loop passes the signal on, so that no run is
    # missed or signalled twice while it is being started or reaped.
    del signum, frame
    self.signals += 1

  def forward(self, processes):
    """Sends each running process the SIGTERMs it has not had yet."""
    for process in processes:
      while (self._sent.get(process, 0) < self.signals and
             process.poll() is None):
        process.send_signal(signal.SIGTERM)
        self._sent[process] = self._sent.get(process, 0) + 1


def execute(runs: Sequence[Run], config_arg: str, extra_args: Sequence[str],
            parallel: int = 1) -> dict[str, str]:
  """Runs every run without results.json, `parallel` at a time.

  Args:
    runs: the sweep's runs.
    config_arg: --config of every run.
    extra_args: appended to every command.
    parallel: runs at once. 1 shows each run's output on the terminal; above 1
      each run's output is appended to WORKDIR/sweep.log.

  Returns:
    Run name -> 'done', 'skipped' (finished before), 'failed (exit N)',
    'stopped' (exited cleanly without results, e.g. preempted) or 'not started'.
  """
  statuses = {}
  todo = collections.deque()
  n = len(runs)
  for i, run in enumerate(runs, 1):
    if read_results(run.workdir) is not None:
      statuses[run.name] = 'skipped'
      print(f'[{i}/{n}] {run.name}: finished before, skipped', flush=True)
    else:
      todo.append((i, run))
  start = time.time()
  running = {}  # Popen -> (index, run, start time, log path or None).
  stopping = False
  with _Stopper() as stopper:
    while todo or running:
      while todo and len(running) < parallel and not stopper.signals:
        i, run = todo.popleft()
        log = None
        if parallel > 1:
          log = pathlib.Path(run.workdir) / LOG_FILE
          log.parent.mkdir(parents=True, exist_ok=True)
        output = log.open('ab') if log else None
        try:
          process = subprocess.Popen(
              command(config_arg, run.workdir, run.overrides, extra_args,
                      python=sys.executable),
              stdout=output, stderr=subprocess.STDOUT if log else None,
              start_new_session=True)
        finally:
          if output:
            output.close()  # The child holds its own descriptor.
        running[process] = (i, run, time.time(), log)
        where = f' (log: {log})' if log else ''
        print(f'[{i}/{n}] {run.name}: started{where}', flush=True)
      stopper.forward(running)
      if stopper.signals and not stopping:
        stopping = True
        print(f'Stopping: {len(running)} running asked to checkpoint and '
              f'stop, {len(todo)} not started', flush=True)
        for _, run in todo:
          statuses[run.name] = 'not started'
        todo.clear()
      finished = [p for p in running if p.poll() is not None]
      if not finished:
        time.sleep(0.5)
        continue
      for process in finished:
        i, run, run_start, log = running.pop(process)
        if process.returncode != 0:
          status = f'failed (exit {process.returncode})'
        elif read_results(run.workdir) is None:
          status = 'stopped'
        else:
          status = 'done'
        statuses[run.name] = status
        detail = ''
        if log and status.startswith('failed'):
          detail = f': {_last_line(log)} (log: {log})'
        print(f'[{i}/{n}] {run.name}: {status} in '
              f'{_clock(time.time() - run_start)} (sweep '
              f'{_clock(time.time() - start)}){detail}', flush=True)
  return statuses


def main(argv):
  extra_args = argv[1:]  # Everything after `--`.
  try:
    module = load_sweep(_SWEEP.value)
    config_arg = _CONFIG.value or getattr(module, 'CONFIG', None)
    if not config_arg:
      raise SweepError(f'give --config: {_SWEEP.value} sets no CONFIG')
    config = load_config(config_arg)
    runs = plan(expand(module.sweep), config, _WORKDIR_ROOT.value)
    check_extra_args(config, extra_args,
                     {k for run in runs for k in run.overrides})
    if _PARALLEL.value < 1:
      raise SweepError(f'--parallel={_PARALLEL.value} must be at least 1')
    if _PARALLEL.value > 1 and '://' in _WORKDIR_ROOT.value:
      raise SweepError('--parallel above 1 writes logs beside each run, so '
                       '--workdir_root must be a local directory')
  except SweepError as e:
    sys.exit(f'error: {e}')

  if _DRY_RUN.value:
    for run in runs:
      print(shlex.join(command(config_arg, run.workdir, run.overrides,
                               extra_args)))
    return
  statuses = {}
  if not _SUMMARY_ONLY.value:
    print(f'Sweep {_SWEEP.value}: {len(runs)} runs of {config_arg} in '
          f'{_WORKDIR_ROOT.value}', flush=True)
    statuses = execute(runs, config_arg, extra_args, _PARALLEL.value)
  rows = summarize(runs, statuses)
  print()
  print(format_table(rows))
  print(f'\nSummary: {write_summary(rows, _WORKDIR_ROOT.value)}')
  unfinished = [row['name'] for row in rows if row['status'] != 'finished']
  failed = [row['name'] for row in rows if row['status'].startswith('failed')]
  if failed:
    print(f'{len(failed)} failed: {", ".join(failed)}')
  if unfinished and not _SUMMARY_ONLY.value:
    sys.exit(f'{len(unfinished)} of {len(rows)} runs have no results; the '
             'same command runs only those (unfinished ones resume)')


if __name__ == '__main__':
  app.run(main)
