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
`plot_accuracy` here, `load_results` and `load_params` in loading.py,
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
from beta_lasso.report import figures
from beta_lasso.report import filters as filters_lib
from beta_lasso.training import loading
from beta_lasso import optim

PANEL_SIZE = (4.0, 3.2)  # Inches, one panel of fig3 / fig_accuracy.
# Above this many runs the legend gets a panel of its own, off the curves.
LEGEND_PANEL_ABOVE = 6
MAX_PANEL_COLUMNS = 4
_S_KERNEL = 9  # S family layer1 (shallow.S_LAYERS): 9x9, stride 2, SAME.


# ----------------------------------------------------------------------------
# Figure 3 and accuracy.
# ----------------------------------------------------------------------------
def run_labels(results_list, labels):
  """Run labels, with the workdir's name added where two would be equal."""
  if labels is not None:
    return list(labels)
  labels = [figures.run_label(r.get('config', {})) for r in results_list]
  return [
      f'{label} ({epath.Path(r.get("workdir", str(i))).name})'
      if labels.count(label) > 1 else label
      for i, (label, r) in enumerate(zip(labels, results_list))]


def x_values(results_list, x_axis: str):
  """Per run, a function step -> x, and the axis label."""
  if x_axis == 'epoch' and all(r.get('epochs') for r in results_list):
    return [lambda s, r=r: s * r['epochs'] / r['steps']
            for r in results_list], 'epoch'
  if x_axis == 'epoch':
    logging.warning('A run without results.json has no epoch count: '
                    'plotting against steps.')
  elif x_axis != 'step':
    raise ValueError(f'x_axis must be "epoch" or "step", not {x_axis!r}')
  return [lambda s: s for _ in results_list], 'step'


