"""`python -m beta_lasso.report` end to end on two tiny real runs."""

import pathlib
import subprocess
import sys

from cli_runs import saved_state
import numpy as np
import pytest

from beta_lasso import train
from beta_lasso.data import augmentation
from beta_lasso.metrics import locality
from beta_lasso.training import workdir as workdir_lib
from configs import study

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """{name: (workdir, results)}: 40 steps of S-FC at alpha 2, two ways."""
  root = tmp_path_factory.mktemp('report_runs')
  out = {}
  for name, overrides in (
      ('sfc_sgd', dict(study.SGD)),
      ('sfc_bl_permuted', dict(permute_pixels=True, l1_conv=1e-3)),
  ):
    config = study.get_config()
    config.update(
        dict(
            alpha=2,
            batch_size=128,
            num_epochs=0.1,
            eval_every_epochs=0.05,
            checkpoint_every_epochs=0.05,
            log_every_steps=10,
            **overrides,
        )
    )
    workdir = root / name
    out[name] = (workdir, train.train_and_evaluate(config, str(workdir)))
  return out


def test_every_eval_measures_locality(runs):
  for _, results in runs.values():
    assert len(results['history']) == 2
    for h in results['history']:
      assert {
          f'{m}/{s}/median'
          for m in locality.METRICS
          for s in ('active', 'all', 'null_active', 'null_all')
      } <= set(h['locality'])
    assert results['locality'] == results['history'][-1]['locality']
    assert results['train_examples'] == 50_000
    assert 0.15 < results['train_accuracy'] < 1  # Chance is 0.1.


def test_training_measures_locality_as_the_float64_reference(runs):
  """Each eval measures layer 1 on its devices in float32; on the host, in
  float64, the last checkpoint's kernel gives the same quartiles."""
  for workdir, results in runs.values():
    kernel = saved_state(workdir)['params']['layer1']['kernel']
    permutation = None
    if (workdir / workdir_lib.PERMUTATION_FILE).exists():
      permutation = np.load(workdir / workdir_lib.PERMUTATION_FILE)
    reference = locality.summarize(
        kernel, (32, 32, 3), pixel_permutation=permutation
    )
    assert results['locality'] == pytest.approx(reference, rel=1e-5)


def test_the_permutation_is_saved_and_restored(runs, tmp_path):
  workdir, _ = runs['sfc_bl_permuted']
  saved = np.load(workdir / workdir_lib.PERMUTATION_FILE)
  np.testing.assert_array_equal(
      saved, augmentation.pixel_permutation((32, 32, 3), seed=0)
  )
  # A workdir keeps the permutation it started with.
  other = np.arange(1024)[::-1]
  np.save(tmp_path / workdir_lib.PERMUTATION_FILE, other)
  np.testing.assert_array_equal(
      workdir_lib.pixel_permutation(tmp_path, saved), other
  )
  assert not (
      workdir.parent / 'sfc_sgd' / workdir_lib.PERMUTATION_FILE
  ).exists()


def test_report_tables_and_figures(runs, tmp_path):
  out = tmp_path / 'report'
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'beta_lasso.report',
          f'--workdirs={runs["sfc_sgd"][0]},{runs["sfc_sgd"][0].parent}/sfc_bl*',
          f'--out={out}',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = (out / 'report.md').read_text()
  for name, (_, results) in runs.items():
    assert f'| {100 * results["test_accuracy"]:.2f} |' in report, name
    window = results['locality']['window_share/active/median']
    null = results['locality']['window_share/null_active/median']
    assert f'{window:.3f} vs {null:.3f}' in report, name
  assert '| S-FC | SGD | image |' in report
  assert '| S-FC | β-LASSO β=50 | permuted |' in report
  for png in (
      'fig2_accuracy_vs_weights.png',
      'fig3_nonzeros.png',
      'fig_locality.png',
      'fig_accuracy.png',
      'fig4_filters_sfc_sgd.png',
      'fig4_filters_sfc_bl_permuted.png',
  ):
    assert (out / png).stat().st_size > 10_000, png
    assert f']({png})' in report, png
  assert not (out / 'fig5_resnet_kernels.png').exists()  # No ResNet18 run.


def test_no_matching_workdir_is_one_line(tmp_path):
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'beta_lasso.report',
          f'--workdirs={tmp_path}/nothing*',
          f'--out={tmp_path}/out',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )
  assert proc.returncode != 0
  assert (
      proc.stderr.strip()
      .splitlines()[-1]
      .startswith('error: no workdir with results.json or a checkpoint matches')
  )


def _results(model, optimizer, test_accuracy, weights, **config):
  return {
      'config': dict(model=model, optimizer=optimizer, **config),
      'test_accuracy': test_accuracy,
      'weights': {'layer1': weights},
      'history': [],
  }


def test_figure5_lines_per_optimizer_and_none_without_resnets(tmp_path):
  from beta_lasso.report import evidence  # pylint: disable=g-import-not-at-top

  runs = [
      _results('resnet18', opt, acc, 10, model_kwargs={'kernel_size': k})
      for opt, k, acc in (
          ('sgd', 3, 0.9),
          ('sgd', 7, 0.88),
          ('beta_lasso', 3, 0.91),
          ('beta_lasso', 7, 0.9),
      )
  ]
  fig = evidence.plot_resnet_kernels(
      runs + [_results('sfc', 'sgd', 0.5, 9)], tmp_path / 'fig5.png'
  )
  lines = {
      l.get_label(): (list(l.get_xdata()), list(l.get_ydata()))
      for l in fig.axes[0].get_lines()
  }
  assert lines == {
      'SGD': ([3, 7], [90.0, 88.0]),
      'β-LASSO': ([3, 7], [91.0, 90.0]),
  }
  assert (tmp_path / 'fig5.png').stat().st_size > 5_000
  assert evidence.plot_resnet_kernels(runs[:0], tmp_path / 'none.png') is None
  assert not (tmp_path / 'none.png').exists()


def test_figure2_joins_sizes_of_one_model(tmp_path):
  from beta_lasso.report import evidence  # pylint: disable=g-import-not-at-top

  runs = [
      _results('sconv', 'sgd', 0.7, 1_000_000, alpha=16),
      _results('sconv', 'sgd', 0.6, 100_000, alpha=4),
      _results('sfc', 'sgd', 0.65, 3_000_000, alpha=4),
  ]
  fig = evidence.plot_accuracy_vs_weights(runs, tmp_path / 'fig2.png')
  lines = {l.get_label(): list(l.get_xdata()) for l in fig.axes[0].get_lines()}
  assert lines == {
      'S-CONV, SGD': [100_000, 1_000_000],
      'S-FC, SGD': [3_000_000],
  }
