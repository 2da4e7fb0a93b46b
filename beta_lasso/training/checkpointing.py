"""Checkpoints that survive preemption, crashes and half-written saves.

Orbax's CheckpointManager writes each step into a temporary folder and renames
it only when complete, so a save killed midway never looks finished; such
leftovers are removed when the next run starts. A step folder that is there but
does not restore is moved aside and the next older one is used. "Does not
restore" includes silent corruption: orbax happily restores a flipped bit in an
OCDBT data file, so every save also writes a fingerprint of the state (in the
JSON item beside it) that the restore checks. That JSON item also keeps what
the caller passes as `extras` (the run's config, its wall time), so a
checkpoint tells which run it belongs to even without the workdir's files. `PreemptionGuard` turns SIGTERM
and SIGINT into a checkpoint at the current step and a clean exit.
"""

import contextlib
import logging as logging_lib
import os
import signal
import sys
import threading
import time
import traceback

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from beta_lasso import errors
from beta_lasso import pytree

# Orbax names a step folder being written `<step>.orbax-checkpoint-tmp[-<id>]`.
_TMP_MARKER = '.orbax-checkpoint-tmp'
# The metric orbax keeps beside every save: its step when marked best, else
# -1. Unmarked saves tie at -1, and BestN then keeps the newest of them, which
# LatestN keeps anyway.
_BEST = 'best_order'


def _best_order(metrics) -> float:
  return metrics[_BEST]


def logged_by_orbax(record) -> bool:
  """Whether a Python logging record comes from orbax (a dozen INFO lines a save).

  Orbax logs through absl.logging, so its records carry absl's logger name;
  the source path tells them apart.
  """
  return (
      record.name.startswith('orbax')
      or f'{os.sep}orbax{os.sep}' in record.pathname
  )


def _from_failed_restore(unraisable) -> bool:
  """Whether an unraisable exception is the aftermath of a failed restore.

  When a restore fails, orbax closes its event loop with TensorStore reads
  still in flight: each read that finishes later reports 'Event loop is
  closed' from asyncio's call_soon_threadsafe, and each of orbax's read
  coroutines that is dropped unfinished reports its own error, a screen of
  TensorStore spec apiece.
  """
  files = [
      frame.f_code.co_filename
      for frame, _ in traceback.walk_tb(unraisable.exc_traceback)
  ]
  functions = [
      frame.f_code.co_name
      for frame, _ in traceback.walk_tb(unraisable.exc_traceback)
  ]
  if (
      isinstance(unraisable.exc_value, RuntimeError)
      and str(unraisable.exc_value) == 'Event loop is closed'
      and 'call_soon_threadsafe' in functions
  ):
    return True
  code = getattr(unraisable.object, 'cr_code', None)
  if code is not None:
    files.append(code.co_filename)
  return any(
      f'{os.sep}{library}{os.sep}' in f
      for f in files
      for library in ('orbax', 'tensorstore')
  )


class _UnraisableFilter:
  """sys.unraisablehook without the reports of `_from_failed_restore`."""

  def __init__(self, previous):
    self.previous = previous

  def __call__(self, unraisable):
    if not _from_failed_restore(unraisable):
      self.previous(unraisable)


class _AsyncioFilter(logging_lib.Filter):
  """asyncio's 'Task exception was never retrieved' for a failed restore.

  orbax's read tasks that fail after the restore gave up are reported by
  asyncio's logger, not as unraisable exceptions: the same aftermath.
  """

  def filter(self, record) -> bool:
    if not record.exc_info or 'never retrieved' not in str(record.msg):
      return True
    error = record.exc_info[1]
    files = [
        frame.f_code.co_filename
        for frame, _ in traceback.walk_tb(record.exc_info[2])
    ]
    from_library = any(
        f'{os.sep}{library}{os.sep}' in f
        for f in files
        for library in ('orbax', 'tensorstore')
    )
    return not (from_library or 'OCDBT' in str(error))


