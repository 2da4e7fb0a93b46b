"""unit_locality and the run summaries on kernels whose answers are known."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beta_lasso.data import augmentation
from beta_lasso.metrics import locality
from beta_lasso.models import local

IMAGE = (32, 32, 3)


def _dense(unit_images: np.ndarray) -> np.ndarray:
  """(units, H, W, C) images -> a dense kernel (H*W*C, units) as stored."""
  return unit_images.reshape(len(unit_images), -1).T


def test_a_unit_confined_to_a_5x5_patch():
  unit = np.zeros((1, *IMAGE), np.float32)
  unit[0, 10:15, 3:8, :] = 1.0  # Equal energy on 25 pixels.
  out = locality.unit_locality(_dense(unit), IMAGE)
  assert set(out) == {'window_share', 'spread', 'ipr'}
  assert out['window_share'][0] == 1.0
  # Uniform on a 5x5 grid: the variance per axis is (5^2 - 1) / 12 = 2.
  np.testing.assert_allclose(out['spread'][0], 2.0, rtol=1e-6)
  np.testing.assert_allclose(out['ipr'][0], 1 / 25, rtol=1e-6)


def test_a_flat_unit_and_a_dense_random_unit():
  rng = np.random.default_rng(0)
  units = np.stack(
      [np.ones(IMAGE, np.float32), rng.normal(size=IMAGE).astype(np.float32)]
  )
  out = locality.unit_locality(_dense(units), IMAGE)
  flat_spread = math.sqrt(2 * (32**2 - 1) / 12)  # 13.06 px.
  np.testing.assert_allclose(out['window_share'][0], 81 / 1024, rtol=1e-6)
  np.testing.assert_allclose(out['spread'][0], flat_spread, rtol=1e-6)
  np.testing.assert_allclose(out['ipr'][0], 1 / 1024, rtol=1e-6)
  # Random: best window a little above the flat share, spread as flat, IPR
  # E[m^2] / E[m]^2 / 1024 with m ~ chi^2(3): 15 / 9 / 1024.
  assert 81 / 1024 < out['window_share'][1] < 0.13
  np.testing.assert_allclose(out['spread'][1], flat_spread, rtol=0.03)
  np.testing.assert_allclose(out['ipr'][1], 15 / 9 / 1024, rtol=0.1)


def test_a_single_pixel_and_an_empty_unit():
  units = np.zeros((2, *IMAGE), np.float32)
  units[0, 31, 0, 2] = -3.0
  out = locality.unit_locality(_dense(units), IMAGE)
  assert out['window_share'][0] == 1.0
  assert out['spread'][0] == 0.0
  assert out['ipr'][0] == 1.0
  for values in out.values():
    assert np.isnan(values[1])  # No energy, no locality.


def test_the_best_window_is_found_anywhere():
  unit = np.zeros((1, *IMAGE), np.float32)
  unit[0, 0, 0, 0] = 1.0  # Two pixels 20 apart: no 9x9 window holds both.
  unit[0, 20, 20, 0] = 2.0
  out = locality.unit_locality(_dense(unit), IMAGE, window=9)
  np.testing.assert_allclose(out['window_share'][0], 4 / 5)
  out = locality.unit_locality(_dense(unit), IMAGE, window=21)
  assert out['window_share'][0] == 1.0


def test_conv_and_locally_connected_layouts():
  rng = np.random.default_rng(1)
  conv = rng.normal(size=(9, 9, 3, 4)).astype(np.float32)
  conv[:, :, :, 1] = 0
  conv[4, 4, :, 1] = 1.0  # Centre pixel only.
  out = locality.unit_locality(conv, IMAGE)
  assert out['window_share'].shape == (4,)
  np.testing.assert_array_equal(out['window_share'], 1.0)  # 9x9 fits.
  assert out['spread'][1] == 0.0 and out['ipr'][1] == 1.0
  # The same filter at every position of a locally connected layer.
  tiled = np.asarray(local.tile_conv_kernel(conv, (16, 16)))
  tiled_out = locality.unit_locality(tiled, IMAGE)
  assert tiled_out['spread'].shape == (16 * 16 * 4,)
  for key in locality.METRICS:
    np.testing.assert_allclose(
        tiled_out[key].reshape(256, 4),
        np.broadcast_to(out[key], (256, 4)),
        rtol=1e-5,
    )


def test_unit_nonzeros_counts_weights():
  units = np.zeros((2, *IMAGE), np.float32)
  units[0, 3, 3, :] = 1.0
  units[1, :2, :, 0] = 1.0
  np.testing.assert_array_equal(
      locality.unit_nonzeros(_dense(units), IMAGE), [3, 64]
  )


def test_summarize_separates_local_units_from_their_null():
  rng = np.random.default_rng(2)
  units = np.zeros((64, *IMAGE), np.float32)
  for i in range(64):  # A random 7x7 patch per unit, dense inside.
    r, c = rng.integers(0, 26, size=2)
    units[i, r : r + 7, c : c + 7, :] = rng.normal(size=(7, 7, 3))
  units[0, :, :, :] = 0
  units[0, 5, 5, 0] = 1.0  # Below 20 non-zeros: 'all' only.
  summary = locality.summarize(_dense(units), IMAGE)
  assert summary['units'] == 64 and summary['active_units'] == 63
  assert summary['window_share/active/median'] == 1.0
  assert summary['window_share/null_active/median'] < 0.3
  assert summary['spread/active/median'] < 3
  assert summary['spread/null_active/median'] > 10
  # Permuting pixels leaves each unit's energies, so its IPR, unchanged.
  assert summary['ipr/active/median'] == pytest.approx(
      summary['ipr/null_active/median']
  )


def test_a_permuted_run_is_measured_in_image_coordinates():
  unit = np.zeros((1, *IMAGE), np.float32)
  unit[0, 10:15, 3:8, :] = 1.0
  permutation = augmentation.pixel_permutation(IMAGE, seed=0)
  # What the model sees at pixel q is image pixel permutation[q], so a unit
  # local in the image has its weights at the permuted rows.
  seen = unit.reshape(1, 32 * 32, 3)[:, permutation].reshape(1, *IMAGE)
  assert (
      locality.summarize(_dense(seen), IMAGE)['window_share/active/median']
      < 0.5
  )
  summary = locality.summarize(
      _dense(seen), IMAGE, pixel_permutation=permutation
  )
  assert summary['window_share/active/median'] == 1.0
  np.testing.assert_allclose(summary['spread/active/median'], 2.0, rtol=1e-6)


def test_permute_pixels_moves_pixel_permutation_q_to_q():
  images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
  permutation = augmentation.pixel_permutation((4, 4, 3), seed=3)
  assert sorted(permutation) == list(range(16))
  out = np.asarray(augmentation.permute_pixels(images, permutation))
  for q, p in enumerate(permutation):
    np.testing.assert_array_equal(
        out[:, q // 4, q % 4], images[:, p // 4, p % 4]
    )


def test_a_kernel_of_another_layout_is_refused():
  with pytest.raises(ValueError, match=r'kernel of shape \(100, 4\)'):
    locality.unit_locality(np.zeros((100, 4)), IMAGE)


def _patchy(rng, units: int, h: int, w: int) -> np.ndarray:
  """(units, h, w, 3): each unit sparse in a random square of side 1 to 7, with
  faint scattered weights outside; unit 0 empty, unit 1 a single pixel."""
  ys, xs = np.arange(h)[:, None], np.arange(w)
  centre = rng.integers(0, (h, w), size=(units, 2))[:, :, None, None]
  half = rng.integers(0, 4, size=(units, 1, 1))
  inside = (
      (np.abs(ys - centre[:, 0]) <= half) & (np.abs(xs - centre[:, 1]) <= half)
  )[..., None]
  weights = rng.normal(size=(units, h, w, 3)) * (
      inside * (rng.random((units, h, w, 3)) < 0.6)
      + 0.05 * (rng.random((units, h, w, 3)) < 0.01)
  )
  centre = centre[:, :, 0, 0]
  weights[np.arange(units), centre[:, 0], centre[:, 1], 0] = 1.0  # No empties.
  weights[0] = 0
  weights[1] = 0
  weights[1, h - 1, 0, 2] = -0.5
  return weights.astype(np.float32)


def _kernel(layout: str) -> np.ndarray:
  rng = np.random.default_rng(4)
  if layout == 'dense':
    return _dense(_patchy(rng, 300, 32, 32))
  if layout == 'conv':
    return _patchy(rng, 40, 9, 9).transpose(1, 2, 3, 0)  # (k, k, C, units).
  # Locally connected, 16x16 positions of 20 features: 5120 units, so more
  # than one block and a last one that overlaps its predecessor.
  patches = _patchy(rng, 16 * 16 * 20, 9, 9).reshape(16, 16, 20, 9, 9, 3)
  return patches.transpose(0, 1, 5, 3, 4, 2).reshape(16, 16, 243, 20)


@pytest.mark.parametrize(
    'layout, permuted',
    [('dense', False), ('dense', True), ('conv', False), ('local', False)],
)
def test_the_device_path_matches_the_float64_reference(layout, permuted):
  kernel = _kernel(layout)
  permutation = (
      augmentation.pixel_permutation(IMAGE, seed=5) if permuted else None
  )
  reference = locality.unit_metrics(
      kernel, IMAGE, pixel_permutation=permutation
  )
  on_device = jax.device_get(
      locality.unit_metrics(
          jnp.asarray(kernel), IMAGE, pixel_permutation=permutation
      )
  )
  assert (
      set(on_device)
      == set(reference)
      == {
          *locality.METRICS,
          *(f'null_{m}' for m in locality.METRICS),
          'nonzeros',
      }
  )
  np.testing.assert_array_equal(
      on_device.pop('nonzeros'), reference.pop('nonzeros')
  )
  for key, values in reference.items():
    assert values.dtype == np.float64 and on_device[key].dtype == np.float32
    # Float32 on device: ~1e-6 relative; NaN (the empty unit) where NaN.
    np.testing.assert_allclose(
        on_device[key], values, rtol=1e-5, atol=1e-6, err_msg=key
    )
    assert np.isnan(values[0]) and np.isfinite(np.delete(values, 0)).all()
  assert reference['ipr'][1] == 1.0 and reference['spread'][1] == 0.0
  # The quartiles: the same program, then numpy on the host.
  summary = locality.summarize(
      jnp.asarray(kernel), IMAGE, pixel_permutation=permutation
  )
  assert summary == pytest.approx(
      locality.summarize(kernel, IMAGE, pixel_permutation=permutation), rel=1e-5
  )
  assert summary['units'] == len(values)
