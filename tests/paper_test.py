"""launch/paper.py: the paper's queue, window by window, carried on from packed files."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import tarfile
import time

from cli_runs import IGNORE_UNFINISHED_RESTORES
from cli_runs import checkpoint_steps
from cli_runs import child_env
from compact_test import small_data_file
import pytest

from launch import packing
from launch import paper
from launch import recipe

pytestmark = IGNORE_UNFINISHED_RESTORES

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_queue_is_the_issues_order_with_the_papers_recipe():
  assert [row.name for row in paper.QUEUE] == [
      'table2_beta50',
      'table1_sconv',
      'table1_slocal',
      'table1_sfc',
      'table1_3fc',
      'table1_dconv',
      'table1_dlocal',
      'table1_dfc',
      'table2_beta0',
      'table2_beta1',
      'table2_sgd',
  ]
  planned = paper.plan('/r', paper.QUEUE, recipe_overrides=recipe.recipe())
  by_name = {row.name: (run, config) for row, run, config in planned}
  run, config = by_name['table2_beta50']
  assert config.optimizer == 'beta_lasso' and config.beta == 50.0
  assert config.alpha == 150 and config.num_epochs == 4000.0
  assert config.val_split == 'train[45000:]' and config.batch_size == 512
  assert run.overrides == {
      'augment': 'fast_autoaugment',
      'half_precision': True,
      'device_loop': True,
      'checkpoint_every_epochs': 400.0,
      'compact_dir': '/r/table2_beta50.compact',
  }
  assert by_name['table2_beta0'][0].overrides['beta'] == 0.0
  for name in ('table1_sconv', 'table1_sfc', 'table1_3fc', 'table1_dfc'):
    run, config = by_name[name]
    assert config.num_epochs == 400.0 and config.momentum == 0.9
    assert 'compact_dir' not in run.overrides  # Momentum does not travel.
  assert by_name['table2_sgd'][1].num_epochs == 4000.0


def test_a_dense_run_starts_only_when_it_fits(monkeypatch, tmp_path):
  # S-FC, then S-CONV, whose rate no table holds.
  planned = paper.plan(
      str(tmp_path),
      [paper.QUEUE[3], paper.QUEUE[1]],
      recipe_overrides=recipe.recipe(),
  )
  started = []
  monkeypatch.setattr(
      paper.sweep_lib,
      'execute',
      lambda runs, *a, **k: started.append(runs[0].name)
      or {runs[0].name: 'done'},
  )
  campaign = packing.empty_campaign()
  # 400 epochs of 87 steps: 34,800 steps, 348 s at 100 steps/s.
  outcomes = paper.run_window(
      planned,
      [],
      campaign,
      deadline=time.time() + 400,
      given_rates={'table1_sfc': 100.0},
      startup_seconds=30,
  )
  assert started == ['table1_sfc']
  assert outcomes['table1_sconv'] == 'not started: no steps/s known'
  started.clear()
  outcomes = paper.run_window(
      planned,
      [],
      packing.empty_campaign(),
      deadline=time.time() + 300,
      given_rates={'table1_sfc': 100.0, 'table1_sconv': 1e6},
      startup_seconds=30,
  )
  assert outcomes['table1_sfc'].startswith('not started: needs about 378 s')
  assert started == ['table1_sconv'] and outcomes['table1_sconv'] == 'done'


def _command(root, out, budget, *extra) -> list[str]:
  return [
      sys.executable,
      '-m',
      'launch.paper',
      f'--workdir_root={root / out}',
      f'--out={root / out}_packed',
      f'--budget={budget}',
      '--pack_seconds=2',
      '--startup_seconds=5',
      '--only=table2_beta50,table1_dfc',
      '--alpha=1',
      '--epochs=60',
      '--eval_every_epochs=30',
      '--augment=crop_flip',
      '--half_precision=false',
      '--steps_per_second=table1_dfc=0.01',
      *extra,
      '--',
      f'--config.data_file={root / "data.npz"}',
      '--config.batch_size=128',
      '--config.eval_batch_size=128',
      '--config.train_split=train[:896]',
      '--config.val_split=train[896:]',
      '--config.log_every_steps=42',
  ]


def _campaign(root, out, budget, *extra):
  proc = subprocess.run(
      _command(root, out, budget, *extra),
      cwd=REPO,
      env=child_env(),
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc, root / f'{out}_packed'


def _held_until_the_budget(root, out, budget):
  """A window whose run is held (SIGSTOP) from its first checkpoint until the
  budget is spent, so the stop comes from the budget at any machine speed."""
  workdir = root / out / 'table2_beta50'
  log = root / f'{out}.out'
  with open(log, 'w') as stdout, open(root / f'{out}.err', 'w') as stderr:
    proc = subprocess.Popen(
        _command(root, out, budget),
        cwd=REPO,
        env=child_env(),
        text=True,
        stdout=stdout,
        stderr=stderr,
    )
  held = None
  deadline = time.monotonic() + 300
  while proc.poll() is None and time.monotonic() < deadline:
    if held is None and checkpoint_steps(workdir):
      # The run's process, as its workdir lock names it.
      held = int((workdir / 'lock').read_text().split()[0])
      os.kill(held, signal.SIGSTOP)
    if held is not None and 'Time limit reached' in log.read_text():
      os.kill(held, signal.SIGCONT)  # It finds the SIGTERM waiting.
      held = 0
    time.sleep(0.05)
  assert proc.wait(300) == 0, (root / f'{out}.err').read_text()[-3000:]
  assert held == 0, 'the run never reached its first checkpoint'
  return log.read_text(), root / f'{out}_packed'


def test_stops_at_the_budget_and_carries_on_elsewhere(tmp_path):
  small_data_file(tmp_path / 'data.npz')
  # 60 epochs of 7 steps, a checkpoint every 42.
  stdout, packed = _held_until_the_budget(tmp_path, 'window1', 40)
  assert 'Time limit reached' in stdout
  assert 'table2_beta50: stopped' in stdout
  assert 'table1_dfc: not started' in stdout
  files = sorted(p for p in packed.rglob('*') if p.is_file())
  assert len(files) <= packing.MAX_FILES
  assert all(p.stat().st_size <= packing.MAX_FILE_BYTES for p in files)
  campaign = json.loads((packed / packing.CAMPAIGN_FILE).read_text())
  step = campaign['runs']['table2_beta50']['step']
  assert 0 < step < 420
  assert (packed / 'compact_table2_beta50' / 'compact.json').exists()

  # A fresh directory, as on the next machine, with only the packed files.
  second, packed2 = _campaign(
      tmp_path, 'window2', 300, f'--resume_from={packed}'
  )
  assert f'restored from {packed}/compact_table2_beta50 at step' in (
      second.stdout
  )
  assert 'Resumed from step ' in second.stderr
  assert 'table2_beta50: finished, test accuracy' in second.stdout
  # D-FC's momentum cannot travel: at 0.01 steps/s it never fits.
  assert 'table1_dfc: not started: needs about' in second.stdout
  campaign = json.loads((packed2 / packing.CAMPAIGN_FILE).read_text())
  entry = campaign['runs']['table2_beta50']
  assert entry['status'] == 'finished' and entry['results']['steps'] == 420
  assert entry['config_json']['beta'] == 50.0
  assert len(campaign['windows']) == 2
  assert not (packed2 / 'compact_table2_beta50').exists()
  with tarfile.open(packed2 / packing.FIGURES_FILE) as tar:
    assert tar.getnames() == ['table2_beta50/fig4_filters.png']
  # The stored runs that the report reads.
  stored = packing.unpack(packed2, tmp_path / 'stored')
  assert stored == [str(tmp_path / 'stored' / 'table2_beta50')]
  for name in ('results.json', 'config.json', 'fig4_filters.png'):
    assert (tmp_path / 'stored' / 'table2_beta50' / name).exists()


@pytest.mark.parametrize(
    'flags, message',
    [
        (['--only=table9'], '--only: unknown rows table9'),
        (['--steps_per_second=table1_sfc'], "'table1_sfc' is not ROW=RATE"),
    ],
)
def test_bad_flags_fail_in_one_line(tmp_path, flags, message):
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'launch.paper',
          f'--workdir_root={tmp_path}/r',
          f'--out={tmp_path}/o',
          *flags,
      ],
      cwd=REPO,
      env=child_env(),
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )
  assert proc.returncode == 1
  assert message in proc.stderr.strip().splitlines()[-1]
  assert not (tmp_path / 'o').exists()


def test_results_table_sets_ours_beside_the_paper():
  campaign = {
      'runs': {
          'table2_beta50': {
              'status': 'finished',
              'results': {
                  'test_accuracy_at_best_val': 0.8412,
                  'test_accuracy': 0.8398,
                  'wall_seconds': 1500.0,
              },
          },
          'table1_sconv': {'status': 'unfinished', 'step': 12_345},
      },
      'windows': [{'device': 'NVIDIA H200'}],
  }
  lines = packing.results_table(campaign, paper.QUEUE).splitlines()
  assert len(lines) == 2 + len(paper.QUEUE)
  assert lines[2] == (
      '| Table 2, beta-LASSO beta 50 | `configs/sfc_beta_lasso.py` | 4000 |'
      ' 85.19 | 84.12 | 83.98 | -1.07 | 25.0 min | NVIDIA H200 |'
  )
  assert '| not finished (step 12,345) |' in lines[3]
  assert lines[4].endswith('| 81.52 | queued | – | – | – | NVIDIA H200 |')
