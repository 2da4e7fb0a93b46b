"""D-CONV, D-LOCAL, D-FC (paper appendix, Table 3) and 3-FC.

D-CONV: eight 3x3 SAME convs `layer1`..`layer8` with (channels, stride)
(a,1) (2a,2) (2a,1) (4a,2) (4a,1) (8a,2) (8a,1) (16a,2), then fc1 = dense
64 a, then head = dense c. D-LOCAL replaces each conv with a locally connected
layer of the same geometry; D-FC with a dense layer between the same
feature-map units. BatchNorm then ReLU follow every layer but the head
(`bn1`..`bn8` after the layers, `bn9` after fc1); only the head has a bias.

Weights (kernels only; s a multiple of 16, c classes):
D-CONV (2286 + 4 s^2) a^2 + (27 + 64 c) a. The paper writes 9 * 2^8 = 2304
for the conv term; the eight convs sum to 9 * 254 = 2286.
D-LOCAL 49 s^2 a^2 + (27 s^2 + 64 c) a (the paper's 13 s^2 a^2 undercounts:
a local layer has out positions x k^2 x C_in x C_out weights).
D-FC (127 s^4 / 128 + 4 s^2) a^2 + (3 s^4 + 64 c) a.

3-FC: two hidden dense layers fc1, fc2 of equal `width` (BN + ReLU), then head.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from beta_lasso.models import allconv
from beta_lasso.models import layers

# (channel multiplier of alpha, kernel size, stride) of layer1..layer8.
D_LAYERS = (
    (1, 3, 1),
    (2, 3, 2),
    (2, 3, 1),
    (4, 3, 2),
    (4, 3, 1),
    (8, 3, 2),
    (8, 3, 1),
    (16, 3, 2),
)

# D-CONV, D-LOCAL and D-FC bind its `layer_type` ('conv', 'local', 'fc') in
# the registry (registry.py).
DeepNet = functools.partial(
    allconv.AllConvNet, conv_layers=D_LAYERS, fc_multiplier=64
)


class ThreeFC(nn.Module):
  """3-FC: two hidden dense layers of equal width (the paper's baseline MLP).

  Attributes:
    width: units in each hidden layer (the registry's paper size matches
      Table 1).
    num_classes: outputs of the head.
    dropout_rate: dropout on the inputs of fc2 and head; 0 disables it.
    dtype: computation dtype; params and BatchNorm stay float32.
  """

  width: int
  num_classes: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    """Returns logits (in `dtype`) for NHWC `images`."""
    x = images.reshape(images.shape[0], -1)
    x = nn.Dense(self.width, use_bias=False, dtype=self.dtype, name='fc1')(x)
    x = nn.relu(layers.batch_norm(train, name='bn1')(x))

    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.width, use_bias=False, dtype=self.dtype, name='fc2')(x)
    x = nn.relu(layers.batch_norm(train, name='bn2')(x))

    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
