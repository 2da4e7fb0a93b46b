r"""Figures 3 and 4 of the paper, drawn from the workdirs of runs.

  python -m beta_lasso.report.plots --workdir=/tmp/sfc_sgd --workdir=/tmp/sfc_bl \
      --out=/tmp/figures

writes into --out (default: the first workdir's `figures/`):

- `fig3_nonzeros.png` (Figure 3): non-zero weights of every layer over
  training on a log scale, one panel per layer, one line per workdir, the
  layer's total dotted. The layer1 panel of the S family also marks the S-CONV
  (9 * 9 * 3 alpha = 243 alpha) and S-LOCAL ((s/2)^2 * 243 alpha) counts: in
  the paper, beta-LASSO's S-FC layer 1 ends between the two.
- `fig_accuracy.png`: test accuracy and test loss over training.
- `fig4_filters_<workdir name>.png` (Figure 4), one per workdir: first-layer
  filters of units drawn at random (fixed seed) among those with at least 20
  non-zeros, each scaled so that zero is mid-grey. For S-FC and D-FC (and
  3-FC's fc1) a filter is a column of the dense kernel shown as an image; for
  conv and locally connected models it is the 9x9 (D family: 3x3) kernel of
  one channel (and, for local layers, one position).

Curves come from `results.json`, or, for a run still going, from the eval
history saved with its newest checkpoint. Filters come from the newest
checkpoint, read as host numpy arrays whatever devices wrote it, and only the
layer drawn is read. Figures go through matplotlib's Agg canvas directly:
no display, no pyplot state.

The same functions serve notebooks and tests: `plot_nonzeros` and
`plot_accuracy` here, `load_run` and `load_params` in loading.py,
`first_layer_filters`, `plot_filters` and `plot_workdir_filters` in
filters.py.
"""

from collections.abc import Sequence
import math
import re
from typing import Any

from absl import app
from absl import flags
from absl import logging
from etils import epath
from matplotlib import figure as mpl_figure
from matplotlib import ticker

from beta_lasso import errors
from beta_lasso import models
from beta_lasso import pytree
from beta_lasso.report import figures
from beta_lasso.report import filters as filters_lib
from beta_lasso.training import loading
from beta_lasso.training import results as results_lib

PANEL_SIZE = (4.0, 3.2)  # Inches, one panel of fig3 / fig_accuracy.
# Above this many runs in a panel the legend gets a panel of its own, off the
# curves.
LEGEND_PANEL_ABOVE = 3
# Runs per panel: past eight, lines of one panel can no longer be told apart.
MAX_SERIES = 8
# Dotted (':') is kept for what is not a run: a layer's total, a run's null.
LINE_STYLES = ('-', '--', '-.', (0, (5, 1, 1, 1, 1, 1)))
# No star: Figure 2 draws the paper's 4000-epoch accuracies as stars.
MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', 'h')
MAX_PANEL_COLUMNS = 4
# S family layer1 (the registry's S-CONV): 9x9, stride 2, SAME.
_, _S_KERNEL, _S_STRIDE = models.spec('sconv').conv_layers[0]


# ----------------------------------------------------------------------------
# Figure 3 and accuracy.
# ----------------------------------------------------------------------------
def run_labels(results_list, labels):
  """Run labels, with the workdir's name added where two would be equal."""
  if labels is not None:
    return list(labels)
  results_list = [results_lib.as_results(r) for r in results_list]
  labels = [figures.run_label(r.config) for r in results_list]
  paths = [epath.Path(r.workdir or str(i)) for i, r in enumerate(results_list)]
  names = [p.name for p in paths]
  out = []
  for label, path in zip(labels, paths):
    if labels.count(label) > 1:
      # The folder's name, with its parent's where two runs share both.
      where = path.name
      if [n for n, l in zip(names, labels) if l == label].count(where) > 1:
        where = f'{path.parent.name}/{path.name}'
      label = f'{label} ({where})'
    out.append(label)
  return out