@contextlib.contextmanager
def quiet_failures():
  """Around a restore that may fail: its aftermath is not printed.

  The failure itself reaches the caller as an exception, which says why in
  one line (`failure_reason`); what orbax and TensorStore report after it, as
  unraisable exceptions from their threads or through asyncio's logger, is
  dropped. Those reports come
  after the restore has returned, at any later time, so the filter stays in
  place for the rest of the process; it lets every other report through.
  """
  if not isinstance(sys.unraisablehook, _UnraisableFilter):
    sys.unraisablehook = _UnraisableFilter(sys.unraisablehook)
  asyncio_logger = logging_lib.getLogger('asyncio')
  if not any(isinstance(f, _AsyncioFilter) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_AsyncioFilter())
  yield


def failure_reason(error: BaseException) -> str:
  """Why a restore failed, in one line: the innermost cause of `error`.

  Orbax wraps TensorStore's precise error (e.g. 'OUT_OF_RANGE: ... byte range
  ... is not valid for value of size 1000') in one whose first line is a
  TensorStore spec.
  """
  seen = {id(error)}
  while error.__cause__ is not None and id(error.__cause__) not in seen:
    error = error.__cause__
    seen.add(id(error))
  return errors.one_line(error, with_type=True)


class CheckpointError(errors.UserError, RuntimeError):
  """There are checkpoints, and none of them restores."""


