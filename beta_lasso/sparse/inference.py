"""Inference from an exported file (`beta_lasso.sparse.export`), sparse where it pays.

    net = sparse.load('/tmp/bl.npz')           # numpy + jax (+ scipy if there)
    logits = net.predict(uint8_images)         # NHWC, 0-255, like the dataset

Every layer is a linear map from the flattened NHWC input to the flattened
NHWC output, then a bias (BatchNorm already folded in) and maybe a ReLU.
Activations are kept as (units, batch), so a sparse layer is a CSR matrix with
one row per output unit times a dense block: the fast path of every CSR
kernel. Conv and locally connected kernels become such a matrix by unrolling
(each stored weight once per output position that sees it); the work is then
the non-zeros times the positions, the conv's own multiply-adds scaled by its
density.

Per layer the density decides: at or below `dense_above` the layer runs sparse,
above it runs dense (an XLA matmul, or the conv itself through jax.lax), since a
sparse kernel does several times more work per stored weight than a dense one.

Backends for the sparse layers:
  'scipy': scipy.sparse CSR products, layer by layer (the default when scipy is
    installed: the fastest measured, see BENCHMARKS.md).
  'bcoo': jax.experimental.sparse BCOO products, the whole network in one
    jitted function.
  'dense': every layer dense, the reference the sparse paths are checked on.
"""

import json
import math
from typing import Any

import jax
from jax.experimental import sparse as jsparse
import jax.numpy as jnp
import numpy as np

from beta_lasso.sparse import csr

BACKENDS = ('scipy', 'bcoo', 'dense')
# Layers denser than this run dense. Measured on 2 CPU cores (BENCHMARKS.md):
# scipy CSR beats XLA's dense matmul at batch 1 up to ~15% density, at batch
# 256 only up to ~5%; one plan serves every batch size, and latency is what
# sparsity buys most.
DENSE_ABOVE = 0.1

