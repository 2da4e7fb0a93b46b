"""launch/full_scale.py end to end at a tiny alpha on real CIFAR-10."""

import pathlib
import re
import subprocess
import sys

import pytest

from launch import full_scale

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_runs_are_table2s_rows_at_the_papers_size():
  (bl_config, bl), (sgd_config, sgd) = full_scale.runs(
      '/r/', alpha=150, epochs=4000, batch_size=512, half_precision=True
  )
  assert (bl_config, bl.workdir) == (
      'configs/sfc_beta_lasso.py',
      '/r/beta_lasso',
  )
  assert (sgd_config, sgd.workdir) == ('configs/sfc.py', '/r/sgd')
  common = {
      'alpha': 150,
      'num_epochs': 4000.0,
      'batch_size': 512,
      'half_precision': True,
      'device_loop': True,
      'eval_every_epochs': 400.0,
      'checkpoint_every_epochs': 400.0,
  }
  # Only beta-LASSO's state compacts: SGD's momentum is dense.
  assert bl.overrides == {**common, 'compact_dir': '/r/beta_lasso.compact'}
  assert sgd.overrides == common


def test_dense_flops_per_image_is_six_per_weight_four_in_the_first_layer():
  # S-FC at alpha 150: 1.30 GFLOP per image forward and backward.
  weights = {'layer1': 117_964_800, 'fc1': 138_240_000, 'head': 36_000}
  assert full_scale.dense_flops_per_image(weights, 'layer1') == (
      4 * 117_964_800 + 6 * (138_240_000 + 36_000)
  )


def test_throughput_is_between_the_first_and_last_timed_eval():
  history = [
      {'step': 10, 'epoch': 1.0, 'wall_seconds': 30.0, 'eval_seconds': 9.0},
      {'step': 20, 'epoch': 2.0, 'wall_seconds': 32.0, 'eval_seconds': 0.5},
      {'step': 40, 'epoch': 4.0, 'wall_seconds': 36.0, 'eval_seconds': 1.0},
  ]
  # The first eval's time is before the interval; the others' are taken out.
  assert full_scale.throughput(history) == (30, 3.0, 4.5)
  assert full_scale.throughput(history[:1]) is None


def test_end_to_end_at_a_tiny_alpha(tmp_path):
  run = subprocess.run(
      [
          sys.executable,
          '-m',
          'launch.full_scale',
          f'--workdir_root={tmp_path}',
          '--alpha=1',
          '--epochs=1',
          '--half_precision=false',
          '--',
          '--config.train_split=train[:2048]',
          '--config.val_split=train[-512:]',
          '--config.eval_split=test[:512]',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  # The report follows the runs' own output.
  out = run.stdout[run.stdout.index('Device: ') :]
  # Both rows trained their four steps (2048 / 512) and were evaluated.
  for name in ('beta_lasso', 'sgd'):
    assert re.search(
        rf'^{name}: finished at epoch 1 of 1, test accuracy ' r'0\.\d{4}$',
        out,
        re.M,
    ), out
  assert (
      len(re.findall(r'best validation accuracy 0\.\d{4} at epoch', out)) == 2
  ), out
  assert (
      len(
          re.findall(
              r'epochs/s, [\d,]+ images/s, .* \(MFU [\d.]+% of ' r'measured\)',
              out,
          )
      )
      == 2
  ), out
  # beta-LASSO's layer 1 lost weights in four steps; SGD's kept them all.
  layer1 = re.findall(r'layer1: +([\d,]+) / +([\d,]+) non-zero', out)
  (bl_nnz, total), (sgd_nnz, sgd_total) = [
      tuple(int(x.replace(',', '')) for x in pair) for pair in layer1
  ]
  assert total == sgd_total == 3 * 32 * 32 * 256
  assert bl_nnz < total and sgd_nnz == total
  # beta-LASSO's compact copy, written at each of its checkpoints.
  assert re.search(
      r'^  compact copy at step 4: [\d.]+ MiB in \d+ files$', out, re.M
  ), out
  assert (tmp_path / 'beta_lasso.compact' / 'compact.json').exists()


@pytest.mark.parametrize(
    'flag, message',
    [
        ('--epochs=0', '--epochs=0 must be positive'),
        ('--time_limit=-1', '--time_limit=-1 must be positive'),
    ],
)
def test_bad_flags_fail_in_one_line(tmp_path, flag, message):
  run = subprocess.run(
      [
          sys.executable,
          '-m',
          'launch.full_scale',
          f'--workdir_root={tmp_path / "runs"}',
          flag,
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )
  assert run.returncode == 1
  assert message in run.stderr.strip().splitlines()[-1]
  assert not (tmp_path / 'runs').exists()
