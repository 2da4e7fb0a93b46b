"""Every locally connected implementation computes the reference's function.

The reference is `jax.lax.conv_general_dilated_local` ('conv_local'); the
others must give its outputs and gradients (inputs and kernel) up to float
rounding, from the same parameters, in S-LOCAL's and D-LOCAL's geometries.
"""

import functools
import importlib.util
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import train_step
from beta_lasso import models
from beta_lasso.models import local
from beta_lasso.training import validation
from configs import default

REPO = pathlib.Path(__file__).resolve().parent.parent

_FAST = [i for i in local.IMPLEMENTATIONS if i not in ('auto', 'conv_local')]


# (input H, W, C), features, kernel, stride, padding: S-LOCAL's layer1 at a
# smaller image, a strided 3x3 layer of D-LOCAL, and an odd geometry.
@pytest.mark.parametrize(
    'in_shape,features,kernel_size,strides,padding',
    [
        ((12, 12, 3), 2, 9, 2, 'SAME'),
        ((8, 8, 2), 4, 3, 2, 'SAME'),
        ((9, 7, 2), 3, (2, 3), (1, 2), ((2, 0), (1, 3))),
    ],
)
def test_implementations_match_reference(
    in_shape, features, kernel_size, strides, padding
):
  layer = local.LocallyConnected2D(
      features, kernel_size, strides, padding, impl='conv_local'
  )
  x = jax.random.normal(jax.random.key(0), (3, *in_shape))
  params = layer.init(jax.random.key(1), x)['params']
  # Same parameter layout whatever the implementation.
  for impl in _FAST:
    assert jax.tree.map(
        jnp.shape,
        jax.eval_shape(layer.clone(impl=impl).init, jax.random.key(1), x),
    ) == jax.tree.map(jnp.shape, {'params': params})

  @jax.jit  # One compilation for every implementation of this geometry.
  def forward_and_grads(params, x):
    out = {}
    for impl in ('conv_local', *_FAST):
      apply = lambda p, x, m=layer.clone(impl=impl): m.apply({'params': p}, x)
      loss = lambda p, x, f=apply: jnp.sum(jnp.sin(f(p, x)))
      out[impl] = apply(params, x), jax.grad(loss, (0, 1))(params, x)
    return out

  out = forward_and_grads(params, x)
  for impl in _FAST:
    jax.tree.map(
        lambda got, want: np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=2e-5
        ),
        out[impl],
        out['conv_local'],
    )


def test_dense_kernel_is_the_layer_as_a_matrix():
  # Column j of the dense kernel is output unit j's filter over the whole
  # input: the layer applied to a one-hot input reads out its rows.
  in_shape, kernel_size, strides = (5, 6, 2), (3, 3), (2, 2)
  layer = local.LocallyConnected2D(
      2, kernel_size, strides, use_bias=False, impl='conv_local'
  )
  eye = jnp.eye(np.prod(in_shape)).reshape(-1, *in_shape)
  kernel = layer.init(jax.random.key(0), eye)['params']['kernel']
  dense = local.dense_kernel(kernel, in_shape, kernel_size, strides, 'SAME')
  rows = layer.apply({'params': {'kernel': kernel}}, eye).reshape(len(eye), -1)
  np.testing.assert_allclose(dense, rows, atol=1e-6)
  # Locality: every unit sees at most a 3x3 window of 2 channels.
  assert int(jnp.max(jnp.sum(dense != 0, axis=0))) <= 18


@pytest.mark.parametrize('name', ['slocal', 'dlocal'])
def test_models_take_the_implementation_with_the_same_params(name):
  x = jnp.zeros((1, 16, 16, 3))
  shapes = {
      impl: jax.tree.map(
          jnp.shape,
          jax.eval_shape(
              functools.partial(
                  models.create_model(
                      name, num_classes=10, alpha=1, local_impl=impl
                  ).init,
                  train=False,
              ),
              jax.random.key(0),
              x,
          ),
      )
      for impl in local.IMPLEMENTATIONS
  }
  assert all(s == shapes['conv_local'] for s in shapes.values())


