"""Locally connected 2D layer: a convolution without weight sharing.

`LocallyConnected2D` has the geometry of a 2D convolution (kernel size,
strides, padding) but a separate filter at every output position.

Implementations (`impl`), all computing the same function of the same kernel:

- 'conv_local': `jax.lax.conv_general_dilated_local`, the reference. It
  extracts patches with a grouped convolution against an identity kernel
  (k_h k_w times the layer's own multiply-adds, and a slow gradient with
  respect to the input on CPU), then contracts them per position.
- 'patches': the patches gathered as rows of the input transposed to
  (H * W * C_in, N), so each gathered row is a contiguous batch, then one
  matmul per output position (a batched matmul over positions). No wasted
  multiply-adds; its gradient with respect to the input is a scatter-add.
- 'masked_dense': the kernel placed into the dense (H * W * C_in,
  out_h * out_w * features) matrix of the same layer, zero outside each
  unit's window, then one plain matmul. The placement is pads and reshapes
  only (no scatter), so its transpose is cheap too; it wastes
  H W / (k_h k_w) of the multiply-adds, so it pays only where the matmul is
  much faster than the batched one (few input channels, as in S-LOCAL).
- 'auto': per layer, the fastest measured on the backend (`resolve_impl`,
  BENCHMARKS.md).

Kernel layout. The `kernel` parameter has shape

    (out_h, out_w, C_in * k_h * k_w, features)

which is exactly the `rhs` that `conv_general_dilated_local` takes for
`dimension_numbers=('NHWC', 'HWIO', 'NHWC')`: the two leading axes are output
positions, and the third axis fuses the receptive field with the input
channels in the order (C_in, k_h, k_w), input channel slowest. So a conv
kernel `w` of shape (k_h, k_w, C_in, features) becomes the equivalent local
kernel with `tile_conv_kernel(w, (out_h, out_w))`.

Init. Unlike Flax's `nn.ConvLocal`, whose default `lecun_normal` counts the
output positions as part of the fan-in (out_h * out_w times too large, so the
weights start e.g. 16x too small for S-LOCAL), the default init here uses
fan-in = k_h * k_w * C_in, the same as `nn.Conv` for the same geometry.
"""

from collections.abc import Sequence
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ('auto', 'conv_local', 'patches', 'masked_dense')

# What 'auto' runs, per `jax.default_backend()`; see BENCHMARKS.md for the
# measurements behind each choice.
AUTO = {'cpu': 'patches', 'gpu': 'patches', 'tpu': 'patches'}
# ...except where the dense kernel wastes at most this factor of the layer's
# multiply-adds: there 'masked_dense' runs. On CPU it beat 'patches' forward
# and backward for S-LOCAL's layer 1 (waste 12.6) and D-LOCAL's 8x8 and 4x4
# layers, and lost from waste 28 up (BENCHMARKS.md has the times). Unmeasured
# elsewhere, so 'patches' throughout.
MASKED_DENSE_MAX_WASTE = {'cpu': 16.0}


def default_kernel_init(
    key: jax.Array, shape: Sequence[int], dtype=jnp.float32
) -> jax.Array:
  """LeCun truncated normal with fan-in k_h * k_w * C_in (`shape[-2]`).

  Output positions are batch axes: each position's filter is an independent
  conv filter. Same distribution as `nn.initializers.variance_scaling(1.0,
  'fan_in', 'truncated_normal', in_axis=-2, out_axis=-1, batch_axis=(0, 1))`,
  but sampled flat and reshaped, which XLA compiles several times faster on
  CPU (seconds per layer for D-LOCAL).
  """
  # 0.8796... is the std of a standard normal truncated to [-2, 2].
  stddev = np.sqrt(1.0 / shape[-2]) / 0.87962566103423978
  flat = jax.random.truncated_normal(key, -2, 2, (int(np.prod(shape)),), dtype)
  return (flat * stddev).reshape(shape)


_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def as_pair(x: int | Sequence[int]) -> tuple[int, int]:
  """Returns `x` as an (h, w) pair; an int means the same in both."""
  if isinstance(x, int):
    return (x, x)
  x = tuple(x)
  if len(x) != 2:
    raise ValueError(f'expected an int or a pair, got {x!r}')
  return x


