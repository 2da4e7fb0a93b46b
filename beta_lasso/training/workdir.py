"""What a workdir holds besides checkpoints: the run's config and its results.

A workdir belongs to one experiment. Its config is saved once the run has
started (and inside every checkpoint); starting again with a different config
is refused (naming the differing fields) unless explicitly allowed, so two
experiments never mix in one folder. One run at a time: `lock` holds the
workdir for the life of the process.
"""

import contextlib
import fcntl
import json
import os
import socket

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from beta_lasso import errors

CHECKPOINTS_DIR = 'checkpoints'
CONFIG_FILE = 'config.json'
PERMUTATION_FILE = 'pixel_permutation.npy'
RESULTS_FILE = 'results.json'
DATASET_FILE = 'dataset.json'
LOCK_FILE = 'lock'
# What json.loads returns -> the name JSON gives it.
_JSON_TYPES = {
    list: 'array',
    str: 'string',
    int: 'number',
    float: 'number',
    bool: 'boolean',
    type(None): 'null',
}


class WorkdirError(errors.UserError, ValueError):
  """The workdir cannot hold this run: a file, unreadable, or in use."""


class ConfigMismatchError(WorkdirError):
  """The workdir holds a run of another config."""


def flatten(config: ml_collections.ConfigDict) -> dict:
  """{'a.b': value} over every leaf of `config`, as JSON would store it."""
  flat = {}

  def visit(prefix, node):
    if isinstance(node, dict) and node:
      for key, value in node.items():
        visit(f'{prefix}{key}.', value)
    else:
      flat[prefix[:-1]] = node

  visit('', json.loads(config.to_json_best_effort()))
  return flat


def _write_json(path: epath.Path, obj):
  """Writes from the first process only, atomically where the file system can."""
  if jax.process_index() != 0:
    return
  tmp = path.with_name(path.name + '.tmp')
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
  tmp.replace(path)


def _workdir_path(workdir) -> epath.Path:
  """The workdir as a path, refusing one that is a file."""
  path = epath.Path(workdir)
  if path.exists() and not path.is_dir():
    raise WorkdirError(
        f'--workdir={workdir} is a file, not a folder; give a '
        'folder (it is created if missing)'
    )
  return path


def read_config(workdir) -> dict | None:
  """The config saved in `workdir` (flattened), or None when there is none.

  Raises:
    WorkdirError: the workdir is a file, or its config.json does not parse.
  """
  path = _workdir_path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    config = json.loads(path.read_text())
  except ValueError as e:  # Truncated or edited by hand.
    raise WorkdirError(
        f'{path} is unreadable ({type(e).__name__}: {e}); delete it to take '
        'the config saved in the newest checkpoint, or use a new --workdir'
    ) from None
  if not isinstance(config, dict):  # Valid JSON, but not what we wrote.
    raise WorkdirError(
        f'{path} holds a JSON {_JSON_TYPES[type(config)]}, not an object of '
        'config fields; delete it to take the config saved in the newest '
        'checkpoint, or use a new --workdir'
    )
  return config


# How a run executes, not what it computes: a run may go on with these changed
# (the device loop follows the host path's trajectory; a mesh or a locally
# connected implementation computes the same function), and a workdir saved
# before they existed still resumes.
EXECUTION_FIELDS = (
    'device_loop',
    'steps_per_dispatch',
    'local_impl',
    'mesh_model',
    'fsdp',
    'shard_min_weights',
    'compact_dir',
)
# Fields added since the first release, with the value that does what runs
# did before them: a saved config without one is read as holding this value.
ADDED_FIELDS = {'val_split': None, 'flip': None, 'cutout': None}


