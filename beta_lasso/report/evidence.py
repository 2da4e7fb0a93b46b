"""The report's figures beyond Figures 3 and 4: 2, 5 and locality over training.

Each takes the results of runs (see `loading.load_run`) and writes a PNG
through matplotlib's Agg canvas, like plots.py.
"""

from collections.abc import Sequence
import functools
from typing import Any

from matplotlib import figure as mpl_figure

from beta_lasso import models
from beta_lasso.models import sizes
from beta_lasso.report import figures
from beta_lasso.report import plots
from beta_lasso.training import results as results_lib

# Locality panels: (metric, axis label, log scale).
_LOCALITY_PANELS = (
    ('window_share', 'energy share in the best 9x9 window', False),
    ('spread', 'spread: RMS distance from centroid (px)', False),
)


@functools.cache
def paper_cifar10() -> dict[str, tuple[int, dict[int, float]]]:
  """The paper's CIFAR-10 test accuracies at its sizes, for Figure 2.

  Keyed by the run label without size (`figures.run_label(config,
  size=False)`), from the registry's `paper_cifar10`; the weights are the true
  counts at the paper's sizes: D-LOCAL's 11.7M, not Table 1's misprinted
  3.42M (README, Sizes).
  """
  out = {}
  for name, spec in models.MODELS.items():
    if spec.paper_cifar10:
      weights = sizes.weight_count(name, sizes.paper_size(name))
      for optimizer, accuracies in spec.paper_cifar10.items():
        out[f'{spec.display_name}, {optimizer}'] = (weights, dict(accuracies))
  return out


_PAPER_MARKERS = {400: 'o', 4000: '*'}


def _paper_marker(epochs: int, color) -> dict[str, Any]:
  """A ring at 400 epochs, a star at 4000: apart from the runs' markers."""
  if epochs == 400:
    return {
        'marker': 'o',
        's': 90,
        'facecolors': 'none',
        'edgecolors': color,
        'linewidths': 1.8,
    }
  return {
      'marker': '*',
      's': 160,
      'color': color,
      'edgecolors': 'k',
      'linewidths': 0.6,
  }


def _total(counts: dict[str, int]) -> int:
  return int(sum(counts.values()))


def _line_plot(lines: dict[str, list[tuple[float, float]]], size):
  """One panel, one line of (x, y) points per label, points sorted by x."""
  fig, axes = plots.new_panels(1, 1, size)
  ax = axes[0][0]
  for i, (label, points) in enumerate(sorted(lines.items())):
    points = sorted(points)
    ax.plot(
        [p[0] for p in points],
        [p[1] for p in points],
        **plots.run_style(i),
        label=label,
    )
  return fig, ax


def plot_accuracy_vs_weights(
    results_list: Sequence[results_lib.ResultsLike], path
) -> mpl_figure.Figure:
  """Figure 2: test accuracy against weights, one panel per family.

  In each panel one line per model and optimizer (runs that differ only in
  size join one line), in the same colour as the paper's accuracy for it at
  the paper's size (Tables 1 and 2, CIFAR-10 runs only): a ring at 400
  epochs, a star at 4000. The paper's points are scatter markers, not lines.
  """
  panels: dict[Any, tuple[str, dict[str, list[tuple[int, float]]]]] = {}
  datasets = set()
  for results in map(results_lib.as_results, results_list):
    config = results.config
    key, _ = plots.facet_of(config)
    name = plots.family(config.get('model', '?'))
    lines = panels.setdefault(key[:2], (name, {}))[1]
    lines.setdefault(figures.run_label(config, size=False), []).append(
        (_total(results.weights), 100 * results.test_accuracy)
    )
    datasets.add(config.get('dataset'))
  order = sorted(panels)
  styles = {}  # One colour per label across panels.
  for key in order:
    for label in sorted(panels[key][1]):
      styles.setdefault(label, plots.run_style(len(styles)))
  fig, axes = plots.new_panels(1, len(order), (5.6, 4.4))
  paper = datasets == {'cifar10'}
  for ax, key in zip(axes[0], order):
    name, lines = panels[key]
    for label in sorted(lines):
      points = sorted(lines[label])
      ax.plot(
          [p[0] for p in points],
          [p[1] for p in points],
          **styles[label],
          label=label,
      )
      if paper and label in paper_cifar10():
        weights, accuracies = paper_cifar10()[label]
        for epochs, accuracy in accuracies.items():
          ax.scatter(
              [weights],
              [accuracy],
              zorder=3,
              **_paper_marker(epochs, styles[label]['color']),
          )
    if paper:
      for epochs in _PAPER_MARKERS:
        ax.scatter(
            [],
            [],
            label=f'paper, {epochs} epochs',
            **_paper_marker(epochs, '0.4'),
        )
    ax.set_xscale('log')
    ax.set_xlabel('weights')
    ax.set_title(name, fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7, loc='best')
  axes[0][0].set_ylabel('test accuracy (%)')
  fig.suptitle(
      'Figure 2: test accuracy against weights'
      + (
          ", and the paper's at its sizes (rings: 400 epochs, stars: 4000)"
          if paper
          else ''
      ),
      fontsize=11,
  )
  figures.save(fig, path)
  return fig


