"""Fast AutoAugment (Lim et al., NeurIPS 2019): device side, jax, jittable.

A policy (`autoaugment_policies`) is a list of sub-policies of two operations,
each with a probability and a magnitude in [0, 1]. Per image one sub-policy is
drawn uniformly and each of its operations applied with its probability; the
magnitude maps linearly onto the operation's range in `OPS`, and the
geometric operations flip its sign with probability 1/2, as in the authors'
code. Everything is keyed by one PRNG key, like `augmentation.augment`, so a
run stays a function of (seed, step).

The operations are those of the Python Imaging Library, which the policies
were searched with, on uint8 values (tests/autoaugment_test.py checks each
against Pillow on real CIFAR-10 images):

- ShearX/Y, TranslateX/Y, Rotate: `Image.transform(AFFINE)` and
  `Image.rotate`, nearest resampling, black fill;
- AutoContrast, Invert, Equalize, Solarize, Posterize: `PIL.ImageOps`, a
  lookup table per channel;
- Contrast, Color, Brightness, Sharpness: `PIL.ImageEnhance`, Pillow's blend
  of the image with a degenerate one (its mean grey, its greyscale, black, its
  smoothing), truncated to uint8;
- Cutout: the authors' square of side magnitude x width.

The images of a batch each run a different operation. Under `vmap` a
per-image `lax.switch` runs all fifteen and selects; instead `apply_op` runs
one warp, one table lookup, one blend and one Cutout per image, each at
identity unless the operation is theirs. dm-pix has affine warps and colour
ops, but its colour ops are other definitions (contrast about each channel's
mean, additive brightness, saturation in HSV) and its warp gathers every
(row, column, channel) separately: 25-65 ms per operation for a CIFAR batch
of 256 on two CPU cores, against 3 ms for the one row-and-column gather here.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from beta_lasso.data import autoaugment_policies

# Each operation's range: a magnitude m in [0, 1] is low + m * (high - low).
# Translations and Cutout are fractions of the image side, Rotate degrees,
# Solarize the threshold, Posterize the bits kept (truncated), the
# enhancements Pillow's factors (1 leaves the image as it is).
OPS = {
    'ShearX': (-0.3, 0.3),
    'ShearY': (-0.3, 0.3),
    'TranslateX': (-0.45, 0.45),
    'TranslateY': (-0.45, 0.45),
    'Rotate': (-30.0, 30.0),
    'AutoContrast': (0.0, 1.0),
    'Invert': (0.0, 1.0),
    'Equalize': (0.0, 1.0),
    'Solarize': (0.0, 256.0),
    'Posterize': (4.0, 8.0),
    'Contrast': (0.1, 1.9),
    'Color': (0.1, 1.9),
    'Brightness': (0.1, 1.9),
    'Sharpness': (0.1, 1.9),
    'Cutout': (0.0, 0.2),
}
GEOMETRIC = ('ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Rotate')
LOOKUP = ('AutoContrast', 'Invert', 'Equalize', 'Solarize', 'Posterize')
ENHANCE = ('Contrast', 'Color', 'Brightness', 'Sharpness')
# `apply_op`'s index for no operation.
IDENTITY = len(OPS)

POLICIES = {
    'reduced_cifar10': autoaugment_policies.REDUCED_CIFAR10,
    'reduced_svhn': autoaugment_policies.REDUCED_SVHN,
}


# ----------------------------------------------------------------------------
# The four families. Images are [H, W, C] float32 holding uint8 values.
# ----------------------------------------------------------------------------
def _affine_coeffs(value, height: int, width: int) -> jax.Array:
  """Pillow's (a, b, c, d, e, f) of each of `GEOMETRIC`, then identity: [6, 6].

  Output pixel (x, y) takes the input pixel holding the point
  (a x' + b y' + c, d x' + e y' + f), x' = x + 1/2, y' = y + 1/2.
  """
  one, zero = jnp.ones_like(value), jnp.zeros_like(value)
  # Image.rotate: counter-clockwise by `value` degrees about the centre.
  cx, cy = width / 2, height / 2
  cos, sin = jnp.cos(-jnp.deg2rad(value)), jnp.sin(-jnp.deg2rad(value))
  return jnp.stack(
      [
          jnp.stack(row)
          for row in (
              (one, value, zero, zero, one, zero),  # ShearX
              (one, zero, zero, value, one, zero),  # ShearY
              (one, zero, value * width, zero, one, zero),  # TranslateX
              (one, zero, zero, zero, one, value * height),  # TranslateY
              (
                  cos,
                  sin,
                  cx - cos * cx - sin * cy,
                  -sin,
                  cos,
                  cy + sin * cx - cos * cy,
              ),  # Rotate
              (one, zero, zero, zero, one, zero),
          )
      ]
  )


def _warp(image: jax.Array, coeffs: jax.Array) -> jax.Array:
  """Pillow's `Image.transform(AFFINE, coeffs)`: nearest, black outside."""
  height, width, channels = image.shape
  a, b, c, d, e, f = coeffs
  x = jnp.arange(width, dtype=jnp.float32)[None, :] + 0.5
  y = jnp.arange(height, dtype=jnp.float32)[:, None] + 0.5
  # Pillow's pixel i spans [i, i + 1): the source pixel is the floor.
  col = jnp.floor(a * x + b * y + c)
  row = jnp.floor(d * x + e * y + f)
  inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
  index = (
      jnp.clip(row, 0, height - 1) * width + jnp.clip(col, 0, width - 1)
  ).astype(jnp.int32)
  # One gather of whole pixels (all channels at once).
  out = image.reshape(-1, channels)[index.ravel()].reshape(image.shape)
  return jnp.where(inside[..., None], out, 0.0)


