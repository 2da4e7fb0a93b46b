"""Compact checkpoints: a beta-LASSO run carried on from a few files, bit for bit."""

import json
import pathlib
import signal
import subprocess
import sys

from cli_runs import IGNORE_UNFINISHED_RESTORES
from cli_runs import Interrupter
from cli_runs import assert_bitwise_equal
from cli_runs import checkpoint_steps
from cli_runs import child_env
from cli_runs import saved_state
from cli_runs import untimed
import jax
import numpy as np
import pytest

from beta_lasso import compact
from beta_lasso.data import data_file
from beta_lasso.data import input_pipeline
from beta_lasso.training import checkpointing
from beta_lasso.training import validation
from configs import sfc

pytestmark = IGNORE_UNFINISHED_RESTORES

REPO = pathlib.Path(__file__).resolve().parents[1]
_JPEG_BUNDLE = REPO.parent / 'shared' / 'data' / 'cifar10_jpeg.npz'
# 4 epochs of 7 batches of 128: 28 steps, a checkpoint and an eval (test and
# validation) every 7, so the best-validation record moves during the run.
# Permuted pixels: the copy must carry the permutation too.
NUM_STEPS = 28
HALF = 14


def small_data_file(path: pathlib.Path) -> pathlib.Path:
  """1,024 training and 256 test images of real CIFAR-10 as a data file."""
  if _JPEG_BUNDLE.exists():  # Decodes only these images: under a second.
    load = lambda split: data_file.load_split(str(_JPEG_BUNDLE), split)
  else:
    load = lambda split: input_pipeline.load_split('cifar10', split)
  data_file.write(
      str(path), {'train': load('train[:1024]'), 'test': load('test[:256]')}
  )
  return path


def run_args(data_file) -> list[str]:
  return [
      '--config=configs/sfc_beta_lasso.py:cpu',
      '--config.alpha=1',
      '--config.batch_size=128',
      '--config.eval_batch_size=128',
      '--config.num_epochs=4',
      '--config.eval_every_epochs=1',
      '--config.checkpoint_every_epochs=1',
      '--config.train_split=train[:896]',
      '--config.val_split=train[896:]',
      '--config.permute_pixels=True',
      '--config.log_every_steps=7',
      f'--config.data_file={data_file}',
  ]


def _python(*args, timeout=300) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, *args],
      cwd=REPO,
      env=child_env(),
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
  )


def _start(args, workdir: pathlib.Path) -> subprocess.Popen:
  """Starts a run; its output goes to WORKDIR.out and WORKDIR.err."""
  log = workdir.parent / workdir.name
  with open(f'{log}.out', 'w') as stdout, open(f'{log}.err', 'w') as stderr:
    proc = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'beta_lasso.main',
            *args,
            f'--workdir={workdir}',
        ],
        cwd=REPO,
        env=child_env(),
        text=True,
        stdout=stdout,
        stderr=stderr,
    )
  proc.log = log  # Where cli_runs' helpers read it.
  return proc


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """An uninterrupted run (writing compact copies) and one stopped halfway."""
  root = tmp_path_factory.mktemp('compact')
  args = run_args(small_data_file(root / 'data.npz'))
  reference = _start(
      [*args, f'--config.compact_dir={root / "loop_copy"}'], root / 'reference'
  )
  stopped = Interrupter(
      _start(args, root / 'stopped'), root / 'stopped', HALF, signal.SIGTERM
  )
  assert reference.wait(300) == 0, (root / 'reference.err').read_text()[-3000:]
  stopped.result()
  return {'root': root, 'args': args}


