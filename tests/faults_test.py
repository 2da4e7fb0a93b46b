"""Fault injection: a run is never lost (kill, preemption, torn saves, NaNs).

The training tests drive the real CLI, `python -m beta_lasso.main`, in
subprocesses on a tiny S-CONV and real CIFAR-10: 78 steps of 128 images, a
checkpoint every 20 steps, an eval every 39. Each faulty run is compared with
one uninterrupted run of the same command, bit for bit. Config and workdir
errors are tested in-process where they can be, and through the CLI for the
one-line message and the untouched workdir.
"""
import gc
import hashlib
import json
import logging as pylogging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from beta_lasso import checkpointing
from beta_lasso import input_pipeline
from beta_lasso import train
from beta_lasso import validation
from beta_lasso import workdir as workdir_lib
from configs import sconv

REPO = pathlib.Path(__file__).resolve().parents[1]
ARGS = ('--config=configs/sconv.py:cpu', '--config.alpha=4',
        '--config.batch_size=128', '--config.num_epochs=0.2',
        '--config.checkpoint_every_epochs=0.05',
        '--config.eval_every_epochs=0.1', '--config.log_every_steps=10')
NUM_STEPS = 78  # round(0.2 * 50_000 // 128).
CHECKPOINT_EVERY = 20  # round(0.05 * 390).
TIMEOUT = 300  # Seconds for one run; ~20 s on an idle 2-core machine.

# A failed orbax restore leaves tensorstore reads running; when they end, they
# report to an event loop that is gone ("Exception ignored ..."), often during
# a later test. Restores fail on purpose here, so those reports are expected.
pytestmark = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning')


# What TensorFlow's C++ logging prints on import, before Python runs any of
# our code; everything else on stderr is ours.
_IMPORT_NOISE = re.compile(
    r'^(WARNING: All log messages before absl::InitializeLog\(\)|'
    r'[IW]0000 00:00:\S+ +\d+ \S+\.cc:\d+\])')


# ----------------------------------------------------------------------------
# Running the CLI.
# ----------------------------------------------------------------------------
class Run(NamedTuple):
  returncode: int
  stdout: str
  stderr: str


def _env(**extra) -> dict:
  env = dict(os.environ, **extra)
  # conftest.py points TFDS at the offline copy; without it TFDS would try to
  # download CIFAR-10 for minutes.
  assert env.get('TFDS_DATA_DIR'), 'TFDS_DATA_DIR must name a TFDS data dir'
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  return env


def _start(workdir: pathlib.Path, *extra: str, env=None) -> subprocess.Popen:
  """Starts `python -m beta_lasso.main`; output goes to files beside workdir."""
  # Files, not pipes: nobody reads a pipe while the run goes on.
  log = workdir.parent / f'{workdir.name}.{time.monotonic_ns()}'
  with open(f'{log}.out', 'w') as stdout, open(f'{log}.err', 'w') as stderr:
    proc = subprocess.Popen(
        [sys.executable, '-m', 'beta_lasso.main', *ARGS,
         f'--workdir={workdir}', *extra],
        cwd=REPO, env=env or _env(), text=True, stdout=stdout, stderr=stderr)
  proc.log = log
  return proc


def _finish(proc: subprocess.Popen, timeout=TIMEOUT) -> Run:
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  return Run(proc.returncode, pathlib.Path(f'{proc.log}.out').read_text(),
             pathlib.Path(f'{proc.log}.err').read_text())


def _run(workdir, *extra, env=None) -> Run:
  return _finish(_start(workdir, *extra, env=env))


def _steps(workdir: pathlib.Path) -> list[int]:
  """Finished checkpoint steps (orbax renames a step folder when complete)."""
  directory = workdir / 'checkpoints'
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


class _Interrupter(threading.Thread):
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
      steps = _steps(self.workdir)
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
    run = _finish(self.proc)
    assert self.step is not None, (
        f'exited {run.returncode} before a checkpoint of step >= '
        f'{self.min_step}:\n{run.stderr[-3000:]}')
    return run


def _saved_state(workdir: pathlib.Path, step: int | None = None):
  """The whole train state of a checkpoint, as host numpy arrays."""
  step = step or _steps(workdir)[-1]
  path = workdir / 'checkpoints' / str(step) / 'state'
  with ocp.PyTreeCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata.tree
    return checkpointer.restore(path, restore_args=jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata))


