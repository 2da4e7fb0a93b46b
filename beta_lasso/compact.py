r"""A run's training state in a few megabytes: lossless compact checkpoints.

  python -m beta_lasso.compact --workdir=W --out=DIR
  python -m beta_lasso.compact --restore=DIR --workdir=W2

beta-LASSO (Algorithm 1) keeps no optimizer state beyond the weights, and a
few hundred epochs in, almost all of its weights are exact zeros. The first
command writes the newest checkpoint of W as each kernel's non-zeros (their
flat indices, as gaps, and their float32 values), every other array as it is
(biases, BatchNorm scales and statistics, the step, the schedule's count), and
what else the run needs to go on exactly: its config, pixel permutation,
dataset statistics, eval history (with the best-validation record), wall
time, metrics.jsonl and, for a finished run, results.json. The second makes
W2 a workdir from which the run's own command,
`python -m beta_lasso.main --config=... --workdir=W2`, carries on and ends bit
for bit where the uninterrupted run ends.

DIR holds `compact.json` (the manifest: everything but the arrays, and where
each array is) and `arrays-000.npz`, `arrays-001.npz`, ... (numpy's .npz, no
pickle; index gaps deflated, float values stored as they are), none larger
than `--max_file_bytes` (16 MiB, the most a lent accelerator hands back per
file); an array larger than that is cut into pieces across files. A copy
takes about 4.4 bytes a non-zero weight (measured on S-FC). "Non-zero" is by bits, so -0.0 is kept as it is. The
checkpoint's fingerprint (checkpointing.fingerprint) is checked when the copy
is read and again on the state rebuilt from it, so a copy that does not
rebuild the very bits it was made from is refused.

A run whose optimizer keeps a per-weight state (SGD with momentum) is refused:
its momentum buffer is dense, so no copy of it is smaller than the
checkpoint. The training loop writes a compact copy at each regular and
preemption checkpoint when `config.compact_dir` is set, and appends its size
to `compact_sizes.jsonl` in the workdir.
"""

import json
from typing import Any
import zipfile

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from beta_lasso import errors
from beta_lasso.training import checkpointing
from beta_lasso.training import loading
from beta_lasso.training import selection
from beta_lasso.training import validation
from beta_lasso.training import workdir as workdir_lib
from beta_lasso.training import writers

FORMAT = 'beta_lasso.compact/1'
MANIFEST = 'compact.json'
# Beside a run's checkpoints: one line per compact copy the loop wrote.
SIZES_FILE = 'compact_sizes.jsonl'
MAX_FILE_BYTES = 16 * 2**20
# Room left in each file for the zip and .npy headers and for deflate's worst
# case on the integer arrays (5 bytes per 16 KiB block).
_FILE_MARGIN = 2**16
_ENTRY_MARGIN = 512
# Text files of a workdir that a continued run reads or that belong to its
# record. TensorBoard event files are not carried: the history in the
# checkpoint and metrics.jsonl hold the same curve.
_TEXT_FILES = (
    workdir_lib.CONFIG_FILE,
    workdir_lib.DATASET_FILE,
    writers.METRICS_FILE,
    workdir_lib.RESULTS_FILE,
    SIZES_FILE,
)
_PERMUTATION = 'pixel_permutation'


class CompactError(errors.UserError, ValueError):
  """A workdir that cannot be compacted, or a copy that cannot be restored."""


# ----------------------------------------------------------------------------
# Reading a checkpoint as it is on disk.
# ----------------------------------------------------------------------------
def read_checkpoint(workdir, step: int) -> tuple[Any, dict]:
  """(state tree of host numpy arrays, the checkpoint's JSON item) of `step`.

  The tree is nested dicts and lists as orbax stores the train state
  ({'params': ..., 'batch_stats': ..., 'opt_state': [...], 'step': ...}), empty
  optimizer states as None.
  """
  folder = epath.Path(workdir) / workdir_lib.CHECKPOINTS_DIR / str(step)
  tree = loading.read_tree(folder / 'state', lambda metadata: metadata)
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    saved = checkpointer.restore(folder / 'history')
  return tree, saved


def _named_leaves(tree) -> list[tuple[str, np.ndarray]]:
  """(name, array) of every array, named as checkpointing.fingerprint names."""
  return [
      (jax.tree_util.keystr(path, simple=True, separator='/'), np.asarray(leaf))
      for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]


