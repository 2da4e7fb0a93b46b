"""The device loop (`config.device_loop`) trains exactly as the host path does.

A tiny S-FC (alpha 1) on the first 512 images of real CIFAR-10: 8 steps of 64
per epoch, 3 epochs, a log every 5 steps, an eval every 12, a checkpoint every
8, so blocks of the device loop end at each of them.
"""

import json
import shutil

from cli_runs import IGNORE_UNFINISHED_RESTORES
from cli_runs import assert_bitwise_equal
from cli_runs import checkpoint_steps
from cli_runs import saved_state
from cli_runs import untimed
import numpy as np
import pytest

from beta_lasso import train
from beta_lasso.training import device_loop
from beta_lasso.training import workdir as workdir_lib
from beta_lasso.training import writers
from configs import sfc

pytestmark = IGNORE_UNFINISHED_RESTORES

NUM_STEPS = 24
STOPS = (5, 12, 8)  # Log, eval and checkpoint periods of _config().
# The device loop's blocks at 4 steps per dispatch: cut at 4 and 20 by the
# block size, everywhere else by a log, eval or checkpoint step.
BLOCKS = [
    (0, 4),
    (4, 5),
    (5, 8),
    (8, 10),
    (10, 12),
    (12, 15),
    (15, 16),
    (16, 20),
    (20, 24),
]


def _config(device: bool, steps_per_dispatch: int = 4):
  config = sfc.get_config('cpu')
  config.update(
      dict(
          alpha=1,
          batch_size=64,
          eval_batch_size=100,
          train_split='train[:512]',
          # 250 and 512 examples: both evaluations end with a partial batch.
          eval_split='test[:250]',
          num_epochs=3.0,
          log_every_steps=5,
          eval_every_epochs=1.5,
          checkpoint_every_epochs=1.0,
          device_loop=device,
          steps_per_dispatch=steps_per_dispatch,
      )
  )
  return config


def _train(config, workdir):
  """train_and_evaluate, its metrics in workdir/metrics.jsonl."""
  with pytest.MonkeyPatch.context() as patch:
    # The JSON-lines writer, as on a host without TensorFlow: readable here.
    patch.setattr(writers, 'metric_writers', None)
    return train.train_and_evaluate(config, str(workdir))


def _train_scalars(workdir):
  """{step: train metrics} of metrics.jsonl."""
  records = [
      json.loads(line)
      for line in (workdir / writers.METRICS_FILE).read_text().splitlines()
  ]
  return {
      r['step']: {k: v for k, v in r.items() if k.startswith('train_')}
      for r in records
      if 'train_loss' in r
  }


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('device_loop')
  return {
      name: (root / name, _train(_config(device), root / name))
      for name, device in (('host', False), ('device', True))
  }


def test_blocks_end_at_every_log_eval_and_checkpoint_step():
  blocks, step = [], 0
  while step < NUM_STEPS:
    end = device_loop.block_end(step, NUM_STEPS, 4, STOPS)
    blocks.append((step, end))
    step = end
  assert blocks == BLOCKS
  assert device_loop.block_end(20, 23, 100, STOPS) == 23  # The last step.


def test_device_loop_follows_the_host_path_bit_for_bit(runs):
  # Same batches (one data order), same augmentation keys and the same
  # compiled step: on CPU nothing differs, not even the last bit.
  (host_dir, host), (device_dir, device) = runs['host'], runs['device']
  assert host['steps'] == device['steps'] == NUM_STEPS
  assert_bitwise_equal(saved_state(device_dir), saved_state(host_dir))
  for key in (
      'test_accuracy',
      'test_loss',
      'train_accuracy',
      'train_loss',
      'nnz',
  ):
    assert device[key] == host[key], key
  assert untimed(device['history']) == untimed(host['history'])
  assert [h['step'] for h in device['history']] == [12, 24]
  assert checkpoint_steps(device_dir) == [16, 24]
  # Metrics fetched once a block are logged at the host path's steps, with
  # the host path's values.
  scalars = _train_scalars(device_dir)
  assert sorted(scalars) == [5, 8, 10, 12, 15, 16, 20, 24]
  assert scalars == _train_scalars(host_dir)


def test_device_loop_resumes_bit_identical_in_other_blocks(runs, tmp_path):
  reference_dir, reference = runs['device']
  workdir = tmp_path / 'run'
  shutil.copytree(reference_dir, workdir)
  shutil.rmtree(workdir / 'checkpoints' / str(NUM_STEPS))
  (workdir / workdir_lib.RESULTS_FILE).unlink()
  # Blocks of 3 from step 16 cut other places than the uninterrupted run's;
  # steps_per_dispatch is not part of the experiment, so no config error.
  results = _train(_config(True, steps_per_dispatch=3), workdir)
  assert_bitwise_equal(saved_state(workdir), saved_state(reference_dir))
  for key in ('test_accuracy', 'test_loss', 'train_loss'):
    assert results[key] == reference[key], key
  assert untimed(results['history']) == untimed(reference['history'])


def test_check_finite_names_the_first_bad_step_of_a_block():
  metrics = {'loss': np.ones(6), 'param_norm': np.ones(6)}
  metrics['loss'][4] = np.inf
  metrics['param_norm'][3] = np.nan
  with pytest.raises(
      train.DivergenceError,
      match=r'^non-finite param_norm \(nan\) at step 14; the '
      r'last good checkpoint in WORKDIR is kept$',
  ):
    train._check_finite(metrics, 10, 'WORKDIR')  # pylint: disable=protected-access
  metrics['param_norm'][3] = 1.0
  with pytest.raises(train.DivergenceError, match=r'loss \(inf\) at step 15;'):
    train._check_finite(metrics, 10, 'WORKDIR')  # pylint: disable=protected-access