def _assert_bitwise_equal(actual, expected):
  """Every leaf has the same dtype, shape and bytes."""
  actual = jax.tree_util.tree_flatten_with_path(actual)[0]
  expected = jax.tree_util.tree_flatten_with_path(expected)[0]
  assert [p for p, _ in actual] == [p for p, _ in expected]
  differing = [jax.tree_util.keystr(path) for (path, a), (_, b)
               in zip(actual, expected)
               if not (a.dtype == b.dtype and a.shape == b.shape and
                       a.tobytes() == b.tobytes())]
  assert not differing, f'leaves differ from the uninterrupted run: {differing}'


def _assert_same_as_reference(workdir: pathlib.Path, reference):
  assert _steps(workdir)[-1] == NUM_STEPS
  _assert_bitwise_equal(_saved_state(workdir), reference.state)
  results = json.loads((workdir / workdir_lib.RESULTS_FILE).read_text())
  for key in ('test_accuracy', 'test_loss', 'nnz', 'history', 'steps'):
    assert results[key] == reference.results[key], key


def _file_hashes(directory: pathlib.Path) -> dict[str, str]:
  return {str(p.relative_to(directory)):
              hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob('*')) if p.is_file()}


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  shutil.copytree(src, dst)
  return dst


def _flip_a_byte(path: pathlib.Path, where: float = 2 / 3):
  data = bytearray(path.read_bytes())
  data[int(len(data) * where)] ^= 0x10
  path.write_bytes(bytes(data))