def _skeleton(tree, prefix: str = ''):
  """`tree` as JSON: dicts and lists kept, each array replaced by its name."""
  if isinstance(tree, dict):
    return {k: _skeleton(v, f'{prefix}{k}/') for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_skeleton(v, f'{prefix}{i}/') for i, v in enumerate(tree)]
  if tree is None:
    return None
  return prefix[:-1]


def _fill(skeleton, arrays: dict[str, np.ndarray]):
  if isinstance(skeleton, dict):
    return {k: _fill(v, arrays) for k, v in skeleton.items()}
  if isinstance(skeleton, list):
    return [_fill(v, arrays) for v in skeleton]
  if skeleton is None:
    return None
  return arrays[skeleton]


def _is_kernel(name: str, array: np.ndarray) -> bool:
  return (
      name.startswith('params/')
      and name.endswith('/kernel')
      and array.dtype == np.float32
  )


def check_compactable(tree, config: dict | None):
  """Raises CompactError, in one line, for an optimizer with per-weight state.

  The schedule's step count is a scalar; a momentum buffer has one number per
  weight and no zeros to drop.
  """
  state = [
      (name, a)
      for name, a in _named_leaves(tree)
      if name.startswith('opt_state/') and a.size > 1
  ]
  if not state:
    return
  config = config or {}
  numbers = sum(a.size for _, a in state)
  raise CompactError(
      f'refused: the optimizer state holds {numbers:,} numbers in '
      f'{len(state)} arrays ({state[0][0]}, ...; optimizer '
      f'{config.get("optimizer", "?")}, momentum {config.get("momentum", "?")}),'
      ' a dense buffer with no zeros to drop, so no compact copy is smaller '
      'than the checkpoint; compact copies are for runs whose only state is '
      'the weights (beta-LASSO, SGD without momentum)'
  )


# ----------------------------------------------------------------------------
# Files of at most max_bytes.
# ----------------------------------------------------------------------------
def _write_arrays(
    out: epath.Path, arrays: list[tuple[str, np.ndarray]], max_bytes: int
) -> dict[str, dict]:
  """Writes 1-D `arrays` into arrays-NNN.npz files, cut where a file is full.

  Returns:
    {name: {'dtype', 'size', 'pieces': [[file, entry, start, stop], ...]}}.
  """
  budget = max_bytes - _FILE_MARGIN
  if budget < 2 * _ENTRY_MARGIN:
    raise CompactError(f'max_file_bytes={max_bytes} leaves no room for data')
  index, files = {}, []
  current, used = {}, 0

  def flush():
    nonlocal current, used
    if current:
      name = f'arrays-{len(files):03d}.npz'
      path = out / name
      _savez(path, current)
      size = path.stat().length
      if size > max_bytes:  # The margins above make this unreachable.
        raise CompactError(f'{path} came out {size} bytes, over {max_bytes}')
      files.append(name)
    current, used = {}, 0

  for name, array in arrays:
    entry = {'dtype': array.dtype.str, 'size': int(array.size), 'pieces': []}
    index[name] = entry
    start = 0
    while start < array.size or (array.size == 0 and not entry['pieces']):
      room = (budget - used - _ENTRY_MARGIN) // array.itemsize
      if room <= 0:
        flush()
        continue
      stop = min(array.size, start + room)
      key = f'a{len(current)}'
      current[key] = array[start:stop]
      used += (stop - start) * array.itemsize + _ENTRY_MARGIN
      entry['pieces'].append([f'arrays-{len(files):03d}.npz', key, start, stop])
      start = stop
      if array.size == 0:
        break
  flush()
  return index


def _savez(path: epath.Path, arrays: dict[str, np.ndarray]):
  """np.savez, with integer arrays deflated and float arrays stored.

  Index gaps shrink to a fraction of a byte each; float32 weights barely
  shrink at all, and deflating a gigabyte of them would stall the training
  loop for a minute. np.load reads either.
  """
  with path.open('wb') as f, zipfile.ZipFile(f, 'w', allowZip64=True) as zf:
    for key, array in arrays.items():
      info = zipfile.ZipInfo(f'{key}.npy')
      info.compress_type = (
          zipfile.ZIP_DEFLATED
          if array.dtype.kind in 'iub'
          else zipfile.ZIP_STORED
      )
      with zf.open(info, 'w', force_zip64=True) as entry:
        np.lib.format.write_array(
            entry, np.ascontiguousarray(array), allow_pickle=False
        )


