"""beta-LASSO from other JAX stacks: Flax NNX, plain trees, bf16, vmap, sharding.

Each test checks the parameters against Algorithm 1 computed in numpy, with
the default mask (floating leaves with ndim >= 2).
"""

from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from beta_lasso import optim

LR, L1, BETA = 0.1, 0.05, 2.0  # Threshold 0.1: some weights go, most stay.


def _lasso_step(theta, grad):
  """Algorithm 1 on one regularized array, in float32 numpy."""
  theta = np.asarray(theta, np.float32)
  theta = theta - np.float32(LR) * (grad + np.float32(L1) * np.sign(theta))
  return theta * (np.abs(theta) >= np.float32(BETA * L1))


def _sgd_step(theta, grad):
  return np.asarray(theta, np.float32) - np.float32(LR) * grad


def _assert_close(actual, expected):
  actual = np.asarray(actual)
  # XLA may fuse p - lr * u into one FMA: the last bit can differ.
  np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-8)
  np.testing.assert_array_equal(actual == 0, expected == 0)


def _normal(seed, shape, scale=0.1):
  return scale * np.random.default_rng(seed).standard_normal(shape).astype(
      np.float32
  )


def _jit_step(tx):
  @jax.jit
  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step


# ----------------------------------------------------------------------------
# Flax NNX.
# ----------------------------------------------------------------------------
class _Net(nnx.Module):

  def __init__(self, rngs):
    self.dense = nnx.Linear(6, 4, rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)

  def __call__(self, x):
    return self.bn(self.dense(x), use_running_average=True)


def _loss(model, x):
  return jnp.sum(jnp.square(model(x) - 1.0))


def _x():
  return jnp.asarray(_normal(0, (8, 6), scale=1.0))


def _expected_nnx(model, grads):
  """Algorithm 1 for the kernel, plain SGD for the bias and BatchNorm."""
  return {
      'kernel': _lasso_step(model.dense.kernel[...], grads['kernel']),
      'bias': _sgd_step(model.dense.bias[...], grads['bias']),
      'scale': _sgd_step(model.bn.scale[...], grads['scale']),
  }


def _check_nnx(model, expected):
  _assert_close(model.dense.kernel[...], expected['kernel'])
  _assert_close(model.dense.bias[...], expected['bias'])
  _assert_close(model.bn.scale[...], expected['scale'])
  assert 0 < np.mean(np.asarray(model.dense.kernel[...]) == 0) < 0.9


def test_nnx_optimizer():
  model = _Net(nnx.Rngs(0))
  optimizer = nnx.Optimizer(
      model, optim.beta_lasso(LR, L1, BETA), wrt=nnx.Param
  )
  grads = nnx.grad(_loss)(model, _x())
  expected = _expected_nnx(
      model,
      {
          'kernel': np.asarray(grads['dense']['kernel'][...]),
          'bias': np.asarray(grads['dense']['bias'][...]),
          'scale': np.asarray(grads['bn']['scale'][...]),
      },
  )
  optimizer.update(model, grads)
  _check_nnx(model, expected)
  assert optim.count_nonzero(nnx.state(model, nnx.Param)) == {
      'dense': np.count_nonzero(expected['kernel'])
  }