def _largest_file(directory: pathlib.Path) -> pathlib.Path:
  return max((p for p in directory.rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)


# ----------------------------------------------------------------------------
# Shared runs: one uninterrupted, one SIGKILLed after its first checkpoint, one
# SIGTERMed after its second. They start together: on 2 cores each spends most
# of its time importing and decoding CIFAR-10 on one thread.
# ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def first_runs(tmp_path_factory) -> dict:
  root = tmp_path_factory.mktemp('runs')
  runs = {'reference': _start(root / 'reference')}
  for name, min_step, signum in (
      ('killed', 1, signal.SIGKILL),
      # Two checkpoints: the corruption test needs an older one to go to.
      ('preempted', 2 * CHECKPOINT_EVERY, signal.SIGTERM)):
    runs[name] = _Interrupter(_start(root / name), root / name, min_step,
                              signum)
  runs['root'] = root
  return runs


class Reference(NamedTuple):
  workdir: pathlib.Path
  run: Run
  results: dict
  state: dict


@pytest.fixture(scope='module')
def reference(first_runs) -> Reference:
  workdir = first_runs['root'] / 'reference'
  run = _finish(first_runs['reference'])
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((workdir / workdir_lib.RESULTS_FILE).read_text())
  assert results['steps'] == NUM_STEPS
  return Reference(workdir, run, results, _saved_state(workdir))


class Interrupted(NamedTuple):
  workdir: pathlib.Path
  run: Run
  exit_seconds: float  # From the signal to the process gone.
  step: int  # The newest checkpoint when the signal was sent.


def _interrupted(first_runs, name) -> Interrupted:
  interrupter = first_runs[name]
  run = interrupter.result()
  return Interrupted(first_runs['root'] / name, run, interrupter.exit_seconds,
                     interrupter.step)


@pytest.fixture(scope='module')
def killed(first_runs) -> Interrupted:
  return _interrupted(first_runs, 'killed')


@pytest.fixture(scope='module')
def preempted(first_runs) -> Interrupted:
  return _interrupted(first_runs, 'preempted')


# ----------------------------------------------------------------------------
# 1. SIGKILL at any point: the same command ends bit-identical.
# ----------------------------------------------------------------------------
def test_sigkill_mid_training_resumes_bit_identical(reference, killed,
                                                    tmp_path):
  assert killed.run.returncode == -signal.SIGKILL
  workdir = _copy(killed.workdir, tmp_path / 'run')
  resume_from = _steps(workdir)[-1]
  assert resume_from < NUM_STEPS
  assert not (workdir / workdir_lib.RESULTS_FILE).exists()

  run = _run(workdir)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f'Resumed from step {resume_from} of {NUM_STEPS}' in run.stderr
  _assert_same_as_reference(workdir, reference)


# ----------------------------------------------------------------------------
# 2. SIGTERM / SIGINT: checkpoint at the current step, exit 0, resume.
# ----------------------------------------------------------------------------
def test_sigterm_saves_the_current_step_and_exits_cleanly(preempted):
  run = preempted.run
  assert run.returncode == 0, run.stderr[-3000:]
  assert preempted.exit_seconds < 15
  assert 'Received SIGTERM: saving a checkpoint after this step.' in run.stderr
  match = re.search(r'^Preempted at step (\d+); checkpoint saved in (\S+)\. '
                    r'Run the same command to resume\.$', run.stdout, re.M)
  assert match, run.stdout
  step = int(match.group(1))
  assert preempted.step < step < NUM_STEPS
  assert match.group(2) == str(preempted.workdir)
  assert _steps(preempted.workdir)[-1] == step
  assert not (preempted.workdir / workdir_lib.RESULTS_FILE).exists()
  assert 'Traceback' not in run.stderr


def test_preempted_run_resumes_bit_identical(reference, preempted, tmp_path):
  workdir = _copy(preempted.workdir, tmp_path / 'run')
  step = _steps(workdir)[-1]
  run = _run(workdir)
  assert run.returncode == 0, run.stderr[-3000:]
  assert f'Resumed from step {step} of {NUM_STEPS}' in run.stderr
  _assert_same_as_reference(workdir, reference)


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
    reference, preempted, tmp_path):
  workdir = _copy(preempted.workdir, tmp_path / 'run')
  checkpoints = workdir / 'checkpoints'
  older, newest = _steps(workdir)[-2:]
  # A kill during the final save leaves its temporary folder, half full.
  unfinished = checkpoints / f'{NUM_STEPS}.orbax-checkpoint-tmp'
  shutil.copytree(checkpoints / str(newest), unfinished)
  (unfinished / 'state' / 'manifest.ocdbt').unlink()
  # One flipped bit in the array data: orbax alone restores it silently.
  _flip_a_byte(_largest_file(checkpoints / str(newest) / 'state'))

  run = _run(workdir)
  assert run.returncode == 0, run.stderr[-3000:]
  assert (f'Removing {unfinished}: a save that never finished (the run was '
          'killed while saving).') in run.stderr
  assert re.search(rf'Checkpoint at step {newest} does not restore: '
                   r'ValueError: \S+ differs from what was saved', run.stderr)
  aside = list((workdir / 'corrupt_checkpoints').iterdir())
  assert [p.name.split('-')[0] for p in aside] == [str(newest)]
  assert f'to {aside[0]}.' in run.stderr
  assert f'Resumed from step {older} of {NUM_STEPS}' in run.stderr
  _assert_same_as_reference(workdir, reference)


def _tiny_state(seed):
  rng = np.random.default_rng(seed)  # Random floats: zstd can't shrink them.
  return {'step': jnp.asarray(seed, jnp.int32),
          'params': {'w': jnp.asarray(rng.normal(size=(256, 128)), jnp.float32),
                     'b': jnp.asarray(rng.normal(size=(128,)), jnp.float32)}}


def _save_tiny(directory, steps=(1, 2)):
  with checkpointing.Checkpointer(directory, max_to_keep=5) as checkpoints:
    for step in steps:
      checkpoints.save(step, _tiny_state(step), [{'step': step}])