def x_values(results_list, x_axis: str):
  """Per run, a function step -> x, and the axis label."""
  results_list = [results_lib.as_results(r) for r in results_list]
  if x_axis == 'epoch' and all(r.epochs for r in results_list):
    return [
        lambda s, r=r: s * r.epochs / r.steps for r in results_list
    ], 'epoch'
  if x_axis == 'epoch':
    logging.warning(
        'A run without results.json has no epoch count: '
        'plotting against steps.'
    )
  elif x_axis != 'step':
    raise ValueError(f'x_axis must be "epoch" or "step", not {x_axis!r}')
  return [lambda s: s for _ in results_list], 'step'


def s_family_references(
    alpha: int, image_shape=figures.PAPER_IMAGE_SHAPE
) -> dict[str, int]:
  """Weights of S-CONV's and S-LOCAL's layer1: Figure 3's reference lines.

  Args:
    alpha: base channels.
    image_shape: (H, W, C) of the input.

  Returns:
    {'S-CONV': 81 C alpha, 'S-LOCAL': ceil(H/2) ceil(W/2) 81 C alpha}; with
    32x32x3 images, 243 alpha and 256 * 243 alpha.
  """
  h, w, c = image_shape
  conv = _S_KERNEL * _S_KERNEL * c * alpha
  positions = math.ceil(h / _S_STRIDE) * math.ceil(w / _S_STRIDE)
  return {'S-CONV': conv, 'S-LOCAL': positions * conv}


def _s_layer1_weights(model: str, alpha: int, image_shape) -> int:
  """layer1 weights of an S-family model, to check `image_shape` against."""
  h, w, _ = image_shape
  if model == 'sfc':  # Every pixel to every unit of the 16x16xalpha output.
    positions = math.ceil(h / _S_STRIDE) * math.ceil(w / _S_STRIDE)
    return math.prod(image_shape) * positions * alpha
  return s_family_references(alpha, image_shape)[
      'S-CONV' if model == 'sconv' else 'S-LOCAL'
  ]


class _CompactLogFormatter(ticker.LogFormatter):
  """Log-axis labels as 480, 23.4k, 1.57M.

  The default 2.46 x 10^4 labels of a panel that spans less than a decade
  (fc1, head) are unreadable; LogFormatter still decides which ticks get one.
  """

  def _num_to_string(self, x, vmin, vmax):
    del vmin, vmax
    for suffix, unit in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
      if abs(x) >= unit:
        return f'{x / unit:.3g}{suffix}'
    return f'{x:.3g}'


def run_style(i: int) -> dict[str, Any]:
  """Colour, line style and marker of the i-th series.

  Ten colours, four line styles and eight markers cycle together, so within
  a panel of at most `MAX_SERIES` series each has its own colour, and
  neighbours in the legend differ in line style and marker too (in print or
  for a colour-blind reader).
  """
  return {
      'color': f'C{i % 10}',
      'linestyle': LINE_STYLES[i % len(LINE_STYLES)],
      'marker': MARKERS[i % len(MARKERS)],
  }


_FAMILY_NAMES = {models.SHALLOW: 'S family', models.DEEP: 'D family'}


def family(model: str) -> str:
  """The family a model is faceted with: 'S family', 'D family' or its name."""
  spec = models.MODELS.get(model)
  if spec is not None and spec.family in _FAMILY_NAMES:
    return _FAMILY_NAMES[spec.family]
  return figures.model_name(model)


_FAMILY_ORDER = ('S family', 'D family', '3-FC', 'ResNet18')


