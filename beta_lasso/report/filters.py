"""Figure 4: the first-layer filters of a run, drawn as images.

`plot_workdir_filters` draws them from a workdir's newest checkpoint. Its parts
serve notebooks and tests on their own: `first_layer_filters` turns the first
layer of any model with a `ModelSpec.first_layer` (dense, conv or locally
connected) into one filter per unit, `select_units` makes the paper's choice
of units to show (at random among those with at least 20 non-zeros), and
`plot_filters` draws them in a grid, zero mid-grey.
"""

from collections.abc import Sequence
import dataclasses
import math

import numpy as np

from beta_lasso import models
from beta_lasso.report import figures
from beta_lasso.training import loading
from beta_lasso.training import workdir as workdir_lib

# A stored run (results.json without checkpoints) keeps its Figure 4 here.
ARCHIVED_FILE = 'fig4_filters.png'
TILE_SIZE = (1.3, 1.5)  # Inches, one filter with its label.
TITLE_HEIGHT = 0.6  # Inches above the tiles.


def supported_models() -> tuple[str, ...]:
  """The models with a layer that stands for the first convolution."""
  return tuple(
      name
      for name, spec in models.MODELS.items()
      if spec.first_layer is not None
  )


def first_layer_filters(
    kernel: np.ndarray, model: str, image_shape=figures.PAPER_IMAGE_SHAPE
) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
  """The first layer's filters as columns, whatever the layer type.

  Args:
    kernel: the kernel of `first_layer_name(model)`.
    model: one of `supported_models()` ('sfc', 'sconv', 'slocal', ...).
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
  if model not in supported_models():
    raise ValueError(
        f'no first-layer filters for model {model!r}; supported: '
        f'{", ".join(supported_models())}'
    )
  # 'fc' kernels are FeatureMapDense's (H*W*C_in, out units) with a stride;
  # 'dense' is a plain dense layer on the flattened image.
  name, kind, size = dataclasses.astuple(models.spec(model).first_layer)
  h, w, c = image_shape
  expected = None
  if kind in ('fc', 'dense'):
    # FeatureMapDense: rows are the row-major (h, w, c) of the input image.
    if kernel.ndim == 2 and kernel.shape[0] == h * w * c:
      if kind == 'dense':
        return kernel, tuple(image_shape), (kernel.shape[1],)
      positions = math.ceil(h / size) * math.ceil(w / size)
      if kernel.shape[1] % positions == 0:
        unit_shape = (
            math.ceil(h / size),
            math.ceil(w / size),
            kernel.shape[1] // positions,
        )
        return kernel, tuple(image_shape), unit_shape
    expected = f'({h * w * c}, out units)'
  elif kind == 'conv':
    if kernel.ndim == 4 and kernel.shape[:3] == (size, size, c):
      # HWIO: each output channel's (k, k, C_in) block, flattened row-major.
      return (
          kernel.reshape(-1, kernel.shape[3]),
          (size, size, c),
          (kernel.shape[3],),
      )
    expected = f'({size}, {size}, {c}, channels)'
  else:  # 'local'
    if kernel.ndim == 4 and kernel.shape[2] == c * size * size:
      out_h, out_w, _, features = kernel.shape
      # The fused axis is (C_in, k_h, k_w) (see local.py); reorder each
      # position's filter to (k_h, k_w, C_in) like a conv's.
      filters = kernel.reshape(out_h, out_w, c, size, size, features)
      filters = filters.transpose(3, 4, 2, 0, 1, 5).reshape(
          size * size * c, out_h * out_w * features
      )
      return filters, (size, size, c), (out_h, out_w, features)
    expected = f'(out_h, out_w, {c * size * size}, channels)'
  raise ValueError(
      f'{model} {name} kernel has shape {kernel.shape}, expected '
      f'{expected} for {tuple(image_shape)} images'
  )


def first_layer_name(model: str) -> str | None:
  """The parameter name of the layer that stands for the first conv."""
  return models.first_layer_name(model)


def select_units(
    nonzeros: np.ndarray, num: int, *, min_nonzeros: int = 20, seed: int = 0
) -> tuple[np.ndarray, str]:
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
    note = (
        f'{num} of the {len(eligible):,} units with ≥ {min_nonzeros} '
        f'non-zeros, at random (seed {seed})'
    )
  elif len(eligible) == num:
    units = eligible
    note = f'all {num} units with ≥ {min_nonzeros} non-zeros'
  else:
    units = np.argsort(-nonzeros, kind='stable')[:num]
    note = (
        f'only {len(eligible):,} units have ≥ {min_nonzeros} non-zeros: '
        f'the {len(units)} densest of {len(nonzeros):,}'
    )
  return np.sort(units), note


def plot_filters(
    kernel: np.ndarray,
    image_shape: Sequence[int],
    path,
    *,
    num_filters: int = 32,
    columns: int = 8,
    min_nonzeros: int = 20,
    seed: int = 0,
    title: str = '',
    unit_shape: Sequence[int] | None = None,
) -> np.ndarray:
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
    raise ValueError(
        f'kernel of shape {kernel.shape} does not hold '
        f'{image_shape} filters as columns'
    )
  if image_shape[-1] not in (1, 3):
    raise ValueError(
        f'filters must have 1 or 3 channels, not {image_shape[-1]}'
    )
  nonzeros = np.count_nonzero(kernel, axis=0)
  units, note = select_units(
      nonzeros,
      min(num_filters, kernel.shape[1]),
      min_nonzeros=min_nonzeros,
      seed=seed,
  )
  filters = np.asarray(kernel[:, units], np.float32).T.reshape(
      (len(units),) + image_shape
  )
  scale = np.abs(filters).reshape(len(units), -1).max(axis=1)
  scale = np.where(scale > 0, scale, 1.0)[:, None, None, None]
  tiles = 0.5 + 0.5 * filters / scale

  columns = max(1, min(columns, len(units)))
  rows = max(1, -(-len(units) // columns))
  grid = np.ones((rows, columns) + image_shape, np.float32)
  grid.reshape((-1,) + image_shape)[: len(units)] = tiles

  fig = figures.new_figure(
      columns * TILE_SIZE[0], rows * TILE_SIZE[1] + TITLE_HEIGHT
  )
  axes = fig.subplots(rows, columns, squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.set_axis_off()
    if i >= len(units):
      continue
    image = tiles[i] if image_shape[-1] == 3 else tiles[i, ..., 0]
    ax.imshow(image, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
    where = (
        ','.join(map(str, np.unravel_index(units[i], unit_shape)))
        if unit_shape is not None
        else str(units[i])
    )
    ax.set_title(f'{where}  ({nonzeros[units[i]]:,} nz)', fontsize=7, pad=2)
  fig.suptitle('\n'.join(filter(None, [title, note])), fontsize=9)
  top = 1 - TITLE_HEIGHT / (rows * TILE_SIZE[1] + TITLE_HEIGHT)
  fig.subplots_adjust(
      left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.08, hspace=0.3
  )
  figures.save(fig, path)
  return grid


def plot_workdir_filters(
    workdir, path, *, image_shape=None, **kwargs
) -> np.ndarray:
  """Figure 4 for one workdir: its newest checkpoint's first-layer filters.

  Args:
    workdir: a training workdir of a model in `supported_models()`.
    path: where the PNG goes.
    image_shape: (H, W, C) of the input; None: the run's
      (`loading.image_shape`).
    **kwargs: passed to `plot_filters` (num_filters, columns, seed, ...).

  Returns:
    What `plot_filters` returns.

  Raises:
    ValueError: the workdir's model has no first-layer filters to show.
    FileNotFoundError: no checkpoint.
  """
  results = loading.load_run(workdir)
  config = results.config
  model = config.get('model')
  name = first_layer_name(model)
  if name is None:
    raise ValueError(
        f'no Figure 4 for model {model!r}; supported: '
        f'{", ".join(supported_models())}'
    )
  steps = loading.checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(
        f'no checkpoint in {workdir}/{workdir_lib.CHECKPOINTS_DIR}'
    )
  step = steps[-1]
  params = loading.load_params(workdir, step=step, layers=[name])
  kernel = params[name]['kernel']
  filters, filter_shape, unit_shape = first_layer_filters(
      kernel, model, image_shape or loading.image_shape(results)
  )
  unit_names = 'out row, col, channel' if len(unit_shape) == 3 else 'channel'
  title = (
      f'{figures.run_label(config)}: {name} filters at step {step} '
      f'(unit = {unit_names})'
  )
  return plot_filters(
      filters, filter_shape, path, title=title, unit_shape=unit_shape, **kwargs
  )
