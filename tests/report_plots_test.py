"""Figures 3 and 4: from a tiny real S-FC beta-LASSO run and known kernels."""

import json
import pathlib
import shutil
import subprocess
import sys

import jax.numpy as jnp
from matplotlib import image as mpl_image
import numpy as np
import pytest

from beta_lasso import train
from beta_lasso.models import local
from beta_lasso.report import evidence
from beta_lasso.report import figures
from beta_lasso.report import filters as filters_lib
from beta_lasso.report import plots
from beta_lasso.training import loading
from configs import sfc_beta_lasso

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(workdir, results) of 20 steps of S-FC at alpha 2 with beta-LASSO."""
  workdir = tmp_path_factory.mktemp('sfc_beta_lasso')
  config = sfc_beta_lasso.get_config('cpu')
  config.alpha = 2
  config.num_epochs = 0.05  # 20 steps of 128 images.
  config.eval_every_epochs = 0.02  # Evals at steps 8, 16 and 20.
  config.l1_conv = 1e-3  # Large enough to zero much of layer 1 in 20 steps.
  config.batch_size = 128
  results = train.train_and_evaluate(config, str(workdir))
  return workdir, results


def _png_shape(path: pathlib.Path) -> tuple[int, int]:
  assert path.stat().st_size > 0, path
  return mpl_image.imread(path).shape[:2]


def _pixels(inches: float) -> int:
  return int(round(inches * figures.DPI))


def test_cli_writes_every_figure(run, tmp_path):
  workdir, results = run
  # A second run to compare with: SGD leaves every weight non-zero. It has
  # results.json but no checkpoint, so it gets no Figure 4.
  sgd = tmp_path / 'sfc_sgd'
  sgd.mkdir()
  config = dict(results['config'], optimizer='sgd')
  history = [dict(h, nnz=results['weights']) for h in results['history']]
  (sgd / 'results.json').write_text(
      json.dumps(
          dict(results, config=config, history=history, nnz=results['weights'])
      )
  )
  out = tmp_path / 'figures'

  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'beta_lasso.report.plots',
          f'--workdir={workdir}',
          f'--workdir={sgd}',
          f'--out={out}',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]

  panel_w, panel_h = plots.PANEL_SIZE
  # One panel per layer: layer1, fc1, head.
  assert _png_shape(out / 'fig3_nonzeros.png') == (
      _pixels(panel_h),
      _pixels(3 * panel_w),
  )
  assert _png_shape(out / 'fig_accuracy.png') == (
      _pixels(panel_h),
      _pixels(2 * panel_w),
  )
  # 32 filters in 4 rows of 8.
  tile_w, tile_h = filters_lib.TILE_SIZE
  assert _png_shape(out / f'fig4_filters_{workdir.name}.png') == (
      _pixels(4 * tile_h + filters_lib.TITLE_HEIGHT),
      _pixels(8 * tile_w),
  )
  assert not (out / 'fig4_filters_sfc_sgd.png').exists()
  assert 'Skipping Figure 4' in proc.stderr
  # It prints what it wrote, one path a line, and wrote nothing else.
  printed = sorted(pathlib.Path(line).name for line in proc.stdout.split())
  assert (
      printed
      == sorted(p.name for p in out.iterdir())
      == sorted(
          [
              'fig3_nonzeros.png',
              'fig_accuracy.png',
              f'fig4_filters_{workdir.name}.png',
          ]
      )
  )


def test_load_params_reads_the_final_layer1(run):
  workdir, results = run
  params = loading.load_params(workdir)
  assert set(params) >= {'layer1', 'fc1', 'head'}
  kernel = params['layer1']['kernel']
  assert isinstance(kernel, np.ndarray)
  # 32 * 32 * 3 pixels to 16 * 16 * alpha units.
  assert kernel.shape == (3072, 2 * 256)
  assert np.count_nonzero(kernel) == results['nnz']['layer1']
  # Only the layer asked for is read.
  only = loading.load_params(workdir, layers=['layer1'])
  assert list(only) == ['layer1']
  np.testing.assert_array_equal(only['layer1']['kernel'], kernel)
  with pytest.raises(KeyError, match='layer9'):
    loading.load_params(workdir, layers=['layer9'])


def test_load_results_of_an_unfinished_run(run, tmp_path):
  workdir, results = run
  unfinished = tmp_path / 'unfinished'
  shutil.copytree(workdir, unfinished)
  (unfinished / 'results.json').unlink()
  partial = loading.load_results(unfinished)
  # The history and config saved with the checkpoint; weights from its shapes.
  assert partial['history'] == results['history']
  assert partial['weights'] == results['weights']
  assert partial['config']['model'] == 'sfc'
  assert partial['config']['beta'] == results['config']['beta']
  assert 'epochs' not in partial


def test_plot_nonzeros_marks_sconv_and_slocal_counts(run, tmp_path):
  _, results = run
  fig = plots.plot_nonzeros([results], tmp_path / 'fig3.png')
  layer1_ax = fig.axes[0]
  assert layer1_ax.get_title().startswith('layer1')
  levels = {
      line.get_label(): line.get_ydata()[0] for line in layer1_ax.get_lines()
  }
  # 243 alpha and (32 / 2)^2 * 243 alpha at alpha = 2.
  assert levels['S-CONV layer 1, α=2: 486'] == 486
  assert levels['S-LOCAL layer 1, α=2: 124,416'] == 124_416
  # The run's line starts dense at step 0 and ends at the final count.
  (run_line,) = [
      line
      for line in layer1_ax.get_lines()
      if line.get_label().startswith('S-FC')
  ]
  assert run_line.get_ydata()[0] == results['weights']['layer1']
  assert run_line.get_ydata()[-1] == results['nnz']['layer1']
  assert run_line.get_xdata()[-1] == pytest.approx(results['epochs'])


def test_s_family_references_match_the_paper():
  # Figure 3 at alpha 150: S-CONV 36,450 and S-LOCAL 9.33M in layer 1.
  assert plots.s_family_references(150) == {
      'S-CONV': 36_450,
      'S-LOCAL': 9_331_200,
  }


def _local_kernel(image_shape, units, size=3, seed=0):
  """Columns with a size x size x C patch of non-zeros at a known place."""
  h, w, c = image_shape
  rng = np.random.default_rng(seed)
  kernel = np.zeros((h, w, c, units), np.float32)
  corners = []
  for unit in range(units):
    row, col = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    kernel[row : row + size, col : col + size, :, unit] = rng.choice(
        [-1, 1], (size, size, c)
    ) * rng.uniform(0.5, 2, (size, size, c))
    corners.append((row, col))
  return kernel.reshape(h * w * c, units), corners


def test_plot_filters_draws_each_filter_where_it_is(tmp_path):
  image_shape = (8, 10, 3)
  kernel, corners = _local_kernel(image_shape, units=40)
  # Six units with 5 non-zeros: below the threshold of 20, never drawn.
  sparse = [3, 7, 11, 20, 31, 39]
  for unit in sparse:
    column = kernel[:, unit].copy()
    kernel[:, unit] = 0
    keep = np.flatnonzero(column)[:5]
    kernel[keep, unit] = column[keep]
  grid = filters_lib.plot_filters(
      kernel,
      image_shape,
      tmp_path / 'filters.png',
      num_filters=12,
      columns=5,
      seed=1,
  )

  units, _ = filters_lib.select_units(
      np.count_nonzero(kernel, axis=0), 12, seed=1
  )
  assert not set(units) & set(sparse)
  assert grid.shape == (3, 5) + image_shape
  for i, unit in enumerate(units):
    tile = grid[i // 5, i % 5]
    weights = kernel[:, unit].reshape(image_shape)
    row, col = corners[unit]
    expected = np.zeros(image_shape, bool)
    expected[row : row + 3, col : col + 3] = True
    # Zero is mid-grey; the weights' signs are kept; the largest is at 0 or 1.
    np.testing.assert_array_equal(tile != 0.5, expected)
    np.testing.assert_array_equal(tile > 0.5, weights > 0)
    assert np.abs(tile - 0.5).max() == pytest.approx(0.5)
  # The three tiles past the 12th are empty (white).
  assert (grid[2, 2:] == 1).all()
  assert _png_shape(tmp_path / 'filters.png') == (
      _pixels(3 * filters_lib.TILE_SIZE[1] + filters_lib.TITLE_HEIGHT),
      _pixels(5 * filters_lib.TILE_SIZE[0]),
  )


def test_select_units_falls_back_to_the_densest():
  nonzeros = np.array([25, 3, 19, 40, 0, 18, 2])
  units, note = filters_lib.select_units(nonzeros, 4, min_nonzeros=20)
  np.testing.assert_array_equal(units, [0, 2, 3, 5])
  assert 'only 2 units' in note
  units, note = filters_lib.select_units(nonzeros, 2, min_nonzeros=10, seed=3)
  assert set(units) <= {0, 2, 3, 5} and len(units) == 2
  assert 'at random' in note


def test_first_layer_filters_of_conv_local_and_fc():
  rng = np.random.default_rng(0)
  conv = rng.normal(size=(9, 9, 3, 4)).astype(np.float32)
  filters, shape, units = filters_lib.first_layer_filters(conv, 'sconv')
  assert (shape, units) == ((9, 9, 3), (4,))
  np.testing.assert_array_equal(filters[:, 2].reshape(shape), conv[..., 2])

  # A local layer that tiles the conv has the conv's filter at every position.
  tiled = np.asarray(local.tile_conv_kernel(jnp.asarray(conv), (16, 16)))
  filters, shape, units = filters_lib.first_layer_filters(tiled, 'slocal')
  assert (shape, units) == ((9, 9, 3), (16, 16, 4))
  by_unit = filters.reshape(9, 9, 3, 16, 16, 4)
  np.testing.assert_array_equal(
      by_unit, np.broadcast_to(conv[:, :, :, None, None, :], by_unit.shape)
  )

  dense = rng.normal(size=(3072, 16 * 16 * 4)).astype(np.float32)
  filters, shape, units = filters_lib.first_layer_filters(dense, 'sfc')
  assert (shape, units) == ((32, 32, 3), (16, 16, 4))
  assert filters is dense
  with pytest.raises(ValueError, match='expected'):
    filters_lib.first_layer_filters(dense, 'sfc', image_shape=(28, 28, 1))
  with pytest.raises(ValueError, match='resnet18'):
    filters_lib.first_layer_filters(conv, 'resnet18')


# ----------------------------------------------------------------------------
# Faceting, on the stored GPU study: 18 runs, two sizes, two families.
# ----------------------------------------------------------------------------
@pytest.fixture(scope='module')
def gpu_study():
  return [
      loading.load_results(str(w))
      for w in sorted((REPO / 'results' / 'study_gpu').glob('alpha*/*'))
  ]


def _run_lines(ax):
  """The lines of `ax` that are runs: with markers, unlike references, nulls
  and totals (and the legend's empty entries)."""
  return [
      l
      for l in ax.get_lines()
      if l.get_marker() not in (None, 'None', '') and len(l.get_xdata())
  ]


def test_facets_split_by_family_and_size(gpu_study):
  assert len(gpu_study) == 18
  rows = plots.facets(gpu_study)
  assert [title for title, _ in rows] == [
      'S family, α=4',
      'S family, α=16',
      '3-FC, width 1024',
  ]
  assert [len(i) for _, i in rows] == [8, 8, 2]
  # More than max_series runs are cut into parts.
  parts = plots.facets(gpu_study, max_series=5)
  assert [t for t, _ in parts][:2] == [
      'S family, α=4 (1/2)',
      'S family, α=4 (2/2)',
  ]
  assert all(len(i) <= 5 for _, i in parts)


def test_fig3_one_row_per_facet_at_most_8_distinct_series(gpu_study, tmp_path):
  fig = plots.plot_nonzeros(gpu_study, tmp_path / 'fig3.png')
  panels = [ax for ax in fig.axes if ax.axison]
  # Rows of 3 layer panels each (S: layer1, fc1, head; 3-FC: fc1, fc2, head).
  assert [ax.get_title().split(' ')[0] for ax in panels] == [
      'layer1',
      'fc1',
      'head',
      'layer1',
      'fc1',
      'head',
      'fc1',
      'fc2',
      'head',
  ]
  for ax in panels:
    lines = _run_lines(ax)
    assert 1 <= len(lines) <= plots.MAX_SERIES
    styles = [
        (l.get_color(), str(l.get_linestyle()), l.get_marker()) for l in lines
    ]
    assert len({s[0] for s in styles}) == len(lines)  # Distinct colours.
  # S-CONV and S-LOCAL counts at each row's own alpha, on its layer1 panel.
  references = [
      {
          l.get_label()
          for l in ax.get_lines()
          if l.get_label().startswith(('S-CONV layer', 'S-LOCAL layer'))
      }
      for ax in panels[:6:3]
  ]
  assert references == [
      {'S-CONV layer 1, α=4: 972', 'S-LOCAL layer 1, α=4: 248,832'},
      {'S-CONV layer 1, α=16: 3,888', 'S-LOCAL layer 1, α=16: 995,328'},
  ]
  # One model and optimizer looks the same at both sizes.
  by_label = {
      l.get_label(): l.get_color() for ax in panels[:6] for l in _run_lines(ax)
  }
  assert (
      by_label['S-FC, β-LASSO β=50, α=4']
      == by_label['S-FC, β-LASSO β=50, α=16']
  )


def test_locality_leaves_out_layers_local_by_construction(gpu_study, tmp_path):
  fig = evidence.plot_locality(gpu_study, tmp_path / 'locality.png')
  panels = [ax for ax in fig.axes if ax.axison]
  assert len(panels) == 3 * 2  # Three facets, window share and spread.
  for ax in panels:
    labels = [l.get_label() for l in _run_lines(ax)]
    assert 1 <= len(labels) <= plots.MAX_SERIES
    assert not any(
        label.startswith(('S-CONV,', 'S-LOCAL,')) for label in labels
    )


def test_fig2_panels_per_family_with_the_papers_accuracies(gpu_study, tmp_path):
  fig = evidence.plot_accuracy_vs_weights(gpu_study, tmp_path / 'fig2.png')
  s_panel, fc_panel = fig.axes
  assert s_panel.get_title() == 'S family' and fc_panel.get_title() == '3-FC'
  assert len(_run_lines(s_panel)) == 8
  # Table 1's S-CONV at 400 and 4000 epochs, and Table 2's beta-LASSO rows.
  points = {tuple(p) for c in s_panel.collections for p in c.get_offsets()}
  assert {
      (138_312_450, 84.14),
      (138_312_450, 87.05),
      (256_240_800, 85.19),
  } <= points