def facet_of(config: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
  """(sort key, title) of the panel a run goes in: its family and size."""
  model = config.get('model', '?')
  name = family(model)
  kwargs = config.get('model_kwargs') or {}
  if model in models_alpha():
    size, text = config.get('alpha') or 0, f'α={config.get("alpha")}'
  elif kwargs.get('width') is not None:
    size, text = kwargs['width'], f'width {kwargs["width"]}'
  else:
    size, text = 0, ''
  rank = (
      _FAMILY_ORDER.index(name) if name in _FAMILY_ORDER else len(_FAMILY_ORDER)
  )
  return (rank, name, size), ', '.join(filter(None, [name, text]))


def models_alpha() -> tuple[str, ...]:
  """Models sized by alpha (the S and D families)."""
  return tuple(
      s.name for s in models.MODELS.values() if s.size_field == 'alpha'
  )


def facets(
    results_list: Sequence[results_lib.ResultsLike],
    *,
    max_series: int = MAX_SERIES,
) -> list[tuple[str, list[int]]]:
  """Runs grouped into panels by family and size, at most `max_series` each.

  Returns:
    [(title, indices into results_list)], families in the paper's order
    (S, D, 3-FC, ResNet18), sizes ascending; a group of more than
    `max_series` runs is cut into parts titled '(1/2)', '(2/2)'.
  """
  groups: dict[tuple[Any, ...], tuple[str, list[int]]] = {}
  for i, results in enumerate(map(results_lib.as_results, results_list)):
    key, title = facet_of(results.config)
    groups.setdefault(key, (title, []))[1].append(i)
  out = []
  for key in sorted(groups):
    title, indices = groups[key]
    parts = [
        indices[i : i + max_series] for i in range(0, len(indices), max_series)
    ]
    for p, part in enumerate(parts):
      out.append(
          (title + (f' ({p + 1}/{len(parts)})' if len(parts) > 1 else ''), part)
      )
  return out


def series_styles(
    results_list: Sequence[results_lib.ResultsLike],
) -> list[dict]:
  """Per run, its `run_style`, shared by runs that differ only in size.

  The same model and optimizer then look the same in every panel (S-FC with
  beta-LASSO at alpha 4 and at alpha 16), so a reader follows it across.
  """
  results_list = [results_lib.as_results(r) for r in results_list]
  keys = [figures.run_label(r.config, size=False) for r in results_list]
  order = list(dict.fromkeys(keys))
  index = [order.index(k) for k in keys]
  # Two runs of one config in one panel (repeats) still need two styles.
  for _, members in facets(results_list, max_series=len(results_list) or 1):
    taken = set()
    for i in members:
      while index[i] in taken:
        index[i] += len(order)
      taken.add(index[i])
  return [run_style(i) for i in index]


def legend_panel(ax, handles_from: Sequence[Any]):
  """Turns `ax` into a legend of every labelled line of `handles_from`."""
  handles, labels = [], []
  for source in handles_from:
    for handle, label in zip(*source.get_legend_handles_labels()):
      if label not in labels:
        handles.append(handle)
        labels.append(label)
  ax.set_axis_off()
  ax.legend(handles, labels, fontsize=7, loc='center left', frameon=False)


def new_panels(rows: int, columns: int, size) -> tuple[mpl_figure.Figure, Any]:
  """A grid of panels of `size` inches, margins fixed in inches.

  Fixed margins rather than constrained layout: the PNG's size depends only
  on the grid, and layout would take a second per figure on a small machine.
  """
  width, height = columns * size[0], rows * size[1]
  fig = figures.new_figure(width, height)
  left, right, bottom, top, between_x, between_y = 0.8, 0.15, 0.5, 0.6, 0.6, 0.8
  panel_w = (width - left - right - (columns - 1) * between_x) / columns
  panel_h = (height - bottom - top - (rows - 1) * between_y) / rows
  fig.subplots_adjust(
      left=left / width,
      right=1 - right / width,
      bottom=bottom / height,
      top=1 - top / height,
      wspace=between_x / panel_w,
      hspace=between_y / panel_h,
  )
  axes = fig.subplots(rows, columns, squeeze=False)
  return fig, axes


def _facet_grid(results_list, panels_per_facet, size):
  """Rows of panels, one row per facet; a legend column where rows are full.

  Returns:
    (fig, axes, rows, own_legend): `rows` is `facets(results_list)`;
    `own_legend` says whether the last column holds each row's legend.
  """
  rows = facets(results_list)
  own_legend = any(len(i) > LEGEND_PANEL_ABOVE for _, i in rows)
  columns = max(panels_per_facet(indices) for _, indices in rows) + own_legend
  fig, axes = new_panels(len(rows), columns, size)
  return fig, [list(row) for row in axes], rows, own_legend


def _finish_row(
    axes_row, used: int, own_legend: bool, title: str, y_label: str = ''
):
  """Legend, unused panels off, and the facet's name on the row's y axis.

  Args:
    axes_row: the row's panels, the legend's last when `own_legend`.
    used: how many panels, from the left, hold curves.
    own_legend: the last panel becomes the row's legend.
    title: the facet's name.
    y_label: what the first panel's y axis measures.
  """
  for ax in axes_row[used:]:
    ax.set_axis_off()
  if own_legend:
    legend_panel(axes_row[-1], axes_row[:used])
  else:
    for ax in axes_row[:used]:
      if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc='best')
  axes_row[0].set_ylabel('\n'.join(filter(None, [title, y_label])), fontsize=9)


