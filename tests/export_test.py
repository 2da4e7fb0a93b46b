"""Sparse export and inference: CSR, BatchNorm folding, unrolling, end to end.

The end-to-end tests train tiny networks for two steps on 512 real CIFAR-10
images (enough for non-trivial BatchNorm statistics and, with beta-LASSO,
exact zeros), export them, and compare the sparse predictions with the dense
network's on the whole test set (BCOO, slow on CPU: its first 100 images).
"""

import json
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beta_lasso import models
from beta_lasso import sparse
from beta_lasso import train
from beta_lasso.data import augmentation
from beta_lasso.data import input_pipeline
from beta_lasso.sparse import csr
from beta_lasso.sparse import export
from beta_lasso.sparse import prune
from beta_lasso.training import loading
from configs import default
from configs import sfc_beta_lasso

REPO = pathlib.Path(__file__).resolve().parents[1]
EVAL_SPLIT = 'test[:500]'
# Logits are O(1-10); folding BN and summing in another order moves them by
# float32 rounding only.
LOGIT_ATOL = 1e-4


# ----------------------------------------------------------------------------
# Pieces.
# ----------------------------------------------------------------------------
def test_csr_round_trip_is_exact():
  rng = np.random.default_rng(0)
  matrix = rng.normal(size=(70, 3072)).astype(np.float32)
  matrix[rng.random(matrix.shape) < 0.97] = 0
  matrix[5] = 0  # An empty row.
  matrix[7, 3071] = -0.0  # Signed zero is a zero.
  encoded = csr.from_dense(matrix)
  assert encoded['indices'].dtype == np.uint16  # 3072 columns fit 16 bits.
  assert len(encoded['data']) == np.count_nonzero(matrix)
  np.testing.assert_array_equal(csr.to_dense(encoded), matrix)
  nonzero = matrix != 0  # Every bit of every stored value survives.
  assert csr.to_dense(encoded)[nonzero].tobytes() == matrix[nonzero].tobytes()
  # Unordered triples give the same arrays.
  rows, cols = np.nonzero(matrix)
  order = rng.permutation(len(rows))
  shuffled = csr.from_coo(
      rows[order], cols[order], matrix[rows, cols][order], matrix.shape
  )
  for key in ('data', 'indices', 'indptr'):
    np.testing.assert_array_equal(shuffled[key], encoded[key])
  assert csr.index_dtype(65_536) == np.uint16
  assert csr.index_dtype(65_537) == np.uint32


