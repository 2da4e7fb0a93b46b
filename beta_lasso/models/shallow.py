"""S-CONV, S-LOCAL and S-FC: the shallow family (paper appendix, Table 4).

    layer1: conv 9x9, alpha channels, stride 2, SAME  (s x s -> s/2 x s/2)
            | locally connected, same geometry        (S-LOCAL)
            | dense 3 s^2 -> alpha s^2 / 4            (S-FC)
    fc1:    dense 24 alpha
    head:   dense num_classes

BatchNorm then ReLU follow layer1 (`bn1`) and fc1 (`bn2`). Only the head has
a bias. Optional dropout acts on the inputs of fc1 and head (the paper's
"dropout on the last two FC layers"). Odd image sides give ceil(s / 2).

Weights (kernels only; s even, c classes):
S-CONV 6 s^2 a^2 + (243 + 24 c) a; S-LOCAL 6 s^2 a^2 + (243 s^2 / 4 + 24 c) a;
S-FC 6 s^2 a^2 + (3 s^4 / 4 + 24 c) a.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from beta_lasso.models import layers


class ShallowNet(nn.Module):
  """One conv-standing layer then two dense layers.

  Attributes:
    alpha: base channels (the paper uses 150 for Table 1).
    num_classes: outputs of the head.
    layer_type: 'conv', 'local' or 'fc': what stands for the 9x9 conv.
    dropout_rate: dropout on the inputs of fc1 and head; 0 disables it.
    dtype: computation dtype (e.g. jnp.bfloat16); params and BatchNorm stay
      float32. None computes in float32.
  """
  alpha: int
  num_classes: int
  layer_type: str
  dropout_rate: float = 0.0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    """Returns logits (in `dtype`) for NHWC `images`."""
    x = layers.make_layer(self.layer_type, self.alpha, 9, 2, dtype=self.dtype,
                          name='layer1')(images)
    x = layers.batch_norm(train, axis=layers.bn_axis(self.layer_type),
                          name='bn1')(x)
    x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)

    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(24 * self.alpha, use_bias=False, dtype=self.dtype,
                 name='fc1')(x)
    x = layers.batch_norm(train, name='bn2')(x)
    x = nn.relu(x)

    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)


SConv = functools.partial(ShallowNet, layer_type='conv')
SLocal = functools.partial(ShallowNet, layer_type='local')
SFC = functools.partial(ShallowNet, layer_type='fc')
