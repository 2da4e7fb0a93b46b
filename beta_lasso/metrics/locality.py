"""Locality of first-layer units, as numbers (the paper's Figure 4, measured).

A unit that sees the image (a column of S-FC's or 3-FC's first dense kernel, a
filter of a locally connected or convolutional layer) is reshaped to the image,
(H, W, C), and reduced to its pixel energy m_p = sum_c w[p, c]^2. Per unit:

- `window_share`: the largest share of the unit's energy inside any k x k window
  (k = 9 by default, S-CONV's kernel). A 9x9 filter scores 1; a dense random
  unit over a 32x32 image about 0.1.
- `spread`: the energy-weighted RMS distance, in pixels, of the unit's pixels
  from its energy centroid. A single pixel scores 0; a flat 32x32 unit ~13.
- `ipr`: the inverse participation ratio sum_p m_p^2 / (sum_p m_p)^2: 1 for a
  single pixel, 1 / (H W) for a flat unit.

"Local" only means something against chance, so `summarize` also measures a
null model: the same weights under one random permutation of pixel positions,
which keeps every unit's sparsity and energy distribution and destroys its
geometry. A unit with no energy (all zeros) has NaN metrics and is left out.

Every function takes numpy or jax arrays and computes with the library of its
input: numpy arrays on the host in float64 (the reference), jax arrays where
they live (sharded or not) in float32, `unit_metrics` and `unit_locality` as
one jitted program each, of which only per-unit numbers leave the devices. In
float32 every sum is of non-negative terms (no difference of large sums, as an
integral image or E[x^2] - E[x]^2 would take), so the two agree to ~1e-6
relative.
"""

from collections.abc import Sequence
import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from beta_lasso.training import sharding

METRICS = ('window_share', 'spread', 'ipr')
# The paper draws Figure 4 from units with at least this many non-zeros.
MIN_NONZEROS = 20
_CHUNK = 4096  # Units per block: bounds memory at the paper's 38,400 units.


def _xp(x):
  """The library that computes on `x`: jax.numpy for jax arrays, else numpy."""
  return jnp if isinstance(x, jax.Array) else np