def test_nnx_functional_split_merge():
  model = _Net(nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optim.beta_lasso(LR, L1, BETA)
  state = tx.init(params)

  def loss(params):
    return _loss(nnx.merge(graphdef, params, rest), _x())

  grads = jax.grad(loss)(params)
  expected = _expected_nnx(
      model,
      {
          'kernel': np.asarray(grads['dense']['kernel'][...]),
          'bias': np.asarray(grads['dense']['bias'][...]),
          'scale': np.asarray(grads['bn']['scale'][...]),
      },
  )
  params, state = _jit_step(tx)(params, state, grads)
  _check_nnx(nnx.merge(graphdef, params, rest), expected)


# ----------------------------------------------------------------------------
# Plain pytrees, bfloat16.
# ----------------------------------------------------------------------------
class _Linear(NamedTuple):
  w: jax.Array
  b: jax.Array


@pytest.mark.parametrize(
    'make',
    [
        lambda w, b: {'w': w, 'b': b},
        lambda w, b: (w, b),
        lambda w, b: [w, {'bias': b}],
        _Linear,
    ],
    ids=['dict', 'tuple', 'list', 'namedtuple'],
)
def test_plain_trees(make):
  w, b = _normal(1, (5, 3), scale=0.3), _normal(2, (3,))
  tx = optim.beta_lasso(LR, L1, BETA)
  params = make(w, b)
  state = tx.init(params)
  step = _jit_step(tx)
  for seed in range(3):
    gw, gb = _normal(10 + seed, w.shape), _normal(20 + seed, b.shape)
    params, state = step(params, state, make(gw, gb))
    w, b = _lasso_step(w, gw), _sgd_step(b, gb)
  got_w, got_b = (
      jax.tree.leaves(params)[::-1]
      if isinstance(params, dict)
      else jax.tree.leaves(params)
  )
  _assert_close(got_w, w)
  _assert_close(got_b, b)
  assert 0 < np.mean(w == 0) < 0.9


def test_bfloat16_params_stay_bfloat16():
  bf16 = jnp.bfloat16
  # Values exact in bfloat16: the step is exact too.
  params = {
      'w': jnp.asarray([[2.0, -1.0, 0.25, 0.375]], bf16),
      'b': jnp.asarray([1.0], bf16),
  }
  grads = {
      'w': jnp.asarray([[0.5, 0.0, 0.0, 0.0]], bf16),
      'b': jnp.asarray([0.5], bf16),
  }
  # A float32 per-parameter lambda must not promote the bfloat16 updates.
  l1 = {'w': np.float32(0.125)}
  tx = optim.beta_lasso(1.0, l1, 2.0)  # Threshold 0.25.
  updates, _ = tx.update(grads, tx.init(params), params)
  assert all(u.dtype == bf16 for u in jax.tree.leaves(updates))
  new = optax.apply_updates(params, updates)
  assert all(p.dtype == bf16 for p in jax.tree.leaves(new))
  np.testing.assert_array_equal(
      np.asarray(new['w'], np.float32), [[1.375, -0.875, 0.0, 0.25]]
  )
  np.testing.assert_array_equal(np.asarray(new['b'], np.float32), [0.5])


# ----------------------------------------------------------------------------
# vmap and sharding.
# ----------------------------------------------------------------------------
def test_vmap_over_an_ensemble_equals_each_member_alone():
  members = 3
  params = {'w': _normal(3, (members, 5, 4)), 'b': _normal(4, (members, 4))}
  grads = {'w': _normal(5, (members, 5, 4)), 'b': _normal(6, (members, 4))}
  tx = optim.beta_lasso(LR, L1, BETA)
  state = jax.vmap(tx.init)(params)
  new, _ = jax.vmap(_jit_step(tx))(params, state, grads)
  for i in range(members):
    # Inside vmap the mask sees one member: its bias is 1-D, not a weight.
    _assert_close(new['w'][i], _lasso_step(params['w'][i], grads['w'][i]))
    _assert_close(new['b'][i], _sgd_step(params['b'][i], grads['b'][i]))
  assert 0 < np.mean(np.asarray(new['w']) == 0) < 0.9


def test_sharded_params_keep_their_sharding():
  devices = len(jax.devices())
  mesh = jax.make_mesh((devices,), ('data',))
  shardings = {
      'w': jax.NamedSharding(mesh, jax.P('data', None)),
      'b': jax.NamedSharding(mesh, jax.P()),
  }
  w, b = _normal(7, (4 * devices, 3)), _normal(8, (3,))
  gw, gb = _normal(9, w.shape), _normal(10, b.shape)
  params = jax.device_put({'w': w, 'b': b}, shardings)
  grads = jax.device_put({'w': gw, 'b': gb}, shardings)
  tx = optim.beta_lasso(LR, L1, BETA)
  state = jax.jit(tx.init)(params)
  new, _ = _jit_step(tx)(params, state, grads)
  for name, sharding in shardings.items():
    assert isinstance(new[name].sharding, jax.NamedSharding)
    assert new[name].sharding.is_equivalent_to(sharding, new[name].ndim)
  _assert_close(new['w'], _lasso_step(w, gw))
  _assert_close(new['b'], _sgd_step(b, gb))
