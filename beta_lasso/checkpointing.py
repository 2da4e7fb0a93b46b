"""Checkpoints that survive preemption, crashes and half-written saves.

Orbax's CheckpointManager writes each step into a temporary folder and renames
it only when complete, so a save killed midway never looks finished. A step
folder that is there but does not restore (a truncated or corrupted file) is
moved aside and the next older one is used. `PreemptionGuard` turns SIGTERM and
SIGINT into a checkpoint at the current step and a clean exit.
"""
import os
import signal
import threading
import time

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores the train state and the eval history of a run."""

  def __init__(self, directory, max_to_keep: int):
    self._directory = epath.Path(directory).absolute()
    self._manager = ocp.CheckpointManager(
        self._directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True),
        item_names=('state', 'history'))

  def restore_latest(self, state, history=None):
    """Returns (state, history) from the newest checkpoint that restores.

    Args:
      state: a state of the right structure and sharding (used as the target).
      history: what to return when there is no checkpoint.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            history=ocp.args.JsonRestore()))
        return restored['state'], restored['history']['evals']
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
    return state, history if history is not None else []

  def _set_aside(self, step: int, error: Exception):
    """Moves an unreadable step out of the way so it is never taken again."""
    bad = self._directory / str(step)
    aside = (self._directory.parent / 'corrupt_checkpoints' /
             f'{step}-{int(time.time())}')
    logging.warning('Checkpoint at step %d does not restore (%s: %s); moved to '
                    '%s, trying an older one.', step, type(error).__name__,
                    str(error).splitlines()[0] if str(error) else '', aside)
    if jax.process_index() == 0:
      aside.parent.mkdir(parents=True, exist_ok=True)
      bad.rename(aside)
    self._manager.reload()

  def save(self, step: int, state, history):
    """Starts an asynchronous save; the arrays are copied off device first."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        history=ocp.args.JsonSave({'evals': history})), force=True)

  def reached_preemption(self, step: int) -> bool:
    """True when JAX's preemption notice (TPU VMs) asks to save and stop."""
    return self._manager.reached_preemption(step)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()


class PreemptionGuard:
  """Within the block, SIGTERM / SIGINT set `triggered` instead of killing.

  The loop checks `triggered` after every step, saves and returns. A second
  signal while the first is being handled stops the process at once.
  """

  _SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.triggered = False
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.triggered:  # Asked twice: the user means it.
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      os.kill(os.getpid(), signum)
      return
    logging.warning('Received %s: saving a checkpoint after this step.',
                    signal.Signals(signum).name)
    self.triggered = True

  def __enter__(self):
    # Signal handlers can only be set from the main thread.
    if threading.current_thread() is threading.main_thread():
      for sig in self._SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False