def plot_nonzeros(
    results_list: Sequence[results_lib.ResultsLike],
    path,
    *,
    labels: Sequence[str] | None = None,
    x_axis: str = 'epoch',
    image_shape=None,
) -> mpl_figure.Figure:
  """Figure 3: non-zero weights per layer over training, one line per run.

  One row of panels per family and size (`facets`: at most `MAX_SERIES` runs
  a row), one panel per layer of that row's models, so that 3-FC's fc2 is
  not an empty panel of the S family's figure. The layer1 panel of an S-family
  row marks S-CONV's and S-LOCAL's layer-1 counts at the row's alpha.

  Args:
    results_list: results of runs (see `loading.load_run`), each with
      its history and config, and weights for the totals.
    path: where the PNG goes.
    labels: legend entries; None builds them from the configs.
    x_axis: 'epoch' or 'step'; epochs need every run's 'steps' and 'epochs'.
    image_shape: (H, W, C) of the input, for the S-CONV / S-LOCAL lines;
      None: each run's own (`loading.image_shape`).

  Returns:
    The figure (already saved).
  """
  results_list = [results_lib.as_results(r) for r in results_list]
  labels = run_labels(results_list, labels)
  to_x, x_label = x_values(results_list, x_axis)
  styles = series_styles(results_list)

  def layers_of(indices):
    found = {
        layer
        for i in indices
        for h in results_list[i].history
        for layer in h.nnz
    }
    found |= {layer for i in indices for layer in results_list[i].weights}
    return sorted(found, key=pytree.layer_order)

  if not any(layers_of([i]) for i in range(len(results_list))):
    raise ValueError('no run has an evaluation yet: nothing to plot')
  fig, axes, rows, own_legend = _facet_grid(
      results_list, lambda indices: max(len(layers_of(indices)), 1), PANEL_SIZE
  )
  for axes_row, (title, indices) in zip(axes, rows):
    layers = layers_of(indices)
    for i in indices:
      results, style = results_list[i], styles[i]
      weights = results.weights
      labelled = False  # The legend names each run once, on its first panel.
      for ax, layer in zip(axes_row, layers):
        points = [
            (to_x[i](h.step), h.nnz[layer])
            for h in results.history
            if layer in h.nnz
        ]
        if layer in weights:
          # Every initializer here draws non-zero weights: at step 0 all count.
          points.insert(0, (0, weights[layer]))
          ax.axhline(
              weights[layer],
              color=style['color'],
              linestyle=':',
              linewidth=0.8,
              alpha=0.6,
          )
        if points:
          x, y = zip(*points)
          ax.plot(
              x, y, **style, markersize=4, label=None if labelled else labels[i]
          )
          labelled = True

    # Figure 3's reference: where S-FC's layer 1 would stand had it learned
    # exactly a convolution (S-CONV) or a locally connected layer (S-LOCAL).
    references = {}
    for i in indices:
      config = results_list[i].config
      model, alpha = config.get('model'), config.get('alpha')
      if (
          model not in models.family(models.SHALLOW)
          or 'layer1' not in layers
          or not alpha
      ):
        continue
      shape = image_shape or loading.image_shape(results_list[i])
      weights = results_list[i].weights.get('layer1')
      if weights is not None and weights != _s_layer1_weights(
          model, alpha, shape
      ):
        logging.warning(
            '%s: layer1 has %d weights, not what %s at alpha %d '
            'on %s images has; no S-CONV / S-LOCAL lines (pass '
            'the image shape)',
            results_list[i].workdir,
            weights,
            model,
            alpha,
            shape,
        )
        continue
      for name, count in s_family_references(alpha, shape).items():
        references[(name, alpha)] = count
    for (name, alpha), count in sorted(references.items()):
      axes_row[layers.index('layer1')].axhline(
          count,
          color='k',
          linestyle='--' if name == 'S-CONV' else '-.',
          linewidth=1.4,
          label=f'{name} layer 1, α={alpha}: {count:,}',
      )

    for ax, layer in zip(axes_row, layers):
      totals = {
          results_list[i].weights[layer]
          for i in indices
          if layer in results_list[i].weights
      }
      ax.set_title(
          layer + (f' ({totals.pop():,} weights)' if len(totals) == 1 else ''),
          fontsize=10,
      )
      ax.set_yscale('log')
      ax.yaxis.set_major_formatter(_CompactLogFormatter(labelOnlyBase=False))
      ax.yaxis.set_minor_formatter(_CompactLogFormatter(labelOnlyBase=False))
      ax.set_xlabel(x_label)
      ax.grid(True, which='major', alpha=0.3)
    _finish_row(axes_row, len(layers), own_legend, title, 'non-zero weights')
  fig.suptitle(
      'Figure 3: non-zero weights per layer over training (dotted: '
      'all weights). In layer 1, see where S-FC with β-LASSO ends '
      "against S-CONV's (--) and S-LOCAL's (-.) counts",
      fontsize=11,
  )
  figures.save(fig, path)
  return fig