def test_batch_norm_folding_is_exact():
  rng = np.random.default_rng(1)
  kernel = rng.normal(size=(48, 24)).astype(np.float32)
  kernel[rng.random(kernel.shape) < 0.5] = 0
  bn_params = {
      'scale': rng.uniform(0.5, 2, 24).astype(np.float32),
      'bias': rng.normal(size=24).astype(np.float32),
  }
  stats = {
      'mean': rng.normal(size=24).astype(np.float32),
      'var': rng.uniform(0.1, 3, 24).astype(np.float32),
  }
  layer = export.linear_layer(
      'fc1',
      'dense',
      kernel,
      bn=(stats, bn_params),
      relu=True,
      geometry={'in_shape': [48], 'out_shape': [24]},
  )
  # Zeros stay zeros: the fold scales stored entries only.
  assert len(layer['csr']['data']) == np.count_nonzero(kernel)

  x = rng.normal(size=(16, 48)).astype(np.float32)
  bn = nn.BatchNorm(use_running_average=True, epsilon=1e-5)
  expected = bn.apply(
      {'params': bn_params, 'batch_stats': stats}, jnp.asarray(x @ kernel)
  )
  folded = x @ csr.to_dense(layer['csr']).T + layer['bias']
  np.testing.assert_allclose(folded, expected, rtol=1e-5, atol=1e-5)
  # In float64 the fold is the identity up to the final float32 rounding.
  exact = (x.astype(np.float64) @ kernel - stats['mean']) / np.sqrt(
      stats['var'].astype(np.float64) + 1e-5
  ) * bn_params['scale'] + bn_params['bias']
  folded64 = (
      x.astype(np.float64) @ csr.to_dense(layer['csr']).T.astype(np.float64)
      + layer['bias']
  )
  np.testing.assert_allclose(folded64, exact, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    'kind,size,k,stride',
    [
        ('conv', 8, 3, 2),  # SAME pads (0, 1): the high side only.
        (
            'local',
            9,
            5,
            2,
        ),  # Pads (2, 2); odd side, the window leaves the image.
    ],
)
def test_unrolled_layer_matches_lax(kind, size, k, stride):
  rng = np.random.default_rng(2)
  c, features = 3, 4
  x = rng.normal(size=(2, size, size, c)).astype(np.float32)
  if kind == 'conv':
    layer_module = nn.Conv(features, (k, k), stride, 'SAME', use_bias=False)
  else:
    layer_module = models.LocallyConnected2D(
        features, k, stride, 'SAME', use_bias=False
    )
  params = layer_module.init(jax.random.key(0), x)
  weights = np.array(params['params']['kernel'])
  weights[rng.random(weights.shape) < 0.6] = 0
  expected = layer_module.apply({'params': {'kernel': weights}}, x)

  out = -(-size // stride)
  layer = export.linear_layer(
      'layer1',
      kind,
      weights,
      relu=False,
      geometry={
          'in_shape': [size, size, c],
          'out_shape': [out, out, features],
          'kernel_size': [k, k],
          'strides': [stride, stride],
          'padding': [export._padding(size, out, k, stride)] * 2,
      },
  )
  unrolled = sparse.unroll(layer, layer['csr'])
  assert unrolled['shape'] == (out * out * features, size * size * c)
  y = csr.to_dense(unrolled) @ x.reshape(2, -1).T
  np.testing.assert_allclose(
      y.T.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5
  )


def test_unsupported_model_is_one_line(tmp_path):
  (tmp_path / 'config.json').write_text(
      json.dumps({'model': 'resnet18', 'dataset': 'cifar10'})
  )
  with pytest.raises(
      export.UnsupportedModelError, match='not supported for sparse inference'
  ) as error:
    export.export(tmp_path, tmp_path / 'out.npz')
  assert '\n' not in str(error.value)


# ----------------------------------------------------------------------------
# Trained networks, end to end.
# ----------------------------------------------------------------------------
# SGD without momentum or weight decay (the beta-LASSO config's 0s); its
# lambdas and beta are unused, so 0 (validation.UNUSED).
_SGD = dict(optimizer='sgd', l1=0.0, l1_conv=0.0, beta=0.0)
_MODELS = {  # name -> config overrides; all train 2 steps of 256 images.
    'sfc_beta_lasso': dict(alpha=2, l1_conv=2.5e-4, l1=2.5e-4),
    'sfc_sgd': dict(alpha=2, **_SGD),
    'sconv': dict(model='sconv', alpha=4, **_SGD),
    'slocal': dict(model='slocal', alpha=2, **_SGD),
    '3fc': dict(model='3fc', alpha=None, model_kwargs={'width': 64}, **_SGD),
}


def _tiny_config(overrides):
  config = sfc_beta_lasso.get_config('cpu')
  default.cpu_sized(
      config,
      num_epochs=1.0,
      train_split='train[:512]',
      eval_split=EVAL_SPLIT,
      eval_batch_size=250,
      augment='none',
  )
  # One eval and one checkpoint, at the end.
  config.update(overrides, eval_every_epochs=1.0, checkpoint_every_epochs=1.0)
  return config


@pytest.fixture(scope='module')
def test_images():
  """All 10,000 test images: predictions must agree on every one."""
  return input_pipeline.load_split('cifar10', 'test', None, False)[0]


@pytest.fixture(scope='module')
def train_once(tmp_path_factory):
  """name -> (name, config, workdir) of a tiny run, trained on first use."""
  runs = {}

  def get(name):
    if name not in runs:
      workdir = tmp_path_factory.mktemp(name)
      config = _tiny_config(_MODELS[name])
      results = train.train_and_evaluate(config, str(workdir))
      assert results['steps'] == 2
      runs[name] = name, config, workdir
    return runs[name]

  return get


@pytest.fixture(params=[m for m in _MODELS if m != 'sfc_sgd'])
def trained(request, train_once):
  return train_once(request.param)


def _dense_logits(config, workdir, images):
  info = input_pipeline.DATASETS[config.dataset]
  model = models.create_model(
      config.model,
      num_classes=info.num_classes,
      alpha=config.alpha,
      **config.model_kwargs,
  )
  variables = loading.load_variables(workdir)
  apply = jax.jit(
      lambda x: model.apply(
          {
              'params': variables['params'],
              'batch_stats': variables['batch_stats'],
          },
          augmentation.normalize(x, info),
          train=False,
      )
  )
  # In batches: S-LOCAL's patches of 10,000 images would take gigabytes.
  return np.concatenate(
      [
          np.asarray(apply(jnp.asarray(images[i : i + 1000])))
          for i in range(0, len(images), 1000)
      ]
  )


def test_export_predicts_like_the_dense_network(trained, test_images, tmp_path):
  name, config, workdir = trained
  path = tmp_path / 'net.npz'
  meta = export.export(workdir, path)
  assert meta['model'] == config.model and meta['alpha'] == config.alpha
  assert meta['mean'] == list(input_pipeline.DATASETS['cifar10'].mean)
  assert meta['config']['optimizer'] == config.optimizer
  nnz = json.loads((workdir / 'results.json').read_text())['nnz']
  assert {layer['name']: layer['nnz'] for layer in meta['layers']} == nnz
  if name == 'sfc_beta_lasso':  # beta-LASSO left exact zeros to drop.
    assert meta['layers'][0]['nnz'] < 0.9 * 3072 * 2 * 256

  expected = _dense_logits(config, workdir, test_images)
  # Every layer sparse, then every layer dense: both paths are checked.
  backends = [('scipy', 1.0), ('dense', 0.0)]
  if name == 'sfc_beta_lasso':  # BCOO compiles slowly; once is enough.
    backends.append(('bcoo', 1.0))
  for backend, dense_above in backends:
    net = sparse.load(path, backend=backend, dense_above=dense_above)
    assert net.plan == (
        ['dense'] * len(meta['layers'])
        if dense_above == 0
        else ['sparse'] * len(meta['layers'])
    )
    images = test_images if backend != 'bcoo' else test_images[:100]
    logits = net.predict(images, batch_size=300)
    np.testing.assert_allclose(
        logits,
        expected[: len(images)],
        rtol=0,
        atol=LOGIT_ATOL,
        err_msg=backend,
    )
    np.testing.assert_array_equal(
        logits.argmax(-1), expected[: len(images)].argmax(-1)
    )


def test_cli_writes_a_file_that_loads_without_training_code(
    train_once, tmp_path
):
  _, _, workdir = train_once('sfc_beta_lasso')
  path = tmp_path / 'net.npz'
  run = subprocess.run(
      [
          sys.executable,
          '-m',
          'beta_lasso.sparse.export',
          f'--workdir={workdir}',
          f'--out={path}',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  assert 'layer1' in run.stdout and 'non-zero' in run.stdout
  # Importing any training dependency fails in this interpreter.
  script = f"""
import sys
for name in ('tensorflow', 'tensorflow_datasets', 'orbax', 'clu',
             'ml_collections', 'flax', 'optax'):
  sys.modules[name] = None
from beta_lasso import sparse
net = sparse.load({str(path)!r})
import numpy as np
print(net.predict(np.zeros((2, 32, 32, 3), np.uint8)).shape)
"""
  run = subprocess.run(
      [sys.executable, '-c', script],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.strip().endswith('(2, 10)')


# ----------------------------------------------------------------------------
# Pruning for comparison.
# ----------------------------------------------------------------------------
def test_magnitude_prune_keeps_the_largest():
  kernel = np.array([[0.5, -3.0, 0.0], [2.0, -0.1, 1.0]], np.float32)
  pruned = prune.magnitude_prune(kernel, 2)
  np.testing.assert_array_equal(pruned, [[0, -3, 0], [2, 0, 0]])
  assert prune.magnitude_prune(kernel, 9) is kernel  # Nothing to remove.


def test_prune_like_matches_the_per_layer_non_zeros(train_once, tmp_path):
  _, _, sparse_run = train_once('sfc_beta_lasso')
  _, _, dense_run = train_once('sfc_sgd')
  result = prune.prune_like(dense_run, sparse_run, tmp_path / 'pruned.npz')
  like = json.loads((sparse_run / 'results.json').read_text())['nnz']
  assert result['nnz'] == like
  assert {
      layer['name']: layer['nnz'] for layer in result['meta']['layers']
  } == like
  # The survivors are the largest raw weights (BN folding keeps the pattern).
  raw = loading.load_params(dense_run)['layer1']['kernel']
  assert np.count_nonzero(raw) > like['layer1']  # There was work to do.
  meta, arrays = sparse.read(tmp_path / 'pruned.npz')
  exported = sparse.kernel(
      meta['layers'][0], sparse.layer_csr(meta['layers'][0], arrays)
  )
  np.testing.assert_array_equal(
      exported != 0, prune.magnitude_prune(raw, like['layer1']) != 0
  )
