r"""The model zoo: a name -> constructor registry and a weight counter.

    model = create_model('sfc', num_classes=10, alpha=150)
    variables = model.init(jax.random.key(0), images, train=False)
    logits, updates = model.apply(variables, images, train=True,
                                  rngs={'dropout': key},
                                  mutable=['batch_stats'])

Every model takes float NHWC images (already normalized) and `train`; with
`train=True` BatchNorm uses batch statistics and updates the 'batch_stats'
collection, and dropout (if `dropout_rate` > 0) needs a 'dropout' rng.
Parameters and BatchNorm are float32 whatever the computation `dtype`; logits
come out in `dtype` (float32 when it is None).

Parameter names are the same across families: the layers that stand for a
convolution are `layer<N>` (S family: layer1; D family: layer1..layer8;
ResNet18: layer0 = stem, layer1..layer4 = stages), dense layers are
`fc<N>`, the last layer is `head`, BatchNorms are `bn<N>`. Weight matrices
and kernels are leaves named `kernel`, so `CONV_KERNEL_REGEX` and
`FC_KERNEL_REGEX` split the weights the paper tunes lambda for separately.
"""
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from beta_lasso import optim
from beta_lasso.models import deep
from beta_lasso.models import local
from beta_lasso.models import resnet
from beta_lasso.models import shallow

LocallyConnected2D = local.LocallyConnected2D
PAPER_WIDTH_3FC = deep.PAPER_WIDTH_3FC

# Kernels of conv-standing layers (in ResNet18 every conv) and of dense layers.
CONV_KERNEL_REGEX = r'^layer\d+/(.+/)?kernel$'
FC_KERNEL_REGEX = r'^(fc\d+|head)/kernel$'

# The layer that sees the image: what stands for the first convolution.
FIRST_LAYER = {
    'sconv': 'layer1',
    'slocal': 'layer1',
    'sfc': 'layer1',
    'dconv': 'layer1',
    'dlocal': 'layer1',
    'dfc': 'layer1',
    '3fc': 'fc1',
}

MODELS = {
    'sconv': shallow.SConv,
    'slocal': shallow.SLocal,
    'sfc': shallow.SFC,
    'dconv': deep.DConv,
    'dlocal': deep.DLocal,
    'dfc': deep.DFC,
    '3fc': deep.ThreeFC,
    'resnet18': resnet.ResNet18,
}

# Families sized by base channels alpha: the `allconv.AllConvNet` ones.
ALPHA_MODELS = ('sconv', 'slocal', 'sfc', 'dconv', 'dlocal', 'dfc')


def create_model(name: str, *, num_classes: int, alpha: int | None = None,
                 dtype: jnp.dtype | None = None, dropout_rate: float = 0.0,
                 local_impl: str = 'auto', **kwargs) -> nn.Module:
  """Builds a registered model.

  Args:
    name: a key of `MODELS`.
    num_classes: outputs of the head.
    alpha: base channels; required for the S and D families, ignored by
      '3fc' and 'resnet18'.
    dtype: computation dtype (e.g. jnp.bfloat16); None means float32.
    dropout_rate: dropout on the inputs of the last two dense layers (for
      ResNet18, of the head); 0 disables it.
    local_impl: how locally connected layers compute
      (`local.IMPLEMENTATIONS`; 'auto' picks per backend); the parameters are
      the same whatever the choice. Only the S and D families use it.
    **kwargs: model-specific fields: `width` (required for '3fc'; for
      'resnet18' the base channels, default 64), `kernel_size` (for
      'resnet18', default 3).

  Returns:
    An unbound linen module.

  Raises:
    ValueError: for an unknown name or local_impl, or a missing alpha / width.
  """
  if name not in MODELS:
    raise ValueError(
        f'Unknown model {name!r}; valid names: {", ".join(MODELS)}.')
  local.resolve_impl(local_impl)  # A bad value fails here, not at first use.
  if name in ALPHA_MODELS:
    if alpha is None:
      raise ValueError(f'Model {name!r} needs alpha (base channels).')
    kwargs['alpha'] = alpha
    kwargs['local_impl'] = local_impl
  elif name == '3fc' and kwargs.get('width') is None:
    raise ValueError(
        "Model '3fc' needs width (hidden units per layer; the paper-sized "
        f'one is {PAPER_WIDTH_3FC}).')
  return MODELS[name](num_classes=num_classes, dtype=dtype,
                      dropout_rate=dropout_rate, **kwargs)


def kernel_counts(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 32, 32, 3)) -> dict[str, int]:
  """Weights per layer, from shapes only (nothing is allocated).

  Args:
    model: an unbound linen module taking (images, train).
    input_shape: NHWC shape of the images.

  Returns:
    Layer name ('/'-joined parameter path without '/kernel', e.g. 'layer1',
    'layer2/block1/conv1', 'head') -> number of entries in its kernel, in
    network order (`optim.count_weights`, the one weight counter). Biases and
    BatchNorm parameters are not weights here, as in the paper's counts.
  """
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros(input_shape, jnp.float32),
                         train=False))
  return optim.count_weights(variables['params'], optim.kernel_mask)
