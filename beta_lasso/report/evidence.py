"""The report's figures beyond Figures 3 and 4: 2, 5 and locality over training.

Each takes the results of runs (see `loading.load_run`) and writes a PNG
through matplotlib's Agg canvas, like plots.py.
"""
from collections.abc import Sequence

from matplotlib import figure as mpl_figure

from beta_lasso.report import figures
from beta_lasso.report import plots
from beta_lasso.training import results as results_lib

# Locality panels: (metric, axis label, log scale).
_LOCALITY_PANELS = (
    ('window_share', 'energy share in the best 9x9 window', False),
    ('spread', 'spread: RMS distance from centroid (px)', False),
)


def _total(counts: dict[str, int]) -> int:
  return int(sum(counts.values()))


def _line_plot(lines: dict[str, list[tuple[float, float]]], size):
  """One panel, one line of (x, y) points per label, points sorted by x."""
  fig, axes = plots.new_panels(1, 1, size)
  ax = axes[0][0]
  for i, (label, points) in enumerate(sorted(lines.items())):
    points = sorted(points)
    ax.plot([p[0] for p in points], [p[1] for p in points], marker='o',
            **plots.run_style(i), label=label)
  return fig, ax


def plot_accuracy_vs_weights(results_list: Sequence[results_lib.ResultsLike],
                             path) -> mpl_figure.Figure:
  """Figure 2: test accuracy against weights, one line per model and optimizer.

  Runs that differ only in size (alpha, width, kernel) join one line.
  """
  lines: dict[str, list[tuple[int, float]]] = {}
  for results in map(results_lib.as_results, results_list):
    label = figures.run_label(results.config, size=False)
    lines.setdefault(label, []).append(
        (_total(results.weights), 100 * results.test_accuracy))
  fig, ax = _line_plot(lines, (6.4, 4.2))
  ax.set_xscale('log')
  ax.set_xlabel('weights')
  ax.set_ylabel('test accuracy (%)')
  ax.grid(True, which='both', alpha=0.3)
  ax.legend(fontsize=7, loc='best')
  fig.suptitle('Figure 2: test accuracy against weights', fontsize=11)
  figures.save(fig, path)
  return fig


def plot_resnet_kernels(results_list: Sequence[results_lib.ResultsLike],
                        path) -> mpl_figure.Figure | None:
  """Figure 5: ResNet18 test accuracy against kernel size, per optimizer.

  Returns:
    The figure, or None (nothing written) when no run is a ResNet18.
  """
  lines: dict[str, list[tuple[int, float]]] = {}
  for results in map(results_lib.as_results, results_list):
    config = results.config
    if config.get('model') != 'resnet18':
      continue
    kernel = config.get('model_kwargs', {}).get('kernel_size', 3)
    label = ('β-LASSO' if config.get('optimizer') == 'beta_lasso'
             else config.get('optimizer', '?').upper())
    lines.setdefault(label, []).append(
        (kernel, 100 * results.test_accuracy))
  if not lines:
    return None
  fig, ax = _line_plot(lines, (5.2, 3.8))
  ax.set_xlabel('kernel size k')
  ax.set_ylabel('test accuracy (%)')
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  fig.suptitle('Figure 5: ResNet18 with k x k kernels', fontsize=11)
  figures.save(fig, path)
  return fig


def plot_locality(results_list: Sequence[results_lib.ResultsLike], path, *,
                  subset: str = 'active') -> mpl_figure.Figure | None:
  """Locality of the first layer over training, each run against its null.

  One panel per metric (window share, spread): the median over units with a
  solid line and a band between the quartiles, the same weights under a
  random pixel permutation (the null) dashed.

  Args:
    results_list: results whose eval history holds 'locality'.
    path: where the PNG goes.
    subset: 'active' (units with >= 20 non-zeros) or 'all'.

  Returns:
    The figure, or None (nothing written) when no run measured locality.
  """
  runs = [r for r in map(results_lib.as_results, results_list)
          if any(h.locality for h in r.history)]
  if not runs:
    return None
  to_x, x_label = plots.x_values(runs, 'epoch')
  labels = plots.run_labels(runs, None)
  # A last panel holds the legend, which would hide the curves of many runs.
  fig, axes = plots.new_panels(1, len(_LOCALITY_PANELS) + 1, (5.0, 3.8))
  for ax, (metric, y_label, log) in zip(axes[0], _LOCALITY_PANELS):
    for i, (results, label) in enumerate(zip(runs, labels)):
      history = [h for h in results.history if h.locality]
      x = [to_x[i](h.step) for h in history]
      measured = [getattr(h.locality, metric) for h in history]
      units = [getattr(m, subset) for m in measured]
      null = [getattr(m, f'null_{subset}') for m in measured]
      style = plots.run_style(i)
      color = style['color']
      ax.plot(x, [u.median for u in units], **style, marker='.', label=label)
      ax.fill_between(x, [u.q25 for u in units], [u.q75 for u in units],
                      color=color, alpha=0.15)
      ax.plot(x, [n.median for n in null], color=color, linestyle='--',
              linewidth=1)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if log:
      ax.set_yscale('log')
    ax.grid(True, alpha=0.3)
  axes[0][0].plot([], [], color='k', linestyle='--', linewidth=1,
                  label='null: the same weights, pixels permuted')
  plots.legend_panel(axes[0][-1], [axes[0][0]])
  which = ('units with ≥ 20 non-zeros' if subset == 'active' else 'all units')
  fig.suptitle(f'First-layer locality over training (median and quartiles '
               f'over {which})', fontsize=11)
  figures.save(fig, path)
  return fig