def s_family_references(alpha: int, image_shape=figures.PAPER_IMAGE_SHAPE
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
  return {'S-CONV': conv, 'S-LOCAL': math.ceil(h / 2) * math.ceil(w / 2) * conv}


def _s_layer1_weights(model: str, alpha: int, image_shape) -> int:
  """layer1 weights of an S-family model, to check `image_shape` against."""
  h, w, _ = image_shape
  if model == 'sfc':  # Every pixel to every unit of the 16x16xalpha output.
    return math.prod(image_shape) * math.ceil(h / 2) * math.ceil(w / 2) * alpha
  return s_family_references(alpha, image_shape)[
      'S-CONV' if model == 'sconv' else 'S-LOCAL']


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
  """Colour and line style of the i-th run: 30 runs stay apart."""
  return {'color': f'C{i % 10}', 'linestyle': ('-', '--', ':')[i // 10 % 3]}


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
  fig.subplots_adjust(left=left / width, right=1 - right / width,
                      bottom=bottom / height, top=1 - top / height,
                      wspace=between_x / panel_w, hspace=between_y / panel_h)
  axes = fig.subplots(rows, columns, squeeze=False)
  return fig, axes


def plot_nonzeros(results_list: Sequence[dict[str, Any]], path, *,
                  labels: Sequence[str] | None = None, x_axis: str = 'epoch',
                  image_shape=None) -> mpl_figure.Figure:
  """Figure 3: non-zero weights per layer over training, one line per run.

  Args:
    results_list: results of runs (see `loading.load_results`), each with
      'history' and 'config', and 'weights' for the totals.
    path: where the PNG goes.
    labels: legend entries; None builds them from the configs.
    x_axis: 'epoch' or 'step'; epochs need every run's 'steps' and 'epochs'.
    image_shape: (H, W, C) of the input, for the S-CONV / S-LOCAL lines;
      None: each run's own (`loading.image_shape`).

  Returns:
    The figure (already saved).
  """
  labels = run_labels(results_list, labels)
  to_x, x_label = x_values(results_list, x_axis)
  layers = {layer for r in results_list for h in r['history']
            for layer in h['nnz']}
  layers |= {layer for r in results_list for layer in r.get('weights', {})}
  layers = sorted(layers, key=optim.layer_order)
  if not layers:
    raise ValueError('no run has an evaluation yet: nothing to plot')
  own_legend = len(results_list) > LEGEND_PANEL_ABOVE
  panels = len(layers) + own_legend
  columns = min(panels, MAX_PANEL_COLUMNS)
  rows = -(-panels // columns)
  fig, axes = new_panels(rows, columns, PANEL_SIZE)
  for ax in axes.flat[len(layers):]:
    ax.set_axis_off()

  for i, (results, label) in enumerate(zip(results_list, labels)):
    style = run_style(i)
    color = style['color']
    weights = results.get('weights', {})
    labelled = False  # The legend names each run once, on its first panel.
    for ax, layer in zip(axes.flat, layers):
      points = [(to_x[i](h['step']), h['nnz'][layer])
                for h in results['history'] if layer in h['nnz']]
      if layer in weights:
        # Every initializer here draws non-zero weights: at step 0 all count.
        points.insert(0, (0, weights[layer]))
        ax.axhline(weights[layer], color=color, linestyle=':', linewidth=1)
      if points:
        x, y = zip(*points)
        ax.plot(x, y, **style, marker='.',
                label=None if labelled else label)
        labelled = True

  # Figure 3's reference: where S-FC's layer 1 would stand if it had learned
  # exactly a convolution (S-CONV) or a locally connected layer (S-LOCAL).
  references = {}
  for results in results_list:
    config = results.get('config', {})
    model, alpha = config.get('model'), config.get('alpha')
    if model not in figures.S_FAMILY or 'layer1' not in layers or not alpha:
      continue
    shape = image_shape or loading.image_shape(results)
    weights = results.get('weights', {}).get('layer1')
    if weights is not None and weights != _s_layer1_weights(
        model, alpha, shape):
      logging.warning('%s: layer1 has %d weights, not what %s at alpha %d on '
                      '%s images has; no S-CONV / S-LOCAL lines (pass the '
                      'image shape)', results.get('workdir'), weights, model,
                      alpha, shape)
      continue
    for name, count in s_family_references(alpha, shape).items():
      references[(name, alpha)] = count
  layer1_ax = axes.flat[layers.index('layer1')] if references else None
  for (name, alpha), count in sorted(references.items()):
    layer1_ax.axhline(count, color='0.3',
                      linestyle='--' if name == 'S-CONV' else '-.',
                      linewidth=1.2,
                      label=f'{name} layer 1, α={alpha}: {count:,}')

  for ax, layer in zip(axes.flat, layers):
    totals = {r['weights'][layer] for r in results_list
              if layer in r.get('weights', {})}
    ax.set_title(layer + (f' ({totals.pop():,} weights)' if len(totals) == 1
                          else ''), fontsize=10)
    ax.set_yscale('log')
    ax.yaxis.set_major_formatter(_CompactLogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(_CompactLogFormatter(labelOnlyBase=False))
    ax.set_xlabel(x_label)
    ax.grid(True, which='major', alpha=0.3)
    if ax.get_legend_handles_labels()[0] and not own_legend:
      ax.legend(fontsize=7, loc='best')
  if own_legend:
    legend_panel(axes.flat[len(layers)], axes.flat[:len(layers)])
  for row in axes:
    row[0].set_ylabel('non-zero weights')
  fig.suptitle('Non-zero weights per layer (dotted: all weights of the layer)',
               fontsize=11)
  figures.save(fig, path)
  return fig


def plot_accuracy(results_list: Sequence[dict[str, Any]], path, *,
                  labels: Sequence[str] | None = None,
                  x_axis: str = 'epoch') -> mpl_figure.Figure:
  """Test accuracy and test loss over training, one line per run.

  Args:
    results_list: results of runs (see `loading.load_results`).
    path: where the PNG goes.
    labels: legend entries; None builds them from the configs.
    x_axis: 'epoch' or 'step'.

  Returns:
    The figure (already saved).
  """
  labels = run_labels(results_list, labels)
  to_x, x_label = x_values(results_list, x_axis)
  own_legend = len(results_list) > LEGEND_PANEL_ABOVE
  fig, axes = new_panels(1, 2 + own_legend, PANEL_SIZE)
  accuracy_ax, loss_ax = axes[0][:2]
  for i, (results, label) in enumerate(zip(results_list, labels)):
    history = results['history']
    x = [to_x[i](h['step']) for h in history]
    accuracy_ax.plot(x, [100 * h['test_accuracy'] for h in history],
                     **run_style(i), marker='.', label=label)
    loss_ax.plot(x, [h['test_loss'] for h in history], **run_style(i),
                 marker='.')
  accuracy_ax.set_ylabel('test accuracy (%)')
  loss_ax.set_ylabel('test loss')
  for ax in (accuracy_ax, loss_ax):
    ax.set_xlabel(x_label)
    ax.grid(True, alpha=0.3)
  if own_legend:
    legend_panel(axes[0][2], [accuracy_ax])
  else:
    accuracy_ax.legend(fontsize=7, loc='best')
  fig.suptitle('Test accuracy and test loss', fontsize=11)
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
  flags.DEFINE_multi_string('workdir', None,
                            'Training workdir; repeat to compare runs.')
  flags.DEFINE_string(
      'out', None, "Where the PNGs go; default: the first workdir's figures/.")
  flags.DEFINE_enum('x_axis', 'epoch', ['epoch', 'step'],
                    'Horizontal axis of the curves.')
  flags.DEFINE_list(
      'image_shape', None,
      "H,W,C of the input images; default: each run's, from its dataset.json.")
  flags.DEFINE_integer('num_filters', 32, 'Filters per Figure 4.')
  flags.DEFINE_integer('columns', 8, 'Filters per row of Figure 4.')
  flags.DEFINE_integer('min_nonzeros', 20, 'Figure 4 draws units with at '
                       'least this many non-zeros (the paper: 20).')
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
    image_shape = (tuple(int(d) for d in args.image_shape)
                   if args.image_shape else None)
  except ValueError:
    image_shape = ()
  if image_shape is not None and (len(image_shape) != 3 or
                                  min(image_shape) < 1):
    raise errors.OutputError(f'--image_shape={",".join(args.image_shape)}: '
                             'give H,W,C, three positive integers')
  # A mistyped --workdir is FileNotFoundError: one line, no trace.
  results_list = [loading.load_results(w) for w in workdirs]
  written = []
  if any(r['history'] for r in results_list):
    plot_nonzeros(results_list, out / 'fig3_nonzeros.png',
                  x_axis=args.x_axis, image_shape=image_shape)
    plot_accuracy(results_list, out / 'fig_accuracy.png', x_axis=args.x_axis)
    written += ['fig3_nonzeros.png', 'fig_accuracy.png']
  else:
    logging.warning('No run has an evaluation yet: no Figure 3.')
  for workdir, results, name in zip(workdirs, results_list,
                                    file_names(workdirs)):
    model = results.get('config', {}).get('model')
    if filters_lib.first_layer_name(model) is None:
      logging.warning('Skipping Figure 4 for %s: model %r has no first-layer '
                      'filters to show (supported: %s).', workdir, model,
                      ', '.join(filters_lib.FIRST_LAYER))
      continue
    if not loading.checkpoint_steps(workdir):
      logging.warning('Skipping Figure 4 for %s: no checkpoint.', workdir)
      continue
    file_name = f'fig4_filters_{name}.png'
    filters_lib.plot_workdir_filters(
        workdir, out / file_name, image_shape=image_shape,
        num_filters=args.num_filters, columns=args.columns,
        min_nonzeros=args.min_nonzeros, seed=args.seed)
    written.append(file_name)
  for file_name in written:
    print(out / file_name)


if __name__ == '__main__':
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
