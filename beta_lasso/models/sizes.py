r"""Model sizes: weights against size and image side, memory of a step.

Weights-only counts (kernels, as in the paper) of every registered model at
any size (paper Figure 1), and an estimate of a training step's memory, from
which the largest size that fits a device follows. Everything comes from
`jax.eval_shape`: no model is ever allocated, so paper-sized and bigger
models cost a trace. `python -m beta_lasso.params` prints the tables.

"Size" is what scales a model: base channels alpha for the S and D families;
for 3-FC the same alpha through `width_3fc` (hidden width proportional to
alpha, the registry's paper width at S-FC's paper alpha, where 3-FC has
S-FC's weights as in Table 1; the width does not depend on the image side);
for ResNet18 the kernel size k of its convs (width 64).

Memory of one training step (`memory`), a documented estimate rather than a
measurement:
- float32 master parameters and BatchNorm statistics, whatever `precision`;
- float32 gradients, one per parameter;
- optimizer state: SGD with momentum keeps one float32 copy, beta-LASSO none;
- with bf16, the bf16 copy of every parameter the layers compute with;
- activations kept for the backward pass at `batch_size`: the input and the
  output of every layer (conv, locally connected, dense), every BatchNorm
  (whose ReLU'd output is the next layer's input) and every ResNet block,
  each in its own dtype (BatchNorm outputs are float32 even in bf16).
Transient buffers (activation gradients, XLA workspace) are left out, so
real peaks are somewhat higher. GB means GiB (2^30 bytes).
"""

from collections.abc import Callable
from collections.abc import Sequence
import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from beta_lasso import models
from beta_lasso import pytree
from beta_lasso.models import layers
from beta_lasso.models import local
from beta_lasso.models import resnet

GIB = 2**30

# Module outputs the backward pass keeps (see the module docstring).
_STORED_OUTPUTS = (
    nn.Conv,
    nn.Dense,
    nn.BatchNorm,
    local.LocallyConnected2D,
    layers.FeatureMapDense,
    resnet.BasicBlock,
)


def paper_size(name: str) -> int:
  """Table 1's size of model `name`, in this module's sizes.

  The registry's `paper_size`, except for 3-FC, sized here by alpha through
  `width_3fc`: S-FC's alpha, at which 3-FC has the paper's width.
  """
  if name == '3fc':
    return models.spec('sfc').paper_size
  return models.spec(name).paper_size


def width_3fc(alpha: int) -> int:
  """3-FC hidden width for an S-family alpha: linear, the paper's at S-FC's."""
  return round(models.spec('3fc').paper_size * alpha / paper_size('3fc'))


def model_kwargs(name: str, size: int) -> dict[str, int]:
  """`create_model` keyword arguments of model `name` at `size`."""
  if name == '3fc':
    return {'width': width_3fc(size)}
  return models.spec(name).size_kwargs(size)


def size_label(name: str) -> str:
  """'alpha=150', or 'k=3' for ResNet18: the paper's size of `name`."""
  if models.spec(name).size_field == 'model_kwargs.kernel_size':
    return f'k={paper_size(name)}'
  return f'alpha={paper_size(name)}'


def _model(
    name: str, size: int, num_classes: int, dtype: jnp.dtype | None = None
) -> nn.Module:
  return models.create_model(
      name, num_classes=num_classes, dtype=dtype, **model_kwargs(name, size)
  )


@functools.lru_cache(maxsize=None)
def weight_count(
    name: str, size: int, image_side: int = 32, num_classes: int = 10
) -> int:
  """Weights (kernel entries) of `name` at `size` on side x side x 3 images."""
  model = _model(name, size, num_classes)
  return sum(
      models.kernel_counts(model, (1, image_side, image_side, 3)).values()
  )


@functools.lru_cache(maxsize=None)
def param_shapes(
    name: str, size: int, image_side: int = 32, num_classes: int = 10
):
  """The `jax.ShapeDtypeStruct`s of the params of `name` at `size`."""
  model = _model(name, size, num_classes)
  return jax.eval_shape(
      lambda: model.init(
          jax.random.key(0),
          jnp.zeros((1, image_side, image_side, 3)),
          train=False,
      )
  )['params']


class Memory(NamedTuple):
  """Bytes of one training step, by kind (see the module docstring)."""

  weights: int  # Kernel entries, for reference; not bytes.
  params: int
  grads: int
  optimizer: int
  compute_copy: int
  activations: int

  @property
  def total(self) -> int:
    return (
        self.params
        + self.grads
        + self.optimizer
        + self.compute_copy
        + self.activations
    )


def per_device(m: Memory, fraction: float) -> int:
  """`m.total` on one device that holds `fraction` of the parameters.

  Parameters, their gradients, optimizer state and bf16 copies are sharded
  alike (beta_lasso.training.sharding); activations are those of one device's batch.
  """
  return (
      round((m.params + m.grads + m.optimizer + m.compute_copy) * fraction)
      + m.activations
  )


def _nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


