"""Tests for beta_lasso.data.input_pipeline on the real CIFAR-10 (TFDS_DATA_DIR)."""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beta_lasso.data import augmentation
from beta_lasso.data import input_pipeline

CIFAR10 = input_pipeline.DATASETS['cifar10']


@pytest.fixture(scope='module')
def cifar10():
  """CIFAR-10 train and test, read once for the whole module."""
  start = time.perf_counter()
  train = input_pipeline.load_split('cifar10', 'train')
  test = input_pipeline.load_split('cifar10', 'test')
  print(f'cifar10 train+test loaded in {time.perf_counter() - start:.1f}s')
  return {'train': train, 'test': test}


def _random_images(shape=(8, 32, 32, 3), seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ----------------------------------------------------------------------------
# Loading.
# ----------------------------------------------------------------------------


def test_load_cifar10(cifar10):
  images, labels = cifar10['train']
  assert images.shape == (50000, 32, 32, 3) and images.dtype == np.uint8
  assert labels.shape == (50000,) and labels.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(labels), [5000] * 10)
  test_images, test_labels = cifar10['test']
  assert test_images.shape == (10000, 32, 32, 3)
  np.testing.assert_array_equal(np.bincount(test_labels), [1000] * 10)


def test_cifar10_entry_agrees_with_its_tfds_metadata():
  info = input_pipeline.dataset_builder('cifar10', None).info
  assert CIFAR10.num_classes == info.features['label'].num_classes
  assert CIFAR10.image_shape == info.features['image'].shape


def test_check_dataset_prepared():
  info = input_pipeline.check_dataset('cifar10', download=False)
  assert info is CIFAR10


def test_check_dataset_missing(tmp_path):
  with pytest.raises(input_pipeline.DatasetNotFoundError) as e:
    input_pipeline.check_dataset(
        'cifar100', data_dir=str(tmp_path), download=False
    )
  message = str(e.value)
  assert 'cifar100' in message and str(tmp_path) in message
  assert '\n' not in message
  assert not os.listdir(tmp_path)


def test_load_split_missing_no_download(tmp_path):
  with pytest.raises(input_pipeline.DatasetNotFoundError, match='cifar100'):
    input_pipeline.load_split(
        'cifar100', 'test', data_dir=str(tmp_path), download=False
    )
  assert not os.listdir(tmp_path)


def test_unknown_dataset(tmp_path):
  with pytest.raises(ValueError, match='imagenet') as e:
    input_pipeline.check_dataset(
        'imagenet', data_dir=str(tmp_path), download=False
    )
  assert not isinstance(e.value, input_pipeline.DatasetNotFoundError)
  for name in input_pipeline.DATASETS:
    assert name in str(e.value)
  assert '\n' not in str(e.value)
  assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------
# Training indices.
# ----------------------------------------------------------------------------


def test_train_indices_pure():
  a = input_pipeline.train_indices(1000, 64, seed=3, step=17)
  b = input_pipeline.train_indices(1000, 64, seed=3, step=17)
  assert a.dtype == np.int64 and a.shape == (64,)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(
      a, input_pipeline.train_indices(1000, 64, seed=4, step=17)
  )


def test_train_indices_epochs():
  n, batch = 1000, 64
  spe = input_pipeline.steps_per_epoch(n, batch)  # 15; 40 examples dropped.
  epochs = [
      np.concatenate(
          [
              input_pipeline.train_indices(n, batch, seed=0, step=e * spe + s)
              for s in range(spe)
          ]
      )
      for e in range(2)
  ]
  for epoch in epochs:
    assert len(np.unique(epoch)) == spe * batch
    assert epoch.min() >= 0 and epoch.max() < n
  assert not np.array_equal(epochs[0], epochs[1])
  # Each epoch drops a different remainder, so every example is seen.
  assert len(np.union1d(*epochs)) > spe * batch