def test_bad_implementation_is_one_line_error():
  with pytest.raises(ValueError, match=r"'bogus'.*conv_local, patches"):
    models.create_model('slocal', num_classes=10, alpha=1, local_impl='bogus')
  config = default.get_config()
  config.local_impl = 'bogus'
  with pytest.raises(
      validation.ConfigError,
      match=r"config.local_impl='bogus'.*auto, conv_local",
  ):
    validation.validate_config(config)


def test_auto_resolves_on_every_backend():
  assert local.resolve_impl('auto') in local.IMPLEMENTATIONS[1:]
  assert set(local.AUTO.values()) <= set(local.IMPLEMENTATIONS[1:])


def test_auto_picks_per_layer_on_cpu():
  # S-LOCAL's layer1 (9x9 windows on 32x32) wastes 12.6x as a masked dense
  # matmul, D-LOCAL's layer1 (3x3 on 32x32) 113.8x and its layer7 (3x3 on
  # 4x4) 1.8x.
  assert local.masked_dense_waste((32, 32), (9, 9)) == pytest.approx(
      12.64, 1e-3
  )
  picks = [
      local.resolve_impl('auto', local.masked_dense_waste(s, k))
      for s, k in (((32, 32), (9, 9)), ((32, 32), (3, 3)), ((4, 4), (3, 3)))
  ]
  assert picks == ['masked_dense', 'patches', 'masked_dense']
  assert local.resolve_impl('patches', 1.0) == 'patches'


def test_benchmark_arguments():
  args = train_step.build_parser().parse_args(
      ['--models=sconv:16,slocal', '--local_impls=patches,conv_local']
  )
  assert train_step.parse_models(args.models, args.alpha) == [
      ('sconv', 16),
      ('slocal', 8),
  ]
  assert train_step.parse_impls(args.local_impls) == ['patches', 'conv_local']
  with pytest.raises(ValueError, match="'nope'"):
    train_step.parse_models('nope', 8)
  with pytest.raises(ValueError, match="'x'"):
    train_step.parse_models('sfc:x', 8)
  with pytest.raises(ValueError, match="'dense'"):
    train_step.parse_impls('dense')


def test_benchmark_times_the_step_and_layer1(capsys):
  results = train_step.main(
      [
          '--models=slocal:1',
          '--rounds=1',
          '--steps=1',
          '--no-input',
          '--loop_model=',
      ]
  )
  [row] = results['steps']
  assert (row['model'], row['alpha'], row['local_impl']) == (
      'slocal',
      1,
      'auto',
  )
  assert row['images_per_s'] > 0 and row['layer1_ms'] > 0
  # Both sides or neither: PyTorch is optional.
  assert (
      ('layer1_ratio' in row)
      == ('ratio' in row)
      == (train_step.torch is not None)
  )
  assert 'layer1 ms' in capsys.readouterr().out


@pytest.mark.skipif(
    importlib.util.find_spec('torch') is None,
    reason='PyTorch is optional (benchmarks/requirements.txt)',
)
def test_benchmark_runs_pytorch_in_a_fresh_process(tmp_path):
  # As a user runs it: torch's default CUDA wheel ships Triton, which crashed
  # the process when it loaded after TensorFlow (see benchmarks/train_step.py).
  out = tmp_path / 'steps.json'
  run = subprocess.run(
      [
          sys.executable,
          '-m',
          'benchmarks.train_step',
          '--models=slocal:1',
          '--rounds=1',
          '--steps=1',
          '--no-input',
          '--loop_model=',
          f'--json={out}',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      check=False,
      timeout=600,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  [row] = json.loads(out.read_text())['steps']
  assert row['ratio'] > 0 and row['layer1_ratio'] > 0