def _histogram(values: jax.Array) -> jax.Array:
  """[H * W, C] int32 values -> [C, 256] counts."""
  channels = values.shape[-1]
  bins = (values + 256 * jnp.arange(channels)).ravel()
  return (
      jnp.zeros(256 * channels, jnp.int32)
      .at[bins]
      .add(1)
      .reshape(channels, 256)
  )


def _luts(image: jax.Array, value) -> jax.Array:
  """`PIL.ImageOps`'s table of each of `LOOKUP`, then identity: [6, C, 256]."""
  channels = image.shape[-1]
  values = image.reshape(-1, channels).astype(jnp.int32)
  i = jnp.broadcast_to(jnp.arange(256, dtype=jnp.int32), (channels, 256))

  # autocontrast: each channel's [lo, hi] stretched to [0, 255]. Exact
  # integer arithmetic (Pillow's, in doubles, is sometimes 1 lower).
  lo = values.min(axis=0)[:, None]
  hi = values.max(axis=0)[:, None]
  stretched = jnp.clip((i - lo) * 255 // jnp.maximum(hi - lo, 1), 0, 255)
  auto_contrast = jnp.where(hi > lo, stretched, i)

  # equalize: step = (pixels - count of the top value) // 255 and
  # lut[i] = (step // 2 + pixels below i) // step; identity when step is 0
  # (which covers a channel of one value).
  hist = _histogram(values)
  top = jnp.take_along_axis(hist, hi, axis=1)
  step = (values.shape[0] - top) // 255
  # A cumulative sum as a product with a triangular matrix: faster than
  # XLA's cumsum on CPU, and exact (counts <= 2^24) at 'highest' precision.
  upper = jnp.triu(jnp.ones((256, 256), jnp.float32), k=1)
  below = jnp.matmul(
      hist.astype(jnp.float32), upper, precision='highest'
  ).astype(jnp.int32)
  equalized = jnp.minimum((step // 2 + below) // jnp.maximum(step, 1), 255)
  equalize = jnp.where(step > 0, equalized, i)

  # posterize keeps int(value) bits.
  shift = 8 - value.astype(jnp.int32)
  return jnp.stack(
      [
          auto_contrast,
          255 - i,  # invert
          equalize,
          jnp.where(i < value, i, 255 - i),  # solarize at threshold `value`
          (i >> shift) << shift,  # posterize
          i,
      ]
  )


def _lookup(image: jax.Array, lut: jax.Array) -> jax.Array:
  """`image.point(lut)`: [C, 256] tables."""
  channels = image.shape[-1]
  values = image.reshape(-1, channels).astype(jnp.int32)
  out = lut.ravel()[values + 256 * jnp.arange(channels)]
  return out.reshape(image.shape).astype(image.dtype)


def grayscale(image: jax.Array) -> jax.Array:
  """Pillow's RGB -> L conversion, [H, W, 3] -> [H, W, 1].

  Pillow's integer weights (ITU-R 601-2 luma in 16-bit fixed point), not a
  float luma, so that the greys match to the level.
  """
  rgb = image.astype(jnp.int32)
  luma = (
      rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
  ) >> 16
  return luma[..., None].astype(image.dtype)


def _smooth(image: jax.Array) -> jax.Array:
  """`ImageFilter.SMOOTH`: [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, rounded.

  Pillow leaves the one-pixel border as it is.
  """
  rows = image[:-2] + image[1:-1] + image[2:]
  box = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]  # Separable 3 x 3 sum.
  total = box + 4 * image[1:-1, 1:-1]
  return image.at[1:-1, 1:-1].set(jnp.floor(total / 13 + 0.5))


def _enhance(image: jax.Array, member, factor) -> jax.Array:
  """`PIL.ImageEnhance`'s `ENHANCE[member]` (none if len(ENHANCE)) at `factor`.

  The blend of the image with a degenerate one: its mean grey, its greyscale,
  black or its smoothing.
  """
  gray = grayscale(image)
  # One-hot weights rather than a stack of degenerate images to index: one
  # fused pass over the pixels, exact as the weights are 0 or 1.
  w = jax.nn.one_hot(member, len(ENHANCE) + 1, dtype=image.dtype)
  degenerate = (
      w[0] * jnp.floor(gray.mean() + 0.5)
      + w[1] * gray
      + w[3] * _smooth(image)
      + w[4] * image
  )
  factor = jnp.where(member < len(ENHANCE), factor, 1.0)
  return _blend(degenerate, image, factor)


def _blend(degenerate: jax.Array, image: jax.Array, factor) -> jax.Array:
  """`Image.blend(degenerate, image, factor)`: float32, truncated, clipped."""
  return jnp.clip(jnp.floor(degenerate + factor * (image - degenerate)), 0, 255)


def _cutout(image: jax.Array, size, center, fill) -> jax.Array:
  """The authors' Cutout: a square of side `size` pixels, 0 for none.

  Its corner is floor(max(0, center - size / 2)) per axis and Pillow's
  `ImageDraw.rectangle` includes the far edge, floor(corner + size), cut by
  the border.
  """
  height, width, _ = image.shape
  top, left = (jnp.floor(jnp.maximum(0.0, c - size / 2)) for c in center)
  rows = jnp.arange(height, dtype=jnp.float32)[:, None]
  cols = jnp.arange(width, dtype=jnp.float32)[None, :]
  inside = (
      (rows >= top)
      & (rows <= jnp.floor(top + size))
      & (cols >= left)
      & (cols <= jnp.floor(left + size))
      & (size > 0)
  )
  return jnp.where(inside[..., None], jnp.asarray(fill, image.dtype), image)


def _member(op, family: tuple[str, ...]):
  """`op`'s index in `family`, len(family) (its identity) if not in it."""
  table = [family.index(n) if n in family else len(family) for n in OPS]
  return jnp.asarray(table + [len(family)])[op]


def apply_op(
    image: jax.Array, op, value, center=(0.0, 0.0), fill=0.0
) -> jax.Array:
  """Applies one operation to one image.

  Args:
    image: [H, W, 3] float32 holding uint8 values.
    op: a name in `OPS`, or its index (`IDENTITY` for none), may be traced.
    value: the operation's argument, in its `OPS` range (a magnitude already
      mapped), may be traced.
    center: Cutout's centre (row, column), floats in [0, H) x [0, W).
    fill: Cutout's colour, a scalar or [3].

  Returns:
    The image after the operation, float32 holding uint8 values.
  """
  if isinstance(op, str):
    op = list(OPS).index(op)
  value = jnp.asarray(value, jnp.float32)
  height, width, _ = image.shape
  # At most one of the four steps is not the identity, so each may read the
  # image the steps before it returned.
  coeffs = _affine_coeffs(value, height, width)[_member(op, GEOMETRIC)]
  image = _warp(image, coeffs)
  image = _lookup(image, _luts(image, value)[_member(op, LOOKUP)])
  image = _enhance(image, _member(op, ENHANCE), value)
  # The authors' Cutout side is a fraction of the width.
  size = jnp.where(op == list(OPS).index('Cutout'), value * width, 0.0)
  return _cutout(image, size, center, fill)


# ----------------------------------------------------------------------------
# Policies.
# ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def policy_table(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Policy `name` as arrays: op index into `OPS`, probability, magnitude.

  Args:
    name: a key of `POLICIES`.

  Returns:
    (ops int32, probabilities float32, magnitudes float32), each [N, 2].

  Raises:
    ValueError: unknown `name`.
  """
  if name not in POLICIES:
    raise ValueError(
        f'Unknown policy {name!r}; valid names: ' f'{", ".join(POLICIES)}.'
    )
  names = list(OPS)
  subpolicies = POLICIES[name]
  ops = np.array(
      [[names.index(op) for op, _, _ in s] for s in subpolicies], np.int32
  )
  probs = np.array([[p for _, p, _ in s] for s in subpolicies], np.float32)
  levels = np.array([[m for _, _, m in s] for s in subpolicies], np.float32)
  return ops, probs, levels


def sample_subpolicy(key: jax.Array, table, image_shape) -> dict:
  """Draws what one image gets: a sub-policy, and its operations' arguments.

  Args:
    key: a PRNG key.
    table: `policy_table(name)`, numpy or jax arrays.
    image_shape: (H, W, C).

  Returns:
    'row' (the sub-policy), 'op' ([2] int32, `IDENTITY` for an operation its
    probability skipped), 'value' ([2], magnitudes mapped into `OPS` ranges,
    sign-flipped for half the geometric ones) and 'center' ([2, 2], Cutout's).
  """
  ops, probs, levels = (jnp.asarray(a) for a in table)
  low = jnp.asarray([lo for lo, _ in OPS.values()], jnp.float32)
  high = jnp.asarray([hi for _, hi in OPS.values()], jnp.float32)
  mirrored = jnp.asarray([name in GEOMETRIC for name in OPS])
  # One draw of uniforms for all choices: each jax.random call is a hash
  # that XLA compiles on its own.
  u = jax.random.uniform(key, (9,))
  row = jnp.minimum((u[0] * ops.shape[0]).astype(jnp.int32), ops.shape[0] - 1)
  op = ops[row]
  value = low[op] + levels[row] * (high[op] - low[op])
  value = jnp.where(mirrored[op] & (u[1:3] < 0.5), -value, value)
  # The authors skip an operation when random() > probability.
  applied = u[3:5] <= probs[row]
  center = u[5:].reshape(2, 2) * jnp.asarray(image_shape[:2], jnp.float32)
  return {
      'row': row,
      'op': jnp.where(applied, op, IDENTITY),
      'value': value,
      'center': center,
  }


def _augment_one(image, key, *, table, fill):
  drawn = sample_subpolicy(key, table, image.shape)

  def slot(x, op_value_center):
    return apply_op(x, *op_value_center, fill), None

  # A scan over the two operations compiles `apply_op` once.
  x, _ = jax.lax.scan(
      slot,
      image.astype(jnp.float32),
      (drawn['op'], drawn['value'], drawn['center']),
  )
  return x.astype(image.dtype)


# Jitted so that eager callers compile once per shape (as `augment`).
@functools.partial(jax.jit, static_argnames=('policy',))
def fast_autoaugment(
    images: jax.Array, rng: jax.Array, *, policy: str, fill=0
) -> jax.Array:
  """Applies one random sub-policy of `policy` to each image.

  Args:
    images: [B, H, W, 3] uint8.
    rng: a PRNG key; example i uses `jax.random.split(rng, B)[i]`.
    policy: a key of `POLICIES`.
    fill: the Cutout operation's colour, a scalar or [3] (the authors fill
      with CIFAR-10's rounded mean).

  Returns:
    Images of the same shape and dtype.
  """
  one = functools.partial(
      _augment_one,
      table=policy_table(policy),
      fill=jnp.asarray(fill, jnp.float32),
  )
  return jax.vmap(one)(images, jax.random.split(rng, images.shape[0]))
