"""Training and evaluation: the loop that `main.py` and the tests call.

Reads top to bottom: the optimizer, the update and eval steps, the input
(`load_splits`), the sharded train state (`create_train_state`), the steps
compiled for the mesh (`compile_steps`, run by `training.steps`), all of them
from a config (`build`, which benchmarks and tests use too), the loop
(`train_loop`, with `training.evaluation` for what an eval records) and the
whole run (`train_and_evaluate`), which the pieces above make short.
Everything random (data order, augmentation, dropout) is a function of (seed,
step), so a run that is killed and started again ends bit for bit where an
uninterrupted one would.
"""

import dataclasses
import functools
import json
import time
from typing import Any
from typing import NamedTuple
from typing import Optional

from absl import logging
from etils import epath
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from beta_lasso import compact
from beta_lasso import errors
from beta_lasso import models
from beta_lasso import optim
from beta_lasso.data import augmentation
from beta_lasso.data import datasets
from beta_lasso.data import input_pipeline
from beta_lasso.training import checkpointing
from beta_lasso.training import evaluation
from beta_lasso.training import precast
from beta_lasso.training import results as results_lib
from beta_lasso.training import selection
from beta_lasso.training import sharding
from beta_lasso.training import steps as steps_lib
from beta_lasso.training import validation
from beta_lasso.training import workdir as workdir_lib
from beta_lasso.training import writers


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @classmethod
  def create(cls, variables, tx: optax.GradientTransformation) -> 'TrainState':
    """Step 0 of a model's `init` variables and the optimizer's fresh state."""
    params = variables['params']
    return cls(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get('batch_stats', {}),
        opt_state=tx.init(params),
    )


class DivergenceError(errors.UserError, RuntimeError):
  """A loss, gradient or parameter turned non-finite."""


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
  """The one place where durations in epochs become steps (at least 1)."""
  return max(1, int(round(epochs * steps_per_epoch)))


# ----------------------------------------------------------------------------
# Optimizer.
# ----------------------------------------------------------------------------
def create_optimizer(
    config: ml_collections.ConfigDict,
    params,
    num_train_steps: int,
    steps_per_epoch: int,
):
  """Builds the optimizer of `config` with a per-step cosine schedule.

  Args:
    config: the run's config (optimizer, learning_rate, momentum, ...).
    params: the model parameters (or their shapes), to build masks and lambdas.
    num_train_steps: length of the schedule.
    steps_per_epoch: to turn `warmup_epochs` into steps.

  Returns:
    (optax.GradientTransformation, learning-rate schedule).
  """
  warmup = (
      epochs_to_steps(config.warmup_epochs, steps_per_epoch)
      if config.warmup_epochs > 0
      else 0
  )
  if warmup:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, num_train_steps
    )
  else:
    schedule = optax.cosine_decay_schedule(
        config.learning_rate, num_train_steps
    )
  # The paper regularizes kernels only (not biases or BatchNorm).
  mask = {
      'kernels': optim.kernel_mask,
      'all': lambda p: jax.tree.map(lambda _: True, p),
  }[config.regularize]
  if config.optimizer == 'sgd':
    tx = optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=mask),
        optax.sgd(schedule, momentum=config.momentum or None),
    )
  elif config.optimizer == 'beta_lasso':
    # 3-FC has no conv-standing layer for the override to match (its
    # l1_conv is None or 0: validation.UNUSED).
    overrides = (
        [(models.CONV_KERNEL_REGEX, config.l1_conv)]
        if config.l1_conv is not None
        else []
    )
    l1 = optim.per_layer_l1(
        params, default=config.l1, overrides=overrides, allow_unmatched=True
    )
    tx = optim.beta_lasso(schedule, l1, config.beta, mask=mask)
  else:  # validation.validate_config rejects this earlier.
    raise ValueError(f'unknown optimizer {config.optimizer!r}')
  return tx, schedule


# ----------------------------------------------------------------------------
# Update and eval steps.
# ----------------------------------------------------------------------------
def forward(model, params, batch_stats, images, dropout_key):
  """The training forward pass: (logits, updated variables)."""
  return model.apply(
      {'params': params, 'batch_stats': batch_stats},
      images,
      train=True,
      mutable=['batch_stats'],
      rngs={'dropout': dropout_key},
  )


