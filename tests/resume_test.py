"""Fault injection: a run is never lost (kill, preemption, torn saves, NaNs).

The training tests drive the real CLI in subprocesses (see cli_runs.py). Each
faulty run is compared with one uninterrupted run of the same command, the
session's `reference`, bit for bit.
"""

import gc
import json
import os
import pathlib
import re
import shutil
import signal
import time
from typing import NamedTuple

from cli_runs import IGNORE_UNFINISHED_RESTORES
from cli_runs import NUM_STEPS
from cli_runs import Run
from cli_runs import assert_bitwise_equal
from cli_runs import assert_same_as_reference
from cli_runs import checkpoint_steps
from cli_runs import copy_run
from cli_runs import file_hashes
from cli_runs import flip_a_byte
from cli_runs import largest_file
from cli_runs import run_main
from cli_runs import saved_state
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beta_lasso.training import checkpointing
from beta_lasso.training import workdir as workdir_lib

pytestmark = IGNORE_UNFINISHED_RESTORES


class Interrupted(NamedTuple):
  workdir: pathlib.Path
  run: Run
  exit_seconds: float  # From the signal to the process gone.
  step: int  # The newest checkpoint when the signal was sent.


def _interrupted(first_runs, name) -> Interrupted:
  interrupter = first_runs[name]
  run = interrupter.result()
  return Interrupted(
      first_runs['root'] / name, run, interrupter.exit_seconds, interrupter.step
  )


@pytest.fixture(scope='module')
def killed(first_runs) -> Interrupted:
  return _interrupted(first_runs, 'killed')


@pytest.fixture(scope='module')
def preempted(first_runs) -> Interrupted:
  return _interrupted(first_runs, 'preempted')


# ----------------------------------------------------------------------------
# 1. SIGKILL at any point: the same command ends bit-identical.
# ----------------------------------------------------------------------------
def test_sigkill_mid_training_resumes_bit_identical(
    reference, killed, tmp_path
):
  assert killed.run.returncode == -signal.SIGKILL
  workdir = copy_run(killed.workdir, tmp_path / 'run')
  resume_from = checkpoint_steps(workdir)[-1]
  assert resume_from < NUM_STEPS
  assert not (workdir / workdir_lib.RESULTS_FILE).exists()

  run = run_main(workdir)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f'Resumed from step {resume_from} of {NUM_STEPS}' in run.stderr
  assert_same_as_reference(workdir, reference)


# ----------------------------------------------------------------------------
# 2. SIGTERM / SIGINT: checkpoint at the current step, exit 0, resume.
# ----------------------------------------------------------------------------
def test_sigterm_saves_the_current_step_and_exits_cleanly(preempted):
  run = preempted.run
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'Received SIGTERM: saving a checkpoint after this step.' in run.stderr
  match = re.search(
      r'^Preempted at step (\d+); checkpoint saved in (\S+)\. '
      r'Run the same command to resume\.$',
      run.stdout,
      re.M,
  )
  assert match, run.stdout
  step = int(match.group(1))
  assert preempted.step < step < NUM_STEPS
  assert match.group(2) == str(preempted.workdir)
  assert checkpoint_steps(preempted.workdir)[-1] == step
  assert not (preempted.workdir / workdir_lib.RESULTS_FILE).exists()
  assert 'Traceback' not in run.stderr


def test_preempted_run_resumes_bit_identical(reference, preempted, tmp_path):
  workdir = copy_run(preempted.workdir, tmp_path / 'run')
  step = checkpoint_steps(workdir)[-1]
  run = run_main(workdir)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f'Resumed from step {step} of {NUM_STEPS}' in run.stderr
  assert_same_as_reference(workdir, reference)
  # The wall time counts the first process (up to its save) too.
  results = json.loads((workdir / workdir_lib.RESULTS_FILE).read_text())
  assert results['wall_seconds'] > results['wall_seconds_last'] + 1


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_preemption_guard_turns_a_signal_into_a_flag(signum):
  before = signal.getsignal(signum)
  with checkpointing.PreemptionGuard() as guard:
    assert not guard.triggered
    os.kill(os.getpid(), signum)
    time.sleep(0.01)  # Python runs the handler between bytecodes.
    assert guard.triggered
  assert signal.getsignal(signum) is before


