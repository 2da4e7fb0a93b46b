r"""Figures 3 and 4 of the paper, drawn from the workdirs of runs.

  python -m beta_lasso.plots --workdir=/tmp/sfc_sgd --workdir=/tmp/sfc_bl \
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

The same functions serve notebooks and tests: `load_results`, `load_params`,
`plot_nonzeros`, `plot_accuracy`, `first_layer_filters`, `plot_filters`,
`plot_workdir_filters`.
"""
from collections.abc import Sequence
import contextlib
import json
import logging as pylogging
import math
import os
import re
import sys
from typing import Any

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
from matplotlib import figure as mpl_figure
from matplotlib import ticker
from matplotlib.backends import backend_agg
import numpy as np
import orbax.checkpoint as ocp

from beta_lasso import optim
from beta_lasso import workdir as workdir_lib

# Every dataset of the paper (CIFAR-10, CIFAR-100, SVHN) has 32x32x3 images.
# Kept here rather than read from input_pipeline.DATASETS: importing that
# module imports TensorFlow, ten seconds for a plot. Shapes are checked
# against the kernels, so a wrong one fails loudly.
PAPER_IMAGE_SHAPE = (32, 32, 3)

DPI = 100
PANEL_SIZE = (4.0, 3.2)  # Inches, one panel of fig3 / fig_accuracy.
TILE_SIZE = (1.3, 1.5)  # Inches, one filter of fig4 with its label.
TITLE_HEIGHT = 0.6  # Inches above the tiles of fig4.
MAX_PANEL_COLUMNS = 4

# What stands for the first convolution: (parameter name, kind, kernel size
# or stride). 'fc' kernels are FeatureMapDense's (H*W*C_in, out units) with a
# stride; 'dense' is a plain dense layer on the flattened image.
_FIRST_LAYER = {
    'sfc': ('layer1', 'fc', 2),
    'dfc': ('layer1', 'fc', 1),
    '3fc': ('fc1', 'dense', None),
    'sconv': ('layer1', 'conv', 9),
    'dconv': ('layer1', 'conv', 3),
    'slocal': ('layer1', 'local', 9),
    'dlocal': ('layer1', 'local', 3),
}
_S_FAMILY = ('sconv', 'slocal', 'sfc')
_S_KERNEL = 9  # layer1 of shallow.ShallowNet: 9x9, stride 2, SAME.

_MODEL_NAMES = {
    'sconv': 'S-CONV', 'slocal': 'S-LOCAL', 'sfc': 'S-FC',
    'dconv': 'D-CONV', 'dlocal': 'D-LOCAL', 'dfc': 'D-FC',
    '3fc': '3-FC', 'resnet18': 'ResNet18',
}


# ----------------------------------------------------------------------------
# Reading workdirs.
# ----------------------------------------------------------------------------
class _QuietOrbax(pylogging.Filter):
  """Drops orbax's INFO lines (a dozen per restore) and one harmless warning.

  The warning: PyTreeCheckpointer looks for step metadata inside the 'state'
  item, but CheckpointManager keeps it one folder up.
  """

  def filter(self, record):
    from_orbax = (record.name.startswith('orbax') or
                  f'{os.sep}orbax{os.sep}' in record.pathname)
    if not from_orbax:
      return True
    return (record.levelno >= pylogging.WARNING and
            'Metadata file does not exist' not in record.getMessage())


@contextlib.contextmanager
def _quiet_orbax():
  """Within the block, `_QuietOrbax` filters what orbax logs."""
  # Orbax logs through absl.logging, whose records reach this logger.
  logger = pylogging.getLogger('absl')
  quiet = _QuietOrbax()
  logger.addFilter(quiet)
  try:
    yield
  finally:
    logger.removeFilter(quiet)