def train_step(
    state: TrainState,
    batch,
    forward_params=None,
    *,
    model,
    tx,
    augment,
    normalize,
    key,
):
  """One SGD / beta-LASSO step; returns the new state and step metrics.

  `forward_params` is what the forward pass reads in place of
  `state.params`: the same values, some leaves already in the compute dtype
  (`training.precast`, which the device loop uses); the gradient comes back
  in the dtype of `state.params`. None reads `state.params`.

  The metrics are the loss, the batch accuracy and the parameters' global
  norm, which also guards against divergence: a non-finite gradient or update
  makes it non-finite in the same step. The norms of the gradients and of the
  updates are not computed. On XLA CPU their passes over every weight cost
  S-FC's step 8% (gradients) and, with beta-LASSO, half again (the updates,
  which the norm keeps from fusing into the parameters); the parameters'
  norm fuses into their update and costs nothing measurable.
  """
  step_key = jax.random.fold_in(key, state.step)
  aug_key, dropout_key = jax.random.split(step_key)
  images = normalize(augment(batch['image'], aug_key))

  def loss_fn(params):
    logits, new_vars = forward(
        model, params, state.batch_stats, images, dropout_key
    )
    logits = logits.astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['label']
    ).mean()
    return loss, (logits, new_vars['batch_stats'])

  if forward_params is None:
    forward_params = state.params
  (loss, (logits, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True
  )(forward_params)
  # A cast's gradient is its cotangent cast back: what differentiating
  # through the layer's own cast gives.
  grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      'loss': loss,
      'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
      'param_norm': optax.global_norm(params),
  }
  new_state = state.replace(
      step=state.step + 1,
      params=params,
      batch_stats=batch_stats,
      opt_state=opt_state,
  )
  return new_state, metrics


def eval_step(state: TrainState, batch, *, model, normalize):
  """Sums of correct predictions, loss and examples over a masked batch."""
  logits = model.apply(
      {'params': state.params, 'batch_stats': state.batch_stats},
      normalize(batch['image']),
      train=False,
  )
  logits = logits.astype(jnp.float32)
  mask = batch['mask']
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  correct = jnp.argmax(logits, -1) == batch['label']
  return {
      'correct': jnp.sum(correct * mask),
      'loss': jnp.sum(loss * mask),
      'count': jnp.sum(mask),
  }


_FINITE_CHECKS = ('loss', 'param_norm')


def _stack(pending) -> dict[str, np.ndarray]:
  """Metrics of single steps and of blocks of steps as [steps] numpy arrays."""
  values = jax.device_get(pending)
  return {
      name: np.concatenate([np.atleast_1d(v[name]) for v in values])
      for name in values[0]
  }


def _check_finite(
    metrics: dict[str, np.ndarray], first_step: int, workdir: str
):
  """Raises DivergenceError naming the first non-finite step and quantity."""
  finite = np.all([np.isfinite(metrics[name]) for name in _FINITE_CHECKS], 0)
  if finite.all():
    return
  i = int(np.argmin(finite))
  name = next(n for n in _FINITE_CHECKS if not np.isfinite(metrics[n][i]))
  raise DivergenceError(
      f'non-finite {name} ({metrics[name][i]}) at step {first_step + i + 1}; '
      f'the last good checkpoint in {workdir} is kept'
  )


# ----------------------------------------------------------------------------
# Input: the splits, durations in steps, augmentation and normalization.
# ----------------------------------------------------------------------------
Split = steps_lib.Split


class Splits(NamedTuple):
  train: Split
  test: Split
  val: Optional[Split]  # None without `config.val_split`.


def load_split(config: ml_collections.ConfigDict, split: str) -> Split:
  """(images, labels) of `split` of the config's dataset, as numpy arrays."""
  return input_pipeline.load_split(
      config.dataset,
      split,
      config.data_dir,
      config.download,
      config.data_file,
  )


def load_splits(config: ml_collections.ConfigDict) -> Splits:
  """The run's train and eval splits, and its validation split if any."""
  train = load_split(config, config.train_split)
  test = load_split(config, config.eval_split)
  val = None
  if config.val_split:  # Model selection, as the paper does.
    val = load_split(config, config.val_split)
  return Splits(train, test, val)


@dataclasses.dataclass(frozen=True)
class Durations:
  """The run's periods in steps, from the config's epochs."""

  steps_per_epoch: int
  num_train_steps: int
  eval_every: int
  checkpoint_every: int
  log_every: int

  @classmethod
  def of(
      cls, config: ml_collections.ConfigDict, num_train_examples: int
  ) -> 'Durations':
    steps_per_epoch = input_pipeline.steps_per_epoch(
        num_train_examples, config.batch_size
    )
    return cls(
        steps_per_epoch=steps_per_epoch,
        num_train_steps=epochs_to_steps(config.num_epochs, steps_per_epoch),
        eval_every=epochs_to_steps(config.eval_every_epochs, steps_per_epoch),
        checkpoint_every=epochs_to_steps(
            config.checkpoint_every_epochs, steps_per_epoch
        ),
        log_every=config.log_every_steps,
    )