def _read_arrays(
    directory: epath.Path, index: dict[str, dict]
) -> dict[str, np.ndarray]:
  opened = {}
  try:
    arrays = {}
    for name, entry in index.items():
      out = np.empty(entry['size'], np.dtype(entry['dtype']))
      for file, key, start, stop in entry['pieces']:
        if file not in opened:
          path = directory / file
          if not path.exists():
            raise CompactError(f'{path} is missing: the copy is incomplete')
          opened[file] = np.load(path, allow_pickle=False)
        out[start:stop] = opened[file][key]
      arrays[name] = out
    return arrays
  finally:
    for data in opened.values():
      data.close()


# ----------------------------------------------------------------------------
# Compact and restore.
# ----------------------------------------------------------------------------
def _encode(tree) -> tuple[list[dict], list[tuple[str, np.ndarray]]]:
  """Per leaf, how it is stored; and the 1-D arrays that store it."""
  leaves, arrays = [], []
  for name, array in _named_leaves(tree):
    leaf = {'name': name, 'shape': list(array.shape), 'dtype': array.dtype.str}
    if _is_kernel(name, array):
      flat = array.reshape(-1)
      where = np.flatnonzero(flat.view(np.uint32))  # By bits: -0.0 is kept.
      # Gaps between indices are small where weights cluster and compress to
      # a byte or less each; indices themselves would not.
      gaps = np.diff(where, prepend=0).astype(
          np.uint32 if flat.size < 2**32 else np.uint64
      )
      leaf.update(encoding='nonzeros', nnz=int(where.size))
      arrays += [(f'{name}:gaps', gaps), (f'{name}:values', flat[where])]
    else:
      leaf['encoding'] = 'dense'
      arrays.append((name, np.ascontiguousarray(array).reshape(-1)))
    leaves.append(leaf)
  return leaves, arrays


def _decode(
    leaves: list[dict], arrays: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
  decoded = {}
  for leaf in leaves:
    name, shape = leaf['name'], tuple(leaf['shape'])
    dtype = np.dtype(leaf['dtype'])
    if leaf['encoding'] == 'nonzeros':
      flat = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype)
      where = np.cumsum(arrays[f'{name}:gaps'], dtype=np.int64)
      flat[where] = arrays[f'{name}:values']
      decoded[name] = flat.reshape(shape)
    else:
      decoded[name] = arrays[name].astype(dtype, copy=False).reshape(shape)
  return decoded


