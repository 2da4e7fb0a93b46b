r"""The model zoo: the registry of model facts, a builder and a weight counter.

    model = create_model('sfc', num_classes=10, alpha=150)
    variables = model.init(jax.random.key(0), images, train=False)
    logits, updates = model.apply(variables, images, train=True,
                                  rngs={'dropout': key},
                                  mutable=['batch_stats'])

`MODELS` maps each model's name (`config.model`) to its `ModelSpec`
(registry.py): the paper's name and family, the field that sets its size
and Table 1's size, the paper's weight count, the first layer, whether it
exports. Code outside the model modules reads these facts there.

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

from beta_lasso import pytree
from beta_lasso.models import local
from beta_lasso.models import registry

LocallyConnected2D = local.LocallyConnected2D
ModelSpec = registry.ModelSpec
FirstLayer = registry.FirstLayer
# Model name (`config.model`) -> its `ModelSpec`, in the paper's order.
MODELS = registry.MODELS
spec = registry.spec
family = registry.family
display_name = registry.display_name
first_layer_name = registry.first_layer_name
SHALLOW, DEEP, THREE_FC, RESNET = (
    registry.SHALLOW,
    registry.DEEP,
    registry.THREE_FC,
    registry.RESNET,
)
PAPER_WIDTH_3FC = MODELS['3fc'].paper_size

# Kernels of conv-standing layers (in ResNet18 every conv) and of dense layers.
CONV_KERNEL_REGEX = r'^layer\d+/(.+/)?kernel$'
FC_KERNEL_REGEX = r'^(fc\d+|head)/kernel$'


def create_model(
    name: str,
    *,
    num_classes: int,
    alpha: int | None = None,
    dtype: jnp.dtype | None = None,
    dropout_rate: float = 0.0,
    local_impl: str = 'auto',
    **kwargs,
) -> nn.Module:
  """Builds a registered model.

  Args:
    name: a key of `MODELS`.
    num_classes: outputs of the head.
    alpha: base channels; required for the models sized by alpha (the S and
      D families), ignored by the others.
    dtype: computation dtype (e.g. jnp.bfloat16); None means float32.
    dropout_rate: dropout on the inputs of the last two dense layers (for
      ResNet18, of the head); 0 disables it.
    local_impl: how locally connected layers compute
      (`local.IMPLEMENTATIONS`; 'auto' picks per backend); the parameters are
      the same whatever the choice. Only the S and D families use it.
    **kwargs: the model's `ModelSpec.model_kwargs`: `width` (required for
      '3fc'; for 'resnet18' the base channels, default 64), `kernel_size` (for
      'resnet18', default 3).

  Returns:
    An unbound linen module.

  Raises:
    ValueError: for an unknown name or local_impl, or a missing alpha / width.
  """
  model = spec(name)
  local.resolve_impl(local_impl)  # A bad value fails here, not at first use.
  if model.size_field == 'alpha':
    if alpha is None:
      raise ValueError(f'Model {name!r} needs alpha (base channels).')
    kwargs['alpha'] = alpha
  elif model.default_size() is None and kwargs.get(model.size_kwarg) is None:
    raise ValueError(
        f'Model {name!r} needs {model.size_kwarg} (the paper-sized one is '
        f'{model.paper_size}).'
    )
  if model.layer_type is not None:
    kwargs['local_impl'] = local_impl
  return model.constructor(
      num_classes=num_classes, dtype=dtype, dropout_rate=dropout_rate, **kwargs
  )


def kernel_counts(
    model: nn.Module, input_shape: Sequence[int] = (1, 32, 32, 3)
) -> dict[str, int]:
  """Weights per layer, from shapes only (nothing is allocated).

  Args:
    model: an unbound linen module taking (images, train).
    input_shape: NHWC shape of the images.

  Returns:
    Layer name ('/'-joined parameter path without '/kernel', e.g. 'layer1',
    'layer2/block1/conv1', 'head') -> number of entries in its kernel, in
    network order (`pytree.count_weights`, the one weight counter). Biases
    and BatchNorm parameters are not weights here, as in the paper's counts.
  """
  variables = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), jnp.zeros(input_shape, jnp.float32), train=False
      )
  )
  return pytree.count_weights(variables['params'], pytree.kernel_mask)