def input_fns(config: ml_collections.ConfigDict, info, workdir: str, dtype):
  """Augmentation, normalization and the run's pixel permutation.

  Returns:
    (augment, normalize, permutation): `augment(images, key)` for training,
    `normalize(images)` for training and eval, permuting the pixels of a
    `permute_pixels` run; `permutation` is None for the others.
  """
  augment = augmentation.augment_fn(config.augment, info)
  normalize = functools.partial(augmentation.normalize, info=info, dtype=dtype)
  permutation = None
  if config.permute_pixels:
    permutation = workdir_lib.pixel_permutation(
        workdir, augmentation.pixel_permutation(info.image_shape, config.seed)
    )
    # After augmentation, which acts on the image's own geometry; at eval too.
    unpermuted_normalize = normalize
    normalize = lambda x: unpermuted_normalize(
        augmentation.permute_pixels(x, permutation)
    )
  return augment, normalize, permutation


# ----------------------------------------------------------------------------
# Model, optimizer and the train state, created already sharded.
# ----------------------------------------------------------------------------
def create_model(config: ml_collections.ConfigDict, num_classes: int, dtype):
  return models.create_model(
      config.model,
      num_classes=num_classes,
      alpha=config.alpha,
      dropout_rate=config.dropout_rate,
      dtype=dtype,
      local_impl=config.local_impl,
      **config.model_kwargs,
  )


class ShardedState(NamedTuple):
  state: TrainState
  sharding: Any  # A TrainState of NamedShardings.
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  train_key: jax.Array  # Of augmentation and dropout, folded with the step.


def create_train_state(
    config: ml_collections.ConfigDict,
    model,
    mesh,
    image_shape,
    dtype,
    durations: Durations,
) -> ShardedState:
  """Step 0 of the run, each array created where the mesh places it.

  Args:
    config: the run's config (seed, optimizer, sharding).
    model: from `create_model`.
    mesh: from `sharding.create_mesh`.
    image_shape: (H, W, C) of the input.
    dtype: the computation dtype.
    durations: the schedule's length.
  """
  key = jax.random.key(config.seed)
  init_key, train_key = jax.random.split(key)
  dummy = jnp.zeros((1, *image_shape), dtype)

  def init(rng):
    return model.init(rng, dummy, train=False)

  param_shapes = jax.eval_shape(init, init_key)['params']
  tx, schedule = create_optimizer(
      config, param_shapes, durations.num_train_steps, durations.steps_per_epoch
  )

  def init_state(rng):
    return TrainState.create(init(rng), tx)

  # Big kernels (and their optimizer state) split over the mesh; see sharding.
  state_sharding = sharding.state_shardings(
      jax.eval_shape(init_state, init_key), mesh, config
  )
  state = jax.jit(init_state, out_shardings=state_sharding)(init_key)
  logging.info(
      'Mesh %s; sharded: %s',
      dict(mesh.shape),
      sharding.describe(state) or 'nothing',
  )
  return ShardedState(state, state_sharding, tx, schedule, train_key)


