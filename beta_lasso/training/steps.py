"""The run's compiled steps: the host path, one step a dispatch, or the
device loop, with the data where the steps read it."""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from beta_lasso.data import input_pipeline
from beta_lasso.training import device_loop
from beta_lasso.training import precast as precast_lib
from beta_lasso.training import sharding

# (images, labels) of a split: numpy, or resident on device.
Split = tuple[Any, Any]


class Steps:
  """The run's compiled train and eval steps, and where its data lives.

  The state is donated to the train step: only one copy lives on device.
  With `config.device_loop` the splits are resident on the accelerator and a
  dispatch runs a block of steps (see device_loop.py).
  """

  def __init__(
      self,
      config: ml_collections.ConfigDict,
      mesh,
      state_sharding,
      step_fn,
      eval_fn,
      precast: precast_lib.Precast | None = None,
  ):
    """Compiles nothing yet: jax.jit does at the first call.

    Args:
      config: the run's config (batch sizes, seed, the device loop).
      mesh: from `sharding.create_mesh`.
      state_sharding: the train state's NamedShardings.
      step_fn: `step_fn(state, batch, forward_params=None) -> (state,
        metrics)`, one update.
      eval_fn: `eval_fn(state, batch) -> sums`, one eval batch.
      precast: the leaves the device loop casts in the update
        (`training.precast`); the host path casts in the forward pass.
    """
    self.replicated = jax.NamedSharding(mesh, jax.P())
    self.data_sharding = jax.NamedSharding(mesh, jax.P(sharding.DATA))
    self._config = config
    self._train = jax.jit(
        step_fn,
        in_shardings=(state_sharding, self.data_sharding),
        out_shardings=(state_sharding, self.replicated),
        donate_argnums=0,
    )
    self._eval = jax.jit(
        eval_fn,
        in_shardings=(state_sharding, self.data_sharding),
        out_shardings=self.replicated,
    )
    self.on_device = None
    if config.device_loop:
      self.on_device = device_loop.DeviceLoop(
          step_fn,
          eval_fn,
          batch_size=config.batch_size,
          eval_batch_size=config.eval_batch_size,
          seed=config.seed,
          steps_per_dispatch=config.steps_per_dispatch,
          state_sharding=state_sharding,
          replicated=self.replicated,
          data_sharding=self.data_sharding,
          precast=precast,
      )

  def put(self, splits):
    """The splits (a NamedTuple of (images, labels) or None) where the steps
    read them: resident on the accelerator with the device loop."""
    if not self.on_device:
      return splits
    return type(splits)(
        *(
            None if split is None else self.on_device.put(*split)
            for split in splits
        )
    )

  def _global_batch(self, local):
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.data_sharding, x),
        local,
    )

  def train_block(self, state, step: int, train: Split, durations):
    """Steps from `step` on: one on the host path, a block on the device.

    A block ends at the next step that logs, evaluates or saves, so both
    paths act at the same steps.

    Args:
      state: the train state at `step`.
      step: steps done.
      train: the training split, as `put` placed it.
      durations: the run's `train.Durations` (where blocks end).

    Returns:
      (state, metrics, steps done).
    """
    images, labels = train
    if self.on_device:
      end = device_loop.block_end(
          step,
          durations.num_train_steps,
          self.on_device.max_steps,
          (
              durations.log_every,
              durations.eval_every,
              durations.checkpoint_every,
          ),
      )
      return *self.on_device.train(state, images, labels, end - step), end
    indices = input_pipeline.train_indices(
        len(labels),
        self._config.batch_size,
        self._config.seed,
        step,
        jax.process_index(),
        jax.process_count(),
    )
    batch = input_pipeline.train_batch(images, labels, indices)
    return *self._train(state, self._global_batch(batch)), step + 1

  def eval_totals(self, state, split: Split) -> dict:
    """`eval_fn`'s sums over a whole split, on the host."""
    images, labels = split
    if self.on_device:
      totals = self.on_device.eval_totals(state, images, labels)
    else:
      totals = None
      for batch in input_pipeline.eval_batches(
          images,
          labels,
          self._config.eval_batch_size,
          jax.process_index(),
          jax.process_count(),
      ):
        out = self._eval(state, self._global_batch(batch))
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    return jax.device_get(totals)
