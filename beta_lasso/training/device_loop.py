"""Training and evaluation with the data resident on the accelerator.

The host path of `train.py` gathers each batch in host memory and dispatches
one step at a time; for a small model that host work is a large share of the
step. Here (`config.device_loop`) the splits are uint8 arrays on the devices
(CIFAR-10's train split is 150 MB) and one dispatch runs a block of steps in a
compiled loop: each step slices its indices from the epoch's permutation
(`input_pipeline.epoch_permutation`, the host path's order, computed once per
epoch and carried from block to block), gathers its batch on device and runs
`train.train_step`, augmentation included. With bf16 compute the weights
for the next step's forward pass are cast right after each update, in the
same iteration (`training.precast`). The metrics of a block come back at
once, one row per step. Evaluation runs over a whole split
in one dispatch, its last partial batch masked as in
`input_pipeline.eval_batches`.

A step depends only on the state it starts from (its step counter included)
and the seed, never on where its block starts, so any cut into blocks, a
resume's included, gives the same states bit for bit.
"""

import functools
from typing import Any
from typing import Callable
from typing import Iterable

import jax
import jax.numpy as jnp

from beta_lasso.data import input_pipeline
from beta_lasso.training import precast as precast_lib


def block_end(
    step: int, num_steps: int, max_steps: int, every: Iterable[int]
) -> int:
  """Where a block of steps that starts after `step` stops.

  Args:
    step: steps done before the block.
    num_steps: steps of the whole run.
    max_steps: most steps per block.
    every: periods (log, eval, checkpoint) whose multiples end a block, so
      the host acts at the same steps as with one step per dispatch.

  Returns:
    The number of steps done after the block.
  """
  end = min(step + max_steps, num_steps)
  for period in every:
    end = min(end, (step // period + 1) * period)
  return end


def _train_block(
    state,
    order,
    images,
    labels,
    num_steps,
    *,
    train_step,
    batch_size,
    seed,
    max_steps,
    data_sharding,
    precast,
):
  """`num_steps` (<= max_steps) train steps; metrics stacked [max_steps].

  `order` is (permutation, its epoch), carried from block to block: a new
  epoch's permutation is computed once, when its first step needs it. The
  compute-dtype copy of the weights (`precast`) is carried from step to
  step within the block only.
  """
  num_examples = labels.shape[0]
  steps_per_epoch = input_pipeline.steps_per_epoch(num_examples, batch_size)
  permutation = functools.partial(
      input_pipeline.epoch_permutation, num_examples, seed
  )

  def batch(perm, step_in_epoch):
    idx = jax.lax.dynamic_slice(
        perm, (step_in_epoch * batch_size,), (batch_size,)
    )
    # Indices split over the data axis: each device gathers its own share.
    idx = jax.lax.with_sharding_constraint(idx, data_sharding)
    # Gathered once into a batch, as the host path's: fused into the
    # augmentation, the gather would be redone for each read of a pixel.
    return jax.lax.optimization_barrier(
        {'image': images[idx], 'label': labels[idx]}
    )

  def body(i, carry):
    state, copy, (perm, perm_epoch), stacked = carry
    epoch, step_in_epoch = jnp.divmod(state.step, steps_per_epoch)
    perm = jax.lax.cond(
        epoch != perm_epoch, lambda: permutation(epoch), lambda: perm
    )
    state, metrics = train_step(
        state,
        batch(perm, step_in_epoch),
        precast.forward_params(state.params, copy),
    )
    stacked = jax.tree.map(lambda s, m: s.at[i].set(m), stacked, metrics)
    return state, precast.copy(state.params), (perm, epoch), stacked

  example = jax.eval_shape(batch, jnp.zeros((num_examples,), jnp.int32), 0)
  metrics = jax.eval_shape(train_step, state, example)[1]
  stacked = jax.tree.map(lambda m: jnp.zeros((max_steps,), m.dtype), metrics)
  state, _, order, stacked = jax.lax.fori_loop(
      0,
      num_steps,
      body,
      (state, precast.copy(state.params), order, stacked),
  )
  return state, order, stacked


def _eval_totals(
    state, images, labels, *, eval_step, batch_size, data_sharding
):
  """Sums of `eval_step` over the whole split, in batches of `batch_size`."""
  num_examples = labels.shape[0]

  def body(b, totals):
    idx = b * batch_size + jnp.arange(batch_size)
    mask = idx < num_examples
    # The padding repeats the last example; its mask keeps it out of the sums.
    idx = jax.lax.with_sharding_constraint(
        jnp.minimum(idx, num_examples - 1), data_sharding
    )
    out = eval_step(
        state, {'image': images[idx], 'label': labels[idx], 'mask': mask}
    )
    return jax.tree.map(jnp.add, totals, out)

  example = {
      'image': jax.ShapeDtypeStruct(
          (batch_size, *images.shape[1:]), images.dtype
      ),
      'label': jax.ShapeDtypeStruct((batch_size,), labels.dtype),
      'mask': jax.ShapeDtypeStruct((batch_size,), jnp.bool_),
  }
  zeros = jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype),
      jax.eval_shape(eval_step, state, example),
  )
  num_batches = -(-num_examples // batch_size)
  return jax.lax.fori_loop(0, num_batches, body, zeros)


class DeviceLoop:
  """Blocks of train steps and whole-split evaluation, each one dispatch.

  Attributes:
    max_steps: most steps per block.
    precast: the leaves cast in the update (`training.precast`).
  """

  def __init__(
      self,
      train_step: Callable,
      eval_step: Callable,
      *,
      batch_size: int,
      eval_batch_size: int,
      seed: int,
      steps_per_dispatch: int,
      state_sharding: Any,
      replicated: jax.sharding.Sharding,
      data_sharding: jax.sharding.Sharding,
      precast: precast_lib.Precast | None = None,
  ):
    """Compiles nothing yet; the first call of each method does.

    Args:
      train_step: `(state, batch, forward_params=None) -> (state,
        metrics)`, not jitted.
      eval_step: `(state, batch) -> sums`, not jitted, batches with a 'mask'.
      batch_size: global train batch.
      eval_batch_size: global eval batch.
      seed: the data seed of `input_pipeline.epoch_permutation`.
      steps_per_dispatch: most steps per block.
      state_sharding: sharding of the train state (a tree of shardings).
      replicated: sharding of the resident splits and the data order.
      data_sharding: sharding of a batch over the data axis.
      precast: the leaves cast in the update for the next forward pass;
        None casts none.
    """
    if jax.process_count() > 1:  # validation.validate_config says it first.
      raise ValueError(
          f'the device loop runs on one process, not ' f'{jax.process_count()}'
      )
    self.max_steps = steps_per_dispatch
    self.precast = precast or precast_lib.NONE
    self._replicated = replicated
    self._order = None  # (permutation, epoch) of the last step run.
    # A block's length is an argument, not a shape: one compilation serves
    # every block, the short ones before a log, eval or save step included.
    self._train = jax.jit(
        functools.partial(
            _train_block,
            train_step=train_step,
            batch_size=batch_size,
            seed=seed,
            max_steps=steps_per_dispatch,
            data_sharding=data_sharding,
            precast=self.precast,
        ),
        in_shardings=(
            state_sharding,
            replicated,
            replicated,
            replicated,
            replicated,
        ),
        out_shardings=(state_sharding, replicated, replicated),
        donate_argnums=(0, 1),
    )
    self._eval = jax.jit(
        functools.partial(
            _eval_totals,
            eval_step=eval_step,
            batch_size=eval_batch_size,
            data_sharding=data_sharding,
        ),
        in_shardings=(state_sharding, replicated, replicated),
        out_shardings=replicated,
    )

  def put(self, images, labels) -> tuple[jax.Array, jax.Array]:
    """A split copied onto every device: uint8 images, int32 labels."""
    return jax.device_put((images, labels), self._replicated)

  def train(self, state, images, labels, num_steps: int):
    """Runs `num_steps` steps on the resident split `put` returned.

    Args:
      state: the train state (donated).
      images: the resident train images.
      labels: the resident train labels.
      num_steps: steps in this block, 1 to `max_steps`.

    Returns:
      (state, metrics): each metric stacked over the block's steps.
    """
    if not 1 <= num_steps <= self.max_steps:
      raise ValueError(f'num_steps {num_steps} is not in [1, {self.max_steps}]')
    if self._order is None:  # Epoch -1: the first step computes its own.
      self._order = jax.device_put(
          (jnp.zeros(labels.shape, jnp.int32), jnp.int32(-1)), self._replicated
      )
    state, self._order, stacked = self._train(
        state, self._order, images, labels, num_steps
    )
    return state, jax.tree.map(lambda x: x[:num_steps], stacked)

  def compiled_text(self, state, images, labels) -> str:
    """The optimized HLO of a block of train steps, as XLA compiled it.

    After the first `train`: compiling again is a lookup where JAX's
    persistent compilation cache is on.
    """
    return (
        self._train.lower(state, self._order, images, labels, self.max_steps)
        .compile()
        .as_text()
    )

  def eval_totals(self, state, images, labels):
    """`eval_step`'s sums over a whole resident split, as device arrays."""
    return self._eval(state, images, labels)