# ----------------------------------------------------------------------------
# Compiled steps: the host path, one step a dispatch, or the device loop.
# ----------------------------------------------------------------------------
def compile_steps(
    config: ml_collections.ConfigDict,
    model,
    mesh,
    sharded: ShardedState,
    augment,
    normalize,
    image_shape,
    dtype,
    *,
    cast_in_update: bool | None = None,
) -> steps_lib.Steps:
  """`train_step` and `eval_step` of this run, compiled for its mesh.

  Args:
    config: the run's config.
    model: from `create_model`.
    mesh: from `sharding.create_mesh`.
    sharded: from `create_train_state`.
    augment: `augment(images, key)`, from `input_fns`.
    normalize: `normalize(images)`, from `input_fns`.
    image_shape: (H, W, C) of the input.
    dtype: the computation dtype.
    cast_in_update: the device loop casts the weights for the next step's
      forward pass in the update (`training.precast`), the leaves read off
      the forward pass here; False leaves every cast to the forward pass, as
      on the host path (the reference the benchmarks and tests compare).
      None: on accelerators only. XLA on the CPU does not fuse the cast into
      the update, so there it is a pass of its own (S-FC in bf16 on 2 cores:
      3% slower a step at alpha 16, 11% at alpha 150).
  """
  step_fn = functools.partial(
      train_step,
      model=model,
      tx=sharded.tx,
      augment=augment,
      normalize=normalize,
      key=sharded.train_key,
  )
  eval_fn = functools.partial(eval_step, model=model, normalize=normalize)
  state = sharded.state
  if cast_in_update is None:
    cast_in_update = jax.default_backend() != 'cpu'
  if not cast_in_update:
    return steps_lib.Steps(config, mesh, sharded.sharding, step_fn, eval_fn)
  mask = precast.find(
      functools.partial(forward, model),
      state.params,
      state.batch_stats,
      jax.ShapeDtypeStruct((1, *image_shape), dtype),
      sharded.train_key,
      dtype=dtype,
  )
  return steps_lib.Steps(
      config,
      mesh,
      sharded.sharding,
      step_fn,
      eval_fn,
      precast=precast.Precast(mask, dtype),
  )


class Pieces(NamedTuple):
  """A run before its loop: what `build` makes of a config."""

  splits: Splits  # Where the steps read them: on device with the device loop.
  info: Any  # datasets.DatasetInfo, statistics included.
  durations: Durations
  dtype: Any  # The computation dtype.
  model: Any
  mesh: Any
  sharded: ShardedState  # At step 0.
  augment: Any  # From `input_fns`.
  normalize: Any
  permutation: Any  # The pixel permutation of a `permute_pixels` run, or None.
  steps: steps_lib.Steps
  evaluator: evaluation.Evaluator


def build(
    config: ml_collections.ConfigDict,
    workdir: str | None = None,
    *,
    cast_in_update: bool | None = None,
) -> Pieces:
  """The data, model, state at step 0, compiled steps and evaluator of a run.

  Args:
    config: a validated config.
    workdir: the run's, whose dataset statistics and pixel permutation a
      resumed run keeps; None for a run that saves nothing (benchmarks).
    cast_in_update: as in `compile_steps`.
  """
  mesh = sharding.create_mesh(config)
  splits = load_splits(config)
  train_images, train_labels = splits.train
  saved_dataset = workdir_lib.read_dataset(workdir) if workdir else None
  info = datasets.with_stats(
      datasets.base_info(config), config, train_images, saved_dataset
  )
  durations = Durations.of(config, len(train_labels))
  dtype = jnp.bfloat16 if config.half_precision else jnp.float32
  augment, normalize, permutation = input_fns(config, info, workdir, dtype)
  model = create_model(config, info.num_classes, dtype)
  image_shape = train_images.shape[1:]
  sharded = create_train_state(
      config, model, mesh, image_shape, dtype, durations
  )
  steps = compile_steps(
      config,
      model,
      mesh,
      sharded,
      augment,
      normalize,
      image_shape,
      dtype,
      cast_in_update=cast_in_update,
  )
  evaluator = evaluation.Evaluator(
      steps,
      model=config.model,
      image_shape=info.image_shape,
      permutation=permutation,
  )
  return Pieces(
      splits=steps.put(splits),
      info=info,
      durations=durations,
      dtype=dtype,
      model=model,
      mesh=mesh,
      sharded=sharded,
      augment=augment,
      normalize=normalize,
      permutation=permutation,
      steps=steps,
      evaluator=evaluator,
  )


# ----------------------------------------------------------------------------
# The loop.
# ----------------------------------------------------------------------------
class WallClock:
  """Wall time of the run: its earlier processes' (up to their last save)
  and this one's."""

  def __init__(self, earlier_seconds: float, start_time: float):
    self.earlier_seconds = earlier_seconds
    self.start_time = start_time

  def this_process(self) -> float:
    return time.time() - self.start_time

  def total(self) -> float:
    return self.earlier_seconds + self.this_process()


class LoopEnd(NamedTuple):
  state: TrainState
  last_eval: Optional[dict]  # None when no eval ran (resumed at the end).
  preempted: bool