def test_jax_preemption_notice_is_harmless_without_distributed(tmp_path):
  with checkpointing.Checkpointer(tmp_path / 'checkpoints', 2) as checkpoints:
    assert not any(checkpoints.reached_preemption(s) for s in range(100))


# ----------------------------------------------------------------------------
# 3. Torn and corrupted checkpoints are never taken as complete.
# ----------------------------------------------------------------------------
def test_corrupt_newest_and_unfinished_save_resume_from_older(
    reference, preempted, tmp_path
):
  workdir = copy_run(preempted.workdir, tmp_path / 'run')
  checkpoints = workdir / 'checkpoints'
  older, newest = checkpoint_steps(workdir)[-2:]
  # A kill during the final save leaves its temporary folder, half full.
  unfinished = checkpoints / f'{NUM_STEPS}.orbax-checkpoint-tmp'
  shutil.copytree(checkpoints / str(newest), unfinished)
  (unfinished / 'state' / 'manifest.ocdbt').unlink()
  # One flipped bit in the array data: orbax alone restores it silently.
  flip_a_byte(largest_file(checkpoints / str(newest) / 'state'))

  run = run_main(workdir)
  assert run.returncode == 0, run.stderr[-3000:]
  assert (
      f'Removing {unfinished}: a save that never finished (the run that '
      'made it stopped while saving).'
  ) in run.stderr
  assert re.search(
      rf'Checkpoint at step {newest} does not restore: '
      r'ValueError: \S+ differs from what was saved',
      run.stderr,
  )
  aside = list((workdir / 'corrupt_checkpoints').iterdir())
  assert [p.name.split('-')[0] for p in aside] == [str(newest)]
  assert f'to {aside[0]}.' in run.stderr
  assert f'Resumed from step {older} of {NUM_STEPS}' in run.stderr
  assert_same_as_reference(workdir, reference)


def _tiny_state(seed):
  rng = np.random.default_rng(seed)  # Random floats: zstd can't shrink them.
  return {
      'step': jnp.asarray(seed, jnp.int32),
      'params': {
          'w': jnp.asarray(rng.normal(size=(256, 128)), jnp.float32),
          'b': jnp.asarray(rng.normal(size=(128,)), jnp.float32),
      },
  }


def _save_tiny(directory, steps=(1, 2)):
  with checkpointing.Checkpointer(directory, max_to_keep=5) as checkpoints:
    for step in steps:
      checkpoints.save(step, _tiny_state(step), [{'step': step}])


_CORRUPTIONS = {
    'flip_data': lambda d: flip_a_byte(largest_file(d / 'state')),
    'truncate_data': lambda d: (
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    )(largest_file(d / 'state')),
    'truncate_json': lambda d: (d / 'history' / 'metadata').write_text('{"ev'),
    'drop_manifest': lambda d: (d / 'state' / 'manifest.ocdbt').unlink(),
    'lose_fingerprint_entry': lambda d: (d / 'history' / 'metadata').write_text(
        json.dumps({'evals': [], 'fingerprint': {'step': 0}})
    ),
}


def _settle_failed_restores(caplog):
  """Lets the reads of a failed restore end within the test that failed it."""
  caplog.clear()  # Orbax logged the errors; their tracebacks hold the reads.
  for _ in range(3):
    time.sleep(0.1)
    gc.collect()


@pytest.mark.parametrize('corruption', sorted(_CORRUPTIONS))
def test_unreadable_checkpoint_is_set_aside(tmp_path, caplog, corruption):
  directory = tmp_path / 'checkpoints'
  _save_tiny(directory)
  _CORRUPTIONS[corruption](directory / '2')
  with checkpointing.Checkpointer(directory, max_to_keep=5) as checkpoints:
    state, history, _ = checkpoints.restore_latest(_tiny_state(0))
  assert_bitwise_equal(jax.device_get(state), jax.device_get(_tiny_state(1)))
  assert history == [{'step': 1}]
  assert checkpoint_steps(tmp_path) == [1]
  assert [
      p.name.split('-')[0] for p in (tmp_path / 'corrupt_checkpoints').iterdir()
  ] == ['2']
  _settle_failed_restores(caplog)