def checkpoint_steps(workdir) -> list[int]:
  """Steps of the finished checkpoints in `workdir`, oldest first."""
  directory = epath.Path(workdir) / 'checkpoints'
  if not directory.exists():
    return []
  # A save in progress is '<step>.orbax-checkpoint-tmp...', not all digits.
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _read_tree(path: epath.Path, select) -> Any:
  """Restores the part `select(metadata)` of an orbax PyTree as numpy."""
  with _quiet_orbax(), ocp.PyTreeCheckpointer() as checkpointer:
    item = select(checkpointer.metadata(path).item_metadata.tree)
    # np.ndarray leaves: a checkpoint written on 8 TPUs opens on a laptop.
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))


def load_params(workdir, *, step: int | None = None,
                layers: Sequence[str] | None = None) -> dict[str, Any]:
  """Model parameters of a checkpoint in `workdir`, as host numpy arrays.

  Args:
    workdir: a training workdir (holds `checkpoints/<step>/state`).
    step: which checkpoint; None means the newest.
    layers: top-level parameter names to read (e.g. ['layer1']); None reads
      all. At the paper's size S-FC's layer1 alone is 470 MB.

  Returns:
    The params tree, e.g. {'layer1': {'kernel': array}, ...}; optimizer state
    and BatchNorm statistics are not read.

  Raises:
    FileNotFoundError: no such checkpoint.
    KeyError: a name in `layers` that the model lacks.
  """
  steps = checkpoint_steps(workdir)
  if step is None and not steps:
    raise FileNotFoundError(f'no checkpoint in {workdir}/checkpoints')
  step = steps[-1] if step is None else step
  if step not in steps:
    raise FileNotFoundError(f'no checkpoint of step {step} in {workdir} '
                            f'(there are {steps})')
  path = epath.Path(workdir) / 'checkpoints' / str(step) / 'state'

  def select(tree):
    params = tree['params']
    if layers is not None:
      missing = sorted(set(layers) - set(params))
      if missing:
        raise KeyError(f'{missing} not in the params of {path} '
                       f'(they hold {sorted(params)})')
      params = {name: params[name] for name in layers}
    return {'params': params}

  return _read_tree(path, select)['params']


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  """Inverse of workdir.flatten: {'a.b': 1} -> {'a': {'b': 1}}."""
  tree = {}
  for key, value in flat.items():
    *parents, leaf = key.split('.')
    node = tree
    for parent in parents:
      node = node.setdefault(parent, {})
    node[leaf] = value
  return tree


def load_results(workdir) -> dict[str, Any]:
  """The results of a run, finished or not.

  Args:
    workdir: a training workdir.

  Returns:
    The contents of `results.json` (see train.train_and_evaluate). For a run
    that has not finished: 'config', 'history' (from the newest checkpoint)
    and 'weights' (from the checkpoint's shapes), without 'steps' and
    'epochs'. Either way 'workdir' is added.

  Raises:
    FileNotFoundError: neither results.json nor a checkpoint.
  """
  directory = epath.Path(workdir)
  path = directory / workdir_lib.RESULTS_FILE
  if path.exists():
    results = json.loads(path.read_text())
  else:
    steps = checkpoint_steps(directory)
    if not steps:
      raise FileNotFoundError(f'{workdir} holds neither '
                              f'{workdir_lib.RESULTS_FILE} nor a checkpoint')
    step_dir = directory / 'checkpoints' / str(steps[-1])
    with _quiet_orbax():
      with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
        history = checkpointer.restore(step_dir / 'history')['evals']
      with ocp.PyTreeCheckpointer() as checkpointer:
        shapes = checkpointer.metadata(step_dir / 'state').item_metadata.tree
    config_path = directory / workdir_lib.CONFIG_FILE
    config = (_unflatten(json.loads(config_path.read_text()))
              if config_path.exists() else {})
    results = {'config': config, 'history': history,
               'weights': optim.count_weights(shapes['params'])}
    logging.info('%s has no %s yet: using the history of its checkpoint at '
                 'step %d', workdir, workdir_lib.RESULTS_FILE, steps[-1])
  results['workdir'] = str(workdir)
  return results


