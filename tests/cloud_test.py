"""launch.cloud's dry run: the SkyPilot tasks and commands of a fanned-out sweep."""

import shlex
import subprocess
import sys

import yaml

from launch import cloud
from launch import planning

REPO = cloud.REPO


def _dry_run(tmp_path, *args):
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'launch.cloud',
          '--dry_run',
          f'--task_dir={tmp_path}',
          *args,
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  commands = [
      shlex.split(line)
      for line in result.stdout.splitlines()
      if not line.startswith('#') and ' runs in ' not in line
  ]
  tasks = {
      p.stem: yaml.safe_load(p.read_text())
      for p in sorted(tmp_path.glob('*.yaml'))
  }
  return commands, tasks


def test_table2_on_three_v5e_vms(tmp_path):
  root = 'gs://bucket/sweeps/table 2 "final"'  # One argument all the same.
  commands, tasks = _dry_run(
      tmp_path,
      '--sweep=launch/sweeps/table2.py',
      f'--workdir_root={root}',
      '--accelerator=tpu-v5litepod-8',
      '--jobs=3',
  )
  names = [f'bl-table2-{i}-of-3' for i in (1, 2, 3)]
  assert commands[:3] == [
      [
          'sky',
          'jobs',
          'launch',
          '--name',
          name,
          '--yes',
          '--detach-run',
          str(tmp_path / f'{name}.yaml'),
      ]
      for name in names
  ]
  assert commands[3] == ['sky', 'jobs', 'queue']
  assert commands[4][1:] == [
      '-m',
      'launch.sweep',
      '--sweep=launch/sweeps/table2.py',
      '--config=configs/sfc_beta_lasso.py',
      f'--workdir_root={root}',
      '--summary_only',
      '--',
  ]
  assert len(commands) == 5
  for i, name in enumerate(names):
    task = tasks[name]
    assert task['resources'] == {
        'accelerators': 'tpu-v5litepod-8',
        'use_spot': True,
        'job_recovery': 'FAILOVER',
        'accelerator_args': {'runtime_version': cloud.TPU_RUNTIME},
    }
    assert "'jax[tpu]'" in task['setup']
    assert shlex.split(task['run']) == [
        'python3',
        '-m',
        'launch.sweep',
        '--sweep=launch/sweeps/table2.py',
        '--config=configs/sfc_beta_lasso.py',
        f'--workdir_root={root}',
        f'--shard={i}',
        '--num_shards=3',
        '--',
        '--jax_distributed',
    ]


def test_lambda_grid_on_a_v4_32_slice(tmp_path):
  commands, tasks = _dry_run(
      tmp_path,
      '--sweep=launch/sweeps/lambda_grid.py',
      '--workdir_root=gs://bucket/lambda_grid',
      '--accelerator=tpu-v4-32',
      '--jobs=1',
      '--nospot',
      '--',
      '--config.dataset=cifar100',
  )
  assert [c[:3] for c in commands] == [
      ['sky', 'jobs', 'launch'],
      ['sky', 'jobs', 'queue'],
      [sys.executable, '-m', 'launch.sweep'],
  ]
  (task,) = tasks.values()
  assert task['resources']['accelerators'] == 'tpu-v4-32'
  assert task['resources']['use_spot'] is False
  # All 50 runs in turn on the slice; every worker joins each run.
  assert shlex.split(task['run'])[-5:] == [
      '--shard=0',
      '--num_shards=1',
      '--',
      '--config.dataset=cifar100',
      '--jax_distributed',
  ]


def test_gpu_hosts_get_cuda_and_no_jax_distributed():
  runs = [planning.Run(f'r{i}', {}, f'gs://b/r{i}') for i in range(5)]
  tasks = cloud.plan_jobs(
      runs, 's.py', 'c.py', 'gs://b', 'H100:8', 2, [], 'bl', True
  )
  assert [t['name'] for t in tasks] == ['bl-1-of-2', 'bl-2-of-2']
  assert "'jax[cuda12]'" in tasks[0]['setup']
  assert 'accelerator_args' not in tasks[0]['resources']
  assert '--jax_distributed' not in tasks[1]['run']
  # Never more jobs than runs.
  assert (
      len(
          cloud.plan_jobs(
              runs, 's.py', 'c.py', 'gs://b', 'H100:1', 9, [], 'bl', True
          )
      )
      == 5
  )


def test_a_local_workdir_root_is_refused(tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'launch.cloud',
          '--dry_run',
          '--sweep=launch/sweeps/table2.py',
          f'--workdir_root={tmp_path}',
          '--accelerator=tpu-v5litepod-8',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode == 1
  assert (
      result.stderr.strip()
      .splitlines()[-1]
      .startswith(f'error: --workdir_root={tmp_path} must be a bucket')
  )


def test_sweep_runs_only_its_shard(tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'launch.sweep',
          '--dry_run',
          '--sweep=launch/sweeps/table2.py',
          f'--workdir_root={tmp_path}',
          '--shard=1',
          '--num_shards=2',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  workdirs = [
      a
      for line in result.stdout.splitlines()
      for a in shlex.split(line)
      if a.startswith('--workdir=')
  ]
  assert workdirs == [f'--workdir={tmp_path}/beta=1.0']
