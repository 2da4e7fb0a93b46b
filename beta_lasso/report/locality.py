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
"""
from collections.abc import Sequence

import numpy as np

METRICS = ('window_share', 'spread', 'ipr')
# The paper draws Figure 4 from units with at least this many non-zeros.
MIN_NONZEROS = 20
_CHUNK = 4096  # Units per block: bounds memory at the paper's 38,400 units.


def pixel_energy(kernel: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
  """Each unit's incoming weights as per-pixel energy maps.

  Args:
    kernel: the layer's kernel as stored: a dense kernel of shape
      (H * W * C, units) whose rows are the row-major (h, w, c) of the image; a
      locally connected kernel (out_h, out_w, C * k * k, features) with the
      fused axis ordered (C, k_h, k_w) as in `models/local.py`; or a conv
      kernel (k, k, C, features).
    image_shape: (H, W, C) of the input image.

  Returns:
    float32 array (units, h, w): m_p = sum_c w[p, c]^2 over the unit's own
    receptive field (the image for dense layers, the k x k patch otherwise;
    zeros outside a patch would change none of the metrics).

  Raises:
    ValueError: a kernel whose shape fits none of the layouts above.
  """
  h, w, c = image_shape
  kernel = np.asarray(kernel, np.float32)
  if kernel.ndim == 2 and kernel.shape[0] == h * w * c:
    energy = np.square(kernel).reshape(h, w, c, -1).sum(axis=2)
    return np.moveaxis(energy, -1, 0)
  if kernel.ndim == 4 and kernel.shape[2] == c and kernel.shape[0] == kernel.shape[1]:
    energy = np.square(kernel).sum(axis=2)  # (k, k, features)
    return np.moveaxis(energy, -1, 0)
  if kernel.ndim == 4 and kernel.shape[2] % c == 0:
    size = int(round(np.sqrt(kernel.shape[2] // c)))
    if size * size * c == kernel.shape[2]:
      out_h, out_w, _, features = kernel.shape
      energy = np.square(kernel).reshape(out_h, out_w, c, size, size, features)
      energy = energy.sum(axis=2).transpose(0, 1, 4, 2, 3)
      return energy.reshape(out_h * out_w * features, size, size)
  raise ValueError(
      f'kernel of shape {kernel.shape} fits no layout for {tuple(image_shape)} '
      f'images: expected ({h * w * c}, units), (k, k, {c}, features) or '
      f'(out_h, out_w, {c}*k*k, features)')


def energy_locality(energy: np.ndarray, window: int = 9) -> dict[str, np.ndarray]:
  """`window_share`, `spread` and `ipr` of energy maps (units, h, w)."""
  units, h, w = energy.shape
  energy = energy.astype(np.float64)
  total = energy.sum(axis=(1, 2))
  with np.errstate(invalid='ignore', divide='ignore'):
    # Largest k x k window sum from an integral image; maps smaller than the
    # window fit in it whole.
    kh, kw = min(window, h), min(window, w)
    integral = np.zeros((units, h + 1, w + 1))
    integral[:, 1:, 1:] = energy.cumsum(1).cumsum(2)
    sums = (integral[:, kh:, kw:] - integral[:, :-kh, kw:]
            - integral[:, kh:, :-kw] + integral[:, :-kh, :-kw])
    window_share = sums.reshape(units, -1).max(axis=1) / total

    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    row, col = energy.sum(axis=2), energy.sum(axis=1)  # Marginals.
    cy, cx = row @ ys / total, col @ xs / total
    var = (row @ ys**2 + col @ xs**2) / total - cy**2 - cx**2
    spread = np.sqrt(np.maximum(var, 0.0))

    ipr = np.square(energy).sum(axis=(1, 2)) / np.square(total)
  empty = ~(total > 0)
  for values in (window_share, spread, ipr):
    values[empty] = np.nan
  return {'window_share': window_share, 'spread': spread, 'ipr': ipr}


def unit_locality(kernel: np.ndarray, image_shape: Sequence[int],
                  window: int = 9) -> dict[str, np.ndarray]:
  """Per-unit locality of a first-layer kernel.

  Args:
    kernel: the kernel as stored (see `pixel_energy` for the layouts).
    image_shape: (H, W, C) of the input.
    window: side of the window for `window_share`.

  Returns:
    {'window_share', 'spread', 'ipr'}: float arrays, one value per unit (NaN
    for a unit with no energy).
  """
  energy = pixel_energy(kernel, image_shape)
  out = [energy_locality(energy[i:i + _CHUNK], window)
         for i in range(0, len(energy), _CHUNK)]
  return {k: np.concatenate([o[k] for o in out]) for k in METRICS}


def unit_nonzeros(kernel: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
  """Non-zero incoming weights of every unit, in `unit_locality`'s order."""
  indicator = (np.asarray(kernel) != 0).astype(np.float32)
  # The energy of a 0/1 kernel is its count of non-zeros per pixel.
  return np.rint(pixel_energy(indicator, image_shape).sum(axis=(1, 2))).astype(
      np.int64)