def check_config(
    workdir,
    config: ml_collections.ConfigDict,
    *,
    allow_change: bool = False,
    saved: dict | None = None,
):
  """Checks `config` against the one the workdir's run was started with.

  Reads only. The run's config is `workdir/config.json`; where that file is
  missing, `saved`, the config kept in the newest checkpoint.

  Args:
    workdir: the run's folder (need not exist).
    config: the config of this start.
    allow_change: continue with a differing config (logged) instead of failing.
    saved: the flattened config of the newest checkpoint, if any.

  Raises:
    WorkdirError: the workdir is a file, or its config.json does not parse.
    ConfigMismatchError: the run's config differs and `allow_change` is False.
  """
  current = flatten(config)
  previous = read_config(workdir)
  if previous is None:
    previous = saved
  if previous is None:
    return
  previous = {**ADDED_FIELDS, **previous}
  differing = sorted(
      k
      for k in set(previous) | set(current)
      if previous.get(k, '<missing>') != current.get(k, '<missing>')
      and k not in EXECUTION_FIELDS
  )
  if differing and not allow_change:
    fields = ', '.join(
        f'{k} ({previous.get(k, "<missing>")!r} -> '
        f'{current.get(k, "<missing>")!r})'
        for k in differing
    )
    raise ConfigMismatchError(
        f'workdir {workdir} holds a run with another config: {fields}; use '
        'a new --workdir, or pass --allow_config_change to continue it anyway'
    )
  if differing:
    logging.warning('Config changed in %s: %s', workdir, ', '.join(differing))


def save_config(workdir, config: ml_collections.ConfigDict):
  """Records `config` as the workdir's; called once the run has started."""
  path = epath.Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  _write_json(path, flatten(config))


def write_results(workdir, results: dict):
  _write_json(epath.Path(workdir) / RESULTS_FILE, results)


def write_dataset(workdir, dataset: dict):
  """Records the dataset's settings and statistics that the run uses."""
  _write_json(epath.Path(workdir) / DATASET_FILE, dataset)


def read_dataset(workdir) -> dict | None:
  """The workdir's dataset.json, or None when there is none or it is damaged."""
  path = _workdir_path(workdir) / DATASET_FILE
  try:
    return json.loads(path.read_text()) if path.exists() else None
  except ValueError:  # Measured again, then written anew.
    return None


def pixel_permutation(workdir, permutation: np.ndarray) -> np.ndarray:
  """The workdir's saved pixel permutation, else `permutation`.

  A resumed run keeps the permutation it started with, whatever the code that
  draws a new one does later.
  """
  path = epath.Path(workdir) / PERMUTATION_FILE
  if path.exists():
    with path.open('rb') as f:
      return np.load(f)
  return permutation


def save_pixel_permutation(workdir, permutation: np.ndarray):
  """Saves a run's pixel permutation, once: a saved one is never replaced."""
  path = epath.Path(workdir) / PERMUTATION_FILE
  if not path.exists() and jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    with tmp.open('wb') as f:
      np.save(f, permutation)
    tmp.replace(path)


@contextlib.contextmanager
def lock(workdir):
  """Holds `workdir` for this run; a second run there is refused.

  An flock on `workdir/lock`, which names the holder (pid and host). The
  operating system drops it when the process ends, however it ends, so a
  killed run never leaves a stale lock behind. On several hosts only process
  0 takes it: the others follow process 0. A gs:// workdir is not locked (a
  bucket has no such lock); one run per workdir is then the user's to keep.

  Raises:
    WorkdirError: the workdir is a file, or another run holds it.
  """
  path = _workdir_path(workdir)
  if jax.process_index() != 0 or '://' in str(workdir):
    yield
    return
  path.mkdir(parents=True, exist_ok=True)
  fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 256, 0).decode(errors='replace').split()
      pid, host = (holder + ['?', '?'])[:2]
      raise WorkdirError(
          f'workdir {workdir} is in use by another run (pid {pid} on {host}); '
          'wait for it to finish or stop it, or use a new --workdir'
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()} {socket.gethostname()}\n'.encode(), 0)
    yield
  finally:
    os.close(fd)  # Releases the lock.