def plot_accuracy(
    results_list: Sequence[results_lib.ResultsLike],
    path,
    *,
    labels: Sequence[str] | None = None,
    x_axis: str = 'epoch',
) -> mpl_figure.Figure:
  """Test accuracy and test loss over training, one line per run.

  One row per family and size (`facets`), as in `plot_nonzeros`.

  Args:
    results_list: results of runs (see `loading.load_run`).
    path: where the PNG goes.
    labels: legend entries; None builds them from the configs.
    x_axis: 'epoch' or 'step'.

  Returns:
    The figure (already saved).
  """
  results_list = [results_lib.as_results(r) for r in results_list]
  labels = run_labels(results_list, labels)
  to_x, x_label = x_values(results_list, x_axis)
  styles = series_styles(results_list)
  fig, axes, rows, own_legend = _facet_grid(
      results_list, lambda _: 2, PANEL_SIZE
  )
  for axes_row, (title, indices) in zip(axes, rows):
    accuracy_ax, loss_ax = axes_row[:2]
    for i in indices:
      history = results_list[i].history
      x = [to_x[i](h.step) for h in history]
      accuracy_ax.plot(
          x,
          [100 * h.test_accuracy for h in history],
          **styles[i],
          markersize=4,
          label=labels[i],
      )
      loss_ax.plot(x, [h.test_loss for h in history], **styles[i], markersize=4)
    accuracy_ax.set_title('test accuracy (%)', fontsize=10)
    loss_ax.set_title('test loss', fontsize=10)
    for ax in (accuracy_ax, loss_ax):
      ax.set_xlabel(x_label)
      ax.grid(True, alpha=0.3)
    _finish_row(axes_row, 2, own_legend, title)
  fig.suptitle(
      'Test accuracy and test loss over training, one row per '
      'family and size',
      fontsize=11,
  )
  figures.save(fig, path)
  return fig