# ----------------------------------------------------------------------------
# Fingerprints: a hash of every bit of the state, computed on device.
# ----------------------------------------------------------------------------
def _leaf_fingerprint(x: jax.Array) -> jax.Array:
  """uint32 sum over elements of a bijective mix of (bits, position)."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  x = jnp.ravel(x)
  if x.dtype == jnp.bool_:
    bits = x.astype(jnp.uint32)
  elif x.dtype.itemsize in (1, 2):
    uint = jnp.uint8 if x.dtype.itemsize == 1 else jnp.uint16
    bits = jax.lax.bitcast_convert_type(x, uint).astype(jnp.uint32)
  else:  # 4 bytes, or 8 bytes as two uint32 words.
    bits = jnp.ravel(jax.lax.bitcast_convert_type(x, jnp.uint32))
  # Mixing in the position catches swapped or shifted blocks; murmur3's
  # finalizer is a bijection, so changing any one element changes the sum.
  h = bits ^ (jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(0x9E3779B1))
  h ^= h >> 16
  h *= jnp.uint32(0x85EBCA6B)
  h ^= h >> 13
  h *= jnp.uint32(0xC2B2AE35)
  h ^= h >> 16
  return jnp.sum(h, dtype=jnp.uint32)


_fingerprint_leaves = jax.jit(
    lambda tree: jax.tree.map(_leaf_fingerprint, tree)
)


def fingerprint(tree) -> dict[str, int]:
  """{'params/fc1/kernel': uint32 hash, ...} over every array of `tree`."""
  hashes = jax.device_get(_fingerprint_leaves(tree))
  return {
      pytree.path_str(path): int(h)
      for path, h in jax.tree_util.tree_flatten_with_path(hashes)[0]
  }


def _check_fingerprint(state, saved: dict[str, int] | None):
  """Raises ValueError naming the first array that differs from the save."""
  if saved is None:  # Written before fingerprints existed: trust orbax.
    logging.warning('Checkpoint without a fingerprint: arrays not checked.')
    return
  actual = fingerprint(state)
  if set(actual) != set(saved):
    raise ValueError(
        f'fingerprint names {sorted(set(saved) ^ set(actual))} '
        'do not match the state'
    )
  for name, value in actual.items():
    if value != saved[name]:
      raise ValueError(
          f'{name} differs from what was saved (fingerprint '
          f'{value:#010x}, saved {saved[name]:#010x})'
      )


# ----------------------------------------------------------------------------
# The checkpointer.
# ----------------------------------------------------------------------------
class Checkpointer:
  """Saves and restores the train state and the eval history of a run.

  Keeps the newest `max_to_keep` checkpoints and, beside them, the newest one
  saved with `best=True` (the run's best validation step), whatever its age.
  Used as a context manager, it waits on exit for the save in flight, so an
  error in the loop (e.g. divergence) never leaves the last good checkpoint
  half-written, and then closes.
  """

  def __init__(self, directory, max_to_keep: int):
    self._directory = epath.Path(directory).absolute()
    self._remove_unfinished_saves()
    policies = ocp.checkpoint_managers
    self._manager = ocp.CheckpointManager(
        self._directory,
        options=ocp.CheckpointManagerOptions(
            # A save marked best is better than every earlier one, so the
            # newest of them is the one to keep. best_fn makes orbax write the
            # metric to disk, so a resumed run keeps it too.
            preservation_policy=policies.AnyPreservationPolicy(
                [
                    policies.LatestN(n=max_to_keep),
                    policies.BestN(
                        get_metric_fn=_best_order,
                        n=1,
                        keep_checkpoints_without_metrics=False,
                    ),
                ]
            ),
            best_fn=_best_order,
            create=True,
            # Where orbax marks completion differently (e.g. GCS), it knows
            # best what an unfinished save looks like.
            cleanup_tmp_directories=True,
            # A folder that cannot be made fails the save call itself, at once;
            # made in the background, the error would surface one save later
            # and leave orbax waiting on a save that never comes.
            async_options=ocp.AsyncOptions(
                create_directories_asynchronously=False
            ),
        ),
        item_names=('state', 'history'),
    )

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, tb):
    try:  # The save in flight holds a state that passed the checks.
      self.close()
    except Exception as e:  # pylint: disable=broad-except
      if exc is None:
        raise
      # Don't hide the error that brought us here behind this one.
      logging.error('Checkpoint save failed while handling %r: %s', exc, e)
    return False

  def _remove_unfinished_saves(self):
    """Deletes the temporary folders of saves that a kill cut short."""
    # Every process reaches the sync below: whether the folder exists can
    # differ between them, since process 0 may create it meanwhile.
    paths = (
        sorted(self._directory.iterdir()) if self._directory.exists() else []
    )
    for path in paths:
      if _TMP_MARKER in path.name:
        # Killed, out of disk space, or failed: the save is not complete.
        logging.warning(
            'Removing %s: a save that never finished (the run '
            'that made it stopped while saving).',
            path,
        )
        if jax.process_index() == 0:
          path.rmtree()
    _sync('remove_unfinished_saves')

  def _restore(self, step: int, abstract):
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            history=ocp.args.JsonRestore(),
        ),
    )
    saved = restored['history']
    _check_fingerprint(restored['state'], saved.get('fingerprint'))
    return restored['state'], saved['evals'], saved.get('extras', {})

  def saved_extras(self) -> dict:
    """The `extras` of the newest checkpoint whose JSON item reads; {} if none.

    Reads no arrays: cheap enough to check a checkpoint's config before
    anything is allocated.
    """
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        with quiet_failures():
          saved = self._manager.restore(
              step, args=ocp.args.Composite(history=ocp.args.JsonRestore())
          )['history']
      except Exception:  # pylint: disable=broad-except
        continue  # restore_latest says why and sets it aside.
      return saved.get('extras', {})
    return {}

  def restore_latest(self, state, history=None):
    """Returns (state, history, extras) from the newest checkpoint that restores.

    Newer checkpoints that do not restore are moved aside (to
    `../corrupt_checkpoints`), so no later run takes them again.

    Args:
      state: a state of the right structure and sharding (used as the target).
      history: what to return when there is no checkpoint.

    Returns:
      (state, history, extras): restored, or the arguments and {} when there
      is no checkpoint.

    Raises:
      CheckpointError: there are checkpoints and none restores, e.g. after a
        change of model; nothing is moved then.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    failed = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        with quiet_failures():
          restored = self._restore(step, abstract)
      except Exception as e:  # pylint: disable=broad-except
        # Only the text is kept: the exception holds orbax's frames alive.
        failed.append((step, failure_reason(e)))
        continue
      for bad_step, why in failed:
        aside = self._set_aside(bad_step)
        # One line per checkpoint skipped: which, why, where it went.
        logging.warning(
            'Checkpoint at step %d does not restore: %s; resuming '
            'from step %d, the newest that restores, and moved it '
            'to %s.',
            bad_step,
            why,
            step,
            aside,
        )
      return restored
    if failed:
      # Not a corrupted file but e.g. another model: a person has to decide.
      raise CheckpointError(
          f'no checkpoint in {self._directory} restores ('
          + '; '.join(f'step {s}: {error}' for s, error in failed)
          + '); move that folder away to start from scratch'
      )
    return state, history if history is not None else [], {}

  def _set_aside(self, step: int) -> epath.Path:
    """Moves an unreadable step out of the way so it is never taken again."""
    bad = self._directory / str(step)
    aside = (
        self._directory.parent
        / 'corrupt_checkpoints'
        / f'{step}-{int(time.time())}'
    )
    if jax.process_index() == 0:
      aside.parent.mkdir(parents=True, exist_ok=True)
      bad.rename(aside)
    _sync('set_aside')
    self._manager.reload()
    return aside

  def save(
      self,
      step: int,
      state,
      history,
      extras: dict | None = None,
      *,
      best: bool = False,
  ):
    """Starts an asynchronous save; the arrays are copied off device first.

    Args:
      step: the step the state is at.
      state: the train state.
      history: the evals so far.
      extras: small JSON data kept beside them (e.g. the run's config).
      best: the state is the best so far (e.g. on validation accuracy); kept
        until a later save is marked best.

    Raises:
      CheckpointError: the step's folder cannot be made (read-only, full or
        missing directory); the checkpoints saved before are untouched.
    """
    try:
      self._manager.save(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              history=ocp.args.JsonSave(
                  {
                      'evals': history,
                      'fingerprint': fingerprint(state),
                      'extras': extras or {},
                  }
              ),
          ),
          metrics={_BEST: step if best else -1},
          force=True,
      )
    except OSError as e:
      raise CheckpointError(
          f'cannot save the checkpoint of step {step} in {self._directory}: '
          f'{e.strerror or e}; the checkpoints saved before are kept'
      ) from None

  def wait_until_finished(self):
    """Blocks until the save in flight is on disk (e.g. to copy it)."""
    self._manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The newest step saved with `best=True` that is still kept."""
    step = self._manager.best_step()
    metrics = None if step is None else self._manager.metrics(step)
    return step if metrics and metrics[_BEST] >= 0 else None

  def reached_preemption(self, step: int) -> bool:
    """True when JAX's preemption notice (TPU VMs) asks to save and stop.

    Without `jax.distributed` (one CPU/GPU process) this is always False.
    """
    return self._manager.reached_preemption(step)

  def close(self):
    """Waits for the save in flight and frees orbax's threads; idempotent."""
    self._manager.close()