def tile_conv_kernel(
    conv_kernel: jax.Array, out_spatial: tuple[int, int]
) -> jax.Array:
  """Turns a conv kernel into the local kernel that computes the same thing.

  Args:
    conv_kernel: HWIO kernel of shape (k_h, k_w, C_in, features), as in
      `nn.Conv`.
    out_spatial: (out_h, out_w) of the layer's output.

  Returns:
    Array of shape (out_h, out_w, C_in * k_h * k_w, features), the layout of
    `LocallyConnected2D`'s kernel.
  """
  k_h, k_w, c_in, features = conv_kernel.shape
  # The local kernel's fused input axis is ordered (C_in, k_h, k_w).
  fused = jnp.transpose(conv_kernel, (2, 0, 1, 3)).reshape(
      c_in * k_h * k_w, features
  )
  return jnp.broadcast_to(fused, tuple(out_spatial) + fused.shape)


def resolve_impl(impl: str, waste: float | None = None) -> str:
  """The implementation `impl` runs on this backend ('auto' resolved).

  Args:
    impl: one of `IMPLEMENTATIONS`.
    waste: for a layer, `masked_dense_waste` of its geometry; None resolves
      'auto' without a layer (the backend's default).

  Raises:
    ValueError: `impl` is not one of `IMPLEMENTATIONS`.
  """
  if impl not in IMPLEMENTATIONS:
    raise ValueError(
        f'local_impl {impl!r} is not valid; choose one of: '
        f'{", ".join(IMPLEMENTATIONS)}'
    )
  if impl != 'auto':
    return impl
  backend = jax.default_backend()
  if waste is not None and waste <= MASKED_DENSE_MAX_WASTE.get(backend, 0):
    return 'masked_dense'
  return AUTO.get(backend, 'conv_local')


def masked_dense_waste(
    in_spatial: Sequence[int], kernel_size: Sequence[int]
) -> float:
  """Multiply-adds of 'masked_dense' over the layer's own: H W / (k_h k_w)."""
  return float(np.prod(in_spatial)) / float(np.prod(kernel_size))


def _pads_and_out(in_hw, kernel_size, strides, padding):
  """((lo, hi), (lo, hi)) padding and (out_h, out_w) of the geometry."""
  pads = (
      jax.lax.padtype_to_pads(in_hw, kernel_size, strides, padding)
      if isinstance(padding, str)
      else tuple(padding)
  )
  out = tuple(
      (n + lo + hi - k) // s + 1
      for n, (lo, hi), k, s in zip(in_hw, pads, kernel_size, strides)
  )
  return pads, out


@functools.lru_cache(maxsize=64)
def _patch_rows(in_hw, in_features, kernel_size, strides, padding):
  """Row of the flattened (H, W, C_in) input each kernel entry multiplies.

  Returns:
    int32 array (out_h * out_w, C_in * k_h * k_w), fused axis ordered as the
    kernel's (C_in, k_h, k_w); entries in the padding point at row H W C_in,
    a row of zeros.
  """
  (h, w), c = in_hw, in_features
  pads, (out_h, out_w) = _pads_and_out(in_hw, kernel_size, strides, padding)
  ci, ki, kj = (
      a.ravel()
      for a in np.meshgrid(
          np.arange(c),
          np.arange(kernel_size[0]),
          np.arange(kernel_size[1]),
          indexing='ij',
      )
  )
  oi, oj = (
      a.ravel()[:, None]
      for a in np.meshgrid(np.arange(out_h), np.arange(out_w), indexing='ij')
  )
  ih = oi * strides[0] - pads[0][0] + ki
  iw = oj * strides[1] - pads[1][0] + kj
  inside = (ih >= 0) & (ih < h) & (iw >= 0) & (iw < w)
  return np.where(inside, (ih * w + iw) * c + ci, h * w * c).astype(np.int32)


