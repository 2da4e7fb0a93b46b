"""Runs of the real CLI, `python -m beta_lasso.main`, shared by the tests.

A tiny S-CONV on real CIFAR-10: 78 steps of 128 images, a checkpoint every 20
steps, an eval every 39. The helpers start and finish runs in subprocesses,
interrupt them, and compare what they saved bit for bit.
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from beta_lasso.training import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
ARGS = (
    '--config=configs/sconv.py:cpu',
    '--config.alpha=4',
    '--config.batch_size=128',
    '--config.num_epochs=0.2',
    '--config.checkpoint_every_epochs=0.05',
    '--config.eval_every_epochs=0.1',
    '--config.log_every_steps=10',
)
NUM_STEPS = 78  # round(0.2 * 50_000 // 128).
CHECKPOINT_EVERY = 20  # round(0.05 * 390).
TIMEOUT = 300  # Seconds for one run; ~20 s on an idle 2-core machine.

# A failed orbax restore leaves tensorstore reads running; when they end, they
# report to an event loop that is gone ("Exception ignored ..."), often during
# a later test. Restores fail on purpose here, so those reports are expected.
IGNORE_UNFINISHED_RESTORES = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning'
)

# What TensorFlow's C++ logging prints on import, before Python runs any of
# our code; everything else on stderr is ours.
IMPORT_NOISE = re.compile(
    r'^(WARNING: All log messages before absl::InitializeLog\(\)|'
    r'[IW]0000 00:00:\S+ +\d+ \S+\.cc:\d+\])'
)


class Run(NamedTuple):
  returncode: int
  stdout: str
  stderr: str


def child_env(**extra) -> dict:
  env = dict(os.environ, **extra)
  # conftest.py points TFDS at the offline copy; without it TFDS would try to
  # download CIFAR-10 for minutes.
  assert env.get('TFDS_DATA_DIR'), 'TFDS_DATA_DIR must name a TFDS data dir'
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  return env


def run_python(*args: str, env=None, timeout=TIMEOUT):
  """`python ARGS` in the repository root; a CompletedProcess with text."""
  return subprocess.run(
      [sys.executable, *args],
      cwd=REPO,
      env=env or child_env(),
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
  )


def run_on_devices(script: str, count: int = 8):
  """`python -c script` with `count` CPU devices (XLA's host platform)."""
  env = child_env(
      JAX_PLATFORMS='cpu',
      XLA_FLAGS=f'--xla_force_host_platform_device_count={count}',
  )
  return run_python('-c', script, env=env)


def start_run(workdir: pathlib.Path, *extra: str, env=None) -> subprocess.Popen:
  """Starts `python -m beta_lasso.main`; output goes to files beside workdir."""
  # Files, not pipes: nobody reads a pipe while the run goes on.
  log = workdir.parent / f'{workdir.name}.{time.monotonic_ns()}'
  with open(f'{log}.out', 'w') as stdout, open(f'{log}.err', 'w') as stderr:
    proc = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'beta_lasso.main',
            *ARGS,
            f'--workdir={workdir}',
            *extra,
        ],
        cwd=REPO,
        env=env or child_env(),
        text=True,
        stdout=stdout,
        stderr=stderr,
    )
  proc.log = log
  return proc


def finish_run(proc: subprocess.Popen, timeout=TIMEOUT) -> Run:
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  return Run(
      proc.returncode,
      pathlib.Path(f'{proc.log}.out').read_text(),
      pathlib.Path(f'{proc.log}.err').read_text(),
  )


def run_main(workdir, *extra, env=None) -> Run:
  return finish_run(start_run(workdir, *extra, env=env))


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  """Finished checkpoint steps (orbax renames a step folder when complete)."""
  directory = workdir / 'checkpoints'
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


class Interrupter(threading.Thread):
  """Sends a signal to a run once it has finished a checkpoint >= min_step."""

  def __init__(self, proc: subprocess.Popen, workdir, min_step: int, signum):
    super().__init__(daemon=True)
    self.proc, self.workdir = proc, workdir
    self.min_step, self.signum = min_step, signum
    self.step = None  # The newest checkpoint when the signal went.
    self.exit_seconds = None  # From the signal to the process gone.
    self.start()

  def run(self):
    deadline = time.monotonic() + TIMEOUT
    while self.proc.poll() is None and time.monotonic() < deadline:
      steps = checkpoint_steps(self.workdir)
      if steps and steps[-1] >= self.min_step:
        self.step = steps[-1]
        sent = time.monotonic()
        self.proc.send_signal(self.signum)
        self.proc.wait()
        self.exit_seconds = time.monotonic() - sent
        return
      time.sleep(0.02)

  def result(self) -> Run:
    self.join(TIMEOUT)
    run = finish_run(self.proc)
    assert self.step is not None, (
        f'exited {run.returncode} before a checkpoint of step >= '
        f'{self.min_step}:\n{run.stderr[-3000:]}'
    )
    return run


def saved_state(workdir: pathlib.Path, step: int | None = None):
  """The whole train state of a checkpoint, as host numpy arrays."""
  step = step or checkpoint_steps(workdir)[-1]
  path = workdir / 'checkpoints' / str(step) / 'state'
  with ocp.PyTreeCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata.tree
    return checkpointer.restore(
        path,
        restore_args=jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata
        ),
    )


def assert_bitwise_equal(actual, expected):
  """Every leaf has the same dtype, shape and bytes."""
  actual = jax.tree_util.tree_flatten_with_path(actual)[0]
  expected = jax.tree_util.tree_flatten_with_path(expected)[0]
  assert [p for p, _ in actual] == [p for p, _ in expected]
  differing = [
      jax.tree_util.keystr(path)
      for (path, a), (_, b) in zip(actual, expected)
      if not (
          a.dtype == b.dtype
          and a.shape == b.shape
          and a.tobytes() == b.tobytes()
      )
  ]
  assert not differing, f'leaves differ from the uninterrupted run: {differing}'


def assert_same_as_reference(workdir: pathlib.Path, reference):
  assert checkpoint_steps(workdir)[-1] == NUM_STEPS
  assert_bitwise_equal(saved_state(workdir), reference.state)
  results = json.loads((workdir / workdir_lib.RESULTS_FILE).read_text())
  for key in ('test_accuracy', 'test_loss', 'nnz', 'steps'):
    assert results[key] == reference.results[key], key
  # Everything an eval recorded but its timings, which no two runs share.
  assert untimed(results['history']) == untimed(reference.results['history'])


def untimed(history):
  return [
      {k: v for k, v in h.items() if k not in ('wall_seconds', 'eval_seconds')}
      for h in history
  ]


def file_hashes(directory: pathlib.Path) -> dict[str, str]:
  return {
      str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
      for p in sorted(directory.rglob('*'))
      if p.is_file()
  }


def copy_run(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  shutil.copytree(src, dst)
  return dst


def flip_a_byte(path: pathlib.Path, where: float = 2 / 3):
  data = bytearray(path.read_bytes())
  data[int(len(data) * where)] ^= 0x10
  path.write_bytes(bytes(data))


def largest_file(directory: pathlib.Path) -> pathlib.Path:
  return max(
      (p for p in directory.rglob('*') if p.is_file()),
      key=lambda p: p.stat().st_size,
  )


class Reference(NamedTuple):
  workdir: pathlib.Path
  run: Run
  results: dict
  state: dict
