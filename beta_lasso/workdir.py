"""What a workdir holds besides checkpoints: the run's config and its results.

A workdir belongs to one experiment. Its config is saved on the first start;
starting again with a different config is refused (naming the differing fields)
unless explicitly allowed, so two experiments never mix in one folder.
"""
import json


from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

CONFIG_FILE = 'config.json'
PERMUTATION_FILE = 'pixel_permutation.npy'
RESULTS_FILE = 'results.json'


class ConfigMismatchError(ValueError):
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


def check_config(workdir, config: ml_collections.ConfigDict, *,
                 allow_change: bool = False):
  """Saves `config` in a new workdir; checks it against the one saved before.

  Raises:
    ConfigMismatchError: the saved config differs and `allow_change` is False.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  current = flatten(config)
  if path.exists():
    saved = json.loads(path.read_text())
    differing = sorted(k for k in set(saved) | set(current)
                       if saved.get(k, '<missing>') != current.get(k, '<missing>'))
    if differing and not allow_change:
      fields = ', '.join(f'{k} ({saved.get(k, "<missing>")!r} -> '
                         f'{current.get(k, "<missing>")!r})' for k in differing)
      raise ConfigMismatchError(
          f'workdir {workdir} holds a run with another config: {fields}; use '
          'a new --workdir, or pass --allow_config_change to continue it anyway')
    if differing:
      logging.warning('Config changed in %s: %s', workdir, ', '.join(differing))
  path.parent.mkdir(parents=True, exist_ok=True)
  _write_json(path, current)


def write_results(workdir, results: dict):
  _write_json(epath.Path(workdir) / RESULTS_FILE, results)


def pixel_permutation(workdir, permutation: np.ndarray) -> np.ndarray:
  """The workdir's saved pixel permutation; `permutation` saved if none is.

  A resumed run keeps the permutation it started with, whatever the code that
  draws a new one does later.
  """
  path = epath.Path(workdir) / PERMUTATION_FILE
  if path.exists():
    with path.open('rb') as f:
      return np.load(f)
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    with tmp.open('wb') as f:
      np.save(f, permutation)
    tmp.replace(path)
  return permutation
