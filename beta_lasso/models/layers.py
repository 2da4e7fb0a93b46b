"""Building blocks shared by the model families: conv-standing layers and BN.

The paper compares a convolution with two replacements of the same geometry
(same input and output feature-map units): a locally connected layer and a
dense layer. `make_layer` builds any of the three from one spec, so each
family is written once.
"""

from collections.abc import Sequence
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from beta_lasso.models import local

LAYER_TYPES = ('conv', 'local', 'fc')


class FeatureMapDense(nn.Module):
  """Dense layer from a whole NHWC feature map to a whole NHWC feature map.

  The output has the units of a SAME convolution with the same strides:
  (ceil(H / s_h), ceil(W / s_w), features), and every output unit sees every
  input unit.

  Kernel layout: shape (H * W * C_in, out_h * out_w * features); rows and
  columns index the row-major flattening of (h, w, c). So column j reshaped to
  (H, W, C_in) is the "filter" of output unit j (the paper's Figure 4).

  Attributes:
    features: output channels.
    strides: an int or a pair; only sets the output's spatial size.
    use_bias: adds a bias of shape (out_h * out_w * features,).
    dtype: computation dtype; None computes in float32.
    param_dtype: dtype of the parameters.
    kernel_init: initializer for the 2D kernel (fan-in H * W * C_in).
  """

  features: int
  strides: int | Sequence[int] = 1
  use_bias: bool = True
  dtype: jnp.dtype | None = None
  param_dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    n, h, w, c = inputs.shape
    s_h, s_w = local.as_pair(self.strides)
    out_shape = (-(-h // s_h), -(-w // s_w), self.features)
    out_units = math.prod(out_shape)
    kernel = self.param(
        'kernel', self.kernel_init, (h * w * c, out_units), self.param_dtype
    )
    bias = (
        self.param('bias', self.bias_init, (out_units,), self.param_dtype)
        if self.use_bias
        else None
    )
    x, kernel, bias = nn.dtypes.promote_dtype(
        inputs.reshape(n, h * w * c), kernel, bias, dtype=self.dtype
    )
    y = x @ kernel
    if bias is not None:
      y = y + bias
    return y.reshape((n,) + out_shape)


def make_layer(
    layer_type: str,
    features: int,
    kernel_size: int,
    strides: int,
    *,
    dtype,
    name: str,
    local_impl: str = 'auto',
) -> nn.Module:
  """A conv, or the locally connected / dense layer of the same geometry.

  Always SAME padding and no bias (BatchNorm follows).

  Args:
    layer_type: 'conv', 'local' or 'fc'.
    features: output channels.
    kernel_size: square receptive field (ignored by 'fc').
    strides: the stride in both spatial dimensions.
    dtype: computation dtype.
    name: the module's name, e.g. 'layer1'.
    local_impl: how a 'local' layer computes (`local.IMPLEMENTATIONS`).

  Returns:
    A module mapping NHWC to NHWC.
  """
  if layer_type == 'conv':
    return nn.Conv(
        features,
        (kernel_size, kernel_size),
        strides,
        'SAME',
        use_bias=False,
        dtype=dtype,
        name=name,
    )
  if layer_type == 'local':
    return local.LocallyConnected2D(
        features,
        kernel_size,
        strides,
        'SAME',
        use_bias=False,
        dtype=dtype,
        impl=local_impl,
        name=name,
    )
  if layer_type == 'fc':
    return FeatureMapDense(
        features, strides, use_bias=False, dtype=dtype, name=name
    )
  raise ValueError(f'layer_type {layer_type!r} is not one of {LAYER_TYPES}')


def batch_norm(
    train: bool, *, name: str, axis: int | tuple[int, ...] = -1
) -> nn.BatchNorm:
  """BatchNorm as the paper uses it: computed and stored in float32.

  Args:
    train: use batch statistics and update the running ones.
    name: the module's name, e.g. 'bn1'.
    axis: feature axes; -1 normalizes per channel, (1, 2, 3) per unit of an
      NHWC feature map (what BatchNorm after a dense layer means).

  Returns:
    The BatchNorm module (momentum 0.9, epsilon 1e-5).
  """
  # float32 even when the layers compute in bf16: the paper keeps BN in 32-bit.
  return nn.BatchNorm(
      use_running_average=not train,
      axis=axis,
      momentum=0.9,
      epsilon=1e-5,
      dtype=jnp.float32,
      param_dtype=jnp.float32,
      name=name,
  )


def bn_axis(layer_type: str) -> int | tuple[int, ...]:
  """Per-channel BN after conv/local layers, per-unit BN after dense ones."""
  # A dense layer's output units share no filter, so grouping them into
  # "channels" for BN would be arbitrary; BatchNorm1d semantics instead.
  return (1, 2, 3) if layer_type == 'fc' else -1