# ----------------------------------------------------------------------------
# Figure 3 and accuracy.
# ----------------------------------------------------------------------------
def run_label(config: dict[str, Any]) -> str:
  """E.g. 'S-FC, beta-LASSO beta=50, alpha=150' from a run's config."""
  model = config.get('model', '?')
  parts = [_MODEL_NAMES.get(model, model)]
  if model == 'resnet18':
    parts[0] += f' k={config.get("model_kwargs", {}).get("kernel_size", 3)}'
  if config.get('optimizer') == 'beta_lasso':
    parts.append(f'β-LASSO β={config.get("beta", 0):g}')
  else:
    parts.append(config.get('optimizer', '?').upper())
  if model in _S_FAMILY or model in ('dconv', 'dlocal', 'dfc'):
    parts.append(f'α={config.get("alpha")}')
  return ', '.join(parts)


def _labels(results_list, labels):
  """Run labels, with the workdir's name added where two would be equal."""
  if labels is not None:
    return list(labels)
  labels = [run_label(r.get('config', {})) for r in results_list]
  return [
      f'{label} ({epath.Path(r.get("workdir", str(i))).name})'
      if labels.count(label) > 1 else label
      for i, (label, r) in enumerate(zip(labels, results_list))]


def _layer_order(name: str):
  """Network order: layer<N> (conv-standing), then fc<N>, then head."""
  kind = {'layer': 0, 'fc': 1, 'head': 2}
  key = []
  for part in name.split('/'):
    match = re.fullmatch(r'(\D*)(\d*)', part)
    prefix, number = match.groups() if match else (part, '')
    key.append((kind.get(prefix, 3), prefix, int(number) if number else -1))
  return key


def _x_values(results_list, x_axis: str):
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


