"""Tests for the FC embeddings: same logits on real CIFAR-10, same trees.

Variables are random with non-trivial BatchNorm statistics (a few train-mode
passes on real images), never from `init`: compiling D-LOCAL's init alone
takes ~25 s on 2 CPU cores.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beta_lasso import models
from beta_lasso.data import augmentation
from beta_lasso.data import input_pipeline
from beta_lasso.models import embed
from beta_lasso.models import layers
from beta_lasso.models import local

_ALPHA = 2
_BATCH = 16


@pytest.fixture(scope='module')
def cifar10():
  """Normalized CIFAR-10 test images: 4 batches for statistics, 1 to test."""
  images, _ = input_pipeline.load_split('cifar10', f'test[:{5 * _BATCH}]')
  x = augmentation.normalize(images, input_pipeline.DATASETS['cifar10'])
  return x.reshape((5, _BATCH) + x.shape[1:])


def _random_params(source, model, rng):
  """Random kernels at the init's scale, random BN scale/bias and biases."""
  shapes = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
      )
  )

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      # Conv kernels are HWIO; local (.., fan_in, out) and dense (fan_in, out)
      # kernels have the fan-in second to last.
      conv = source.endswith('conv') and leaf.ndim == 4
      fan_in = np.prod(leaf.shape[:-1]) if conv else leaf.shape[-2]
      value = rng.standard_normal(leaf.shape) / np.sqrt(fan_in)
    elif name == 'scale':
      value = rng.uniform(0.5, 1.5, leaf.shape)
    elif name == 'bias':
      value = 0.3 * rng.standard_normal(leaf.shape)
    elif name == 'mean':
      value = np.zeros(leaf.shape)
    else:  # var
      value = np.ones(leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _trained_source(source, batches, test_images):
  """`source`'s variables, statistics updated on `batches`, and its logits."""
  model = models.create_model(source, num_classes=10, alpha=_ALPHA)
  variables = _random_params(source, model, np.random.default_rng(0))

  # One compile per source: compiling local layers dominates these tests.
  @jax.jit
  def update_then_eval(variables, batches, x):
    def update(variables, batch):
      _, new = model.apply(
          variables, batch, train=True, mutable=['batch_stats']
      )
      return {**variables, 'batch_stats': new['batch_stats']}, None

    variables, _ = jax.lax.scan(update, variables, batches)
    return variables, model.apply(variables, x, train=False)

  return update_then_eval(variables, batches, test_images)


@pytest.fixture(scope='module')
def sources(cifar10):
  """source name -> (variables, logits on cifar10[4]), built once."""
  cache = {}

  def get(source):
    if source not in cache:
      cache[source] = _trained_source(source, cifar10[:4], cifar10[4])
    return cache[source]

  return get


@pytest.mark.parametrize('source,target', embed.EMBEDDINGS)
def test_embedding_computes_the_same_logits(sources, cifar10, source, target):
  variables, expected = sources(source)
  stats = jax.tree.leaves(variables['batch_stats'])
  # The statistics moved away from init (mean 0, var 1) and differ by channel.
  assert all(float(jnp.std(s)) > 1e-3 for s in stats)

  embedded = embed.embed(variables, source, target)
  target_model = models.create_model(target, num_classes=10, alpha=_ALPHA)
  actual = jax.jit(functools.partial(target_model.apply, train=False))(
      embedded, cifar10[4]
  )
  scale = float(jnp.abs(expected).max())
  assert float(jnp.std(expected, axis=0).min()) > 1e-3 * scale  # Not flat.
  np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize('source,target', embed.EMBEDDINGS)
def test_embedded_tree_is_a_fresh_targets(sources, source, target):
  variables, _ = sources(source)
  embedded = embed.embed(variables, source, target)
  fresh = jax.eval_shape(
      lambda: models.create_model(target, num_classes=10, alpha=_ALPHA).init(
          jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
      )
  )
  shape = lambda t: jax.tree.map(lambda a: (a.shape, a.dtype), t)
  assert jax.tree.structure(embedded) == jax.tree.structure(fresh)
  assert shape(embedded) == shape(fresh)


def test_per_unit_batch_norm_tiles_the_channels(sources):
  variables, _ = sources('sconv')
  embedded = embed.conv_to_fc(variables, 'sconv')
  # bn1 of S-FC has a unit per (16, 16, alpha) output; bn2 is copied.
  for collection, leaf in (('params', 'scale'), ('batch_stats', 'var')):
    per_unit = embedded[collection]['bn1'][leaf]
    assert per_unit.shape == (16, 16, _ALPHA)
    np.testing.assert_array_equal(
        per_unit[5, 11], variables[collection]['bn1'][leaf]
    )
  np.testing.assert_array_equal(
      embedded['params']['fc1']['kernel'], variables['params']['fc1']['kernel']
  )


def test_named_helpers_dispatch_to_embed(sources):
  variables, _ = sources('sconv')
  local_vars = embed.conv_to_local(variables, 'sconv')
  via_local = embed.local_to_fc(local_vars, 'slocal')
  direct = embed.conv_to_fc(variables, 'sconv')
  np.testing.assert_array_equal(
      via_local['params']['layer1']['kernel'],
      direct['params']['layer1']['kernel'],
  )


@pytest.mark.parametrize(
    'in_hw,kernel_size,strides,padding',
    [
        ((9, 7), 3, 2, 'SAME'),
        ((8, 8), 9, 2, 'SAME'),  # Receptive fields larger than the image.
        ((11, 10), (2, 3), (1, 2), 'SAME'),
        ((6, 7), 3, 1, ((2, 0), (1, 3))),
    ],
)
def test_dense_kernel_equals_the_layer_on_the_identity_basis(
    in_hw, kernel_size, strides, padding
):
  # The layer is linear, so its outputs on one-hot images are the dense
  # kernel's rows: an independent check of the index arithmetic.
  c_in, c_out = 2, 3
  layer = local.LocallyConnected2D(
      c_out, kernel_size, strides, padding, use_bias=False
  )
  basis = jnp.eye(in_hw[0] * in_hw[1] * c_in).reshape(-1, *in_hw, c_in)
  shape = jax.eval_shape(layer.init, jax.random.key(0), basis[:1])['params'][
      'kernel'
  ].shape
  kernel = jnp.asarray(
      np.random.default_rng(1).standard_normal(shape), jnp.float32
  )
  rows = layer.apply({'params': {'kernel': kernel}}, basis)

  geom = embed.geometry(in_hw, kernel_size, strides, padding)
  assert geom.out_hw == rows.shape[1:3]
  dense = embed.local_kernel_to_dense(kernel, geom)
  np.testing.assert_allclose(dense, rows.reshape(len(basis), -1), atol=1e-6)
  # And FeatureMapDense with it computes the same as the local layer.
  x = jnp.asarray(
      np.random.default_rng(2).standard_normal((2, *in_hw, c_in)), jnp.float32
  )
  fmd = layers.FeatureMapDense(c_out, strides, use_bias=False)
  if padding == 'SAME':
    np.testing.assert_allclose(
        fmd.apply({'params': {'kernel': dense}}, x),
        layer.apply({'params': {'kernel': kernel}}, x),
        atol=1e-5,
    )


def test_errors(sources):
  variables, _ = sources('sconv')
  with pytest.raises(
      ValueError, match="'sfc'.*'sconv'.*sconv->slocal.*" 'dlocal->dfc'
  ):
    embed.embed(variables, 'sfc', 'sconv')
  with pytest.raises(ValueError, match='valid'):
    embed.conv_to_fc(variables, 'slocal')
  with pytest.raises(ValueError, match='not those of'):
    embed.embed(variables, 'sconv', 'sfc', image_shape=(28, 28, 3))


def test_conv_kernel_to_local_matches_tile_conv_kernel():
  kernel = (
      np.random.default_rng(3).standard_normal((3, 5, 4, 2)).astype(np.float32)
  )
  geom = embed.geometry((9, 8), (3, 5), 2, 'SAME')
  np.testing.assert_array_equal(
      embed.conv_kernel_to_local(kernel, geom),
      local.tile_conv_kernel(jnp.asarray(kernel), (5, 4)),
  )
