"""Sharded big kernels: the rule, and a step on 8 fake CPU devices.

The 8-device checks run in a subprocess (`_eight_device_checks`): the device
count is fixed when JAX starts, and the rest of the suite runs on one.
"""

import functools

from cli_runs import run_on_devices
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from beta_lasso.training import sharding
from beta_lasso.training import validation

SIZES = {'data': 2, 'model': 4}


def test_big_kernels_split_their_largest_dimension():
  spec = functools.partial(
      sharding.partition_spec, axis_sizes=SIZES, min_weights=1000
  )
  assert spec('params/layer1/kernel', (3072, 512), fsdp=False) == jax.P(
      'model', None
  )
  assert spec('params/fc1/kernel', (512, 48), fsdp=True) == jax.P(
      'model', 'data'
  )
  # Optimizer state that mirrors a kernel follows it.
  assert spec('opt_state/1/0/trace/fc1/kernel', (512, 48), fsdp=False) == jax.P(
      'model', None
  )
  assert spec('params/head/kernel', (48, 10), fsdp=False) == jax.P()  # Small.
  assert spec('params/bn1/scale', (4096,), fsdp=False) == jax.P()
  # 3 rows cannot split over 4 devices: the next dimension takes the axis.
  assert spec('params/x/kernel', (2000, 3), fsdp=False) == jax.P('model', None)
  assert spec('params/x/kernel', (3, 2001), fsdp=True) == jax.P(None, None)


def test_fraction_per_device():
  shapes = {
      'a': {'kernel': jax.ShapeDtypeStruct((4000, 8), jnp.float32)},
      'b': {'bias': jax.ShapeDtypeStruct((32000,), jnp.float32)},
  }
  assert sharding.fraction_per_device(
      shapes, SIZES, fsdp=False, min_weights=1000
  ) == pytest.approx(0.625)
  assert sharding.fraction_per_device(
      shapes, SIZES, fsdp=True, min_weights=1000
  ) == pytest.approx(0.5625)


def test_a_model_axis_that_does_not_divide_the_devices_is_refused():
  config = ml_collections.ConfigDict({'mesh_model': 3})
  with pytest.raises(
      sharding.MeshError, match=r'mesh_model=3 .* must divide .*: 1, 2, 4, 8$'
  ):
    sharding.mesh_shape(config, device_count=16, local_device_count=8)
  config.mesh_model = 4
  assert sharding.mesh_shape(config, 16, 8) == (4, 4)


def test_validate_config_names_the_bad_mesh():
  from configs import sfc  # pylint: disable=g-import-not-at-top

  config = sfc.get_config('cpu')
  config.mesh_model = 2  # This process has one device.
  with pytest.raises(validation.ConfigError, match='mesh_model=2'):
    validation.validate_config(config)


def _eight_device_checks(workdir):
  """Runs under 8 fake devices; every assert fails the calling test."""
  from beta_lasso import models  # pylint: disable=g-import-not-at-top
  from beta_lasso import train  # pylint: disable=g-import-not-at-top
  from beta_lasso.training import checkpointing  # pylint: disable=g-import-not-at-top
  from configs import sfc_beta_lasso  # pylint: disable=g-import-not-at-top

  assert jax.device_count() == 8

  config = sfc_beta_lasso.get_config('cpu')
  config.alpha = 2  # layer1 3072 x 512, fc1 512 x 48.
  config.l1, config.l1_conv = 2e-4, 2e-4  # Threshold 0.01: prunes about half.
  config.shard_min_weights = 1000
  model = models.create_model('sfc', num_classes=10, alpha=2)
  images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), np.uint8)
  batch = {'image': images, 'label': np.arange(16, dtype=np.int32) % 10}

  def init_state(rng):
    return train.TrainState.create(
        model.init(rng, jnp.zeros((1, 32, 32, 3)), train=False), tx
    )

  shapes = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
      )
  )
  tx, _ = train.create_optimizer(config, shapes['params'], 10, 10)
  step_fn = functools.partial(
      train.train_step,
      model=model,
      tx=tx,
      augment=lambda x, _: x,
      normalize=lambda x: x.astype(jnp.float32) / 255,
      key=jax.random.key(1),
  )

  def one_step(mesh_model, fsdp):
    config.mesh_model, config.fsdp = mesh_model, fsdp
    mesh = sharding.create_mesh(config)
    shardings = sharding.state_shardings(
        jax.eval_shape(init_state, jax.random.key(0)), mesh, config
    )
    state = jax.jit(init_state, out_shardings=shardings)(jax.random.key(0))
    data = jax.NamedSharding(mesh, jax.P('data'))
    step = jax.jit(
        step_fn, in_shardings=(shardings, data), out_shardings=(shardings, None)
    )
    state, _ = step(state, jax.device_put(batch, data))
    return mesh, shardings, state

  _, _, reference = one_step(1, False)  # Everything replicated.
  # Data parallel over 8 devices is one device's step: the batch is split,
  # but BatchNorm and the gradient see all of it.
  single, _ = jax.jit(step_fn)(
      jax.device_put(init_state(jax.random.key(0)), jax.devices()[0]),
      jax.device_put(batch, jax.devices()[0]),
  )
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      reference.params,
      single.params,
  )
  for mesh_model, fsdp, layer1_shard in (
      (4, False, (768, 512)),
      (2, True, (1536, 128)),
  ):
    mesh, shardings, state = one_step(mesh_model, fsdp)
    kernel = state.params['layer1']['kernel']
    # Every device holds only its share of each big kernel.
    assert {s.data.shape for s in kernel.addressable_shards} == {
        layer1_shard
    }, (mesh_model, fsdp, kernel.sharding)
    fc1 = state.params['fc1']['kernel']
    assert fc1.addressable_shards[0].data.size == fc1.size // (
        8 if fsdp else mesh_model
    )
    # One step equals the unsharded step.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        state.params,
        reference.params,
    )

  # beta-LASSO and the non-zero counts run on the shards, gathering nothing.
  params, opt_state = state.params, state.opt_state
  update = jax.jit(tx.update).lower(params, opt_state, params).compile()
  count = (
      jax.jit(lambda p: jax.tree.map(jnp.count_nonzero, p))
      .lower(params)
      .compile()
  )
  for compiled in (update, count):
    assert 'all-gather' not in compiled.as_text()
  nnz = jax.device_get(count(params))
  assert nnz['layer1']['kernel'] == np.count_nonzero(
      np.asarray(params['layer1']['kernel'])
  )
  assert 0 < nnz['layer1']['kernel'] < params['layer1']['kernel'].size
  updates, _ = update(params, opt_state, params)
  assert (
      updates['layer1']['kernel'].sharding
      == params['layer1']['kernel'].sharding
  )

  # Checkpoints save and restore sharded.
  with checkpointing.Checkpointer(workdir, 2) as checkpoints:
    checkpoints.save(1, state, [])
  blank = jax.jit(init_state, out_shardings=shardings)(jax.random.key(5))
  with checkpointing.Checkpointer(workdir, 2) as checkpoints:
    restored, _, _ = checkpoints.restore_latest(blank)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert a.sharding == b.sharding
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  print('eight-device checks passed')


def test_eight_devices_shard_big_kernels(tmp_path):
  result = run_on_devices(
      'import sys; sys.path.insert(0, "tests"); import sharding_test; '
      f'sharding_test._eight_device_checks({str(tmp_path)!r})'
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'eight-device checks passed' in result.stdout