def unpermute(energy: np.ndarray, pixel_permutation: np.ndarray) -> np.ndarray:
  """Energy maps of a run on permuted pixels, in the image's own coordinates.

  Args:
    energy: (units, H, W) maps over the pixels the model saw.
    pixel_permutation: the run's permutation: model pixel q (row-major) is
      image pixel `pixel_permutation[q]`.

  Returns:
    (units, H, W) maps with each value moved back to its image pixel.
  """
  units, h, w = energy.shape
  image = np.empty_like(energy).reshape(units, h * w)
  image[:, pixel_permutation] = energy.reshape(units, h * w)
  return image.reshape(units, h, w)


def _stats(values: np.ndarray) -> dict[str, float]:
  values = values[np.isfinite(values)]
  if not len(values):
    return {'median': float('nan'), 'q25': float('nan'), 'q75': float('nan')}
  q25, median, q75 = np.percentile(values, [25, 50, 75])
  return {'median': float(median), 'q25': float(q25), 'q75': float(q75)}


def summarize(kernel: np.ndarray, image_shape: Sequence[int], *,
              window: int = 9, pixel_permutation: np.ndarray | None = None,
              min_nonzeros: int = MIN_NONZEROS,
              null_seed: int = 0) -> dict[str, float]:
  """A run's locality: quartiles over units, against a permuted-pixel null.

  Args:
    kernel: the first layer's kernel as stored.
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
  energy = pixel_energy(kernel, image_shape)
  units, h, w = energy.shape
  if pixel_permutation is not None:
    if (h, w) != tuple(image_shape[:2]):
      raise ValueError('pixel_permutation needs a kernel that sees the whole '
                       f'image; this one sees {h}x{w} patches')
    energy = unpermute(energy, np.asarray(pixel_permutation))
  null_order = np.random.default_rng(null_seed).permutation(h * w)
  active = unit_nonzeros(kernel, image_shape) >= min_nonzeros
  out = {'units': float(units), 'active_units': float(active.sum())}
  measured = {'': {}, 'null_': {}}
  for start in range(0, units, _CHUNK):
    block = energy[start:start + _CHUNK]
    null = block.reshape(len(block), h * w)[:, null_order].reshape(block.shape)
    for prefix, maps in (('', block), ('null_', null)):
      for k, v in energy_locality(maps, window).items():
        measured[prefix].setdefault(k, []).append(v)
  for prefix, metrics in measured.items():
    for metric, parts in metrics.items():
      values = np.concatenate(parts)
      for subset, chosen in (('active', values[active]), ('all', values)):
        for stat, value in _stats(chosen).items():
          out[f'{metric}/{prefix}{subset}/{stat}'] = value
  return out