def test_train_indices_processes():
  n, batch, count = 1000, 64, 4
  for step in (0, 5, 23):
    whole = input_pipeline.train_indices(n, batch, seed=1, step=step)
    parts = [
        input_pipeline.train_indices(
            n, batch, seed=1, step=step, process_index=p, process_count=count
        )
        for p in range(count)
    ]
    assert all(p.shape == (batch // count,) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
  with pytest.raises(ValueError, match='divisible'):
    input_pipeline.train_indices(n, 63, seed=1, step=0, process_count=2)


def test_train_batch(cifar10):
  images, labels = cifar10['train']
  idx = input_pipeline.train_indices(len(labels), 128, seed=0, step=3)
  batch = input_pipeline.train_batch(images, labels, idx)
  assert batch['image'].shape == (128, 32, 32, 3)
  np.testing.assert_array_equal(batch['image'][5], images[idx[5]])
  np.testing.assert_array_equal(batch['label'], labels[idx])


# ----------------------------------------------------------------------------
# Augmentation.
# ----------------------------------------------------------------------------


def _windows(image, padding):
  """All crops of `image` zero-padded by `padding`, keyed by (top, left)."""
  h, w, _ = image.shape
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  return {
      (t, l): padded[t : t + h, l : l + w]
      for t in range(2 * padding + 1)
      for l in range(2 * padding + 1)
  }


def test_augment_identity():
  images = _random_images()
  out = augmentation.augment(
      jnp.asarray(images),
      jax.random.key(0),
      crop_padding=0,
      flip=False,
      cutout=0,
  )
  assert out.dtype == jnp.uint8
  np.testing.assert_array_equal(out, images)


def test_augment_crop_is_shifted_window():
  images = _random_images((32, 32, 32, 3))
  out = np.asarray(
      augmentation.augment(
          jnp.asarray(images), jax.random.key(1), crop_padding=4, flip=False
      )
  )
  offsets = set()
  for image, crop in zip(images, out):
    matches = [
        k for k, v in _windows(image, 4).items() if np.array_equal(v, crop)
    ]
    assert len(matches) == 1
    offsets.add(matches[0])
  # Per-example randomness: 32 draws from 81 offsets are not all equal.
  assert len(offsets) > 10


def test_augment_flip_is_mirror_or_identity():
  images = _random_images((64, 32, 32, 3))
  out = np.asarray(
      augmentation.augment(
          jnp.asarray(images), jax.random.key(2), crop_padding=0, flip=True
      )
  )
  flipped = [np.array_equal(o, i[:, ::-1]) for i, o in zip(images, out)]
  same = [np.array_equal(o, i) for i, o in zip(images, out)]
  assert all(f != s for f, s in zip(flipped, same))
  assert 10 < sum(flipped) < 54


@pytest.mark.parametrize('size', [16, 20, 5])
def test_augment_cutout_square(size):
  # Values in [1, 255] so that zeros mark exactly the erased pixels.
  images = np.maximum(_random_images((64, 32, 32, 3), seed=size), 1)
  out = np.asarray(
      augmentation.augment(
          jnp.asarray(images),
          jax.random.key(3),
          crop_padding=0,
          flip=False,
          cutout=size,
      )
  )
  clipped = 0
  for image, o in zip(images, out):
    erased = o == 0
    # Whole pixels are erased, all channels alike; the rest is untouched.
    assert (erased == erased[:, :, :1]).all()
    np.testing.assert_array_equal(o[~erased], image[~erased])
    rows = np.flatnonzero(erased[:, :, 0].any(axis=1))
    cols = np.flatnonzero(erased[:, :, 0].any(axis=0))
    assert len(rows) and len(cols)
    # A filled rectangle, at most size x size, cut only by the borders.
    assert erased[:, :, 0].sum() == len(rows) * len(cols)
    assert np.ptp(rows) + 1 == len(rows) and np.ptp(cols) + 1 == len(cols)
    for idx, extent in ((rows, 32), (cols, 32)):
      assert len(idx) <= size
      if len(idx) < size:
        assert idx[0] == 0 or idx[-1] == extent - 1
    clipped += len(rows) < size or len(cols) < size
  if size >= 16:
    assert clipped > 0  # Centres near the border do get clipped.


def test_augment_deterministic_in_rng():
  images = jnp.asarray(_random_images((16, 32, 32, 3)))
  kwargs = dict(crop_padding=4, flip=True, cutout=16)
  a = augmentation.augment(images, jax.random.key(7), **kwargs)
  b = augmentation.augment(images, jax.random.key(7), **kwargs)
  c = augmentation.augment(images, jax.random.key(8), **kwargs)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_augment_jit():
  images = jnp.asarray(_random_images((16, 32, 32, 3)))
  fn = augmentation.augment_fn('crop_flip_cutout', CIFAR10)
  rng = jax.random.fold_in(jax.random.key(0), 12)
  eager = fn(images, rng)
  jitted = jax.jit(fn)(images, rng)
  assert jitted.shape == images.shape and jitted.dtype == jnp.uint8
  np.testing.assert_array_equal(eager, jitted)


def test_augment_fn():
  images = jnp.asarray(_random_images((16, 32, 32, 3)))
  rng = jax.random.key(0)
  np.testing.assert_array_equal(
      augmentation.augment_fn('none', CIFAR10)(images, rng), images
  )
  np.testing.assert_array_equal(
      augmentation.augment_fn('crop_flip', CIFAR10)(images, rng),
      augmentation.augment(images, rng, crop_padding=4, flip=True),
  )
  # Cutout fills with the dataset mean, which normalizes to ~0.
  out = augmentation.augment_fn('crop_flip_cutout', CIFAR10)(
      jnp.zeros((4, 32, 32, 3), jnp.uint8), rng
  )
  fill = np.round(CIFAR10.mean).astype(np.uint8)
  erased = (np.asarray(out) == fill).all(axis=-1)
  assert erased.sum() >= 4 * 8 * 8
  normalized = augmentation.normalize(out, CIFAR10)
  assert np.abs(np.asarray(normalized)[erased]).max() < 0.02
  with pytest.raises(ValueError, match='autoaugment') as e:
    augmentation.augment_fn('autoaugment', CIFAR10)
  for name in augmentation.AUGMENTATIONS:
    assert name in str(e.value)


# ----------------------------------------------------------------------------
# Evaluation batches and normalization.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_batches(process_count):
  n, batch = 1003, 100
  images = _random_images((n, 4, 4, 3))
  labels = np.arange(n, dtype=np.int32)
  per_process = [
      list(input_pipeline.eval_batches(images, labels, batch, p, process_count))
      for p in range(process_count)
  ]
  assert all(len(b) == 11 for b in per_process)
  seen = []
  for step in range(11):
    for p in range(process_count):
      b = per_process[p][step]
      assert b['image'].shape == (batch // process_count, 4, 4, 3)
      assert b['label'].dtype == np.int32 and b['mask'].dtype == bool
      assert not b['image'][~b['mask']].any()
      np.testing.assert_array_equal(
          b['image'][b['mask']], images[b['label'][b['mask']]]
      )
      seen.append(b['label'][b['mask']])
  # In order, each example exactly once.
  np.testing.assert_array_equal(np.concatenate(seen), labels)
  last = np.concatenate(
      [per_process[p][-1]['mask'] for p in range(process_count)]
  )
  assert last.sum() == 3 and last[:3].all()


def test_normalize(cifar10):
  images, _ = cifar10['train']

  @jax.jit
  def channel_stats(images):
    x = augmentation.normalize(images, CIFAR10).reshape(-1, 3)
    # XLA's tree reductions keep float32 accurate; numpy's strided float32
    # sums over these 51M values drift by ~8%.
    mean = x.mean(axis=0)
    return mean, jnp.sqrt(jnp.square(x - mean).mean(axis=0))

  mean, std = channel_stats(images)
  np.testing.assert_allclose(mean, 0, atol=0.05)
  np.testing.assert_allclose(std, 1, atol=0.05)
  x = augmentation.normalize(images[:8], CIFAR10)
  assert x.dtype == jnp.float32 and x.shape == (8, 32, 32, 3)
  np.testing.assert_allclose(
      x,
      (images[:8] - np.array(CIFAR10.mean)) / np.array(CIFAR10.std),
      rtol=1e-6,
      atol=1e-6,
  )
  bf16 = augmentation.normalize(images[:8], CIFAR10, dtype=jnp.bfloat16)
  assert bf16.dtype == jnp.bfloat16
