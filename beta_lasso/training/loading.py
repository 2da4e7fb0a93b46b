"""Runs read back from their workdirs, finished or not, for figures.

`load_run` gives a run's results as a `results.Results` record (and
`load_results` as the JSON object it reads): its `results.json`, or, for a run
still going, the eval history saved with its newest checkpoint. `load_params`
gives the model parameters of a checkpoint, read as host numpy arrays whatever
devices wrote it, and only the layers asked for. Where no checkpoint is named,
the newest one that reads is taken: each damaged one skipped is named in one
warning line, and none readable is a `CheckpointError` in one line.
"""

from collections.abc import Sequence
import contextlib
import json
import logging as pylogging
import os
from typing import Any

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from beta_lasso import errors
from beta_lasso import optim
from beta_lasso.data import input_pipeline
from beta_lasso.training import checkpointing
from beta_lasso.training import results as results_lib
from beta_lasso.training import workdir as workdir_lib


class _QuietOrbax(pylogging.Filter):
  """Drops orbax's INFO lines (a dozen per restore) and one harmless warning.

  The warning: PyTreeCheckpointer looks for step metadata inside the 'state'
  item, but CheckpointManager keeps it one folder up.
  """

  def filter(self, record):
    if not checkpointing.logged_by_orbax(record):
      return True
    return (
        record.levelno >= pylogging.WARNING
        and 'Metadata file does not exist' not in record.getMessage()
    )


@contextlib.contextmanager
def _quiet_orbax():
  """Within the block, `_QuietOrbax` filters what orbax logs."""
  # Orbax logs through absl.logging, whose records reach this logger.
  logger = pylogging.getLogger('absl')
  quiet = _QuietOrbax()
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


def _resolved(path) -> epath.Path:
  """`path` made absolute, symbolic links resolved (local paths only).

  orbax's PyTreeCheckpointer.metadata finds no tree metadata under a relative
  path or one through a symbolic link (orbax-checkpoint 0.12).
  """
  path = epath.Path(path)
  return path if '://' in str(path) else epath.Path(os.path.realpath(path))


def checkpoint_steps(workdir) -> list[int]:
  """Steps of the finished checkpoints in `workdir`, oldest first."""
  directory = epath.Path(workdir) / workdir_lib.CHECKPOINTS_DIR
  if not directory.exists():
    return []
  # A save in progress is '<step>.orbax-checkpoint-tmp...', not all digits.
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def read_tree(path: epath.Path, select) -> Any:
  """Restores the part `select(metadata)` of an orbax PyTree as numpy.

  Raises:
    checkpointing.CheckpointError: the checkpoint does not read (damaged,
      truncated); what orbax and TensorStore say is kept to one line.
    KeyError: from `select`.
  """
  with _quiet_orbax(), checkpointing.quiet_failures():
    try:
      with ocp.PyTreeCheckpointer() as checkpointer:
        item = select(checkpointer.metadata(_resolved(path)).item_metadata.tree)
        # np.ndarray leaves: a checkpoint written on 8 TPUs opens on a laptop.
        restore_args = jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item
        )
        return checkpointer.restore(
            _resolved(path),
            args=ocp.args.PyTreeRestore(
                item=item, restore_args=restore_args, partial_restore=True
            ),
        )
    except KeyError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise checkpointing.CheckpointError(
          f'checkpoint {path.parent} does not read '
          f'({checkpointing.failure_reason(e)})'
      ) from None


def _state_paths(workdir, step: int | None) -> list[epath.Path]:
  """State folders to try, in order: checkpoint `step`, else newest first."""
  steps = checkpoint_steps(workdir)
  if step is None and not steps:
    raise FileNotFoundError(
        f'no checkpoint in {workdir}/{workdir_lib.CHECKPOINTS_DIR}'
    )
  if step is not None and step not in steps:
    raise FileNotFoundError(
        f'no checkpoint of step {step} in {workdir} ' f'(there are {steps})'
    )
  return [
      epath.Path(workdir) / workdir_lib.CHECKPOINTS_DIR / str(s) / 'state'
      for s in ([step] if step is not None else reversed(steps))
  ]


def _read_newest(workdir, step: int | None, select) -> tuple[Any, int]:
  """(`read_tree` of the first state of `_state_paths` that reads, its step).

  Raises:
    FileNotFoundError: no checkpoint, or none of step `step`.
    checkpointing.CheckpointError: none of them reads.
  """
  failed = []
  for path in _state_paths(workdir, step):
    try:
      return read_tree(path, select), int(path.parent.name)
    except checkpointing.CheckpointError as e:
      if step is not None:  # The one asked for: no other stands in.
        raise
      failed.append(int(path.parent.name))
      logging.warning('%s: skipped, trying the one before', e)
  raise checkpointing.CheckpointError(
      f'no checkpoint in {epath.Path(workdir) / workdir_lib.CHECKPOINTS_DIR} reads (steps '
      f'{", ".join(map(str, failed))} are damaged)'
  )


def load_variables(workdir, *, step: int | None = None) -> dict[str, Any]:
  """What inference needs of a checkpoint: params and BatchNorm statistics.

  Args:
    workdir: a training workdir.
    step: which checkpoint; None means the newest.

  Returns:
    {'params': ..., 'batch_stats': ..., 'step': int}, the trees as host numpy
    arrays ('batch_stats' is {} for a model without BatchNorm); the optimizer
    state is not read.

  Raises:
    FileNotFoundError: no such checkpoint.
    checkpointing.CheckpointError: it does not read (with `step` None: no
      checkpoint reads).
  """
  variables, read_step = _read_newest(
      workdir,
      step,
      lambda tree: {
          k: tree[k] for k in ('params', 'batch_stats') if tree.get(k)
      },
  )
  variables.setdefault('batch_stats', {})
  variables['step'] = read_step
  return variables


