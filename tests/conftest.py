"""Test setup: real CIFAR-10 from the offline TFDS copy when one is beside the repo."""

import os
import pathlib

_SHARED_TFDS = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'tfds'

# Machines without internet read the shipped copy; elsewhere TFDS downloads by name.
if 'TFDS_DATA_DIR' not in os.environ and _SHARED_TFDS.is_dir():
  os.environ['TFDS_DATA_DIR'] = str(_SHARED_TFDS)
# TensorFlow only reads data here; keep its logging quiet.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# Imported once the environment above is set.
# pylint: disable=g-import-not-at-top,wrong-import-position
import json
import signal

from cli_runs import CHECKPOINT_EVERY
from cli_runs import NUM_STEPS
from cli_runs import Interrupter
from cli_runs import Reference
from cli_runs import finish_run
from cli_runs import saved_state
from cli_runs import start_run
import generated_datasets
import pytest

from beta_lasso.training import workdir as workdir_lib


# First: pytest-xdist reads the groups in its own hook of the same name.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  """Under pytest-xdist, one worker per file, and one for the shared runs.

  A file's module fixtures (trained models, loaded splits) are then computed
  once, and the files that use the session's runs below share one worker, so
  those runs train once.
  """
  shared = {item.path for item in items if 'first_runs' in item.fixturenames}
  for item in items:
    group = 'first_runs' if item.path in shared else item.path.name
    item.add_marker(pytest.mark.xdist_group(group))


# ----------------------------------------------------------------------------
# Shared runs, once a session: one uninterrupted, one SIGKILLed after its
# first checkpoint, one SIGTERMed after its second. They start together: on 2
# cores each spends most of its time importing and decoding CIFAR-10 on one
# thread.
# ----------------------------------------------------------------------------
@pytest.fixture(scope='session')
def first_runs(tmp_path_factory) -> dict:
  root = tmp_path_factory.mktemp('runs')
  runs = {'reference': start_run(root / 'reference')}
  for name, min_step, signum in (
      ('killed', 1, signal.SIGKILL),
      # Two checkpoints: the corruption test needs an older one to go to.
      ('preempted', 2 * CHECKPOINT_EVERY, signal.SIGTERM),
  ):
    runs[name] = Interrupter(
        start_run(root / name), root / name, min_step, signum
    )
  runs['root'] = root
  return runs


@pytest.fixture(scope='session')
def reference(first_runs) -> Reference:
  workdir = first_runs['root'] / 'reference'
  run = finish_run(first_runs['reference'])
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((workdir / workdir_lib.RESULTS_FILE).read_text())
  assert results['steps'] == NUM_STEPS
  return Reference(workdir, run, results, saved_state(workdir))


@pytest.fixture(scope='session')
def generated_data_dir(tmp_path_factory) -> str:
  """A TFDS data dir holding `generated_datasets.SHAPES` (~2 s to write)."""
  data_dir = tmp_path_factory.mktemp('tfds')
  generated_datasets.build(str(data_dir))
  return str(data_dir)
