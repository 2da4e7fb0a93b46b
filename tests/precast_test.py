"""The device loop's cast in the update (`training.precast`) changes no number.

Tiny S-FC, S-LOCAL and D-FC with bf16 compute and float32 weights, on 512
images of real CIFAR-10: blocks of steps with the weights cast in the update
give the train state, bit for bit, of blocks whose forward pass casts them.
"""

from cli_runs import assert_bitwise_equal
from cli_runs import run_on_devices
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beta_lasso import train
from beta_lasso.training import precast
from configs import dfc
from configs import sfc_beta_lasso
from configs import slocal

STEPS = 6


def _config(module):
  config = module.get_config('cpu')
  config.update(
      dict(
          alpha=1,
          batch_size=64,
          train_split='train[:512]',
          eval_split='test[:100]',
          num_epochs=2.0,
          half_precision=True,
          device_loop=True,
          steps_per_dispatch=STEPS,
          augment='crop_flip_cutout',
      )
  )
  return config


def _run(config, cast_in_update: bool):
  """The state after STEPS steps from step 0, and the Steps that ran them."""
  pieces = train.build(config, cast_in_update=cast_in_update)
  state, metrics = pieces.steps.on_device.train(
      pieces.sharded.state, *pieces.splits.train, STEPS
  )
  return state, jax.device_get(metrics), pieces.steps


@pytest.mark.parametrize(
    'module', [sfc_beta_lasso, slocal, dfc], ids=lambda m: m.__name__
)
def test_cast_in_update_follows_the_forward_cast_bit_for_bit(module):
  config = _config(module)
  reference, reference_metrics, _ = _run(config, cast_in_update=False)
  state, metrics, steps = _run(config, cast_in_update=True)
  state, reference = jax.device_get((state, reference))
  # The fast path did cast: every kernel of the model, no BatchNorm leaf.
  mask = steps.on_device.precast.mask
  cast = {
      '/'.join(str(k.key) for k in path)
      for path, m in jax.tree_util.tree_flatten_with_path(mask)[0]
      if m
  }
  assert {p for p in cast if p.endswith('/kernel')} == {
      '/'.join(str(k.key) for k in path)
      for path, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]
      if path[-1].key == 'kernel'
  }
  assert not any('bn' in p for p in cast)
  assert int(state.step) == STEPS
  assert_bitwise_equal(state, reference)
  assert_bitwise_equal(metrics, reference_metrics)
  # beta-LASSO zeroed weights on the way: the zero patterns are compared too.
  if config.optimizer == 'beta_lasso':
    assert np.mean(state.params['layer1']['kernel'] == 0) > 0


def test_find_takes_only_leaves_the_forward_pass_only_casts():
  def forward(params, x):
    # 'cast' is only cast; 'f32' is read in float32; 'both' is cast and read;
    # 'bf16' is already bf16; 'unused' is not read.
    y = x @ params['cast'].astype(jnp.bfloat16)
    y = y + params['f32'].sum() + params['both'].sum()
    y = y * params['both'].astype(jnp.bfloat16).sum()
    return y * params['bf16'].sum()

  params = {
      'cast': jnp.ones((3, 3)),
      'f32': jnp.ones((3,)),
      'both': jnp.ones((3,)),
      'bf16': jnp.ones((3,), jnp.bfloat16),
      'unused': jnp.ones((3,)),
  }
  mask = precast.find(
      forward, params, jnp.ones((2, 3), jnp.bfloat16), dtype=jnp.bfloat16
  )
  assert mask == {
      'cast': True,
      'f32': False,
      'both': False,
      'bf16': False,
      'unused': False,
  }
  copy = precast.Precast(mask, jnp.bfloat16).copy(params)
  assert copy['cast'].dtype == jnp.bfloat16 and copy['f32'] is None
  merged = precast.Precast(mask, jnp.bfloat16).forward_params(params, copy)
  assert merged['cast'].dtype == jnp.bfloat16
  assert merged['f32'] is params['f32']
  # In float32 compute only the bf16 leaf, which is only promoted, is.
  mask = precast.find(
      forward, params, jnp.ones((2, 3), jnp.bfloat16), dtype=jnp.float32
  )
  assert [k for k, m in mask.items() if m] == ['bf16']


def _sharded_checks():
  """Under 8 devices: the cast follows the reference with sharded kernels."""
  assert jax.device_count() == 8
  config = _config(sfc_beta_lasso)
  config.mesh_model, config.shard_min_weights = 4, 1000
  reference, _, _ = _run(config, cast_in_update=False)
  state, _, _ = _run(config, cast_in_update=True)
  kernel = state.params['layer1']['kernel']
  # Each device holds a quarter of the kernel: the copy was cast on shards.
  assert {s.data.size for s in kernel.addressable_shards} == {kernel.size // 4}
  assert_bitwise_equal(*jax.device_get((state, reference)))
  print('sharded precast checks passed')


def test_cast_in_update_with_kernels_split_over_four_devices():
  result = run_on_devices(
      'import sys; sys.path.insert(0, "tests"); import precast_test; '
      'precast_test._sharded_checks()'
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'sharded precast checks passed' in result.stdout


def test_the_cast_in_update_is_off_by_default_on_the_cpu():
  # XLA on the CPU keeps the cast a pass of its own (BENCHMARKS.md).
  assert jax.default_backend() == 'cpu'
  pieces = train.build(_config(sfc_beta_lasso))
  assert pieces.steps.on_device.precast == precast.NONE