def _local_patches(inputs, kernel, kernel_size, strides, padding, precision):
  """'patches': gathered patches, one matmul per output position."""
  n = inputs.shape[0]
  out_h, out_w, fused, features = kernel.shape
  rows = _patch_rows(
      inputs.shape[1:3], inputs.shape[3], kernel_size, strides, padding
  )
  # Batch last: every gathered row is N contiguous values.
  table = jnp.concatenate(
      [inputs.reshape(n, -1).T, jnp.zeros((1, n), inputs.dtype)]
  )
  patches = table[rows]  # (positions, fused, N)
  y = jax.lax.dot_general(
      patches,
      kernel.reshape(out_h * out_w, fused, features),
      (((1,), (1,)), ((0,), (0,))),
      precision=precision,
  )  # (positions, N, F)
  return jnp.transpose(y, (1, 0, 2)).reshape(n, out_h, out_w, features)


def _skew(a: jax.Array, stride: int, length: int) -> jax.Array:
  """(o, k, ...) -> (o, length, ...) with row i holding a[i] at i * stride.

  Rows padded to length + stride and read back as rows of `length` shift each
  row by `stride` more than the one before: pads and reshapes, no scatter.
  """
  o, k = a.shape[:2]
  rest = a.shape[2:]
  a = jnp.pad(a, ((0, 0), (0, length + stride - k)) + ((0, 0),) * len(rest))
  a = a.reshape((o * (length + stride),) + rest)[: o * length]
  return a.reshape((o, length) + rest)


def _crop(a: jax.Array, axis: int, start: int, size: int) -> jax.Array:
  """a[start:start + size] along `axis`, zero-padded past its end."""
  a = jnp.moveaxis(a, axis, 0)
  a = jnp.pad(
      a, ((0, max(0, start + size - a.shape[0])),) + ((0, 0),) * (a.ndim - 1)
  )[start : start + size]
  return jnp.moveaxis(a, 0, axis)


def dense_kernel(
    kernel: jax.Array,
    in_shape: tuple[int, int, int],
    kernel_size: tuple[int, int],
    strides: tuple[int, int],
    padding,
) -> jax.Array:
  """The local kernel as the dense matrix of the same layer.

  Args:
    kernel: (out_h, out_w, C_in * k_h * k_w, features), the layer's kernel.
    in_shape: (H, W, C_in) of the layer's input.
    kernel_size: (k_h, k_w).
    strides: (s_h, s_w).
    padding: 'SAME', 'VALID' or ((lo, hi), (lo, hi)).

  Returns:
    (H * W * C_in, out_h * out_w * features): rows and columns the row-major
    flattening of (h, w, c), as `layers.FeatureMapDense`'s kernel; zero where
    an input is outside an output unit's window.
  """
  h, w, c = in_shape
  (k_h, k_w), (s_h, s_w) = kernel_size, strides
  out_h, out_w, _, features = kernel.shape
  pads, _ = _pads_and_out((h, w), kernel_size, strides, padding)
  # Padded input rows/columns that some window touches.
  span_h, span_w = (out_h - 1) * s_h + k_h, (out_w - 1) * s_w + k_w
  a = kernel.reshape(out_h, out_w, c, k_h, k_w, features)
  a = jnp.transpose(a, (0, 3, 1, 4, 2, 5))  # (oh, kh, ow, kw, c, f)
  a = _skew(a, s_h, span_h)  # (oh, padded h, ow, kw, c, f)
  a = jnp.transpose(a, (2, 3, 0, 1, 4, 5))  # (ow, kw, oh, padded h, c, f)
  a = _skew(a, s_w, span_w)  # (ow, padded w, oh, padded h, c, f)
  a = _crop(_crop(a, 1, pads[1][0], w), 3, pads[0][0], h)
  a = jnp.transpose(a, (3, 1, 4, 2, 0, 5))  # (h, w, c, oh, ow, f)
  return a.reshape(h * w * c, out_h * out_w * features)


def _local_masked_dense(
    inputs, kernel, kernel_size, strides, padding, precision
):
  """'masked_dense': one matmul with the zero-filled dense kernel."""
  n = inputs.shape[0]
  out_h, out_w, _, features = kernel.shape
  dense = dense_kernel(kernel, inputs.shape[1:], kernel_size, strides, padding)
  y = jnp.matmul(inputs.reshape(n, -1), dense, precision=precision)
  return y.reshape(n, out_h, out_w, features)


