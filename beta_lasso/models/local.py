"""Locally connected 2D layer: a convolution without weight sharing.

`LocallyConnected2D` has the geometry of a 2D convolution (kernel size,
strides, padding) but a separate filter at every output position. It runs on
`jax.lax.conv_general_dilated_local`.

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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

def default_kernel_init(key: jax.Array, shape: Sequence[int],
                        dtype=jnp.float32) -> jax.Array:
  """LeCun truncated normal with fan-in k_h * k_w * C_in (`shape[-2]`).

  Output positions are batch axes: each position's filter is an independent
  conv filter. Same distribution as `nn.initializers.variance_scaling(1.0,
  'fan_in', 'truncated_normal', in_axis=-2, out_axis=-1, batch_axis=(0, 1))`,
  but sampled flat and reshaped, which XLA compiles several times faster on
  CPU (seconds per layer for D-LOCAL).
  """
  # 0.8796... is the std of a standard normal truncated to [-2, 2].
  stddev = np.sqrt(1.0 / shape[-2]) / .87962566103423978
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


def tile_conv_kernel(conv_kernel: jax.Array,
                     out_spatial: tuple[int, int]) -> jax.Array:
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
      c_in * k_h * k_w, features)
  return jnp.broadcast_to(fused, tuple(out_spatial) + fused.shape)


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

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Applies the layer to NHWC `inputs`, returning NHWC outputs."""
    if inputs.ndim != 4:
      raise ValueError(f'expected NHWC inputs, got shape {inputs.shape}')
    kernel_size = as_pair(self.kernel_size)
    strides = as_pair(self.strides)
    padding = self.padding if isinstance(self.padding, str) else tuple(
        tuple(p) for p in self.padding)
    in_features = inputs.shape[-1]

    # The kernel needs the output spatial shape; a shared conv of the same
    # geometry has it.
    out_shape = jax.eval_shape(
        lambda x, w: jax.lax.conv_general_dilated(
            x, w, strides, padding, dimension_numbers=_DIMENSION_NUMBERS),
        jax.ShapeDtypeStruct(inputs.shape, jnp.float32),
        jax.ShapeDtypeStruct(kernel_size + (in_features, self.features),
                             jnp.float32)).shape
    kernel_shape = out_shape[1:3] + (
        int(np.prod(kernel_size)) * in_features, self.features)
    kernel = self.param('kernel', self.kernel_init, kernel_shape,
                        self.param_dtype)
    bias = (self.param('bias', self.bias_init, out_shape[1:], self.param_dtype)
            if self.use_bias else None)

    inputs, kernel, bias = nn.dtypes.promote_dtype(
        inputs, kernel, bias, dtype=self.dtype)
    y = jax.lax.conv_general_dilated_local(
        lhs=inputs,
        rhs=kernel,
        window_strides=strides,
        padding=padding,
        filter_shape=kernel_size,
        dimension_numbers=_DIMENSION_NUMBERS,
        precision=self.precision)
    if bias is not None:
      y = y + bias
    return y