_CORRUPTIONS = {
    'flip_data': lambda d: _flip_a_byte(_largest_file(d / 'state')),
    'truncate_data': lambda d: (lambda p: p.write_bytes(
        p.read_bytes()[:p.stat().st_size // 2]))(_largest_file(d / 'state')),
    'truncate_json': lambda d: (d / 'history' / 'metadata').write_text('{"ev'),
    'drop_manifest': lambda d: (d / 'state' / 'manifest.ocdbt').unlink(),
    'lose_fingerprint_entry': lambda d: (d / 'history' / 'metadata').write_text(
        json.dumps({'evals': [], 'fingerprint': {'step': 0}})),
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
    state, history = checkpoints.restore_latest(_tiny_state(0))
  _assert_bitwise_equal(jax.device_get(state), jax.device_get(_tiny_state(1)))
  assert history == [{'step': 1}]
  assert _steps(tmp_path) == [1]
  assert [p.name.split('-')[0]
          for p in (tmp_path / 'corrupt_checkpoints').iterdir()] == ['2']
  _settle_failed_restores(caplog)


def test_no_checkpoint_restores_is_an_error_not_a_fresh_start(tmp_path):
  directory = tmp_path / 'checkpoints'
  _save_tiny(directory)
  for step in (1, 2):
    _CORRUPTIONS['truncate_json'](directory / str(step))
  with checkpointing.Checkpointer(directory, max_to_keep=5) as checkpoints:
    with pytest.raises(checkpointing.CheckpointError,
                       match=r'no checkpoint in .* restores \(step 2: '
                             r'JSONDecodeError: .*; step 1: JSONDecodeError: '
                             r'.*\); move that folder away'):
      checkpoints.restore_latest(_tiny_state(0))
  assert _steps(tmp_path) == [1, 2]  # Nothing moved.


def test_fingerprint_sees_every_element():
  state = _tiny_state(3)
  base = checkpointing.fingerprint(state)
  assert set(base) == {'step', 'params/w', 'params/b'}
  w = np.asarray(state['params']['w'])
  for i in (0, 1000, w.size - 1):
    changed = w.copy().reshape(-1)
    changed.view(np.uint32)[i] ^= 1  # The lowest mantissa bit.
    other = dict(state,
                 params=dict(state['params'], w=changed.reshape(w.shape)))
    assert checkpointing.fingerprint(other)['params/w'] != base['params/w']
  swapped = w.copy()
  swapped[[0, 1]] = swapped[[1, 0]]
  other = dict(state, params=dict(state['params'], w=swapped))
  assert checkpointing.fingerprint(other)['params/w'] != base['params/w']


# ----------------------------------------------------------------------------
# 4. Divergence stops the run and keeps the last good checkpoint.
# ----------------------------------------------------------------------------
def test_divergence_stops_and_keeps_the_checkpoints(preempted, tmp_path):
  workdir = _copy(preempted.workdir, tmp_path / 'run')
  step = _steps(workdir)[-1]
  before = _file_hashes(workdir / 'checkpoints')
  # A learning rate of 1e30 overflows the parameters in the first step.
  run = _run(workdir, '--config.learning_rate=1e30', '--allow_config_change')
  assert run.returncode == 1
  assert 'Config changed in' in run.stderr and 'learning_rate' in run.stderr
  assert f'Resumed from step {step} of {NUM_STEPS}' in run.stderr
  match = re.search(r'^error: non-finite (loss|grad_norm|param_norm) '
                    r'\((nan|-?inf)\) at step (\d+); the last good checkpoint '
                    rf'in {re.escape(str(workdir))} is kept$', run.stderr,
                    re.M)
  assert match, run.stderr[-3000:]
  assert int(match.group(3)) == step + 1
  assert 'Traceback' not in run.stderr
  assert _file_hashes(workdir / 'checkpoints') == before
  state = _saved_state(workdir, step)
  assert int(state['step']) == step
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))


# ----------------------------------------------------------------------------
# 5. Bad input: one line, non-zero exit, the workdir never created.
# ----------------------------------------------------------------------------
_BAD_VALUES = [
    ('model', 'mlp', r"config\.model='mlp' .* one of: sconv, slocal, sfc"),
    ('dataset', 'mnist', r"config\.dataset='mnist' .* cifar10, cifar100"),
    ('optimizer', 'adam', r"config\.optimizer='adam' .* sgd, beta_lasso"),
    ('augment', 'mixup', r"config\.augment='mixup' .* none, crop_flip"),
    ('regularize', 'some', r"config\.regularize='some' .* kernels, all"),
    ('alpha', 0, r'config\.alpha=0 .* > 0'),
    ('alpha', -4, r'config\.alpha=-4 .* > 0'),
    ('batch_size', 0, r'config\.batch_size=0 .* > 0'),
    ('learning_rate', 0.0, r'config\.learning_rate=0\.0 .* > 0'),
    ('learning_rate', -0.1, r'config\.learning_rate=-0\.1 .* > 0'),
    ('learning_rate', float('nan'), r'config\.learning_rate=nan .* finite'),
    ('num_epochs', 0.0, r'config\.num_epochs=0\.0 .* > 0'),
    ('num_epochs', float('inf'), r'config\.num_epochs=inf .* finite'),
    ('eval_every_epochs', -1.0, r'config\.eval_every_epochs=-1\.0 .* > 0'),
    ('checkpoint_every_epochs', 0.0, r'checkpoint_every_epochs=0\.0 .* > 0'),
    ('l1', -1e-6, r'config\.l1=-1e-06 .* >= 0'),
    ('l1_conv', -1e-6, r'config\.l1_conv=-1e-06 .* >= 0'),
    ('beta', -1.0, r'config\.beta=-1\.0 .* >= 0'),
    ('momentum', 1.0, r'config\.momentum=1\.0 .* < 1'),
    ('dropout_rate', 1.0, r'config\.dropout_rate=1\.0 .* < 1'),
    ('seed', -1, r'config\.seed=-1 .* >= 0'),
    ('warmup_epochs', 400.0, r'config\.warmup_epochs=400\.0 .* < num_epochs'),
    ('log_every_steps', 0, r'config\.log_every_steps=0 .* > 0'),
    ('max_checkpoints_to_keep', 0, r'max_checkpoints_to_keep=0 .* > 0'),
    ('eval_batch_size', 0, r'config\.eval_batch_size=0 .* > 0'),
    ('train_split', 'tset', r"config\.train_split='tset' is not valid: "
     r"Unknown split 'tset'\. Should be one of \['train', 'test'\]"),
    ('train_split', 'train[:100]', r"config\.train_split='train\[:100\]' "
     r'holds 100 examples; it must hold at least 512 \(one batch\)'),
    ('eval_split', 'test[:0]', r'holds 0 examples; it must hold at least 1$'),
]


@pytest.mark.parametrize('field,value,message', _BAD_VALUES,
                         ids=[f'{f}={v}' for f, v, _ in _BAD_VALUES])
def test_validate_config_names_the_bad_value(field, value, message):
  config = sconv.get_config()
  validation.validate_config(config)  # The paper's config is fine.
  config[field] = value
  with pytest.raises(validation.ConfigError) as error:
    validation.validate_config(config)
  assert re.search(message, str(error.value)), str(error.value)
  assert '\n' not in str(error.value)


def test_model_kwargs_the_model_does_not_take():
  config = sconv.get_config()
  config.model_kwargs = {'width': 8}
  with pytest.raises(validation.ConfigError, match=r"model_kwargs=\{'width'"):
    validation.validate_config(config)


def test_missing_dataset_lists_the_prepared_ones(tmp_path):
  config = sconv.get_config()
  config.dataset = 'cifar100'
  config.download = False
  config.data_dir = os.environ['TFDS_DATA_DIR']
  with pytest.raises(input_pipeline.DatasetNotFoundError,
                     match=r"'cifar100' .* not prepared .* Prepared there: "
                           r'cifar10\.$'):
    validation.validate_config(config)


def test_bad_config_fails_before_the_workdir_exists(tmp_path):
  config = sconv.get_config('cpu')
  config.beta = -1.0
  with pytest.raises(validation.ConfigError):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


_BAD_CLI = {
    'model': ((), ['--config.model=mlp'],
              r"^error: config\.model='mlp' is not valid; choose one of: "
              r'sconv, slocal, sfc, dconv, dlocal, dfc, 3fc, resnet18$'),
    'batch_over_8_devices': (
        ('XLA_FLAGS', '--xla_force_host_platform_device_count=8'),
        ['--config.batch_size=12'],
        r'^error: config\.batch_size=12 cannot be split over 8 devices; use '
        r'a multiple of 8$'),
    'missing_dataset': ((), ['--config.dataset=cifar100',
                             '--config.download=False'],
                        r"^error: Dataset 'cifar100' .* is not prepared in "
                        r'data dir .*Prepared there: cifar10\.$'),
    'config_file_arg': ((), ['--config=configs/sconv.py:gpu'],
                        r'^error: flag --config=configs/sconv\.py:gpu: .*'
                        r"config argument 'gpu' is not valid; choose from: "
                        r'cpu'),
    'config_field': ((), ['--config.lamda=1e-6'],
                     r"^error: unknown config field 'lamda'"),
}


@pytest.fixture(scope='module')
def bad_cli_runs(tmp_path_factory):
  """All the bad command lines, started at once: each is mostly imports."""
  root = tmp_path_factory.mktemp('bad_cli')
  procs = {}
  for name, (env, extra, _) in _BAD_CLI.items():
    procs[name] = _start(root / name, *extra,
                         env=_env(**dict([env])) if env else None)
  return root, {name: _finish(proc) for name, proc in procs.items()}


@pytest.mark.parametrize('name', sorted(_BAD_CLI))
def test_cli_bad_input_is_one_line_and_touches_nothing(bad_cli_runs, name):
  root, runs = bad_cli_runs
  run = runs[name]
  assert run.returncode == 1
  ours = [line for line in run.stderr.splitlines()
          if line.strip() and not _IMPORT_NOISE.match(line)]
  assert len(ours) == 1, run.stderr
  assert re.search(_BAD_CLI[name][2], ours[0]), ours[0]
  assert not run.stdout
  assert not (root / name).exists()


# ----------------------------------------------------------------------------
# 6. A workdir belongs to one experiment.
# ----------------------------------------------------------------------------
def test_cli_refuses_a_workdir_of_another_config(reference, tmp_path):
  workdir = _copy(reference.workdir, tmp_path / 'run')
  before = _file_hashes(workdir)
  run = _run(workdir, '--config.learning_rate=0.05', '--config.seed=1')
  assert run.returncode == 1
  ours = [line for line in run.stderr.splitlines()
          if line.strip() and not _IMPORT_NOISE.match(line)]
  assert ours == [
      f'error: workdir {workdir} holds a run with another config: '
      'learning_rate (0.1 -> 0.05), seed (0 -> 1); use a new --workdir, or '
      'pass --allow_config_change to continue it anyway']
  assert _file_hashes(workdir) == before


def test_check_config_refuses_or_allows_a_change(tmp_path):
  config = sconv.get_config('cpu')
  workdir_lib.check_config(tmp_path, config)
  workdir_lib.check_config(tmp_path, config)  # Same config: fine.
  saved = (tmp_path / workdir_lib.CONFIG_FILE).read_text()
  changed = sconv.get_config('cpu')
  changed.alpha = config.alpha + 1
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match=rf'another config: alpha \({config.alpha} -> '
                           rf'{config.alpha + 1}\); use a new'):
    workdir_lib.check_config(tmp_path, changed)
  assert (tmp_path / workdir_lib.CONFIG_FILE).read_text() == saved
  workdir_lib.check_config(tmp_path, changed, allow_change=True)
  assert json.loads((tmp_path / workdir_lib.CONFIG_FILE).read_text())[
      'alpha'] == config.alpha + 1


# ----------------------------------------------------------------------------
# The console: our progress, not orbax's.
# ----------------------------------------------------------------------------
def test_reference_console_shows_progress_not_orbax(reference):
  stderr = reference.run.stderr
  assert re.search(r'[\d.]+ steps/s, 100\.0% \(78/78\), ETA', stderr)
  assert re.search(r'Step 78: test accuracy 0\.\d+', stderr)
  assert 'test accuracy: 0.' in reference.run.stdout
  # Orbax's per-save INFO flood is filtered out of the console.
  assert 'checkpoint_manager.py' not in stderr
  assert 'orbax' not in stderr.lower()
  assert reference.results['history'][-1]['step'] == NUM_STEPS


def test_console_filter_drops_orbax_info_only():
  from beta_lasso import main  # pylint: disable=g-import-not-at-top

  def record(pathname, level, name='absl'):
    return pylogging.LogRecord(name, level, pathname, 1, 'msg', (), None)

  orbax_file = os.path.join(os.path.dirname(ocp.__file__),
                            'checkpoint_manager.py')
  console = main._ConsoleFilter()  # pylint: disable=protected-access
  assert not console.filter(record(orbax_file, pylogging.INFO))
  assert console.filter(record(orbax_file, pylogging.WARNING))
  assert console.filter(record(train.__file__, pylogging.INFO))
  console.quiet = True
  assert not console.filter(record(train.__file__, pylogging.INFO))
  assert console.filter(record(train.__file__, pylogging.WARNING))