def train_loop(
    state: TrainState,
    *,
    config: ml_collections.ConfigDict,
    workdir: str,
    durations: Durations,
    steps: steps_lib.Steps,
    evaluator: evaluation.Evaluator,
    splits: Splits,
    schedule,
    checkpoints: checkpointing.Checkpointer,
    history: list,
    writer,
    report_progress,
    clock: WallClock,
    weights: dict[str, int],
) -> LoopEnd:
  """Trains from `state` to the last step, evaluating and saving on the way.

  Every eval is appended to `history` (saved in each checkpoint). On
  preemption the state is saved and the loop returns early.

  Raises:
    DivergenceError: a non-finite loss or parameter norm.
  """

  def saved_extras():
    return {
        'config': workdir_lib.flatten(config),
        'wall_seconds': clock.total(),
    }

  initial_step = int(state.step)
  num_train_steps = durations.num_train_steps
  show_locality = evaluator.can_be_nonlocal(state.params)
  pending = []  # Step metrics not yet checked for finiteness.
  last_eval = None
  done = initial_step
  loop_start = time.monotonic()
  # Leaving the block (normally, preempted or diverged) waits for the save in
  # flight, so the last good checkpoint is never left half-written.
  with checkpointing.PreemptionGuard() as guard, checkpoints:
    while done < num_train_steps:
      state, metrics, done = steps.train_block(
          state, done, splits.train, durations
      )
      pending.append(metrics)
      report_progress(done)

      is_last = done == num_train_steps
      log_now = done % durations.log_every == 0 or is_last
      eval_now = done % durations.eval_every == 0 or is_last
      save_now = done % durations.checkpoint_every == 0 or is_last
      preempted = guard.triggered or checkpoints.reached_preemption(done)
      summary = {}
      if log_now or eval_now or save_now or preempted:
        # Nothing is written until every step since the last check was finite.
        stacked = _stack(pending)
        pending = []
        _check_finite(stacked, done - len(stacked['loss']), workdir)
        summary = {f'train_{k}': float(np.mean(v)) for k, v in stacked.items()}
        summary['learning_rate'] = float(schedule(done - 1))
        writer.write_scalars(done, summary)
      is_best = False
      if eval_now:
        eval_start = time.time()
        with report_progress.timed('eval'):
          last_eval = evaluator(state, splits.test, splits.val)
        eval_seconds = time.time() - eval_start
        writer.write_scalars(done, evaluation.eval_scalars(last_eval))
        # The best validation step is saved and kept whatever max_to_keep.
        is_best = selection.improves(history, last_eval)
        # Epoch and wall time place the eval on a learning curve; with the
        # eval's own time they give the training throughput between evals
        # (launch/full_scale.py reports it).
        history.append(
            {
                'step': done,
                'epoch': done / durations.steps_per_epoch,
                'wall_seconds': saved_extras()['wall_seconds'],
                'eval_seconds': eval_seconds,
                **last_eval,
            }
        )
        # The rate of this process, evals and saves included.
        rate = (done - initial_step) / max(time.monotonic() - loop_start, 1e-9)
        logging.info(
            '%s',
            evaluation.eval_line(
                done,
                last_eval,
                epoch=done / durations.steps_per_epoch,
                train_accuracy=summary.get('train_accuracy'),
                first_layer=evaluator.first_layer,
                weights=weights,
                show_locality=show_locality,
                eta_seconds=(num_train_steps - done) / rate if rate else None,
            ),
        )
      if save_now or preempted or is_best:
        with report_progress.timed('checkpoint'):
          checkpoints.save(done, state, history, saved_extras(), best=is_best)
          if save_now or preempted:  # Not the extra saves of a best step.
            compact.after_save(config, workdir, checkpoints)
      if preempted and not is_last:
        # Leaving the block waits for this save to finish.
        writer.flush()
        logging.warning(
            'Preempted at step %d of %d: checkpoint saved in %s; '
            'run the same command to resume.',
            done,
            num_train_steps,
            workdir,
        )
        return LoopEnd(state, last_eval, preempted=True)
  return LoopEnd(state, last_eval, preempted=False)


