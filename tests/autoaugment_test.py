"""Fast AutoAugment's operations against Pillow, on real CIFAR-10 images."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageEnhance
from PIL import ImageOps
import pytest

from beta_lasso import models
from beta_lasso import train
from beta_lasso.data import augmentation
from beta_lasso.data import autoaugment
from beta_lasso.data import data_file as data_file_lib
from beta_lasso.data import input_pipeline
from configs import sconv

CIFAR10 = input_pipeline.DATASETS['cifar10']
_JPEG_BUNDLE = (
    pathlib.Path(__file__).resolve().parents[2]
    / 'shared'
    / 'data'
    / 'cifar10_jpeg.npz'
)
# Away from 0.5, which is the identity of the symmetric ranges.
MAGNITUDES = (0.0, 0.13, 0.42, 0.77, 1.0)


@pytest.fixture(scope='module')
def images() -> np.ndarray:
  """16 CIFAR-10 test images, uint8 [16, 32, 32, 3]."""
  # The JPEG bundle reads in a second; TFDS needs TensorFlow imported.
  if _JPEG_BUNDLE.exists():
    return data_file_lib.load_split(str(_JPEG_BUNDLE), 'test[:16]')[0]
  return input_pipeline.load_split('cifar10', 'test[:16]')[0]


def _pil_affine(image, coeffs):
  return image.transform(image.size, Image.AFFINE, coeffs)


# The authors' definitions (kakaobrain/fast-autoaugment, augmentations.py),
# each at a value already in the operation's range.
PILLOW = {
    'ShearX': lambda im, v: _pil_affine(im, (1, v, 0, 0, 1, 0)),
    'ShearY': lambda im, v: _pil_affine(im, (1, 0, 0, v, 1, 0)),
    'TranslateX': lambda im, v: _pil_affine(
        im, (1, 0, v * im.size[0], 0, 1, 0)
    ),
    'TranslateY': lambda im, v: _pil_affine(
        im, (1, 0, 0, 0, 1, v * im.size[1])
    ),
    'Rotate': lambda im, v: im.rotate(v),
    'AutoContrast': lambda im, v: ImageOps.autocontrast(im),
    'Invert': lambda im, v: ImageOps.invert(im),
    'Equalize': lambda im, v: ImageOps.equalize(im),
    'Solarize': ImageOps.solarize,
    'Posterize': lambda im, v: ImageOps.posterize(im, int(v)),
    'Contrast': lambda im, v: ImageEnhance.Contrast(im).enhance(v),
    'Color': lambda im, v: ImageEnhance.Color(im).enhance(v),
    'Brightness': lambda im, v: ImageEnhance.Brightness(im).enhance(v),
    'Sharpness': lambda im, v: ImageEnhance.Sharpness(im).enhance(v),
}

# apply_op over a flat batch of (image, op, value, centre): one compile.
_apply = jax.jit(
    jax.vmap(
        functools.partial(
            autoaugment.apply_op, fill=jnp.array([125.0, 123.0, 114.0])
        )
    )
)


def _value(name, magnitude):
  low, high = autoaugment.OPS[name]
  return low + magnitude * (high - low)


def test_every_operation_is_tested_against_pillow():
  assert set(PILLOW) | {'Cutout'} == set(autoaugment.OPS)


def test_operations_match_pillow(images):
  cases = [(name, m) for name in PILLOW for m in MAGNITUDES]
  ops = np.repeat([list(autoaugment.OPS).index(n) for n, _ in cases], 16)
  values = np.repeat([_value(n, m) for n, m in cases], 16).astype(np.float32)
  batch = np.tile(images, (len(cases), 1, 1, 1)).astype(np.float32)
  out = np.asarray(_apply(batch, ops, values, np.zeros((len(ops), 2))))
  out = out.reshape(len(cases), 16, 32, 32, 3)
  for (name, m), ours in zip(cases, out):
    value = _value(name, m)
    ref = np.stack(
        [np.asarray(PILLOW[name](Image.fromarray(im), value)) for im in images]
    ).astype(np.float32)
    diff = np.abs(ours - ref)
    where = f'{name} at {value:.3f}'
    if name == 'AutoContrast':
      # Pillow's table is int(i * scale + offset) in doubles, which falls
      # 1 short of some exact integers; ours is the exact floor.
      assert diff.max() <= 1 and (diff > 0).mean() < 0.01, where
    elif name in autoaugment.GEOMETRIC:
      # Nearest resampling in float32 against Pillow's doubles: a pixel can
      # differ only where its source point is within rounding of a pixel edge.
      assert (diff.max(-1) > 0).mean() < 0.002, where
    else:
      np.testing.assert_array_equal(ours, ref, err_msg=where)
    if 0 < m < 1:
      assert not np.array_equal(ref, images), f'{where} is the identity'


def _pillow_cutout(image, size, cy, cx, color):
  # The authors' Cutout (nothing at size 0), then CutoutAbs with the centre
  # given.
  if size <= 0:
    return image
  w, h = image.size
  x0, y0 = int(max(0, cx - size / 2.0)), int(max(0, cy - size / 2.0))
  x1, y1 = min(w, x0 + size), min(h, y0 + size)
  image = image.copy()
  ImageDraw.Draw(image).rectangle((x0, y0, x1, y1), color)
  return image


def test_cutout_matches_the_authors(images):
  rng = np.random.default_rng(0)
  magnitudes = np.array([0.0, 0.08, 0.5, 1.0] * 4)
  # Centres anywhere, corners included, so that the border cuts squares.
  centers = np.concatenate(
      [
          rng.uniform(0, 32, (12, 2)),
          [[0.2, 0.3], [31.9, 31.7], [0.1, 31.9], [31.5, 2]],
      ]
  )
  sizes = magnitudes * 0.2 * 32
  ops = np.full(16, list(autoaugment.OPS).index('Cutout'))
  out = np.asarray(
      _apply(
          images.astype(np.float32),
          ops,
          magnitudes.astype(np.float32) * 0.2,
          centers,
      )
  )
  for image, ours, size, (cy, cx) in zip(images, out, sizes, centers):
    ref = _pillow_cutout(Image.fromarray(image), size, cy, cx, (125, 123, 114))
    np.testing.assert_array_equal(ours, np.asarray(ref))
  assert np.array_equal(out[0], images[0])  # Magnitude 0: no square.
  assert not np.array_equal(out[2], images[2])


def test_identity(images):
  ops = np.full(16, autoaugment.IDENTITY)
  out = _apply(images.astype(np.float32), ops, np.ones(16), np.zeros((16, 2)))
  np.testing.assert_array_equal(out, images)


def test_policies_as_published():
  for name, count in (('reduced_cifar10', 493), ('reduced_svhn', 497)):
    ops, probs, levels = autoaugment.policy_table(name)
    assert ops.shape == probs.shape == levels.shape == (count, 2)
    assert ((probs >= 0) & (probs <= 1) & (levels >= 0) & (levels <= 1)).all()
  # The first sub-policy of the CIFAR-10 policy, as the authors print it.
  assert autoaugment.POLICIES['reduced_cifar10'][0] == (
      ('Contrast', 0.8320659688593578, 0.49884310562180767),
      ('TranslateX', 0.41849883971249136, 0.394023086494538),
  )
  with pytest.raises(ValueError, match='reduced_cifar10, reduced_svhn'):
    autoaugment.policy_table('cifar10')


def test_sampling_follows_the_policy():
  table = autoaugment.policy_table('reduced_cifar10')
  ops, probs, levels = table
  n = 20_000
  drawn = jax.jit(
      jax.vmap(lambda k: autoaugment.sample_subpolicy(k, table, (32, 32, 3)))
  )(jax.random.split(jax.random.key(0), n))
  drawn = jax.tree.map(np.asarray, drawn)
  row = drawn['row']
  # Sub-policies uniformly: 493 rows, ~40.6 draws each.
  counts = np.bincount(row, minlength=len(ops))
  assert counts.min() > 10 and counts.max() < 80
  # Each operation with its probability; skipped ones are IDENTITY.
  applied = drawn['op'] != autoaugment.IDENTITY
  assert (drawn['op'][applied] == ops[row][applied]).all()
  expected, sd = probs[row].mean(), np.sqrt(probs[row].var() / (2 * n))
  assert abs(applied.mean() - expected) < 5 * sd + 0.005
  # The magnitude mapped into the range; geometric ones mirrored half the time.
  names = np.array(list(autoaugment.OPS))[ops[row]]
  low = np.array([autoaugment.OPS[x][0] for x in names.ravel()]).reshape(
      names.shape
  )
  high = np.array([autoaugment.OPS[x][1] for x in names.ravel()]).reshape(
      names.shape
  )
  value = low + levels[row] * (high - low)
  geometric = np.isin(names, autoaugment.GEOMETRIC)
  np.testing.assert_allclose(
      drawn['value'][~geometric], value[~geometric], rtol=1e-6, atol=1e-6
  )
  np.testing.assert_allclose(
      np.abs(drawn['value'][geometric]),
      np.abs(value[geometric]),
      rtol=1e-6,
      atol=1e-6,
  )
  nonzero = geometric & (np.abs(value) > 1e-3)
  flipped = (np.sign(drawn['value']) != np.sign(value))[nonzero].mean()
  assert 0.47 < flipped < 0.53
  assert (drawn['center'] >= 0).all() and (drawn['center'] < 32).all()


def test_fast_autoaugment_in_a_jitted_train_step(images):
  """The whole path: policy, then crop, flip and Cutout, keyed per step."""
  # Jitted, as in the train step: eagerly, each of its many ops compiles alone.
  augment = jax.jit(augmentation.augment_fn('fast_autoaugment', CIFAR10))
  x = jnp.asarray(images)
  key = jax.random.fold_in(jax.random.key(0), 3)
  out = augment(x, key)
  assert out.shape == x.shape and out.dtype == jnp.uint8
  np.testing.assert_array_equal(out, augment(x, key))
  assert not np.array_equal(out, augment(x, jax.random.key(1)))
  # The policy first, then crop_flip_cutout, each with its half of the key.
  policy_key, crop_key = jax.random.split(key)
  policy_out = jax.jit(
      functools.partial(
          autoaugment.fast_autoaugment,
          policy='reduced_cifar10',
          fill=np.round(CIFAR10.mean).astype(np.uint8),
      )
  )(x, policy_key)
  np.testing.assert_array_equal(
      out,
      jax.jit(augmentation.augment_fn('crop_flip_cutout', CIFAR10))(
          policy_out, crop_key
      ),
  )
  assert (np.asarray(policy_out) != images).any(axis=(1, 2, 3)).sum() >= 4

  # In the train step, as train.train_and_evaluate jits it.
  config = sconv.get_config('cpu')
  model = models.create_model('sconv', num_classes=10, alpha=1)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  tx, _ = train.create_optimizer(config, variables['params'], 10, 10)
  state = train.TrainState.create(variables, tx)
  step = jax.jit(
      functools.partial(
          train.train_step,
          model=model,
          tx=tx,
          augment=augment,
          normalize=functools.partial(augmentation.normalize, info=CIFAR10),
          key=jax.random.key(0),
      )
  )
  batch = {'image': x, 'label': jnp.arange(16) % 10}
  first, metrics = step(state, batch)
  again, _ = step(state, batch)
  assert np.isfinite(metrics['loss'])
  jax.tree.map(np.testing.assert_array_equal, first.params, again.params)
