r"""Embeds a network in its locally or fully connected twin (Table 1 "FC-emb.").

A convolution is a locally connected layer whose filters are all equal, and a
locally connected layer is a dense layer between the same feature-map units
that is zero outside each receptive field. So S-CONV's weights give an S-LOCAL
and an S-FC computing exactly the same function, and likewise for the D
family; the paper's "FC-emb." column is the size of that fully-connected
embedding.

    variables = embed(sconv_variables, 'sconv', 'sfc')
    models.create_model('sfc', num_classes=10, alpha=alpha).apply(
        variables, images, train=False)  # == S-CONV's logits

What each target leaf becomes:
- kernels of the conv-standing layers (`layer<N>`): a conv kernel is tiled
  over output positions (`local.tile_conv_kernel`); a local kernel becomes the
  dense kernel (H * W * C_in, out_h * out_w * C_out) of `FeatureMapDense`,
  with the filter of output unit (i, j, o) at the rows of its receptive field
  (SAME padding and stride included) and zeros elsewhere;
- BatchNorm after those layers: per channel after conv and local layers, per
  unit after dense ones (`layers.bn_axis`), so scale, bias, mean and var of
  shape (C,) are tiled to (out_h, out_w, C);
- everything else (fc1, head, the other BatchNorms) is copied.

The dense kernels are built by index arithmetic, not by applying the layer to
an identity basis (O((H W C_in)^2) activations), so memory is the target's
size plus a layer in flight: D-CONV at alpha 15 -> D-FC (282M weights, 1.1
GB) peaks at 2.1 GB and takes ~7 s on 2 CPU cores. Leaves come back as jax
arrays of the source's dtype.
"""

from collections.abc import Mapping
from typing import Any
from typing import NamedTuple

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from beta_lasso import models
from beta_lasso.models import local

# (source, target) pairs `embed` supports.
EMBEDDINGS = (
    ('sconv', 'slocal'),
    ('sconv', 'sfc'),
    ('slocal', 'sfc'),
    ('dconv', 'dlocal'),
    ('dconv', 'dfc'),
    ('dlocal', 'dfc'),
)

Variables = Mapping[str, Any]


class Geometry(NamedTuple):
  """Where a conv-standing layer reads from: what its kernel does not say."""

  in_hw: tuple[int, int]
  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  pads: tuple[tuple[int, int], tuple[int, int]]  # (low, high) per dimension.

  @property
  def out_hw(self) -> tuple[int, int]:
    return tuple(
        (n + lo + hi - k) // s + 1
        for n, k, s, (lo, hi) in zip(
            self.in_hw, self.kernel_size, self.strides, self.pads
        )
    )


def geometry(in_hw: tuple[int, int], kernel_size, strides, padding) -> Geometry:
  """The `Geometry` of a conv or local layer on `in_hw` inputs.

  Args:
    in_hw: (H, W) of the layer's input.
    kernel_size: an int or a (k_h, k_w) pair.
    strides: an int or a pair.
    padding: 'SAME', 'VALID' or ((lo, hi), (lo, hi)), as `jax.lax` takes it.

  Returns:
    The geometry, with padding resolved as `jax.lax.conv_general_dilated`
    resolves it (SAME puts the odd pixel at the high end).
  """
  kernel_size, strides = local.as_pair(kernel_size), local.as_pair(strides)
  if isinstance(padding, str):
    pads = jax.lax.padtype_to_pads(in_hw, kernel_size, strides, padding)
  else:
    pads = padding
  return Geometry(
      tuple(in_hw),
      kernel_size,
      strides,
      tuple(tuple(int(p) for p in pair) for pair in pads),
  )


def conv_kernel_to_local(kernel, geom: Geometry) -> np.ndarray:
  """HWIO conv kernel -> `LocallyConnected2D` kernel of the same function.

  The numpy twin of `local.tile_conv_kernel` (same layout: the fused axis
  ordered (C_in, k_h, k_w)); numpy because jnp would compile every op for
  every layer's shape.
  """
  kernel = np.asarray(kernel)
  k_h, k_w, c_in, c_out = kernel.shape
  fused = kernel.transpose(2, 0, 1, 3).reshape(c_in * k_h * k_w, c_out)
  return np.broadcast_to(fused, geom.out_hw + fused.shape)


def local_kernel_to_dense(kernel, geom: Geometry) -> np.ndarray:
  """`LocallyConnected2D` kernel -> `FeatureMapDense` kernel, same function.

  Args:
    kernel: shape (out_h, out_w, C_in * k_h * k_w, C_out), fused axis ordered
      (C_in, k_h, k_w).
    geom: the layer's geometry.

  Returns:
    Array of shape (H * W * C_in, out_h * out_w * C_out), rows and columns
    row-major over (h, w, c): entry [(h, w, c), (i, j, o)] is the weight
    output unit (i, j, o) gives input unit (h, w, c); zero outside its
    receptive field and where the field covers padding.
  """
  kernel = np.asarray(kernel)
  out_h, out_w, fused, c_out = kernel.shape
  (k_h, k_w), (s_h, s_w), (h_in, w_in) = (
      geom.kernel_size,
      geom.strides,
      geom.in_hw,
  )
  if (out_h, out_w) != geom.out_hw or fused % (k_h * k_w):
    raise ValueError(
        f'local kernel of shape {kernel.shape} does not fit ' f'{geom}'
    )
  c_in = fused // (k_h * k_w)
  filters = kernel.reshape(out_h, out_w, c_in, k_h, k_w, c_out)
  dense = np.zeros((h_in, w_in, c_in, out_h, out_w, c_out), kernel.dtype)
  rows, cols = np.arange(out_h), np.arange(out_w)
  # One kernel offset at a time: for a fixed (dy, dx) every output position
  # reads a different input pixel, so the scatter has no collisions.
  for dy in range(k_h):
    h = rows * s_h - geom.pads[0][0] + dy
    i = rows[(h >= 0) & (h < h_in)][:, None]
    for dx in range(k_w):
      w = cols * s_w - geom.pads[1][0] + dx
      j = cols[(w >= 0) & (w < w_in)][None, :]
      # Advanced indices around a slice: both sides are (i, j, C_in, C_out).
      dense[h[i], w[j], :, i, j, :] = filters[i, j, :, dy, dx, :]
  return dense.reshape(h_in * w_in * c_in, out_h * out_w * c_out)