# ----------------------------------------------------------------------------
# The whole run.
# ----------------------------------------------------------------------------
def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    allow_config_change: bool = False,
) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Args:
    config: the run's config (see configs/default.py).
    workdir: where checkpoints, TensorBoard events and results.json go.
    allow_config_change: resume a workdir whose saved config differs.

  Returns:
    The results written to `workdir/results.json` (`results.Results.to_json`),
    or, when the run was preempted, a dict with 'preempted': True and the
    step it stopped at.

  Raises:
    validation.ConfigError: a bad config value, before anything is computed.
    workdir_lib.ConfigMismatchError: the workdir belongs to another experiment.
    DivergenceError: a non-finite loss, gradient or parameter norm.
  """
  start_time = time.time()
  # Everything that can be wrong with the input, the memory it needs included,
  # is caught before any compute and before the workdir is touched.
  validation.validate_config(config)
  compact.check_config(config)
  workdir_lib.check_config(workdir, config, allow_change=allow_config_change)
  datasets.base_info(config)  # A bad dataset or data file: before the workdir.
  checkpoints = checkpointing.Checkpointer(
      epath.Path(workdir) / workdir_lib.CHECKPOINTS_DIR,
      config.max_checkpoints_to_keep,
  )
  if workdir_lib.read_config(workdir) is None:
    # Without config.json, the newest checkpoint still knows its run's config.
    workdir_lib.check_config(
        workdir,
        config,
        allow_change=allow_config_change,
        saved=checkpoints.saved_extras().get('config'),
    )

  # --- Mesh, input, model, the state at step 0, steps and evaluation. ---
  pieces = build(config, workdir)
  logging.info(
      'Process %d of %d, %d local / %d global devices',
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
  )
  durations, splits, info = pieces.durations, pieces.splits, pieces.info
  weights = optim.count_weights(pieces.sharded.state.params)
  logging.info(
      'Model %s, alpha %s: %s kernel weights %s',
      config.model,
      config.alpha,
      f'{sum(weights.values()):,}',
      weights,
  )

  # --- Checkpoints: resume from the latest complete one. ---
  state, history, extras = checkpoints.restore_latest(pieces.sharded.state)
  initial_step = int(state.step)
  if initial_step:
    logging.info(
        'Resumed from step %d of %d', initial_step, durations.num_train_steps
    )
  # The run has started: only now is the workdir's config recorded.
  workdir_lib.save_config(workdir, config)
  workdir_lib.write_dataset(workdir, datasets.describe(info, config))
  if pieces.permutation is not None:
    workdir_lib.save_pixel_permutation(workdir, pieces.permutation)
  clock = WallClock(extras.get('wall_seconds', 0.0), start_time)

  # --- Metrics and progress. ---
  writer, report_progress = writers.create(
      workdir, durations.num_train_steps, just_logging=jax.process_index() > 0
  )
  if initial_step == 0:
    writer.write_hparams(workdir_lib.flatten(config))

  # --- The loop. ---
  logging.info(
      'Training %d steps (%d per epoch) from step %d',
      durations.num_train_steps,
      durations.steps_per_epoch,
      initial_step,
  )
  state, last_eval, preempted = train_loop(
      state,
      config=config,
      workdir=workdir,
      durations=durations,
      steps=pieces.steps,
      evaluator=pieces.evaluator,
      splits=splits,
      schedule=pieces.sharded.schedule,
      checkpoints=checkpoints,
      history=history,
      writer=writer,
      report_progress=report_progress,
      clock=clock,
      weights=weights,
  )
  if preempted:
    return {'preempted': True, 'step': int(state.step)}

  # --- Results. ---
  writer.flush()
  evaluator = pieces.evaluator
  if last_eval is None:  # Resumed after the final step: evaluate once more.
    last_eval = evaluator(state, splits.test, splits.val)
  # The training error of the final network, as the MDL bounds need it: the
  # whole train split, unaugmented, like the test split.
  train_accuracy, train_loss = evaluator.accuracy_and_loss(state, splits.train)
  record = results_lib.Results(
      test_accuracy=last_eval['test_accuracy'],
      test_loss=last_eval['test_loss'],
      **selection.results(history),
      train_accuracy=train_accuracy,
      train_loss=train_loss,
      train_examples=len(splits.train[1]),
      nnz=last_eval['nnz'],
      locality=(
          results_lib.Locality.from_json(last_eval['locality'])
          if 'locality' in last_eval
          else None
      ),
      weights=weights,
      steps=int(state.step),
      epochs=int(state.step) / durations.steps_per_epoch,
      # Over every process of the run (each up to its last save), and this one.
      wall_seconds=clock.total(),
      wall_seconds_last=clock.this_process(),
      history=tuple(results_lib.Eval.from_json(h) for h in history),
      config=json.loads(config.to_json_best_effort()),
      dataset=datasets.describe(info, config),
  )
  results = record.to_json()
  workdir_lib.write_results(workdir, results)
  logging.info(
      'Test accuracy %.4f after %d steps; non-zeros / weights: %s',
      record.test_accuracy,
      record.steps,
      {k: f'{record.nnz[k]:,} / {weights[k]:,}' for k in weights},
  )
  return results