def compact(workdir, out, *, max_file_bytes: int = MAX_FILE_BYTES) -> dict:
  """Writes the newest checkpoint of `workdir` as a compact copy in `out`.

  `out` is replaced as a whole (written beside it, then renamed), so a copy
  is never half old, half new.

  Args:
    workdir: a training workdir with at least one finished checkpoint.
    out: the folder to write (created; an earlier copy there is replaced).
    max_file_bytes: the largest file written.

  Returns:
    The manifest, with 'bytes' (all files together) and 'files' added.

  Raises:
    CompactError: no checkpoint, a checkpoint that does not match its
      fingerprint, or an optimizer with per-weight state.
  """
  steps = loading.checkpoint_steps(workdir)
  if not steps:
    raise CompactError(f'no finished checkpoint in {workdir}/checkpoints')
  step = steps[-1]
  tree, saved = read_checkpoint(workdir, step)
  config = workdir_lib.read_config(workdir) or saved.get('extras', {}).get(
      'config'
  )
  check_compactable(tree, config)
  fingerprint = checkpointing.fingerprint(tree)
  if saved.get('fingerprint') not in (None, fingerprint):
    raise CompactError(
        f'the checkpoint of step {step} in {workdir} does not '
        'match its fingerprint; run the training command once '
        'to set it aside, then compact again'
    )
  history = saved.get('evals', [])
  best = selection.best(history)
  manifest = {
      'format': FORMAT,
      'step': step,
      'skeleton': _skeleton(tree),
      'fingerprint': fingerprint,
      'history': history,
      'extras': saved.get('extras', {}),
      # The checkpoint at the best validation step is the one orbax keeps
      # beside the newest; it is this one when the newest eval was the best.
      'best_step': best['step'] if best else None,
      'files': {},
  }
  workdir = epath.Path(workdir)
  for name in _TEXT_FILES:
    if (workdir / name).exists():
      manifest['files'][name] = (workdir / name).read_text()
  leaves, arrays = _encode(tree)
  if (workdir / workdir_lib.PERMUTATION_FILE).exists():
    with (workdir / workdir_lib.PERMUTATION_FILE).open('rb') as f:
      permutation = np.load(f, allow_pickle=False)
    manifest['pixel_permutation'] = {
        'shape': list(permutation.shape),
        'dtype': permutation.dtype.str,
    }
    arrays.append((_PERMUTATION, permutation.reshape(-1)))
  manifest['leaves'] = leaves

  out = epath.Path(out)
  tmp = out.parent / f'{out.name}.tmp'
  if tmp.exists():
    tmp.rmtree()
  tmp.mkdir(parents=True)
  manifest['arrays'] = _write_arrays(tmp, arrays, max_file_bytes)
  text = json.dumps(manifest, sort_keys=True)
  if len(text) > max_file_bytes:
    raise CompactError(
        f'the manifest alone is {len(text)} bytes, over ' f'{max_file_bytes}'
    )
  (tmp / MANIFEST).write_text(text)
  if out.exists():
    old = out.parent / f'{out.name}.old'
    if old.exists():
      old.rmtree()
    out.rename(old)
    tmp.rename(out)
    old.rmtree()
  else:
    tmp.rename(out)
  files = sorted(p.name for p in out.iterdir())
  manifest['files_written'] = files
  manifest['bytes'] = sum((out / f).stat().length for f in files)
  return manifest


def read(directory) -> tuple[dict, Any, np.ndarray | None]:
  """(manifest, state tree, pixel permutation or None) of a compact copy.

  Raises:
    CompactError: not a compact copy, a file missing, or arrays that do not
      rebuild the checkpoint's fingerprint.
  """
  directory = epath.Path(directory)
  path = directory / MANIFEST
  if not path.exists():
    raise CompactError(f'{directory} holds no {MANIFEST}: not a compact copy')
  manifest = json.loads(path.read_text())
  if manifest.get('format') != FORMAT:
    raise CompactError(
        f'{path} is format {manifest.get("format")!r}, not ' f'{FORMAT!r}'
    )
  arrays = _read_arrays(directory, manifest['arrays'])
  decoded = _decode(manifest['leaves'], arrays)
  tree = _fill(manifest['skeleton'], decoded)
  if checkpointing.fingerprint(tree) != manifest['fingerprint']:
    raise CompactError(
        f'the arrays in {directory} do not rebuild the state '
        'they were made from (fingerprint differs)'
    )
  permutation = None
  if 'pixel_permutation' in manifest:
    meta = manifest['pixel_permutation']
    permutation = (
        arrays[_PERMUTATION]
        .astype(np.dtype(meta['dtype']), copy=False)
        .reshape(meta['shape'])
    )
  return manifest, tree, permutation


def restore(directory, workdir) -> dict:
  """Makes `workdir` a workdir at the compact copy's step.

  Args:
    directory: a folder written by `compact`.
    workdir: the new workdir; it must hold no checkpoint yet.

  Returns:
    The manifest.

  Raises:
    CompactError: see `read`; or `workdir` already holds checkpoints.
  """
  manifest, tree, permutation = read(directory)
  workdir = epath.Path(workdir)
  if loading.checkpoint_steps(workdir):
    raise CompactError(
        f'{workdir} already holds checkpoints; restore into a ' 'new --workdir'
    )
  workdir.mkdir(parents=True, exist_ok=True)
  for name, text in manifest['files'].items():
    (workdir / name).write_text(text)
  if permutation is not None:
    workdir_lib.save_pixel_permutation(workdir, permutation)
  config = manifest['extras'].get('config') or {}
  keep = config.get('max_checkpoints_to_keep', 2)
  with checkpointing.Checkpointer(
      workdir / workdir_lib.CHECKPOINTS_DIR, keep
  ) as checkpoints:
    checkpoints.save(
        manifest['step'],
        tree,
        manifest['history'],
        manifest['extras'],
        best=manifest['best_step'] == manifest['step'],
    )
  return manifest