def _layer_geometries(
    model: nn.Module, image_shape: tuple[int, int, int]
) -> dict[str, Geometry]:
  """Geometry of every conv and local layer of `model`, by parameter path."""
  found = {}

  def record(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == '__call__' and isinstance(
        module, (nn.Conv, local.LocallyConnected2D)
    ):
      found['/'.join(module.scope.path)] = geometry(
          args[0].shape[1:3], module.kernel_size, module.strides, module.padding
      )
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(
        lambda: model.init(
            jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)), train=False
        )
    )
  return found


def _shapes(model: nn.Module, image_shape) -> dict[str, Any]:
  return jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1,) + tuple(image_shape)), train=False
      )
  )


def _flat(tree) -> dict[str, Any]:
  return traverse_util.flatten_dict(tree, sep='/')


def embed(
    variables: Variables,
    source: str,
    target: str,
    image_shape: tuple[int, int, int] = (32, 32, 3),
) -> dict[str, Any]:
  """Variables of `target` computing the same function as `source`'s.

  Args:
    variables: {'params', 'batch_stats'} of a `source` model, as
      `create_model(source, ...).init` makes them (any alpha and classes).
    source: 'sconv', 'slocal', 'dconv' or 'dlocal'.
    target: a model of the same family with more support: see `EMBEDDINGS`.
    image_shape: (H, W, C) of the images the models take.

  Returns:
    Variables of `create_model(target, num_classes, alpha=alpha)` (same alpha
    and classes as the source) whose logits equal the source's in eval mode
    (train=False). In train mode the per-unit BatchNorms of S-FC / D-FC see
    different statistics, as they would in training.

  Raises:
    ValueError: an unsupported pair, or variables that are not a `source`
      model's on `image_shape` images.
  """
  if (source, target) not in EMBEDDINGS:
    raise ValueError(
        f'Cannot embed {source!r} in {target!r}; valid (source, target) '
        f'pairs: {", ".join(f"{s}->{t}" for s, t in EMBEDDINGS)}.'
    )
  params = variables['params']
  alpha = params['layer1']['kernel'].shape[-1]
  num_classes = params['head']['kernel'].shape[-1]
  src_model = models.create_model(source, num_classes=num_classes, alpha=alpha)
  tgt_model = models.create_model(target, num_classes=num_classes, alpha=alpha)

  src_template = _shapes(src_model, image_shape)
  for collection, tree in src_template.items():
    expected = {k: v.shape for k, v in _flat(tree).items()}
    given = {k: np.shape(v) for k, v in _flat(variables[collection]).items()}
    if given != expected:
      raise ValueError(
          f'variables[{collection!r}] are not those of {source!r} at alpha '
          f'{alpha} on {tuple(image_shape)} images: expected {expected}, '
          f'got {given}.'
      )

  geometries = _layer_geometries(src_model, image_shape)
  from_conv = source.endswith('conv')
  to_dense = target.endswith('fc')
  out = {}
  for collection, tree in _shapes(tgt_model, image_shape).items():
    src = _flat(variables[collection])
    leaves = {}
    for path, leaf in _flat(tree).items():
      value = np.asarray(src[path])
      layer = path.rpartition('/')[0]
      if layer in geometries and path.endswith('/kernel'):
        geom = geometries[layer]
        if from_conv:
          value = conv_kernel_to_local(value, geom)
        if to_dense:
          value = local_kernel_to_dense(value, geom)
      elif value.shape != leaf.shape:
        # Per-channel BatchNorm after a conv-standing layer -> per unit.
        value = np.broadcast_to(value, leaf.shape)
      if value.shape != leaf.shape:
        raise AssertionError(f'{path}: built {value.shape}, want {leaf.shape}')
      leaves[path] = jnp.asarray(value)
    out[collection] = traverse_util.unflatten_dict(leaves, sep='/')
  return out


def conv_to_local(
    variables: Variables,
    source: str = 'sconv',
    image_shape: tuple[int, int, int] = (32, 32, 3),
):
  """S-CONV -> S-LOCAL or D-CONV -> D-LOCAL (source 'sconv' | 'dconv')."""
  return embed(variables, source, source.replace('conv', 'local'), image_shape)


def local_to_fc(
    variables: Variables,
    source: str = 'slocal',
    image_shape: tuple[int, int, int] = (32, 32, 3),
):
  """S-LOCAL -> S-FC or D-LOCAL -> D-FC (source 'slocal' | 'dlocal')."""
  return embed(variables, source, source.replace('local', 'fc'), image_shape)


def conv_to_fc(
    variables: Variables,
    source: str = 'sconv',
    image_shape: tuple[int, int, int] = (32, 32, 3),
):
  """S-CONV -> S-FC or D-CONV -> D-FC (source 'sconv' | 'dconv')."""
  return embed(variables, source, source.replace('conv', 'fc'), image_shape)
