"""The device mesh of a run and where each array of its train state lives.

A run's mesh has two axes, `('data', 'model')`: `config.mesh_model` devices
along 'model', every other device along 'data'. Batches are split over 'data'.
Parameters are replicated, except the big kernels (S-FC's 3 s^2 x alpha s^2 / 4
layer1 and its fc1, D-FC's dense layers): a kernel with at least
`config.shard_min_weights` entries has its largest dimension split over
'model' and, with `config.fsdp`, another one split over 'data' (FSDP: XLA
gathers it for the step and scatters its gradient back). Optimizer state
follows the same rule, so SGD's momentum of a kernel is sharded as the kernel.

The rule looks at a leaf's path (`.../kernel`) and shape only, as big_vision's
regex rules do; a dimension is split only where it divides evenly.

The 'model' axis stays within one process (`jax.make_mesh` orders devices so
that it does): every process then holds whole rows of the batch, as the input
pipeline hands them out.
"""

import math
import re
from typing import Any

import jax
import ml_collections
import numpy as np

from beta_lasso import errors
from beta_lasso import pytree

DATA, MODEL = 'data', 'model'
# Leaves the rule may shard: kernels, and optimizer state that mirrors them.
# Kernels with fewer entries stay replicated: the default of
# `config.shard_min_weights`.
MIN_WEIGHTS = 2**20
_SHARDABLE = re.compile(r'(^|/)kernel$')


class MeshError(errors.UserError, ValueError):
  """A mesh the devices of this run cannot form; the message is one line."""


def mesh_shape(
    config: ml_collections.ConfigDict,
    device_count: int | None = None,
    local_device_count: int | None = None,
) -> tuple[int, int]:
  """(data, model) sizes of the mesh of `config` over the run's devices.

  Raises:
    MeshError: `mesh_model` does not divide the devices of every process.
  """
  devices = jax.device_count() if device_count is None else device_count
  local = (
      jax.local_device_count()
      if local_device_count is None
      else local_device_count
  )
  model = config.mesh_model
  if not isinstance(model, int) or model < 1 or local % model:
    valid = [d for d in range(1, local + 1) if local % d == 0]
    raise MeshError(
        f'config.mesh_model={model!r} is not valid on {devices} devices '
        f'({local} per process); it must divide the devices of one process: '
        f'{", ".join(map(str, valid))}'
    )
  return devices // model, model


def create_mesh(config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  """The run's ('data', 'model') mesh over every device of every process."""
  return jax.make_mesh(
      mesh_shape(config),
      (DATA, MODEL),
      axis_types=(jax.sharding.AxisType.Auto,) * 2,
  )


def partition_spec(
    path: str,
    shape,
    axis_sizes: dict[str, int],
    *,
    fsdp: bool,
    min_weights: int,
) -> jax.P:
  """The PartitionSpec of one leaf, by its path and shape.

  Args:
    path: the leaf's path, '/'-joined ('params/layer1/kernel').
    shape: its shape.
    axis_sizes: {'data': n, 'model': m}.
    fsdp: also split a dimension over 'data'.
    min_weights: leaves with fewer entries stay replicated.

  Returns:
    P() (replicated) or a spec that names 'model' and/or 'data' on dimensions
    they divide, 'model' on the largest such dimension.
  """
  if not _SHARDABLE.search(path) or math.prod(shape) < min_weights:
    return jax.P()
  axes = [
      a
      for a in (MODEL, DATA if fsdp else None)
      if a and axis_sizes.get(a, 1) > 1
  ]
  spec = [None] * len(shape)
  # Largest dimensions first: they hold the most bytes and split most evenly.
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if axes and shape[dim] % axis_sizes[axes[0]] == 0:
      spec[dim] = axes.pop(0)
  return jax.P(*spec)


def tree_specs(
    tree, axis_sizes: dict[str, int], *, fsdp: bool, min_weights: int
):
  """`partition_spec` of every leaf of `tree` (arrays or ShapeDtypeStructs)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: partition_spec(
          pytree.path_str(path),
          np.shape(x),
          axis_sizes,
          fsdp=fsdp,
          min_weights=min_weights,
      ),
      tree,
  )


def state_shardings(
    state_shapes, mesh: jax.sharding.Mesh, config: ml_collections.ConfigDict
):
  """NamedShardings of a train state (shapes from `jax.eval_shape`)."""
  specs = tree_specs(
      state_shapes,
      dict(mesh.shape),
      fsdp=config.fsdp,
      min_weights=config.shard_min_weights,
  )
  return jax.tree.map(
      lambda spec: jax.NamedSharding(mesh, spec),
      specs,
      is_leaf=lambda x: isinstance(x, jax.P),
  )


def fraction_per_device(
    param_shapes, axis_sizes: dict[str, int], *, fsdp: bool, min_weights: int
) -> float:
  """The share of the parameters' entries that one device holds (0, 1]."""
  total = held = 0
  specs = tree_specs(
      param_shapes, axis_sizes, fsdp=fsdp, min_weights=min_weights
  )
  for x, spec in zip(
      jax.tree.leaves(param_shapes),
      jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, jax.P)),
  ):
    size = math.prod(np.shape(x))
    split = math.prod(axis_sizes[a] for a in spec if a is not None)
    total += size
    held += size / split
  return held / total if total else 1.0


def gather(x: jax.Array) -> np.ndarray:
  """A whole array on this host, from every process where it is sharded.

  For the few numbers that the host needs whole (layer 1's per-unit locality);
  training, the non-zero counts and the locality's own work never gather.
  """
  if x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def describe(tree) -> dict[str, Any]:
  """{path: spec} of every sharded leaf of a state, for the log."""
  return {
      pytree.path_str(path): x.sharding.spec
      for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
      if isinstance(x.sharding, jax.NamedSharding)
      and any(a is not None for a in x.sharding.spec)
  }