def _sync(name: str):
  # Other processes must not look at the folder before process 0 changed it.
  if jax.process_count() > 1:
    ocp.multihost.sync_global_processes(f'beta_lasso_{name}')


# ----------------------------------------------------------------------------
# Preemption.
# ----------------------------------------------------------------------------
class PreemptionGuard:
  """Within the block, SIGTERM / SIGINT set `triggered` instead of killing.

  The loop checks `triggered` after every step, saves and returns. A second
  signal while the first is being handled stops the process at once.

  With several processes the guard stays out of the way: each process would
  see the signal at a different step and their saves would never meet. There
  JAX's preemption service (`jax.distributed`) catches SIGTERM and agrees on a
  step, which `Checkpointer.reached_preemption` reports. Likewise a handler
  installed outside Python is left in place.
  """

  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.triggered = False
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.triggered:  # Asked twice: the user means it.
      signal.signal(signum, self._previous[signum])
      os.kill(os.getpid(), signum)
      return
    logging.warning(
        'Received %s: saving a checkpoint after this step.',
        signal.Signals(signum).name,
    )
    self.triggered = True

  def __enter__(self):
    # Signal handlers can only be set from the main thread.
    if (
        jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()
    ):
      for sig in self._SIGNALS:
        previous = signal.getsignal(sig)
        if previous is not None:  # None: set from C, could not be restored.
          self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
    return False