def compactable(config) -> bool:
  """Whether a run's whole state travels as a compact copy: no dense
  momentum buffer beside the weights (beta-LASSO, or SGD without momentum)."""
  return config.optimizer == 'beta_lasso' or not config.momentum


def check_config(config):
  """Refuses `config.compact_dir` for a run with momentum, before any compute.

  Raises:
    validation.ConfigError: compact_dir with SGD momentum.
  """
  if config.get('compact_dir') and not compactable(config):
    raise validation.ConfigError(
        f'config.compact_dir={config.compact_dir!r} with SGD momentum '
        f'{config.momentum}: the momentum buffer is dense, so no compact copy '
        'is smaller than the checkpoint; unset compact_dir or use beta-LASSO'
    )


def after_save(config, workdir, checkpoints: checkpointing.Checkpointer):
  """The training loop's hook: a compact copy of the save just started.

  Waits for that save to reach the disk, then copies it into
  `config.compact_dir` (nothing without it). Every process waits, as orbax
  may sync them there; process 0 alone writes.
  """
  if not config.get('compact_dir'):
    return
  checkpoints.wait_until_finished()
  if jax.process_index() != 0:
    return
  manifest = compact(workdir, config.compact_dir)
  logging.info('Compact copy in %s: %s', config.compact_dir, describe(manifest))
  # The copy's size over the run (launch/full_scale.py reports it).
  record = {
      'step': manifest['step'],
      'bytes': manifest['bytes'],
      'files': len(manifest['files_written']),
      'nnz': {
          leaf['name']: leaf['nnz']
          for leaf in manifest['leaves']
          if leaf['encoding'] == 'nonzeros'
      },
  }
  path = epath.Path(workdir) / SIZES_FILE
  with path.open('a') as f:
    f.write(json.dumps(record, sort_keys=True) + '\n')
  # The copy carries the record of itself too, so a run continued from it
  # keeps every line.
  out = epath.Path(config.compact_dir) / MANIFEST
  saved = json.loads(out.read_text())
  saved['files'][SIZES_FILE] = path.read_text()
  tmp = out.with_name(f'{MANIFEST}.tmp')
  tmp.write_text(json.dumps(saved, sort_keys=True))
  tmp.replace(out)


def read_sizes(workdir) -> list[dict]:
  """The records `after_save` appended in `workdir`, oldest first."""
  path = epath.Path(workdir) / SIZES_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line]


def describe(manifest: dict) -> str:
  """One line: step, non-zeros per kernel, files and size."""
  kernels = ', '.join(
      f'{leaf["name"].split("/")[-2]} {leaf["nnz"]:,}/'
      f'{int(np.prod(leaf["shape"])):,}'
      for leaf in manifest['leaves']
      if leaf['encoding'] == 'nonzeros'
  )
  size = manifest.get('bytes')
  files = manifest.get('files_written', [])
  where = f', {len(files)} files, {size / 2**20:.2f} MiB' if size else ''
  return f'step {manifest["step"]}: non-zeros {kernels}{where}'


# ----------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------
def _define_flags():
  """Defined only when this module is the script (see launch/sweep.py)."""
  flags.DEFINE_string(
      'workdir',
      None,
      'The workdir to compact (with --out) ' 'or to create (with --restore).',
  )
  flags.DEFINE_string('out', None, 'Folder for the compact copy.')
  flags.DEFINE_string('restore', None, 'A compact copy to make --workdir from.')
  flags.DEFINE_integer(
      'max_file_bytes', MAX_FILE_BYTES, 'The largest file of the copy.'
  )
  flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  args = flags.FLAGS
  if bool(args.out) == bool(args.restore):
    raise CompactError(
        'give one of --out (compact --workdir) and --restore '
        '(make --workdir from a copy)'
    )
  # CompactError, WorkdirError and OSError: one line (errors.command_line).
  if args.out:
    manifest = compact(
        args.workdir, args.out, max_file_bytes=args.max_file_bytes
    )
    print(f'Wrote {args.out}: {describe(manifest)}')
  else:
    manifest = restore(args.restore, args.workdir)
    print(
        f'Restored {args.workdir} at {describe(manifest)}; run the '
        "run's own command with this --workdir to carry on"
    )


if __name__ == '__main__':
  logging.set_verbosity(logging.WARNING)
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