def test_a_run_stopped_halfway_carries_on_from_its_copy_bit_for_bit(
    runs, tmp_path
):
  root = runs['root']
  stopped = root / 'stopped'
  step = checkpoint_steps(stopped)[-1]
  assert HALF <= step < NUM_STEPS
  copy = tmp_path / 'copy'
  # Small files, so that the kernels are cut across several of them.
  limit = 200_000
  out = _python(
      '-m',
      'beta_lasso.compact',
      f'--workdir={stopped}',
      f'--out={copy}',
      f'--max_file_bytes={limit}',
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'Wrote {copy}: step {step}: non-zeros' in out.stdout
  files = sorted(p.name for p in copy.iterdir())
  assert compact.MANIFEST in files and len(files) > 3
  assert max((copy / f).stat().st_size for f in files) <= limit

  # A fresh directory elsewhere, as on another machine.
  workdir = tmp_path / 'elsewhere' / 'run'
  out = _python(
      '-m', 'beta_lasso.compact', f'--restore={copy}', f'--workdir={workdir}'
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'Restored {workdir} at step {step}' in out.stdout
  assert (workdir / 'pixel_permutation.npy').exists()
  out = _python('-m', 'beta_lasso.main', *runs['args'], f'--workdir={workdir}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'Resumed from step {step} of {NUM_STEPS}' in out.stderr

  reference = root / 'reference'
  assert_bitwise_equal(saved_state(workdir), saved_state(reference))
  results, expected = [
      json.loads((d / 'results.json').read_text()) for d in (workdir, reference)
  ]
  for key in (
      'test_accuracy',
      'test_loss',
      'nnz',
      'steps',
      'best_step',
      'best_val_accuracy',
      'test_accuracy_at_best_val',
      'train_accuracy',
  ):
    assert results[key] == expected[key], key
  assert untimed(results['history']) == untimed(expected['history'])


def test_the_loop_writes_a_copy_at_each_checkpoint(runs):
  root = runs['root']
  sizes = compact.read_sizes(root / 'reference')
  assert [s['step'] for s in sizes] == [7, 14, 21, 28]
  assert all(s['bytes'] > 0 and s['files'] >= 2 for s in sizes)
  # The last copy is the final checkpoint, and rebuilds it exactly.
  manifest, tree, permutation = compact.read(root / 'loop_copy')
  assert manifest['step'] == NUM_STEPS
  assert_bitwise_equal(jax.device_get(tree), saved_state(root / 'reference'))
  np.testing.assert_array_equal(
      permutation, np.load(root / 'reference' / 'pixel_permutation.npy')
  )
  assert manifest['files'][compact.SIZES_FILE].count('\n') == 4
  assert sizes[-1]['nnz']['params/layer1/kernel'] < 3 * 32 * 32 * 256


def _state(rng, momentum: bool):
  kernel = rng.normal(size=(300, 200)).astype(np.float32)
  kernel[rng.random(kernel.shape) < 0.9] = 0.0
  kernel[0, :3] = [-0.0, np.nan, np.inf]  # Kept as their bits.
  params = {
      'fc1': {
          'kernel': kernel,
          'bias': rng.normal(size=(200,)).astype(np.float32),
      }
  }
  opt_state = [{'inner_state': None}, {'count': np.asarray(5, np.int32)}]
  if momentum:
    opt_state = [{'trace': jax.tree.map(np.zeros_like, params)}]
  return {
      'step': np.asarray(5, np.int32),
      'params': params,
      'batch_stats': {
          'bn1': {
              'mean': np.zeros(4, np.float32),
              'var': np.ones(4, np.float32),
          }
      },
      'opt_state': opt_state,
  }


def _workdir(tmp_path, state, config) -> pathlib.Path:
  workdir = tmp_path / 'run'
  with checkpointing.Checkpointer(workdir / 'checkpoints', 2) as checkpoints:
    checkpoints.save(
        5, state, [{'step': 5, 'val_accuracy': 0.5}], {'config': config}
    )
  (workdir / 'config.json').write_text(json.dumps(config))
  return workdir


def test_arrays_are_cut_across_files_and_read_back_exactly(tmp_path):
  state = _state(np.random.default_rng(0), momentum=False)
  workdir = _workdir(tmp_path, state, {'optimizer': 'beta_lasso'})
  manifest = compact.compact(
      workdir, tmp_path / 'copy', max_file_bytes=2**16 + 20_000
  )
  assert len(manifest['files_written']) > 3
  kernel = next(l for l in manifest['leaves'] if l['name'].endswith('kernel'))
  assert kernel['encoding'] == 'nonzeros'
  assert kernel['nnz'] == np.count_nonzero(
      state['params']['fc1']['kernel'].view(np.uint32)
  )
  # Compacting again replaces the copy as a whole.
  compact.compact(workdir, tmp_path / 'copy', max_file_bytes=2**20)
  restored = compact.restore(tmp_path / 'copy', tmp_path / 'again')
  assert restored['best_step'] == 5
  assert_bitwise_equal(saved_state(tmp_path / 'again'), state)
  with pytest.raises(compact.CompactError, match='already holds checkpoints'):
    compact.restore(tmp_path / 'copy', tmp_path / 'again')


def test_sgd_with_momentum_is_refused_in_one_line(tmp_path):
  state = _state(np.random.default_rng(1), momentum=True)
  workdir = _workdir(tmp_path, state, {'optimizer': 'sgd', 'momentum': 0.9})
  out = _python(
      '-m',
      'beta_lasso.compact',
      f'--workdir={workdir}',
      f'--out={tmp_path / "copy"}',
  )
  assert out.returncode == 1
  lines = out.stderr.strip().splitlines()
  assert lines[-1].startswith(
      'error: refused: the optimizer state holds ' '60,200 numbers in 2 arrays'
  ), out.stderr
  assert 'optimizer sgd, momentum 0.9' in lines[-1]
  assert 'no compact copy is smaller than the checkpoint' in lines[-1]
  assert 'Traceback' not in out.stderr
  assert not (tmp_path / 'copy').exists()
  # The loop refuses the field before training.
  config = sfc.get_config('cpu')
  config.compact_dir = str(tmp_path / 'copy')
  with pytest.raises(validation.ConfigError, match='momentum buffer is dense'):
    compact.check_config(config)