_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def _has_scipy() -> bool:
  try:
    import scipy.sparse  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def read(path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(meta, arrays) of an exported file; no pickle is ever loaded."""
  with np.load(path, allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  meta = json.loads(str(arrays.pop('meta')))
  return meta, arrays


def layer_csr(layer: dict[str, Any], arrays: dict[str, np.ndarray]) -> dict:
  """The stored CSR matrix of a layer (rows = output features)."""
  name = layer['name']
  return {
      'data': arrays[f'{name}/data'],
      'indices': arrays[f'{name}/indices'],
      'indptr': arrays[f'{name}/indptr'],
      'shape': tuple(layer['csr_shape']),
  }


def kernel(layer: dict[str, Any], matrix: dict) -> np.ndarray:
  """The layer's kernel in the model's layout (BatchNorm folded in)."""
  return csr.to_dense(matrix).T.reshape(layer['kernel_shape'])


def unroll(layer: dict[str, Any], matrix: dict) -> dict:
  """The layer as a CSR matrix (output units, input units) on flat NHWC.

  For 'dense' layers that is the stored matrix. For 'conv' and 'local' every
  stored weight is placed at each output position whose window holds it
  inside the (zero-padded) input.
  """
  if layer['kind'] == 'dense':
    return matrix
  h, w, c = layer['in_shape']
  oh, ow, features = layer['out_shape']
  (kh, kw), (sh, sw) = layer['kernel_size'], layer['strides']
  (pad_h, _), (pad_w, _) = layer['padding']
  f = csr.row_ids(matrix)
  rest = matrix['indices'].astype(np.int64)
  if layer['kind'] == 'conv':  # Kernel (kh, kw, C, F): shared by positions.
    i, j, ch = np.unravel_index(rest, (kh, kw, c))
    oy, ox = np.unravel_index(np.arange(oh * ow), (oh, ow))
    oy, ox = oy[:, None], ox[:, None]  # Positions x stored weights.
    f, i, j, ch = f[None], i[None], j[None], ch[None]
    values = np.broadcast_to(matrix['data'][None], (oh * ow, len(rest)))
  else:  # Local kernel (oh, ow, C * kh * kw, F), input channel slowest.
    oy, ox, k = np.unravel_index(rest, (oh, ow, c * kh * kw))
    ch, i, j = np.unravel_index(k, (c, kh, kw))
    values = matrix['data']
  iy, ix = oy * sh - pad_h + i, ox * sw - pad_w + j
  inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
  rows = np.broadcast_to((oy * ow + ox) * features + f, inside.shape)[inside]
  cols = np.broadcast_to((iy * w + ix) * c + ch, inside.shape)[inside]
  return csr.from_coo(
      rows,
      cols,
      np.broadcast_to(values, inside.shape)[inside],
      (oh * ow * features, h * w * c),
  )


def _layer_density(layer: dict[str, Any]) -> float:
  return layer['nnz'] / math.prod(layer['kernel_shape'])


def _full_bias(layer: dict[str, Any], bias: np.ndarray) -> np.ndarray:
  """Bias per output unit: conv and local biases are per channel."""
  units = math.prod(layer['out_shape'])
  return np.tile(bias, units // bias.size).astype(np.float32)


def _matmul(weights, x):
  return weights @ x


_jit_matmul = jax.jit(_matmul)


def _lax_layer(layer: dict[str, Any]):
  """fn(weights, x): a conv or locally connected layer on (units, batch)."""
  h, w, c = layer['in_shape']
  padding = [tuple(p) for p in layer['padding']]
  strides = tuple(layer['strides'])

  @jax.jit
  def apply(weights, x):
    x = x.T.reshape(-1, h, w, c)
    if layer['kind'] == 'conv':
      y = jax.lax.conv_general_dilated(
          x, weights, strides, padding, dimension_numbers=_DIMENSION_NUMBERS
      )
    else:
      y = jax.lax.conv_general_dilated_local(
          x,
          weights,
          strides,
          padding,
          tuple(layer['kernel_size']),
          dimension_numbers=_DIMENSION_NUMBERS,
      )
    return y.reshape(y.shape[0], -1).T

  return apply


def _nbytes(weights) -> int:
  """Bytes held by a dense array, a scipy CSR matrix or a BCOO matrix."""
  if hasattr(weights, 'indptr'):  # scipy CSR
    return weights.data.nbytes + weights.indices.nbytes + weights.indptr.nbytes
  if hasattr(weights, 'indices'):  # BCOO
    return weights.data.nbytes + weights.indices.nbytes
  return weights.nbytes


class SparseNetwork:
  """An exported network, ready to predict.

  Attributes:
    meta: the file's metadata (model, alpha, config, layers, ...).
    backend: 'scipy', 'bcoo' or 'dense'.
    plan: per layer 'sparse' or 'dense', as run.
  """

  def __init__(
      self,
      meta: dict[str, Any],
      arrays: dict[str, np.ndarray],
      *,
      backend: str | None = None,
      dense_above: float = DENSE_ABOVE,
  ):
    if backend is None:
      backend = 'scipy' if _has_scipy() else 'bcoo'
    if backend not in BACKENDS:
      raise ValueError(f'backend {backend!r} is not one of {BACKENDS}')
    self.meta, self.backend = meta, backend
    self._mean = np.asarray(meta['mean'], np.float32)
    self._inv_std = 1 / np.asarray(meta['std'], np.float32)
    self.plan, self._fns, self._weights = [], [], []
    for layer in meta['layers']:
      matrix = layer_csr(layer, arrays)
      bias = _full_bias(layer, arrays[f'{layer["name"]}/bias'])[:, None]
      sparse = backend != 'dense' and _layer_density(layer) <= dense_above
      self.plan.append('sparse' if sparse else 'dense')
      fn, weights = self._make_op(layer, matrix, sparse)
      self._fns.append((fn, layer['relu']))
      self._weights.append((weights, bias))
    # With no sparse layer there is nothing for scipy to do: one jitted call
    # saves the host round trip per layer.
    self._use_jax = backend == 'bcoo' or 'sparse' not in self.plan
    # Weights are arguments, not constants: XLA would fold the BCOO indices
    # at compile time for minutes.
    self._jitted = jax.jit(self._forward_jax)

  def _make_op(self, layer, matrix, sparse):
    """(fn, weights) with fn(weights, x) the layer on (units, batch)."""
    if sparse:
      unrolled = unroll(layer, matrix)
      if self.backend == 'scipy':
        import scipy.sparse  # pylint: disable=g-import-not-at-top
        # scipy's kernels take int32 indices (the file stores uint16).
        return _matmul, scipy.sparse.csr_matrix(
            (
                unrolled['data'],
                unrolled['indices'].astype(np.int32),
                unrolled['indptr'].astype(np.int32),
            ),
            shape=unrolled['shape'],
        )
      rows = csr.row_ids(unrolled)
      indices = np.stack([rows, unrolled['indices']], axis=1).astype(np.int32)
      return _matmul, jsparse.BCOO(
          (jnp.asarray(unrolled['data']), jnp.asarray(indices)),
          shape=unrolled['shape'],
          indices_sorted=True,
          unique_indices=True,
      )
    weights = kernel(layer, matrix)
    if layer['kind'] != 'dense':
      return _lax_layer(layer), jnp.asarray(weights)
    # Dense layers go through XLA even on the scipy path: numpy's threaded
    # OpenBLAS measured 25x slower at batch 1 on a busy 2-core machine.
    return _jit_matmul, jnp.asarray(weights.T)

  def _forward_jax(self, all_weights, x):
    for (fn, relu), (weights, bias) in zip(self._fns, all_weights):
      x = fn(weights, x) + bias
      if relu:
        x = jnp.maximum(x, 0)
    return x

  def _forward_numpy(self, x):
    for (fn, relu), (weights, bias) in zip(self._fns, self._weights):
      x = np.asarray(fn(weights, x))
      if x.flags.writeable:
        x += bias
      else:  # A jax result is read-only on the host.
        x = x + bias
      if relu:
        np.maximum(x, 0, out=x)
    return x

  def predict(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits (float32, (N, classes)) of uint8 (or 0-255 float) NHWC images."""
    images = np.asarray(images)
    outputs = []
    for start in range(0, len(images), batch_size):
      x = (
          images[start : start + batch_size].astype(np.float32) - self._mean
      ) * self._inv_std
      # (units, batch), contiguous: each layer multiplies from the left.
      x = np.ascontiguousarray(x.reshape(len(x), -1).T)
      if self._use_jax:
        y = np.asarray(self._jitted(self._weights, x))
      else:
        y = self._forward_numpy(x)
      outputs.append(y.T)
    return (
        np.concatenate(outputs)
        if outputs
        else np.zeros((0, self.meta['num_classes']), np.float32)
    )

  def weight_bytes(self) -> int:
    """Bytes of the weights and biases as held for inference."""
    return sum(_nbytes(w) + b.nbytes for w, b in self._weights)


def load(
    path, *, backend: str | None = None, dense_above: float = DENSE_ABOVE
) -> SparseNetwork:
  """Reads an exported file into a `SparseNetwork`.

  Args:
    path: a file written by `python -m beta_lasso.sparse.export`.
    backend: 'scipy', 'bcoo' or 'dense'; None picks 'scipy' when it is
      installed, else 'bcoo'.
    dense_above: layers with a larger fraction of non-zero weights run dense.

  Returns:
    The network.
  """
  meta, arrays = read(path)
  return SparseNetwork(meta, arrays, backend=backend, dense_above=dense_above)
