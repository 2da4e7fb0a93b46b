r"""ResNet18, CIFAR variant, with a variable kernel size (paper Figure 5).

The ImageNet ResNet18 with a stride-1 k x k stem and no max-pool. Every 3x3
conv, the stem included, becomes k x k; the 1x1 projection shortcuts stay 1x1.

Parameter names follow torchvision's stages, with the stem as stage 0, so the
zoo's conv-kernel regex `^layer\d+/(.+/)?kernel$` selects every conv here
(`^layer\d+/` alone would also take the BatchNorms inside the stages):

    layer0 (stem conv), bn0,
    layer1..layer4 / block1, block2 / conv1, bn1, conv2, bn2, [proj, proj_bn],
    head.

Weights (kernels only, width 64, 10 classes): 1,220,800 k^2 + 177,152, i.e.
11,164,352 at k = 3.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from beta_lasso.models import layers

# (channels in units of `width`, stride of the first block) of layer1..layer4.
_STAGES = ((1, 1), (2, 2), (4, 2), (8, 2))
_BLOCKS_PER_STAGE = 2


class BasicBlock(nn.Module):
  """Two k x k convs with a residual; a 1x1 projection where the shape changes.

  Attributes:
    features: output channels.
    strides: stride of the first conv and of the projection.
    kernel_size: k of both convs.
    dtype: computation dtype.
  """

  features: int
  strides: int
  kernel_size: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    k = (self.kernel_size, self.kernel_size)
    y = nn.Conv(
        self.features,
        k,
        self.strides,
        'SAME',
        use_bias=False,
        dtype=self.dtype,
        name='conv1',
    )(x)
    y = nn.relu(layers.batch_norm(train, name='bn1')(y))
    y = nn.Conv(
        self.features,
        k,
        1,
        'SAME',
        use_bias=False,
        dtype=self.dtype,
        name='conv2',
    )(y)
    y = layers.batch_norm(train, name='bn2')(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = nn.Conv(
          self.features,
          (1, 1),
          self.strides,
          'SAME',
          use_bias=False,
          dtype=self.dtype,
          name='proj',
      )(x)
      x = layers.batch_norm(train, name='proj_bn')(x)
    return nn.relu(x + y)


class ResNetStage(nn.Module):
  """Basic blocks at one resolution; the first one may downsample."""

  features: int
  strides: int
  kernel_size: int
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(_BLOCKS_PER_STAGE):
      x = BasicBlock(
          self.features,
          self.strides if i == 0 else 1,
          self.kernel_size,
          self.dtype,
          name=f'block{i + 1}',
      )(x, train)
    return x


class ResNet18(nn.Module):
  """CIFAR ResNet18 whose k x k convs may have any kernel size k.

  Attributes:
    num_classes: outputs of the head.
    kernel_size: k of the stem and of every block conv (3, 7, 11, 15 in
      Figure 5).
    width: channels of the stem and of layer1, doubled at each later stage
      (64 is ResNet18; smaller widths make test-sized variants).
    dropout_rate: dropout on the pooled features (the head's input); 0
      disables it.
    dtype: computation dtype; params and BatchNorm stay float32.
  """

  num_classes: int
  kernel_size: int = 3
  width: int = 64
  dropout_rate: float = 0.0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    """Returns logits (in `dtype`) for NHWC `images`."""
    k = (self.kernel_size, self.kernel_size)
    x = nn.Conv(
        self.width,
        k,
        1,
        'SAME',
        use_bias=False,
        dtype=self.dtype,
        name='layer0',
    )(images)
    x = nn.relu(layers.batch_norm(train, name='bn0')(x))
    for i, (multiplier, strides) in enumerate(_STAGES, start=1):
      x = ResNetStage(
          multiplier * self.width,
          strides,
          self.kernel_size,
          self.dtype,
          name=f'layer{i}',
      )(x, train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