def test_checkpoint_keeps_its_extras(tmp_path):
  directory = tmp_path / 'checkpoints'
  extras = {'config': {'alpha': 4}, 'wall_seconds': 12.5}
  with checkpointing.Checkpointer(directory, max_to_keep=5) as checkpoints:
    checkpoints.save(1, _tiny_state(1), [], extras)
  with checkpointing.Checkpointer(directory, max_to_keep=5) as checkpoints:
    assert checkpoints.saved_extras() == extras
    assert checkpoints.restore_latest(_tiny_state(0))[2] == extras


def test_save_that_cannot_make_its_folder_fails_at_once(tmp_path):
  directory = tmp_path / 'checkpoints'
  start = time.monotonic()
  with pytest.raises(
      checkpointing.CheckpointError,
      match=r'^cannot save the checkpoint of step 2 in .*: Not '
      r'a directory; the checkpoints saved before are '
      r'kept$',
  ):
    with checkpointing.Checkpointer(directory, max_to_keep=5) as checkpoints:
      checkpoints.save(1, _tiny_state(1), [])
      checkpoints.close()  # Wait for step 1.
      # Where step 2's folder goes, nothing can be made any more.
      directory.rename(tmp_path / 'saved')
      directory.write_text('')
      checkpoints.save(2, _tiny_state(2), [])
      checkpoints.save(3, _tiny_state(3), [])
  assert time.monotonic() - start < 60  # Not orbax's minutes of waiting.


def test_no_checkpoint_restores_is_an_error_not_a_fresh_start(tmp_path):
  directory = tmp_path / 'checkpoints'
  _save_tiny(directory)
  for step in (1, 2):
    _CORRUPTIONS['truncate_json'](directory / str(step))
  with checkpointing.Checkpointer(directory, max_to_keep=5) as checkpoints:
    with pytest.raises(
        checkpointing.CheckpointError,
        match=r'no checkpoint in .* restores \(step 2: '
        r'JSONDecodeError: .*; step 1: JSONDecodeError: '
        r'.*\); move that folder away',
    ):
      checkpoints.restore_latest(_tiny_state(0))
  assert checkpoint_steps(tmp_path) == [1, 2]  # Nothing moved.


def test_fingerprint_sees_every_element():
  state = _tiny_state(3)
  base = checkpointing.fingerprint(state)
  assert set(base) == {'step', 'params/w', 'params/b'}
  w = np.asarray(state['params']['w'])
  for i in (0, 1000, w.size - 1):
    changed = w.copy().reshape(-1)
    changed.view(np.uint32)[i] ^= 1  # The lowest mantissa bit.
    other = dict(
        state, params=dict(state['params'], w=changed.reshape(w.shape))
    )
    assert checkpointing.fingerprint(other)['params/w'] != base['params/w']
  swapped = w.copy()
  swapped[[0, 1]] = swapped[[1, 0]]
  other = dict(state, params=dict(state['params'], w=swapped))
  assert checkpointing.fingerprint(other)['params/w'] != base['params/w']


# ----------------------------------------------------------------------------
# 4. Divergence stops the run and keeps the last good checkpoint.
# ----------------------------------------------------------------------------
def test_divergence_stops_and_keeps_the_checkpoints(preempted, tmp_path):
  workdir = copy_run(preempted.workdir, tmp_path / 'run')
  step = checkpoint_steps(workdir)[-1]
  before = file_hashes(workdir / 'checkpoints')
  # A learning rate of 1e30 overflows the parameters in the first step.
  run = run_main(
      workdir, '--config.learning_rate=1e30', '--allow_config_change'
  )
  assert run.returncode == 1
  assert 'Config changed in' in run.stderr and 'learning_rate' in run.stderr
  assert f'Resumed from step {step} of {NUM_STEPS}' in run.stderr
  match = re.search(
      r'^error: non-finite (loss|param_norm) '
      r'\((nan|-?inf)\) at step (\d+); the last good checkpoint '
      rf'in {re.escape(str(workdir))} is kept$',
      run.stderr,
      re.M,
  )
  assert match, run.stderr[-3000:]
  assert int(match.group(3)) == step + 1
  assert 'Traceback' not in run.stderr
  assert file_hashes(workdir / 'checkpoints') == before
  state = saved_state(workdir, step)
  assert int(state['step']) == step
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))
