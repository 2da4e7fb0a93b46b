"""The template of the S and D families: conv-standing layers, fc1, head.

Both families of the paper are all-convolutional nets (Tables 3 and 4): some
layers that stand for convolutions (`layer1`..`layerN`: conv, locally
connected or dense over the same feature-map units), then one hidden dense
layer `fc1` and the `head`. BatchNorm then ReLU follow every layer but the
head (`bn1`..`bnN` after the layers, `bn{N+1}` after fc1); only the head has a
bias. Dropout, when on, is on the inputs of fc1 and head (the paper's "last
two FC layers").
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from beta_lasso.models import layers


class AllConvNet(nn.Module):
  """Conv-standing layers then two dense layers.

  Attributes:
    alpha: base channels.
    num_classes: outputs of the head.
    layer_type: 'conv', 'local' or 'fc': what stands for each convolution.
    conv_layers: (channel multiplier of alpha, kernel size, stride) per
      conv-standing layer, SAME padding.
    fc_multiplier: fc1 has fc_multiplier * alpha units.
    dropout_rate: dropout on the inputs of fc1 and head; 0 disables it.
    dtype: computation dtype (e.g. jnp.bfloat16); params and BatchNorm stay
      float32. None computes in float32.
    local_impl: how 'local' layers compute (`local.IMPLEMENTATIONS`); the
      parameters are the same for every one.
  """

  alpha: int
  num_classes: int
  layer_type: str
  conv_layers: Sequence[tuple[int, int, int]]
  fc_multiplier: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype | None = None
  local_impl: str = 'auto'

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    """Returns logits (in `dtype`) for NHWC `images`."""
    x = images
    for i, (multiplier, kernel_size, strides) in enumerate(
        self.conv_layers, start=1
    ):
      x = layers.make_layer(
          self.layer_type,
          multiplier * self.alpha,
          kernel_size,
          strides,
          dtype=self.dtype,
          local_impl=self.local_impl,
          name=f'layer{i}',
      )(x)
      x = layers.batch_norm(
          train, axis=layers.bn_axis(self.layer_type), name=f'bn{i}'
      )(x)
      x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)

    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(
        self.fc_multiplier * self.alpha,
        use_bias=False,
        dtype=self.dtype,
        name='fc1',
    )(x)
    x = layers.batch_norm(train, name=f'bn{len(self.conv_layers) + 1}')(x)
    x = nn.relu(x)

    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
