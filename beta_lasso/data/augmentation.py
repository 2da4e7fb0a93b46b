"""Augmentation and normalization: device side, jax, jittable.

Everything here runs inside the jitted train or eval step on uint8 NHWC
batches that `input_pipeline` gathered on the host: random crop, horizontal
flip and Cutout keyed by a PRNG key derived from (seed, step), after Fast
AutoAugment's policies (`autoaugment`) for 'fast_autoaugment'; the fixed
pixel permutation of `permute_pixels` runs; and the per-channel
normalization of `input_pipeline.DatasetInfo`.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from beta_lasso.data import autoaugment
from beta_lasso.data.input_pipeline import DatasetInfo

AUGMENTATIONS = ('none', 'crop_flip', 'crop_flip_cutout', 'fast_autoaugment')


def _augment_one(
    padded: jax.Array,
    key: jax.Array,
    *,
    height: int,
    width: int,
    crop_padding: int,
    flip: bool,
    cutout: int,
    cutout_fill: jax.Array,
) -> jax.Array:
  """Crop, flip and Cutout for one zero-padded image [H+2p, W+2p, C]."""
  # Always three keys, so a given key crops the same way whatever flip/cutout.
  crop_key, flip_key, cutout_key = jax.random.split(key, 3)
  top, left = jax.random.randint(crop_key, (2,), 0, 2 * crop_padding + 1)
  image = jax.lax.dynamic_slice(
      padded, (top, left, 0), (height, width, padded.shape[-1])
  )
  if flip:
    image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
  if cutout > 0:
    # DeVries & Taylor: centre anywhere in the image, square clipped at the
    # borders, so near edges less than cutout x cutout pixels are erased.
    cy, cx = jax.random.randint(cutout_key, (2,), 0, jnp.array([height, width]))
    y0, x0 = cy - cutout // 2, cx - cutout // 2
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    inside = (
        (rows >= y0)
        & (rows < y0 + cutout)
        & (cols >= x0)
        & (cols < x0 + cutout)
    )
    image = jnp.where(inside[:, :, None], cutout_fill, image)
  return image


# Jitted so that eager callers (tests, notebooks) compile once per shape instead
# of dispatching op by op; inside a jitted train step it simply inlines.
@functools.partial(jax.jit, static_argnames=('crop_padding', 'flip', 'cutout'))
def augment(
    images: jax.Array,
    rng: jax.Array,
    *,
    crop_padding: int = 4,
    flip: bool = True,
    cutout: int = 0,
    cutout_fill=0,
) -> jax.Array:
  """Random crop, horizontal flip and Cutout, independently per example.

  Matches torchvision's `RandomCrop(size, padding=crop_padding)` (zero padding,
  offsets uniform in [0, 2 * crop_padding] per axis), then
  `RandomHorizontalFlip()` (p = 0.5), then Cutout (DeVries & Taylor, 2017).

  Args:
    images: [B, H, W, C], uint8 or float.
    rng: a PRNG key; example i uses `jax.random.split(rng, B)[i]`.
    crop_padding: zero padding on each side before cropping back to H x W;
      0 disables the crop.
    flip: whether to flip horizontally with probability 1/2.
    cutout: side of the erased square; 0 disables Cutout.
    cutout_fill: value written into the erased square, a scalar or a
      per-channel [C] array. DeVries & Taylor erase after normalization, i.e.
      to the mean; on uint8 images pass the rounded per-channel mean for that
      (`augment_fn` does).

  Returns:
    Images of the same shape and dtype as `images`.
  """
  batch, height, width, _ = images.shape
  pad = (
      (0, 0),
      (crop_padding, crop_padding),
      (crop_padding, crop_padding),
      (0, 0),
  )
  padded = jnp.pad(images, pad)
  keys = jax.random.split(rng, batch)
  one = functools.partial(
      _augment_one,
      height=height,
      width=width,
      crop_padding=crop_padding,
      flip=flip,
      cutout=cutout,
      cutout_fill=jnp.asarray(cutout_fill, images.dtype),
  )
  return jax.vmap(one)(padded, keys)


def augment_fn(
    name: str, info: DatasetInfo
) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The augmentation `name` (one of `AUGMENTATIONS`) for a dataset.

  Args:
    name: 'none' (identity), 'crop_flip' (4-pixel crop, flip where
      `info.flip`), 'crop_flip_cutout' (also Cutout of `info.cutout`), or
      'fast_autoaugment' (a sub-policy of `info.autoaugment_policy` per
      image, then crop_flip_cutout, as Lim et al. train).
    info: the dataset's `DatasetInfo`.

  Returns:
    `fn(images, rng) -> images` on uint8 [B, H, W, C], jittable. Cutout fills
    with the rounded dataset mean, which `normalize` maps to ~0 as in the
    paper's (normalize-then-Cutout) recipe; so does the policies' Cutout
    (the authors fill with CIFAR-10's, the same three values).

  Raises:
    ValueError: unknown `name`.
  """
  if name not in AUGMENTATIONS:
    raise ValueError(
        f'Unknown augmentation {name!r}; valid names: '
        f'{", ".join(AUGMENTATIONS)}.'
    )
  if name == 'none':
    return lambda images, rng: images
  fill = np.round(info.mean).astype(np.uint8)
  crop_flip = functools.partial(
      augment,
      crop_padding=4,
      flip=info.flip,
      cutout=info.cutout if name != 'crop_flip' else 0,
      cutout_fill=fill,
  )
  if name != 'fast_autoaugment':
    return crop_flip

  def policy_then_crop_flip(images, rng):
    policy_rng, crop_rng = jax.random.split(rng)
    images = autoaugment.fast_autoaugment(
        images, policy_rng, policy=info.autoaugment_policy, fill=fill
    )
    return crop_flip(images, crop_rng)

  return policy_then_crop_flip


def pixel_permutation(
    image_shape: tuple[int, int, int], seed: int
) -> np.ndarray:
  """The fixed permutation of a `permute_pixels` run: H*W positions."""
  height, width, _ = image_shape
  # A stream of its own, so it never coincides with the data order's.
  return np.random.default_rng([seed, 0x5EED]).permutation(height * width)


def permute_pixels(images: jax.Array, permutation) -> jax.Array:
  """Moves pixel `permutation[q]` (row-major) of [B, H, W, C] images to q."""
  b, h, w, c = images.shape
  return images.reshape(b, h * w, c)[:, jnp.asarray(permutation)].reshape(
      b, h, w, c
  )


def normalize(
    images: jax.Array, info: DatasetInfo, dtype: jnp.dtype = jnp.float32
) -> jax.Array:
  """Maps uint8 images to (x - mean) / std per channel, in `dtype`."""
  # Arithmetic in float32 whatever `dtype`: bf16 would round 0-255 values.
  mean = jnp.asarray(info.mean, jnp.float32)
  std = jnp.asarray(info.std, jnp.float32)
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)
