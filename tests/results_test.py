"""The results record reads the results.json files of every version."""

import json
import math
import pathlib

import pytest

from beta_lasso.training import results as results_lib
from beta_lasso.training import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
# Written before best_*, wall_seconds_last, dataset and an eval's times.
STORED = sorted((REPO / 'results').glob(f'**/{workdir_lib.RESULTS_FILE}'))


def test_stored_results_are_read_and_written_back_unchanged():
  assert len(STORED) > 10
  for path in STORED:
    saved = json.loads(path.read_text())
    record = results_lib.Results.load(path.parent)
    assert record.workdir == str(path.parent) and record.finished
    written = record.to_json()
    # Fields added since are None; the rest as saved.
    assert {k: v for k, v in written.items() if k not in saved} == {
        k: None for k in written if k not in saved
    }
    assert json.dumps({k: written[k] for k in saved}, sort_keys=True) == (
        json.dumps(saved, sort_keys=True)
    ), path
    assert record.history[-1].epoch is None  # Not kept then.


def test_fields_name_what_the_keys_named():
  path = REPO / 'results/study_cpu/model=sfc,beta=50.0/results.json'
  saved = json.loads(path.read_text())
  record = results_lib.Results.from_json(saved)
  assert record.test_accuracy == saved['test_accuracy']
  assert record.locality.window_share.null_active.median == (
      saved['locality']['window_share/null_active/median']
  )
  assert record.locality.spread.active.q25 == (
      saved['locality']['spread/active/q25']
  )
  assert record.locality.active_units == saved['locality']['active_units']
  assert record.history[-1].nnz == saved['history'][-1]['nnz']
  assert record.best_step is None and record.test_accuracy_at_best_val is None
  assert record.config['model'] == 'sfc'


def test_a_run_without_locality_and_an_unfinished_one():
  path = (
      REPO / 'results/study_cpu/model=sconv,permute_pixels=True,'
      'optimizer=sgd/results.json'
  )
  record = results_lib.Results.load(path.parent)
  assert record.locality is None
  assert all(h.locality is None for h in record.history)
  assert record.to_json()['locality'] is None
  # What loading.load_results gives of a run still going.
  history = [
      {'step': 5, 'test_accuracy': 0.2, 'test_loss': 2.1, 'nnz': {'layer1': 9}},
      {
          'step': 10,
          'test_accuracy': 0.3,
          'test_loss': 2.0,
          'nnz': {'layer1': 8},
          'val_accuracy': 0.25,
          'val_loss': 2.05,
      },
  ]
  partial = results_lib.as_results(
      {
          'config': {'model': 'sfc'},
          'history': history,
          'weights': {'layer1': 10},
          'workdir': '/runs/a',
      }
  )
  assert not partial.finished and partial.steps is None
  assert partial.workdir == '/runs/a'
  assert partial.last('test_accuracy') == 0.3
  assert partial.last('nnz') == {'layer1': 8}
  assert partial.last('locality') is None
  assert [h.to_json() for h in partial.history] == history
  assert results_lib.as_results(partial) is partial


def test_missing_results_and_a_torn_file(tmp_path):
  assert results_lib.Results.load(tmp_path) is None
  (tmp_path / workdir_lib.RESULTS_FILE).write_text('{"test_acc')
  with pytest.raises(ValueError):
    results_lib.Results.load(tmp_path)


def test_unmeasured_quartiles_are_none_and_nan_survives():
  flat = {
      'units': 4.0,
      'active_units': 0.0,
      'window_share/active/median': float('nan'),
  }
  loc = results_lib.Locality.from_json(flat)
  assert math.isnan(loc.window_share.active.median)
  assert loc.window_share.active.q25 is None and loc.ipr.null_all.q75 is None
  assert loc.to_json().keys() == flat.keys()
