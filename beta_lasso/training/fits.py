"""Whether a run fits in memory, decided before anything is allocated.

A model too big for its device does not always fail: XLA on CPU can sit in an
allocation for ever. So a run's memory is estimated from shapes alone
(`models.sizes.module_memory`: parameters, gradients, optimizer state and the
activations the backward pass keeps, at the batch each device takes; of the
parameters, the share each device holds under the run's mesh) and
compared with what the backend has: `bytes_limit` of the device's memory
statistics where the backend reports it (GPU, TPU), else the host's RAM (CPU,
whose devices all share it). The estimate leaves out transient buffers, so a
run close under the limit may still run out; one over it never starts.
"""

import math
import os

import jax
import jax.numpy as jnp
import ml_collections

from beta_lasso import errors
from beta_lasso import models
from beta_lasso.data import datasets
from beta_lasso.models import sizes
from beta_lasso.training import sharding

_GIB = 2**30


class TooBigError(errors.UserError, ValueError):
  """The run's estimated memory is more than the device has."""


def _sharing_devices() -> int:
  """Devices of this process that share one memory: all of them on CPU."""
  return jax.local_device_count() if jax.default_backend() == 'cpu' else 1


def capacity() -> tuple[int, str] | None:
  """(bytes, what they are) of the memory one device's share lives in.

  None where the backend tells nothing (then no run is refused).
  """
  device = jax.local_devices()[0]
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}  # Not every backend implements it.
  if stats.get('bytes_limit'):
    return stats['bytes_limit'], f'{device.device_kind} memory'
  if device.platform == 'cpu':
    try:
      ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (ValueError, OSError):
      return None
    return ram, 'host memory'
  return None


def estimate(config: ml_collections.ConfigDict) -> int:
  """Bytes a training step of `config` needs in the memory of `capacity`."""
  info = datasets.base_info(config)
  precision = 'bf16' if config.half_precision else 'fp32'
  model = models.create_model(
      config.model,
      num_classes=info.num_classes,
      alpha=config.alpha,
      dropout_rate=config.dropout_rate,
      dtype=jnp.bfloat16 if config.half_precision else None,
      **config.model_kwargs,
  )
  # Optimizer state: SGD keeps a momentum copy only when it has momentum.
  keeps_momentum = config.optimizer == 'sgd' and config.momentum
  data, model_axis = sharding.mesh_shape(config)
  memory = sizes.module_memory(
      model,
      batch_size=max(1, config.batch_size // data),
      precision=precision,
      optimizer='sgd' if keeps_momentum else 'beta_lasso',
      image_shape=info.image_shape,
  )
  shapes = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), jnp.zeros((1, *info.image_shape)), train=False
      )
  )
  fraction = sharding.fraction_per_device(
      shapes['params'],
      {sharding.DATA: data, sharding.MODEL: model_axis},
      fsdp=config.fsdp,
      min_weights=config.shard_min_weights,
  )
  return sizes.per_device(memory, fraction) * _sharing_devices()


def _size(config: ml_collections.ConfigDict) -> int:
  spec = models.spec(config.model)
  if spec.size_field == 'alpha':
    return config.alpha
  return config.model_kwargs[spec.size_kwarg]


def _resized(config: ml_collections.ConfigDict, size: int):
  """A copy of `config` with the model's size set to `size`."""
  spec = models.spec(config.model)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    if spec.size_field == 'alpha':
      config.alpha = size
    else:
      config.model_kwargs[spec.size_kwarg] = size
  return config


def _with(config: ml_collections.ConfigDict, **fields):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.update(fields)
  return config


def _mesh_that_fits(config: ml_collections.ConfigDict, limit: int) -> str:
  """Advice on a mesh of this host's devices that fits `config`, or ''."""
  local = jax.local_device_count()
  for model_axis in range(config.mesh_model + 1, local + 1):
    if local % model_axis:
      continue
    for fsdp in (False, True):
      if estimate(_with(config, mesh_model=model_axis, fsdp=fsdp)) <= limit:
        return (
            f'; config.mesh_model={model_axis}'
            + (' with config.fsdp=True' if fsdp else '')
            + ' fits by sharding the big kernels'
        )
  if not config.fsdp and estimate(_with(config, fsdp=True)) <= limit:
    return '; config.fsdp=True fits by sharding the big kernels over data'
  return ''


def check(config: ml_collections.ConfigDict):
  """Raises TooBigError, naming the largest size that fits, for a run too big.

  The model's size is searched, and a mesh of this host's devices that would
  hold it at its size; the batch size stays as given.
  """
  available = capacity()
  if available is None:
    return
  limit, where = available
  needed = estimate(config)
  if needed <= limit:
    return
  field = models.spec(config.model).size_field
  value = _size(config)
  # Memory grows about as size^2 (weights), so this start is close.
  start = int(value * math.sqrt(limit / needed))
  largest = sizes.largest_true(
      lambda n: estimate(_resized(config, n)) <= limit, start
  )
  fits = (
      f'the largest {field} that fits is {largest}'
      if largest
      else f'not even {field}=1 fits; lower config.batch_size'
  )
  raise TooBigError(
      f'config.{field}={value} needs about {needed / _GIB:.1f} GiB '
      f'(parameters, gradients, optimizer state and activations at batch '
      f'{config.batch_size}), more than the {limit / _GIB:.1f} GiB of '
      f'{where}; {fits}{_mesh_that_fits(config, limit)}'
  )
