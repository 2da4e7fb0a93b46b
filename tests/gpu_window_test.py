"""launch/gpu_window.sh end to end, tiny, on the CPU: what an accelerator
window runs must not first fail on one."""

import json
import os
import subprocess
import tarfile

from cli_runs import REPO
from cli_runs import child_env
import pytest

from beta_lasso.data import data_file

_JPEG_BUNDLE = REPO.parent / 'shared' / 'data' / 'cifar10_jpeg.npz'


def _window(env: dict, out) -> str:
  """Runs the window script; its log, once it exited 0."""
  run = subprocess.run(
      ['bash', 'launch/gpu_window.sh'],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  log = (out / 'window.log').read_text()
  assert run.returncode == 0, log[-3000:]
  return log


@pytest.mark.skipif(
    not _JPEG_BUNDLE.exists(), reason='needs the shared CIFAR-10 JPEG bundle'
)
def test_window_profiles_then_runs_the_campaign(tmp_path):
  out = tmp_path / 'out'
  # The window carries the bundle packed (launch/README.md).
  packed = tmp_path / 'cifar10_jpeg.npz'
  data_file.pack_jpeg_bundle(str(_JPEG_BUNDLE), str(packed))
  env = child_env(
      OUT=str(out),
      WINDOW_SECONDS='300',
      DATA_FILE=str(packed),
      WHEELS=str(tmp_path / 'no_wheels'),
      RESUME_FROM=str(tmp_path / 'no_earlier_window'),
      WORKDIR_ROOT=str(tmp_path / 'runs'),
      PROFILE_ARGS=(
          '--alpha=1 --batch_size=64 --profile_steps=2 '
          '--steps_per_dispatch=2 --timed_blocks=1'
      ),
      PAPER_ARGS=(
          '--alpha=1 --epochs=0.25'
          ' --eval_every_epochs=0.25 --only=table2_beta50 --augment=crop_flip'
          ' --nohalf_precision --startup_seconds=5'
      ),
  )
  log = _window(env, out)
  files = [p for p in out.rglob('*') if p.is_file()]
  assert len(files) <= 8  # What a window can bring back.
  profile = json.loads((out / 'profile.json').read_text())
  assert profile['alpha'] == 1 and profile['step_ms'] > 0
  with tarfile.open(out / 'trace.tar.gz') as trace:
    assert any(n.endswith('.xplane.pb') for n in trace.getnames())
  campaign = json.loads((out / 'paper' / 'campaign.json').read_text())
  assert campaign['runs']['table2_beta50']['status'] == 'finished'
  assert 'campaign rc=0' in log
  assert os.path.getsize(out / 'trace.tar.gz') < 16 * 2**20

  # A later window: no profile, the campaign carries on from what came back.
  later = tmp_path / 'later'
  env.update(
      OUT=str(later), PROFILE_SECONDS='0', RESUME_FROM=str(out / 'paper')
  )
  log = _window(env, later)
  assert '== profile' not in log and not (later / 'profile.json').exists()
  campaign = json.loads((later / 'paper' / 'campaign.json').read_text())
  assert campaign['runs']['table2_beta50']['status'] == 'finished'
  assert len(campaign['windows']) == 2, campaign['windows']
