"""half_precision: bfloat16 compute; float32 weights, BatchNorm and optimizer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from beta_lasso import models
from beta_lasso import train
from beta_lasso.data import augmentation
from beta_lasso.data import input_pipeline
from configs import sfc_beta_lasso


def _dtypes(tree):
  return {str(x.dtype) for x in jax.tree.leaves(tree)}


def test_bfloat16_computes_and_float32_is_kept():
  config = sfc_beta_lasso.get_config('cpu')  # S-FC, beta-LASSO.
  info = input_pipeline.DATASETS['cifar10']
  model = models.create_model(
      'sfc', num_classes=10, alpha=1, dtype=jnp.bfloat16
  )
  images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), np.uint8)
  batch = {'image': images, 'label': np.arange(8, dtype=np.int32)}
  variables = model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
  )
  tx, _ = train.create_optimizer(config, variables['params'], 100, 10)
  state = train.TrainState.create(variables, tx)
  step = jax.jit(
      functools.partial(
          train.train_step,
          model=model,
          tx=tx,
          augment=lambda x, _: x,
          normalize=functools.partial(
              augmentation.normalize, info=info, dtype=jnp.bfloat16
          ),
          key=jax.random.key(1),
      )
  )
  new_state, metrics = step(state, batch)

  # Weights, BatchNorm statistics and the beta-LASSO state stay float32: an
  # L1 step of lr * lambda ~ 1e-7 would vanish in bfloat16 weights.
  for tree in (new_state.params, new_state.batch_stats, new_state.opt_state):
    assert _dtypes(tree) <= {'float32', 'int32'}, _dtypes(tree)
  assert metrics['loss'].dtype == jnp.float32
  kernel = new_state.params['layer1']['kernel']
  # The L1 sign step moves every surviving weight, also where bfloat16's
  # 8 mantissa bits could not hold the change.
  moved = np.asarray(kernel != variables['params']['layer1']['kernel'])
  assert moved[np.asarray(kernel) != 0].all()
  # The layers compute in bfloat16.
  _, intermediates = model.apply(
      variables,
      augmentation.normalize(images, info, jnp.bfloat16),
      train=False,
      capture_intermediates=True,
      mutable=['intermediates'],
  )
  outputs = intermediates['intermediates']
  for layer in ('layer1', 'fc1', 'head'):
    assert outputs[layer]['__call__'][0].dtype == jnp.bfloat16, layer
  # BatchNorm normalises in float32 (the paper's 32-bit BatchNorm).
  assert outputs['bn1']['__call__'][0].dtype == jnp.float32