def _layout(
    shape: Sequence[int], image_shape: Sequence[int]
) -> tuple[str, tuple[int, int], int]:
  """How a kernel of `shape` sees (H, W, C) images.

  Returns:
    (layout, (h, w) of its energy maps, units per entry of its last axis):
    layout is 'dense', 'conv' or 'local' (see `pixel_energy`).

  Raises:
    ValueError: a shape that fits none of the layouts.
  """
  h, w, c = image_shape
  shape = tuple(shape)
  if len(shape) == 2 and shape[0] == h * w * c:
    return 'dense', (h, w), 1
  if len(shape) == 4 and shape[2] == c and shape[0] == shape[1]:
    return 'conv', shape[:2], 1
  if len(shape) == 4 and shape[2] % c == 0:
    size = int(round(np.sqrt(shape[2] // c)))
    if size * size * c == shape[2]:
      return 'local', (size, size), shape[0] * shape[1]
  raise ValueError(
      f'kernel of shape {shape} fits no layout for {tuple(image_shape)} '
      f'images: expected ({h * w * c}, units), (k, k, {c}, features) '
      f'or (out_h, out_w, {c}*k*k, features)'
  )


def pixel_energy(kernel, image_shape: Sequence[int]):
  """Each unit's incoming weights as per-pixel energy maps.

  Args:
    kernel: the layer's kernel as stored, numpy or jax: a dense kernel of shape
      (H * W * C, units) whose rows are the row-major (h, w, c) of the image; a
      locally connected kernel (out_h, out_w, C * k * k, features) with the
      fused axis ordered (C, k_h, k_w) as in `models/local.py`; or a conv
      kernel (k, k, C, features).
    image_shape: (H, W, C) of the input image.

  Returns:
    float32 array (units, h, w), of the kernel's library: m_p = sum_c w[p, c]^2
    over the unit's own receptive field (the image for dense layers, the k x k
    patch otherwise; zeros outside a patch would change none of the metrics).
    Units of a locally connected kernel are ordered (out_h, out_w, features).

  Raises:
    ValueError: a kernel whose shape fits none of the layouts above.
  """
  xp = _xp(kernel)
  layout, (h, w), _ = _layout(np.shape(kernel), image_shape)
  c = image_shape[2]
  square = xp.square(xp.asarray(kernel, xp.float32))
  if layout == 'dense':
    return xp.moveaxis(square.reshape(h, w, c, -1).sum(axis=2), -1, 0)
  if layout == 'conv':
    return xp.moveaxis(square.sum(axis=2), -1, 0)  # (features, k, k).
  out_h, out_w, _, features = square.shape
  energy = square.reshape(out_h, out_w, c, h, w, features).sum(axis=2)
  return energy.transpose(0, 1, 4, 2, 3).reshape(-1, h, w)


def _window_sums(maps, kh: int, kw: int):
  """Sums of every kh x kw window of maps (units, h, w), of their library.

  Separable, and sums of non-negative terms only: accurate to float32
  rounding, where an integral image's differences of large prefix sums would
  cancel.
  """
  if _xp(maps) is np:
    view = np.lib.stride_tricks.sliding_window_view
    return view(view(maps, kh, axis=1).sum(-1), kw, axis=2).sum(-1)
  rows = lax.reduce_window(maps, 0.0, lax.add, (1, kh, 1), (1, 1, 1), 'VALID')
  return lax.reduce_window(rows, 0.0, lax.add, (1, 1, kw), (1, 1, 1), 'VALID')


def energy_locality(energy, window: int = 9) -> dict:
  """`window_share`, `spread` and `ipr` of energy maps (units, h, w).

  Numpy maps are measured in float64, jax arrays in float32; a map with no
  energy has NaN for all three.
  """
  xp = _xp(energy)
  units, h, w = energy.shape
  energy = energy.astype(np.float64 if xp is np else jnp.float32)
  # The total from the marginals: shorter sums than over all pixels at once.
  row, col = energy.sum(axis=2), energy.sum(axis=1)
  total = row.sum(axis=1)
  with np.errstate(invalid='ignore', divide='ignore'):
    # Maps smaller than the window fit in it whole.
    sums = _window_sums(energy, min(window, h), min(window, w))
    window_share = sums.reshape(units, -1).max(axis=1) / total

    ys, xs = xp.arange(h, dtype=energy.dtype), xp.arange(w, dtype=energy.dtype)
    cy = (row * ys).sum(axis=1) / total  # The energy centroid.
    cx = (col * xs).sum(axis=1) / total
    # The variance as a centred second moment: never negative, and exact for
    # compact units far from the origin, where E[y^2] - E[y]^2 cancels.
    var = (
        (row * xp.square(ys - cy[:, None])).sum(axis=1)
        + (col * xp.square(xs - cx[:, None])).sum(axis=1)
    ) / total
    spread = xp.sqrt(var)

    ipr = xp.square(energy).sum(axis=2).sum(axis=1) / xp.square(total)
  empty = ~(total > 0)
  return {
      k: xp.where(empty, np.nan, v)
      for k, v in (
          ('window_share', window_share),
          ('spread', spread),
          ('ipr', ipr),
      )
  }


def unit_nonzeros(kernel, image_shape: Sequence[int]):
  """Non-zero incoming weights (int32) of each unit, in `pixel_energy` order."""
  xp = _xp(kernel)
  indicator = (xp.asarray(kernel) != 0).astype(xp.float32)
  # The energy of a 0/1 kernel is its count of non-zeros per pixel (exact in
  # float32 up to 2^24 weights per unit).
  counts = pixel_energy(indicator, image_shape).sum(axis=(1, 2))
  return xp.rint(counts).astype(xp.int32)


def unpermute(energy, pixel_permutation):
  """Energy maps of a run on permuted pixels, in the image's own coordinates.

  Args:
    energy: (units, H, W) maps over the pixels the model saw.
    pixel_permutation: the run's permutation: model pixel q (row-major) is
      image pixel `pixel_permutation[q]`.

  Returns:
    (units, H, W) maps with each value moved back to its image pixel.
  """
  xp = _xp(energy)
  units, h, w = energy.shape
  # Image pixel p holds model pixel inverse[p]: a gather, which jax and numpy
  # both do out of place.
  inverse = xp.argsort(xp.asarray(pixel_permutation))
  return energy.reshape(units, h * w)[:, inverse].reshape(units, h, w)


def _block_metrics(
    kernel, image_shape, window, pixel_permutation, null_order
) -> dict:
  """Per-unit numbers of a kernel (or a block of one), in unit order.

  Returns:
    `METRICS` of the measured maps, the same prefixed 'null_' for the maps
    with pixels in `null_order` (when given), and 'nonzeros'.
  """
  energy = pixel_energy(kernel, image_shape)
  if pixel_permutation is not None:
    energy = unpermute(energy, pixel_permutation)
  if null_order is None:
    out = dict(energy_locality(energy, window))
  else:
    # Measured and null maps as one batch: half the ops for XLA to compile.
    units, h, w = energy.shape
    null = energy.reshape(units, h * w)[:, null_order].reshape(units, h, w)
    both = energy_locality(_xp(energy).concatenate([energy, null]), window)
    out = {k: v[:units] for k, v in both.items()}
    out.update({f'null_{k}': v[units:] for k, v in both.items()})
  out['nonzeros'] = unit_nonzeros(kernel, image_shape)
  return out


def _per_unit(
    kernel, image_shape, window, pixel_permutation, null_order, shards=1
):
  """`_block_metrics` in blocks of about `_CHUNK` units, for bounded memory.

  A block is a slice of the kernel's last axis: the units of a dense or conv
  kernel, the features of a locally connected one (with all their positions).
  Numpy slices it in a loop. Jax runs one `lax.map` over equal blocks, the last
  starting early to overlap its predecessor rather than reach past the kernel
  (padding would copy all of it); with the last axis split into `shards`
  contiguous shards, a block takes the same slice of every shard, so that each
  device reads its own part of the kernel and none gathers the rest.
  """
  block = functools.partial(
      _block_metrics,
      image_shape=image_shape,
      window=window,
      pixel_permutation=pixel_permutation,
      null_order=null_order,
  )
  positions, features = _layout(kernel.shape, image_shape)[2], kernel.shape[-1]
  if _xp(kernel) is np:
    size = max(1, _CHUNK // positions)
    parts = [block(kernel[..., s : s + size]) for s in range(0, features, size)]
    return {
        k: np.concatenate(
            [p[k].reshape(positions, -1) for p in parts], axis=1
        ).reshape(-1)
        for k in parts[0]
    }
  shard = features // shards
  kernel = kernel.reshape(*kernel.shape[:-1], shards, shard)
  size = max(1, min(shard, _CHUNK // (positions * shards)))
  count = -(-shard // size)

  def one_block(start):
    part = lax.dynamic_slice_in_dim(kernel, start, size, axis=kernel.ndim - 1)
    return block(part.reshape(*part.shape[:-2], shards * size))

  out = lax.map(one_block, jnp.minimum(jnp.arange(count) * size, shard - size))

  def in_unit_order(values):  # (count, units per block) -> (units,)
    values = values.reshape(count, positions * shards, size)
    head = (
        values[:-1]
        .transpose(1, 0, 2)
        .reshape(positions * shards, (count - 1) * size)
    )
    tail = values[-1][:, count * size - shard :]
    return jnp.concatenate([head, tail], axis=1).reshape(-1)

  return {k: in_unit_order(v) for k, v in out.items()}


_per_unit_on_device = jax.jit(
    _per_unit, static_argnames=('image_shape', 'window', 'shards')
)


def _measure(
    kernel, image_shape, window, pixel_permutation=None, null_order=None
) -> dict:
  """`_per_unit` with the kernel's library: jitted for a jax array."""
  if _xp(kernel) is np:
    return _per_unit(
        np.asarray(kernel),
        tuple(image_shape),
        window,
        pixel_permutation,
        null_order,
    )
  features = kernel.shape[-1]
  shard = kernel.sharding.shard_shape(kernel.shape)[-1]
  return _per_unit_on_device(
      kernel,
      image_shape=tuple(image_shape),
      window=window,
      pixel_permutation=pixel_permutation,
      null_order=null_order,
      shards=features // shard if features % shard == 0 else 1,
  )


def unit_locality(kernel, image_shape: Sequence[int], window: int = 9) -> dict:
  """Per-unit locality of a first-layer kernel.

  Args:
    kernel: the kernel as stored, numpy or jax (see `pixel_energy` for the
      layouts).
    image_shape: (H, W, C) of the input.
    window: side of the window for `window_share`.

  Returns:
    {'window_share', 'spread', 'ipr'}: one value per unit (NaN for a unit
    with no energy), float64 numpy arrays for a numpy kernel, float32 jax
    arrays on the kernel's devices for a jax one.
  """
  values = _measure(kernel, image_shape, window)
  return {k: values[k] for k in METRICS}


def unit_metrics(
    kernel,
    image_shape: Sequence[int],
    *,
    window: int = 9,
    pixel_permutation: np.ndarray | None = None,
    null_seed: int = 0,
) -> dict:
  """Everything that `summarize` needs to know of each unit.

  Args:
    kernel: the first layer's kernel as stored, numpy or jax.
    image_shape: (H, W, C) of the input.
    window: side of the window for `window_share`.
    pixel_permutation: see `summarize`.
    null_seed: seeds the null model's pixel permutation.

  Returns:
    {'window_share', 'spread', 'ipr'} of the measured maps, the same three
    prefixed 'null_' for the null model, and 'nonzeros' (int32): one value
    per unit, float64 numpy arrays for a numpy kernel, float32 jax arrays on
    the kernel's devices (one jitted program) for a jax one.

  Raises:
    ValueError: a kernel of no known layout, or a `pixel_permutation` for one
      that sees patches.
  """
  _, (h, w), _ = _layout(np.shape(kernel), image_shape)
  if pixel_permutation is not None:
    if (h, w) != tuple(image_shape[:2]):
      raise ValueError(
          'pixel_permutation needs a kernel that sees the whole '
          f'image; this one sees {h}x{w} patches'
      )
    pixel_permutation = np.asarray(pixel_permutation)
  null_order = np.random.default_rng(null_seed).permutation(h * w)
  return _measure(kernel, image_shape, window, pixel_permutation, null_order)


def _stats(values: np.ndarray) -> dict[str, float]:
  values = values[np.isfinite(values)]
  if not len(values):
    return {'median': float('nan'), 'q25': float('nan'), 'q75': float('nan')}
  q25, median, q75 = np.percentile(values, [25, 50, 75])
  return {'median': float(median), 'q25': float(q25), 'q75': float(q75)}


def summarize(
    kernel,
    image_shape: Sequence[int],
    *,
    window: int = 9,
    pixel_permutation: np.ndarray | None = None,
    min_nonzeros: int = MIN_NONZEROS,
    null_seed: int = 0,
) -> dict[str, float]:
  """A run's locality: quartiles over units, against a permuted-pixel null.

  A jax kernel is measured where it lives (sharded or not, on every process
  that holds a part of it, which must all call this); only the per-unit
  numbers, a few hundred KB, come to the host for the quartiles.

  Args:
    kernel: the first layer's kernel as stored, numpy (measured in float64)
      or jax (in float32).
    image_shape: (H, W, C) of the input.
    window: side of the window for `window_share`.
    pixel_permutation: for a run trained on permuted pixels, its permutation;
      locality is then measured in the image's own coordinates. Only for
      kernels that see the whole image (dense layers).
    min_nonzeros: units with at least this many non-zeros form the 'active'
      set (the paper's Figure 4 rule).
    null_seed: seeds the null model's pixel permutation.

  Returns:
    Flat {'METRIC/SET/STAT': value}: METRIC in `METRICS`, SET in 'active',
    'all', 'null_active', 'null_all', STAT in 'median', 'q25', 'q75'; plus
    'units' and 'active_units'.
  """
  values = unit_metrics(
      kernel,
      image_shape,
      window=window,
      pixel_permutation=pixel_permutation,
      null_seed=null_seed,
  )
  # A few hundred KB, from every process where the kernel is sharded.
  values = {
      k: sharding.gather(v) if isinstance(v, jax.Array) else v
      for k, v in values.items()
  }
  active = values['nonzeros'] >= min_nonzeros
  out = {'units': float(len(active)), 'active_units': float(active.sum())}
  for prefix in ('', 'null_'):
    for metric in METRICS:
      unit_values = np.asarray(values[prefix + metric], np.float64)
      for subset, chosen in (
          ('active', unit_values[active]),
          ('all', unit_values),
      ):
        for stat, value in _stats(chosen).items():
          out[f'{metric}/{prefix}{subset}/{stat}'] = value
  return out