def _local_reference(inputs, kernel, kernel_size, strides, padding, precision):
  """'conv_local': XLA's own locally connected convolution."""
  return jax.lax.conv_general_dilated_local(
      lhs=inputs,
      rhs=kernel,
      window_strides=strides,
      padding=padding,
      filter_shape=kernel_size,
      dimension_numbers=_DIMENSION_NUMBERS,
      precision=precision,
  )


_IMPLS = {
    'conv_local': _local_reference,
    'patches': _local_patches,
    'masked_dense': _local_masked_dense,
}


def local_conv(
    inputs: jax.Array,
    kernel: jax.Array,
    kernel_size: tuple[int, int],
    strides: tuple[int, int],
    padding,
    *,
    impl: str = 'auto',
    precision: jax.lax.PrecisionLike = None,
) -> jax.Array:
  """The locally connected convolution of NHWC `inputs` with `kernel`.

  Args:
    inputs: (N, H, W, C_in).
    kernel: (out_h, out_w, C_in * k_h * k_w, features), fused axis ordered
      (C_in, k_h, k_w).
    kernel_size: (k_h, k_w).
    strides: (s_h, s_w).
    padding: 'SAME', 'VALID' or ((lo, hi), (lo, hi)).
    impl: one of `IMPLEMENTATIONS`.
    precision: of the matmuls.

  Returns:
    (N, out_h, out_w, features), equal across implementations up to float
    rounding.
  """
  padding = (
      padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)
  )
  waste = masked_dense_waste(inputs.shape[1:3], kernel_size)
  return _IMPLS[resolve_impl(impl, waste)](
      inputs, kernel, tuple(kernel_size), tuple(strides), padding, precision
  )


class LocallyConnected2D(nn.Module):
  """2D convolution geometry with a separate filter per output position.

  Attributes:
    features: number of output channels.
    kernel_size: receptive field, an int or a (k_h, k_w) pair.
    strides: an int or a pair.
    padding: 'SAME', 'VALID', or a pair of (low, high) pairs.
    use_bias: adds an unshared bias of shape (out_h, out_w, features).
    dtype: computation dtype; None computes in float32 (the promoted dtype
      of inputs and params).
    param_dtype: dtype of the parameters.
    kernel_init: initializer for the kernel of shape
      (out_h, out_w, C_in * k_h * k_w, features).
    bias_init: initializer for the bias.
    precision: of the matmuls.
    impl: one of `IMPLEMENTATIONS`; every one takes the same parameters.
  """

  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: str | Sequence[tuple[int, int]] = 'SAME'
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  param_dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = default_kernel_init
  bias_init: nn.initializers.Initializer = nn.initializers.zeros
  precision: jax.lax.PrecisionLike = None
  impl: str = 'auto'

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the layer to NHWC `inputs`, returning NHWC outputs."""
    if inputs.ndim != 4:
      raise ValueError(f'expected NHWC inputs, got shape {inputs.shape}')
    kernel_size = as_pair(self.kernel_size)
    strides = as_pair(self.strides)
    padding = (
        self.padding
        if isinstance(self.padding, str)
        else tuple(tuple(p) for p in self.padding)
    )
    in_features = inputs.shape[-1]

    # The kernel needs the output spatial shape; a shared conv of the same
    # geometry has it.
    out_shape = jax.eval_shape(
        lambda x, w: jax.lax.conv_general_dilated(
            x, w, strides, padding, dimension_numbers=_DIMENSION_NUMBERS
        ),
        jax.ShapeDtypeStruct(inputs.shape, jnp.float32),
        jax.ShapeDtypeStruct(
            kernel_size + (in_features, self.features), jnp.float32
        ),
    ).shape
    kernel_shape = out_shape[1:3] + (
        int(np.prod(kernel_size)) * in_features,
        self.features,
    )
    kernel = self.param(
        'kernel', self.kernel_init, kernel_shape, self.param_dtype
    )
    bias = (
        self.param('bias', self.bias_init, out_shape[1:], self.param_dtype)
        if self.use_bias
        else None
    )

    inputs, kernel, bias = nn.dtypes.promote_dtype(
        inputs, kernel, bias, dtype=self.dtype
    )
    y = local_conv(
        inputs,
        kernel,
        kernel_size,
        strides,
        padding,
        impl=self.impl,
        precision=self.precision,
    )
    if bias is not None:
      y = y + bias
    return y