def load_params(
    workdir, *, step: int | None = None, layers: Sequence[str] | None = None
) -> dict[str, Any]:
  """Model parameters of a checkpoint in `workdir`, as host numpy arrays.

  Args:
    workdir: a training workdir (holds `checkpoints/<step>/state`).
    step: which checkpoint; None means the newest.
    layers: top-level parameter names to read (e.g. ['layer1']); None reads
      all. At the paper's size S-FC's layer1 alone is 470 MB.

  Returns:
    The params tree, e.g. {'layer1': {'kernel': array}, ...}; optimizer state
    and BatchNorm statistics are not read.

  Raises:
    FileNotFoundError: no such checkpoint.
    checkpointing.CheckpointError: it does not read (with `step` None: no
      checkpoint reads).
    KeyError: a name in `layers` that the model lacks.
  """
  path = epath.Path(workdir) / workdir_lib.CHECKPOINTS_DIR  # For the message.

  def select(tree):
    params = tree['params']
    if layers is not None:
      missing = sorted(set(layers) - set(params))
      if missing:
        raise KeyError(
            f'{missing} not in the params of {path} '
            f'(they hold {sorted(params)})'
        )
      params = {name: params[name] for name in layers}
    return {'params': params}

  return _read_newest(workdir, step, select)[0]['params']


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  """Inverse of workdir.flatten: {'a.b': 1} -> {'a': {'b': 1}}."""
  tree = {}
  for key, value in flat.items():
    *parents, leaf = key.split('.')
    node = tree
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return tree


def load_results(workdir) -> dict[str, Any]:
  """The results of a run, finished or not.

  Args:
    workdir: a training workdir.

  Returns:
    The contents of `results.json` (see train.train_and_evaluate). For a run
    that has not finished: 'config', 'history' (from the newest checkpoint)
    and 'weights' (from the checkpoint's shapes), without 'steps' and
    'epochs'. Either way 'workdir' is added.

  Raises:
    FileNotFoundError: neither results.json nor a checkpoint.
    workdir_lib.WorkdirError: a results.json or config.json that does not
      parse.
    checkpointing.CheckpointError: no results.json, and the newest
      checkpoint's history does not read.
  """
  directory = epath.Path(workdir)
  path = directory / workdir_lib.RESULTS_FILE
  if path.exists():
    try:
      results = json.loads(path.read_text())
    except ValueError as e:
      results = e
    if not isinstance(results, dict):
      raise workdir_lib.WorkdirError(
          f'{path} is not the JSON object a finished run writes'
          + (
              f' ({errors.one_line(results, with_type=True)})'
              if isinstance(results, Exception)
              else ''
          )
          + '; delete it to read the run from its newest checkpoint'
      )
  else:
    steps = checkpoint_steps(directory)
    if not steps:
      raise FileNotFoundError(
          f'{workdir} holds neither '
          f'{workdir_lib.RESULTS_FILE} nor a checkpoint'
      )
    step_dir = directory / workdir_lib.CHECKPOINTS_DIR / str(steps[-1])
    with _quiet_orbax(), checkpointing.quiet_failures():
      try:
        with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
          history = checkpointer.restore(step_dir / 'history')['evals']
        with ocp.PyTreeCheckpointer() as checkpointer:
          shapes = checkpointer.metadata(
              _resolved(step_dir / 'state')
          ).item_metadata.tree
      except Exception as e:  # pylint: disable=broad-except
        raise checkpointing.CheckpointError(
            f'{workdir} has no {workdir_lib.RESULTS_FILE}, and checkpoint '
            f'{step_dir} does not read ({checkpointing.failure_reason(e)})'
        ) from None
    config = workdir_lib.read_config(directory)
    results = {
        'config': _unflatten(config) if config else {},
        'history': history,
        'weights': optim.count_weights(shapes['params']),
    }
    logging.info(
        '%s has no %s yet: using the history of its checkpoint at ' 'step %d',
        workdir,
        workdir_lib.RESULTS_FILE,
        steps[-1],
    )
  results['workdir'] = str(workdir)
  if 'dataset' not in results:
    dataset = workdir_lib.read_dataset(directory)
    if dataset is not None:
      results['dataset'] = dataset
  return results


def load_run(workdir) -> results_lib.Results:
  """`load_results` as a record: unfinished, only its config, history and
  weights are set (`Results.finished` is False).

  Raises:
    FileNotFoundError: neither results.json nor a checkpoint.
  """
  return results_lib.Results.from_json(load_results(workdir))


def image_shape(results: results_lib.ResultsLike) -> tuple[int, int, int]:
  """(H, W, C) of a run's input images, from its results.

  The run's record of its dataset, else, for runs from before that record,
  the table's entry of its dataset (every dataset of the paper: 32x32x3).
  """
  results = results_lib.as_results(results)
  dataset = results.dataset
  if isinstance(dataset, dict) and dataset.get('image_shape'):
    return tuple(dataset['image_shape'])
  name = results.config.get('dataset')
  if name in input_pipeline.DATASETS:
    return input_pipeline.DATASETS[name].image_shape
  return input_pipeline.DATASETS['cifar10'].image_shape