# ----------------------------------------------------------------------------
# Command line.
# ----------------------------------------------------------------------------
def _define_flags():
  """The command line's flags, defined only when this module is the script.

  Defined at import, they would clash with other modules' flags of the same
  name (main.py's --workdir, params.py's --out) in any process that imports
  both, e.g. a notebook or pytest.
  """
  flags.DEFINE_multi_string(
      'workdir', None, 'Training workdir; repeat to compare runs.'
  )
  flags.DEFINE_string(
      'out', None, "Where the PNGs go; default: the first workdir's figures/."
  )
  flags.DEFINE_enum(
      'x_axis', 'epoch', ['epoch', 'step'], 'Horizontal axis of the curves.'
  )
  flags.DEFINE_list(
      'image_shape',
      None,
      "H,W,C of the input images; default: each run's, from its dataset.json.",
  )
  flags.DEFINE_integer('num_filters', 32, 'Filters per Figure 4.')
  flags.DEFINE_integer('columns', 8, 'Filters per row of Figure 4.')
  flags.DEFINE_integer(
      'min_nonzeros',
      20,
      'Figure 4 draws units with at '
      'least this many non-zeros (the paper: 20).',
  )
  flags.DEFINE_integer('seed', 0, "Seed of Figure 4's choice of units.")
  flags.mark_flag_as_required('workdir')


def file_names(workdirs: Sequence[str]) -> list[str]:
  """A file-name-safe name per workdir, unique among them.

  The folder's name, with its parent's in front where two folders share a
  name (runs of two sweeps), and a number where that is not enough.
  """
  safe = lambda text: re.sub(r'[^A-Za-z0-9_.-]+', '_', text or 'workdir')
  paths = [epath.Path(w) for w in workdirs]
  base = [p.name for p in paths]
  names = []
  for path in paths:
    name = safe(path.name)
    if base.count(path.name) > 1:
      name = safe(f'{path.parent.name}_{path.name}')
    names.append(name if name not in names else f'{name}_{len(names)}')
  return names


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  args = flags.FLAGS
  workdirs = args.workdir
  out = epath.Path(args.out or epath.Path(workdirs[0]) / 'figures')
  errors.check_output_dir(out)
  try:
    image_shape = (
        tuple(int(d) for d in args.image_shape) if args.image_shape else None
    )
  except ValueError:
    image_shape = ()
  if image_shape is not None and (
      len(image_shape) != 3 or min(image_shape) < 1
  ):
    raise errors.OutputError(
        f'--image_shape={",".join(args.image_shape)}: '
        'give H,W,C, three positive integers'
    )
  # A mistyped --workdir is FileNotFoundError: one line, no trace.
  results_list = [loading.load_run(w) for w in workdirs]
  written = []
  if any(r.history for r in results_list):
    plot_nonzeros(
        results_list,
        out / 'fig3_nonzeros.png',
        x_axis=args.x_axis,
        image_shape=image_shape,
    )
    plot_accuracy(results_list, out / 'fig_accuracy.png', x_axis=args.x_axis)
    written += ['fig3_nonzeros.png', 'fig_accuracy.png']
  else:
    logging.warning('No run has an evaluation yet: no Figure 3.')
  for workdir, results, name in zip(
      workdirs, results_list, file_names(workdirs)
  ):
    model = results.config.get('model')
    if filters_lib.first_layer_name(model) is None:
      logging.warning(
          'Skipping Figure 4 for %s: model %r has no first-layer '
          'filters to show (supported: %s).',
          workdir,
          model,
          ', '.join(filters_lib.supported_models()),
      )
      continue
    if not loading.checkpoint_steps(workdir):
      logging.warning('Skipping Figure 4 for %s: no checkpoint.', workdir)
      continue
    file_name = f'fig4_filters_{name}.png'
    filters_lib.plot_workdir_filters(
        workdir,
        out / file_name,
        image_shape=image_shape,
        num_filters=args.num_filters,
        columns=args.columns,
        min_nonzeros=args.min_nonzeros,
        seed=args.seed,
    )
    written.append(file_name)
  for file_name in written:
    print(out / file_name)


if __name__ == '__main__':
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
