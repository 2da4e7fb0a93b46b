"""Two processes of one run on this machine's CPU (launch.local, jax.distributed).

A tiny S-FC with its big kernels sharded over a 'model' axis of 2 devices:
one process of 4 fake devices, and 2 processes of 2 fake devices each, the
same (data 2, model 2) mesh and global batch. The 2-process run is then cut
back to its first checkpoint and run again.
"""

import json
import shutil
import subprocess
import sys

from cli_runs import REPO
from cli_runs import TIMEOUT
from cli_runs import assert_bitwise_equal
from cli_runs import child_env
from cli_runs import saved_state
import jax
import numpy as np
import pytest

from beta_lasso.metrics import locality
from beta_lasso.training import workdir as workdir_lib
from launch import local

# 4 steps of 64 images, a checkpoint every 2; small splits keep the evals short.
ARGS = (
    '--config=configs/sfc.py:cpu',
    '--config.alpha=1',
    '--config.batch_size=64',
    '--config.num_epochs=0.125',
    '--config.checkpoint_every_epochs=0.0625',
    '--config.eval_every_epochs=0.125',
    '--config.learning_rate=0.02',
    '--config.train_split=train[:2048]',
    '--config.eval_split=test[:512]',
    '--config.mesh_model=2',
    '--config.shard_min_weights=1000',
)


def _launch(workdir, num_processes, devices_per_process):
  return subprocess.Popen(
      [
          sys.executable,
          '-m',
          'launch.local',
          f'--num_processes={num_processes}',
          f'--devices_per_process={devices_per_process}',
          f'--process_log_dir={workdir}.logs',
          '--',
          *ARGS,
          f'--workdir={workdir}',
      ],
      cwd=REPO,
      env=child_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )


def _wait(proc):
  try:
    out, _ = proc.communicate(timeout=TIMEOUT)
  except subprocess.TimeoutExpired:
    proc.kill()  # launch.local kills its processes when it is killed...
    proc.communicate()
    raise
  assert proc.returncode == 0, out[-3000:]
  return out


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('multiprocess')
  one = _launch(root / 'one', 1, 4)
  two = _launch(root / 'two', 2, 2)
  outputs = {'one': _wait(one), 'two': _wait(two)}
  # Resume: the 2-process run, cut back to its first checkpoint.
  resumed = root / 'resumed'
  shutil.copytree(root / 'two', resumed)
  shutil.rmtree(resumed / 'checkpoints' / '4')
  (resumed / workdir_lib.RESULTS_FILE).unlink()
  outputs['resumed'] = _wait(_launch(resumed, 2, 2))
  return root, outputs


def _results(workdir):
  return json.loads((workdir / workdir_lib.RESULTS_FILE).read_text())


def test_two_processes_follow_the_one_process_trajectory(runs):
  root, _ = runs
  one, two = _results(root / 'one'), _results(root / 'two')
  assert one['steps'] == two['steps'] == 4
  # Same mesh, same global batch: only where the float sums run differs.
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      saved_state(root / 'one'),
      saved_state(root / 'two'),
  )
  assert two['test_accuracy'] == pytest.approx(one['test_accuracy'], abs=0.01)
  assert two['nnz'] == one['nnz']
  # Layer 1's locality, measured on the devices of both processes as the
  # kernel is sharded there: the host's float64 numbers for the saved kernel.
  kernel = saved_state(root / 'two')['params']['layer1']['kernel']
  assert two['locality'] == pytest.approx(
      locality.summarize(kernel, (32, 32, 3)), rel=1e-5
  )


def test_two_processes_write_each_file_once(runs):
  root, outputs = runs
  workdir = root / 'two'
  # One step folder per checkpoint; its arrays in one file per process.
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == [
      '2',
      '4',
  ]
  state_files = {p.name for p in (workdir / 'checkpoints/4/state').iterdir()}
  assert {'ocdbt.process_0', 'ocdbt.process_1'} <= state_files
  assert len(list(workdir.glob('events.out.tfevents*'))) == 1
  assert _results(workdir)['history'][-1]['step'] == 4
  # Only process 0 prints to the launcher's terminal.
  assert outputs['two'].count('test accuracy:') == 1


def test_two_processes_resume_where_they_stopped(runs):
  root, outputs = runs
  assert (
      'Resumed from step 2'
      in (root / 'resumed.logs' / 'process_1.log').read_text()
  )
  assert_bitwise_equal(saved_state(root / 'resumed'), saved_state(root / 'two'))
  assert (
      _results(root / 'resumed')['test_accuracy']
      == _results(root / 'two')['test_accuracy']
  )
  del outputs


def test_launcher_passes_each_process_its_id():
  argvs = local.commands(['--workdir=/tmp/a b'], 2, 1234, python='python')
  assert argvs[1] == [
      'python',
      '-m',
      'beta_lasso.main',
      '--workdir=/tmp/a b',
      '--coordinator_address=localhost:1234',
      '--num_processes=2',
      '--process_id=1',
  ]
  env = local.environment(3)
  assert '--xla_force_host_platform_device_count=3' in env['XLA_FLAGS']