@functools.lru_cache(maxsize=None)
def memory(
    name: str,
    size: int,
    *,
    batch_size: int = 512,
    precision: str = 'fp32',
    optimizer: str = 'sgd',
    image_side: int = 32,
    num_classes: int = 10,
) -> Memory:
  """Estimates the memory of a training step of `name` at `size`.

  Args:
    name: a registered model.
    size: alpha, or the kernel size for 'resnet18'.
    batch_size: examples per step.
    precision: 'fp32' or 'bf16' computation.
    optimizer: 'sgd' (with momentum) or 'beta_lasso'.
    image_side: images are image_side x image_side x 3.
    num_classes: outputs of the head.

  Returns:
    The estimate, from shapes only.
  """
  return module_memory(
      _model(
          name,
          size,
          num_classes,
          jnp.bfloat16 if precision == 'bf16' else jnp.float32,
      ),
      batch_size=batch_size,
      precision=precision,
      optimizer=optimizer,
      image_shape=(image_side, image_side, 3),
  )


def module_memory(
    model: nn.Module,
    *,
    batch_size: int,
    precision: str,
    optimizer: str,
    image_shape: Sequence[int],
) -> Memory:
  """`memory` of any model module, e.g. one built from a run's config.

  Args:
    model: an unbound module, built with the computation dtype of `precision`.
    batch_size: examples per step (on one device).
    precision: 'fp32' or 'bf16' computation.
    optimizer: 'sgd' (with momentum) or 'beta_lasso'.
    image_shape: (height, width, channels) of the images.

  Returns:
    The estimate, from shapes only.
  """
  if optimizer not in ('sgd', 'beta_lasso'):
    raise ValueError(f'optimizer {optimizer!r} is not sgd or beta_lasso')
  if precision not in ('fp32', 'bf16'):
    raise ValueError(f'precision {precision!r} is not fp32 or bf16')
  dtype = jnp.bfloat16 if precision == 'bf16' else jnp.float32

  # One trace gives the variables and the stored outputs: init in train mode
  # runs the training forward pass (dropout is off at rate 0).
  def train_forward():
    x = jnp.zeros((batch_size, *image_shape), dtype)
    variables = model.init(
        jax.random.key(0),
        x,
        train=True,
        capture_intermediates=lambda m, method: (
            method == '__call__' and isinstance(m, _STORED_OUTPUTS)
        ),
    )
    return x, variables

  x, variables = jax.eval_shape(train_forward)
  stored = variables.pop('intermediates')
  n_params = sum(p.size for p in jax.tree.leaves(variables['params']))
  grads = 4 * n_params
  return Memory(
      weights=sum(
          pytree.count_weights(variables['params'], pytree.kernel_mask).values()
      ),
      params=_nbytes(variables),
      grads=grads,
      optimizer=grads if optimizer == 'sgd' else 0,
      compute_copy=2 * n_params if precision == 'bf16' else 0,
      activations=_nbytes(x) + _nbytes(stored),
  )


def largest_true(pred: Callable[[int], bool], start: int) -> int:
  """Largest n >= 1 with pred(n), for pred true then false; 0 if none.

  Gallops from `start` then bisects, so a good `start` costs two calls.
  """
  start = max(start, 1)
  if pred(start):
    lo, step = start, 1
    while pred(lo + step):
      lo, step = lo + step, 2 * step
    hi = lo + step
  else:
    hi, step = start, 1
    while hi - step >= 1 and not pred(hi - step):
      hi, step = hi - step, 2 * step
    lo = max(hi - step, 0)
  while hi - lo > 1:  # pred(lo) (or lo == 0) and not pred(hi).
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if pred(mid) else (lo, mid)
  return lo


def max_size(name: str, memory_gb: float, **kwargs) -> int:
  """The largest size of `name` whose training step fits in `memory_gb`.

  Args:
    name: a registered model.
    memory_gb: accelerator memory in GiB.
    **kwargs: `memory`'s keyword arguments (batch_size, precision, ...).

  Returns:
    The largest alpha (kernel size for 'resnet18') with
    `memory(...).total <= memory_gb GiB`; 0 when even size 1 does not fit.
  """
  budget = memory_gb * GIB
  total = lambda size: memory(name, size, **kwargs).total
  # Weights grow as size^2 and activations as size (ResNet18: constant), so
  # three totals predict the answer; the search only confirms it.
  t1, t2, t4 = total(1), total(2), total(4)
  a = ((t4 - t2) / 2 - (t2 - t1)) / 3  # t(s) = a s^2 + b s + c.
  b = (t2 - t1) - 3 * a
  c = t1 - a - b
  if a > 0:
    guess = (-b + math.sqrt(max(b * b - 4 * a * (c - budget), 0))) / (2 * a)
  else:
    guess = (budget - c) / b if b > 0 else 1
  return largest_true(lambda size: total(size) <= budget, int(guess))


def human(n: float) -> str:
  """138312450 -> '138.31M'."""
  for unit, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if abs(n) >= scale:
      return f'{n / scale:.2f}{unit}'
  return f'{n:.0f}'