def plot_resnet_kernels(
    results_list: Sequence[results_lib.ResultsLike], path
) -> mpl_figure.Figure | None:
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
    label = figures.optimizer_label(config, beta=False)
    lines.setdefault(label, []).append((kernel, 100 * results.test_accuracy))
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


def _local_by_construction(model: str) -> bool:
  """Whether each unit of the model's first layer sees one k x k patch."""
  spec = models.MODELS.get(model)
  return bool(
      spec and spec.first_layer and spec.first_layer.kind in ('conv', 'local')
  )


def plot_locality(
    results_list: Sequence[results_lib.ResultsLike],
    path,
    *,
    subset: str = 'active',
) -> mpl_figure.Figure | None:
  """Locality of the first layer over training, each run against its null.

  One row of panels per family and size (`plots.facets`), one panel per
  metric (window share, spread): per run the median over units, and in the
  same colour, thin and dotted, the same weights under a random pixel
  permutation (the null). Runs whose first layer is a convolution or a
  locally connected layer are left out: every unit there sees one 9x9 patch,
  so their window share is 1 by construction, drawn as a line instead. With
  at most two runs in a row the quartiles over units are drawn as bands.

  Args:
    results_list: results whose eval history holds 'locality'.
    path: where the PNG goes.
    subset: 'active' (units with >= 20 non-zeros) or 'all'.

  Returns:
    The figure, or None (nothing written) when no run measured locality of a
    layer that can be non-local.
  """
  runs = [
      r
      for r in map(results_lib.as_results, results_list)
      if any(h.locality for h in r.history)
      and not _local_by_construction(r.config.get('model'))
  ]
  if not runs:
    return None
  to_x, x_label = plots.x_values(runs, 'epoch')
  labels = plots.run_labels(runs, None)
  styles = plots.series_styles(runs)
  rows = plots.facets(runs)
  fig, axes = plots.new_panels(len(rows), len(_LOCALITY_PANELS) + 1, (5.0, 3.6))
  for axes_row, (title, indices) in zip(axes, rows):
    axes_row = list(axes_row)
    for ax, (metric, y_label, log) in zip(axes_row, _LOCALITY_PANELS):
      for i in indices:
        history = [h for h in runs[i].history if h.locality]
        x = [to_x[i](h.step) for h in history]
        measured = [getattr(h.locality, metric) for h in history]
        units = [getattr(m, subset) for m in measured]
        ax.plot(
            x,
            [u.median for u in units],
            **styles[i],
            markersize=4,
            label=labels[i],
        )
        if len(indices) <= 2:
          ax.fill_between(
              x,
              [u.q25 for u in units],
              [u.q75 for u in units],
              color=styles[i]['color'],
              alpha=0.15,
          )
        ax.plot(
            x,
            [getattr(m, f'null_{subset}').median for m in measured],
            color=styles[i]['color'],
            linestyle=':',
            linewidth=1.2,
        )
      if metric == 'window_share':
        ax.axhline(1.0, color='k', linestyle='--', linewidth=1)
      ax.set_xlabel(x_label)
      ax.set_title(y_label, fontsize=9)
      if log:
        ax.set_yscale('log')
      ax.grid(True, alpha=0.3)
    axes_row[0].plot(
        [],
        [],
        color='0.4',
        linestyle=':',
        linewidth=1.2,
        label='null: same weights, pixels permuted',
    )
    axes_row[0].plot(
        [],
        [],
        color='k',
        linestyle='--',
        linewidth=1,
        label='S-CONV / S-LOCAL: 1 by construction',
    )
    # The legend's own panel: two metrics leave no free corner for it.
    plots.legend_panel(axes_row[-1], [axes_row[0]])
    axes_row[0].set_ylabel(title, fontsize=9)
  which = 'units with ≥ 20 non-zeros' if subset == 'active' else 'all units'
  fig.suptitle(
      'First-layer locality over training (median over '
      f'{which}): a run is local where its line rises above its '
      'dotted null (window share) or falls below it (spread)',
      fontsize=11,
  )
  figures.save(fig, path)
  return fig