def s_family_references(alpha: int, image_shape=PAPER_IMAGE_SHAPE
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


def _new_figure(rows: int, columns: int, size) -> tuple[mpl_figure.Figure, Any]:
  """A grid of panels of `size` inches, margins fixed in inches.

  Fixed margins rather than constrained layout: the PNG's size depends only
  on the grid, and layout would take a second per figure on a small machine.
  """
  width, height = columns * size[0], rows * size[1]
  fig = mpl_figure.Figure(figsize=(width, height), dpi=DPI)
  backend_agg.FigureCanvasAgg(fig)
  left, right, bottom, top, between_x, between_y = 0.8, 0.15, 0.5, 0.6, 0.6, 0.8
  panel_w = (width - left - right - (columns - 1) * between_x) / columns
  panel_h = (height - bottom - top - (rows - 1) * between_y) / rows
  fig.subplots_adjust(left=left / width, right=1 - right / width,
                      bottom=bottom / height, top=1 - top / height,
                      wspace=between_x / panel_w, hspace=between_y / panel_h)
  axes = fig.subplots(rows, columns, squeeze=False)
  return fig, axes


def _save(fig: mpl_figure.Figure, path):
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    fig.savefig(f, format='png', dpi=DPI)


def plot_nonzeros(results_list: Sequence[dict[str, Any]], path, *,
                  labels: Sequence[str] | None = None, x_axis: str = 'epoch',
                  image_shape=PAPER_IMAGE_SHAPE) -> mpl_figure.Figure:
  """Figure 3: non-zero weights per layer over training, one line per run.

  Args:
    results_list: results of runs (see `load_results`), each with 'history'
      and 'config', and 'weights' for the totals.
    path: where the PNG goes.
    labels: legend entries; None builds them from the configs.
    x_axis: 'epoch' or 'step'; epochs need every run's 'steps' and 'epochs'.
    image_shape: (H, W, C) of the input, for the S-CONV / S-LOCAL lines.

  Returns:
    The figure (already saved).
  """
  labels = _labels(results_list, labels)
  to_x, x_label = _x_values(results_list, x_axis)
  layers = {layer for r in results_list for h in r['history']
            for layer in h['nnz']}
  layers |= {layer for r in results_list for layer in r.get('weights', {})}
  layers = sorted(layers, key=_layer_order)
  if not layers:
    raise ValueError('no run has an evaluation yet: nothing to plot')
  columns = min(len(layers), MAX_PANEL_COLUMNS)
  rows = -(-len(layers) // columns)
  fig, axes = _new_figure(rows, columns, PANEL_SIZE)
  for ax in axes.flat[len(layers):]:
    ax.set_axis_off()

  for i, (results, label) in enumerate(zip(results_list, labels)):
    color = f'C{i}'
    weights = results.get('weights', {})
    for ax, layer in zip(axes.flat, layers):
      points = [(to_x[i](h['step']), h['nnz'][layer])
                for h in results['history'] if layer in h['nnz']]
      if layer in weights:
        # Every initializer here draws non-zero weights: at step 0 all count.
        points.insert(0, (0, weights[layer]))
        ax.axhline(weights[layer], color=color, linestyle=':', linewidth=1)
      if points:
        x, y = zip(*points)
        ax.plot(x, y, color=color, marker='.', label=label if ax is axes.flat[0]
                else None)

  # Figure 3's reference: where S-FC's layer 1 would stand if it had learned
  # exactly a convolution (S-CONV) or a locally connected layer (S-LOCAL).
  references = {}
  for results in results_list:
    config = results.get('config', {})
    model, alpha = config.get('model'), config.get('alpha')
    if model not in _S_FAMILY or 'layer1' not in layers or not alpha:
      continue
    weights = results.get('weights', {}).get('layer1')
    if weights is not None and weights != _s_layer1_weights(
        model, alpha, image_shape):
      logging.warning('%s: layer1 has %d weights, not what %s at alpha %d on '
                      '%s images has; no S-CONV / S-LOCAL lines (pass the '
                      'image shape)', results.get('workdir'), weights, model,
                      alpha, image_shape)
      continue
    for name, count in s_family_references(alpha, image_shape).items():
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
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7, loc='best')
  for row in axes:
    row[0].set_ylabel('non-zero weights')
  fig.suptitle('Non-zero weights per layer (dotted: all weights of the layer)',
               fontsize=11)
  _save(fig, path)
  return fig


def plot_accuracy(results_list: Sequence[dict[str, Any]], path, *,
                  labels: Sequence[str] | None = None,
                  x_axis: str = 'epoch') -> mpl_figure.Figure:
  """Test accuracy and test loss over training, one line per run.

  Args:
    results_list: results of runs (see `load_results`).
    path: where the PNG goes.
    labels: legend entries; None builds them from the configs.
    x_axis: 'epoch' or 'step'.

  Returns:
    The figure (already saved).
  """
  labels = _labels(results_list, labels)
  to_x, x_label = _x_values(results_list, x_axis)
  fig, axes = _new_figure(1, 2, PANEL_SIZE)
  accuracy_ax, loss_ax = axes[0]
  for i, (results, label) in enumerate(zip(results_list, labels)):
    history = results['history']
    x = [to_x[i](h['step']) for h in history]
    accuracy_ax.plot(x, [100 * h['test_accuracy'] for h in history],
                     color=f'C{i}', marker='.', label=label)
    loss_ax.plot(x, [h['test_loss'] for h in history], color=f'C{i}',
                 marker='.')
  accuracy_ax.set_ylabel('test accuracy (%)')
  loss_ax.set_ylabel('test loss')
  for ax in (accuracy_ax, loss_ax):
    ax.set_xlabel(x_label)
    ax.grid(True, alpha=0.3)
  accuracy_ax.legend(fontsize=7, loc='best')
  fig.suptitle('Test accuracy and test loss', fontsize=11)
  _save(fig, path)
  return fig


# ----------------------------------------------------------------------------
# Figure 4.
# ----------------------------------------------------------------------------
def first_layer_filters(
    kernel: np.ndarray, model: str, image_shape=PAPER_IMAGE_SHAPE
) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
  """The first layer's filters as columns, whatever the layer type.

  Args:
    kernel: the kernel of `first_layer_name(model)`.
    model: a key of `_FIRST_LAYER` ('sfc', 'sconv', 'slocal', ...).
    image_shape: (H, W, C) of the input.

  Returns:
    (filters, filter_shape, unit_shape): filters of shape
    (prod(filter_shape), units), column j being unit j's filter flattened
    row-major over filter_shape = (h, w, c); unit_shape the shape that unit
    indices unravel to, e.g. (out_h, out_w, channels), or (channels,) for a
    conv.

  Raises:
    ValueError: an unsupported model, or a kernel that does not fit
      `image_shape`.
  """
  if model not in _FIRST_LAYER:
    raise ValueError(f'no first-layer filters for model {model!r}; supported: '
                     f'{", ".join(_FIRST_LAYER)}')
  name, kind, size = _FIRST_LAYER[model]
  h, w, c = image_shape
  expected = None
  if kind in ('fc', 'dense'):
    # FeatureMapDense: rows are the row-major (h, w, c) of the input image.
    if kernel.ndim == 2 and kernel.shape[0] == h * w * c:
      if kind == 'dense':
        return kernel, tuple(image_shape), (kernel.shape[1],)
      positions = math.ceil(h / size) * math.ceil(w / size)
      if kernel.shape[1] % positions == 0:
        unit_shape = (math.ceil(h / size), math.ceil(w / size),
                      kernel.shape[1] // positions)
        return kernel, tuple(image_shape), unit_shape
    expected = f'({h * w * c}, out units)'
  elif kind == 'conv':
    if kernel.ndim == 4 and kernel.shape[:3] == (size, size, c):
      # HWIO: each output channel's (k, k, C_in) block, flattened row-major.
      return kernel.reshape(-1, kernel.shape[3]), (size, size, c), (
          kernel.shape[3],)
    expected = f'({size}, {size}, {c}, channels)'
  else:  # 'local'
    if kernel.ndim == 4 and kernel.shape[2] == c * size * size:
      out_h, out_w, _, features = kernel.shape
      # The fused axis is (C_in, k_h, k_w) (see local.py); reorder each
      # position's filter to (k_h, k_w, C_in) like a conv's.
      filters = kernel.reshape(out_h, out_w, c, size, size, features)
      filters = filters.transpose(3, 4, 2, 0, 1, 5).reshape(
          size * size * c, out_h * out_w * features)
      return filters, (size, size, c), (out_h, out_w, features)
    expected = f'(out_h, out_w, {c * size * size}, channels)'
  raise ValueError(f'{model} {name} kernel has shape {kernel.shape}, expected '
                   f'{expected} for {tuple(image_shape)} images')


def first_layer_name(model: str) -> str | None:
  """The parameter name of the layer that stands for the first conv."""
  return _FIRST_LAYER[model][0] if model in _FIRST_LAYER else None


def select_units(nonzeros: np.ndarray, num: int, *, min_nonzeros: int = 20,
                 seed: int = 0) -> tuple[np.ndarray, str]:
  """Figure 4's choice: units at random among those with enough non-zeros.

  Args:
    nonzeros: non-zeros of every unit's filter.
    num: how many to pick.
    min_nonzeros: the paper's threshold (20).
    seed: for the random choice.

  Returns:
    (sorted unit indices, a sentence saying how they were chosen). When fewer
    than `num` units qualify, the `num` densest are taken instead.
  """
  eligible = np.flatnonzero(nonzeros >= min_nonzeros)
  if len(eligible) > num:
    units = np.random.default_rng(seed).choice(eligible, num, replace=False)
    note = (f'{num} of the {len(eligible):,} units with ≥ {min_nonzeros} '
            f'non-zeros, at random (seed {seed})')
  elif len(eligible) == num:
    units = eligible
    note = f'all {num} units with ≥ {min_nonzeros} non-zeros'
  else:
    units = np.argsort(-nonzeros, kind='stable')[:num]
    note = (f'only {len(eligible):,} units have ≥ {min_nonzeros} non-zeros: '
            f'the {len(units)} densest of {len(nonzeros):,}')
  return np.sort(units), note


def plot_filters(kernel: np.ndarray, image_shape: Sequence[int], path, *,
                 num_filters: int = 32, columns: int = 8,
                 min_nonzeros: int = 20, seed: int = 0, title: str = '',
                 unit_shape: Sequence[int] | None = None) -> np.ndarray:
  """Figure 4: a grid of first-layer filters, zero mid-grey.

  Each filter is scaled by its own largest magnitude to [0, 1] around 0.5, so
  zero weights are mid-grey, positive ones lighter and negative ones darker
  (per colour channel for RGB).

  Args:
    kernel: filters as columns, shape (prod(image_shape), units), e.g. S-FC's
      layer1 kernel or the output of `first_layer_filters`.
    image_shape: (H, W, C) that each column reshapes to (row-major); C is 1 or
      3.
    path: where the PNG goes.
    num_filters: how many filters to show (fewer if there are fewer units).
    columns: tiles per row.
    min_nonzeros: units with fewer non-zeros are drawn only when not enough
      others have this many (see `select_units`).
    seed: for the random choice of units.
    title: first line of the title; how the units were chosen follows.
    unit_shape: the shape unit indices unravel to, for the tile labels (e.g.
      (out_h, out_w, channels)); None labels tiles by index.

  Returns:
    The images drawn, shape (rows, columns, H, W, C) in [0, 1]: tile
    [i // columns, i % columns] is the i-th chosen unit in index order; empty
    tiles are 1 (white).
  """
  image_shape = tuple(image_shape)
  if kernel.ndim != 2 or kernel.shape[0] != math.prod(image_shape):
    raise ValueError(f'kernel of shape {kernel.shape} does not hold '
                     f'{image_shape} filters as columns')
  if image_shape[-1] not in (1, 3):
    raise ValueError(
        f'filters must have 1 or 3 channels, not {image_shape[-1]}')
  nonzeros = np.count_nonzero(kernel, axis=0)
  units, note = select_units(nonzeros, min(num_filters, kernel.shape[1]),
                             min_nonzeros=min_nonzeros, seed=seed)
  filters = np.asarray(kernel[:, units], np.float32).T.reshape(
      (len(units),) + image_shape)
  scale = np.abs(filters).reshape(len(units), -1).max(axis=1)
  scale = np.where(scale > 0, scale, 1.0)[:, None, None, None]
  tiles = 0.5 + 0.5 * filters / scale

  columns = max(1, min(columns, len(units)))
  rows = max(1, -(-len(units) // columns))
  grid = np.ones((rows, columns) + image_shape, np.float32)
  grid.reshape((-1,) + image_shape)[:len(units)] = tiles

  fig = mpl_figure.Figure(
      figsize=(columns * TILE_SIZE[0], rows * TILE_SIZE[1] + TITLE_HEIGHT),
      dpi=DPI)
  backend_agg.FigureCanvasAgg(fig)
  axes = fig.subplots(rows, columns, squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.set_axis_off()
    if i >= len(units):
      continue
    image = tiles[i] if image_shape[-1] == 3 else tiles[i, ..., 0]
    ax.imshow(image, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
    where = (','.join(map(str, np.unravel_index(units[i], unit_shape)))
             if unit_shape is not None else str(units[i]))
    ax.set_title(f'{where}  ({nonzeros[units[i]]:,} nz)', fontsize=7, pad=2)
  fig.suptitle('\n'.join(filter(None, [title, note])), fontsize=9)
  top = 1 - TITLE_HEIGHT / (rows * TILE_SIZE[1] + TITLE_HEIGHT)
  fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.08,
                      hspace=0.3)
  _save(fig, path)
  return grid


def plot_workdir_filters(workdir, path, *, image_shape=PAPER_IMAGE_SHAPE,
                         **kwargs) -> np.ndarray:
  """Figure 4 for one workdir: its newest checkpoint's first-layer filters.

  Args:
    workdir: a training workdir of a model in `_FIRST_LAYER`.
    path: where the PNG goes.
    image_shape: (H, W, C) of the input.
    **kwargs: passed to `plot_filters` (num_filters, columns, seed, ...).

  Returns:
    What `plot_filters` returns.

  Raises:
    ValueError: the workdir's model has no first-layer filters to show.
    FileNotFoundError: no checkpoint.
  """
  results = load_results(workdir)
  config = results.get('config', {})
  model = config.get('model')
  name = first_layer_name(model)
  if name is None:
    raise ValueError(f'no Figure 4 for model {model!r}; supported: '
                     f'{", ".join(_FIRST_LAYER)}')
  steps = checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(f'no checkpoint in {workdir}/checkpoints')
  step = steps[-1]
  kernel = load_params(workdir, step=step, layers=[name])[name]['kernel']
  filters, filter_shape, unit_shape = first_layer_filters(kernel, model,
                                                          image_shape)
  unit_names = ('out row, col, channel' if len(unit_shape) == 3
                else 'channel')
  title = (f'{run_label(config)}: {name} filters at step {step} '
           f'(unit = {unit_names})')
  return plot_filters(filters, filter_shape, path, title=title,
                      unit_shape=unit_shape, **kwargs)


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
      'image_shape', [str(d) for d in PAPER_IMAGE_SHAPE],
      'H,W,C of the input images (every dataset of the paper: 32,32,3).')
  flags.DEFINE_integer('num_filters', 32, 'Filters per Figure 4.')
  flags.DEFINE_integer('columns', 8, 'Filters per row of Figure 4.')
  flags.DEFINE_integer('min_nonzeros', 20, 'Figure 4 draws units with at '
                       'least this many non-zeros (the paper: 20).')
  flags.DEFINE_integer('seed', 0, "Seed of Figure 4's choice of units.")
  flags.mark_flag_as_required('workdir')


def _file_names(workdirs: Sequence[str]) -> list[str]:
  """A file-name-safe name per workdir, unique among them."""
  names = []
  for workdir in workdirs:
    name = re.sub(r'[^A-Za-z0-9_.-]+', '_',
                  epath.Path(workdir).name or 'workdir')
    names.append(name if name not in names else f'{name}_{len(names)}')
  return names


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  args = flags.FLAGS
  workdirs = args.workdir
  out = epath.Path(args.out or epath.Path(workdirs[0]) / 'figures')
  image_shape = tuple(int(d) for d in args.image_shape)
  try:
    results_list = [load_results(w) for w in workdirs]
  except FileNotFoundError as e:  # A mistyped --workdir: one line, no trace.
    sys.exit(f'error: {e}')
  written = []
  if any(r['history'] for r in results_list):
    plot_nonzeros(results_list, out / 'fig3_nonzeros.png',
                  x_axis=args.x_axis, image_shape=image_shape)
    plot_accuracy(results_list, out / 'fig_accuracy.png', x_axis=args.x_axis)
    written += ['fig3_nonzeros.png', 'fig_accuracy.png']
  else:
    logging.warning('No run has an evaluation yet: no Figure 3.')
  for workdir, results, name in zip(workdirs, results_list,
                                    _file_names(workdirs)):
    model = results.get('config', {}).get('model')
    if first_layer_name(model) is None:
      logging.warning('Skipping Figure 4 for %s: model %r has no first-layer '
                      'filters to show (supported: %s).', workdir, model,
                      ', '.join(_FIRST_LAYER))
      continue
    if not checkpoint_steps(workdir):
      logging.warning('Skipping Figure 4 for %s: no checkpoint.', workdir)
      continue
    file_name = f'fig4_filters_{name}.png'
    plot_workdir_filters(workdir, out / file_name, image_shape=image_shape,
                         num_filters=args.num_filters, columns=args.columns,
                         min_nonzeros=args.min_nonzeros, seed=args.seed)
    written.append(file_name)
  for file_name in written:
    print(out / file_name)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
