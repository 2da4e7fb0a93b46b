"""Training and evaluation: the loop that `main.py` and the tests call.

Reads top to bottom: setup, input, model and optimizer, sharding, the update
step, checkpoint restore, evaluation, the loop. Everything random (data order,
augmentation, dropout) is a function of (seed, step), so a run that is killed
and started again ends bit for bit where an uninterrupted one would.
"""
import functools
import json
import time
from typing import Any

from absl import logging
from etils import epath
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from beta_lasso import errors
from beta_lasso.data import augmentation
from beta_lasso.training import checkpointing
from beta_lasso.data import datasets
from beta_lasso.training import device_loop
from beta_lasso.data import input_pipeline
from beta_lasso import models
from beta_lasso import optim
from beta_lasso.training import selection
from beta_lasso.training import sharding
from beta_lasso.training import validation
from beta_lasso.training import workdir as workdir_lib
from beta_lasso.training import writers
from beta_lasso.metrics import locality

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
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               batch_stats=variables.get('batch_stats', {}),
               opt_state=tx.init(params))


class DivergenceError(errors.UserError, RuntimeError):
  """A loss, gradient or parameter turned non-finite."""


def epochs_to_steps(epochs: float, steps_per_epoch: int) -> int:
  """The one place where durations in epochs become steps (at least 1)."""
  return max(1, int(round(epochs * steps_per_epoch)))


# ----------------------------------------------------------------------------
# Optimizer.
# ----------------------------------------------------------------------------
def create_optimizer(config: ml_collections.ConfigDict, params,
                     num_train_steps: int, steps_per_epoch: int):
  """Builds the optimizer of `config` with a per-step cosine schedule.

  Args:
    config: the run's config (optimizer, learning_rate, momentum, ...).
    params: the model parameters (or their shapes), to build masks and lambdas.
    num_train_steps: length of the schedule.
    steps_per_epoch: to turn `warmup_epochs` into steps.

  Returns:
    (optax.GradientTransformation, learning-rate schedule).
  """
  warmup = (epochs_to_steps(config.warmup_epochs, steps_per_epoch)
            if config.warmup_epochs > 0 else 0)
  if warmup:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup, num_train_steps)
  else:
    schedule = optax.cosine_decay_schedule(config.learning_rate, num_train_steps)
  # The paper regularizes kernels only (not biases or BatchNorm).
  mask = {'kernels': optim.kernel_mask,
          'all': lambda p: jax.tree.map(lambda _: True, p)}[config.regularize]
  if config.optimizer == 'sgd':
    tx = optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=mask),
        optax.sgd(schedule, momentum=config.momentum or None))
  elif config.optimizer == 'beta_lasso':
    # 3-FC has no conv-standing layer for the override to match (its
    # l1_conv is None or 0: validation.UNUSED).
    overrides = ([(models.CONV_KERNEL_REGEX, config.l1_conv)]
                 if config.l1_conv is not None else [])
    l1 = optim.per_layer_l1(params, default=config.l1, overrides=overrides,
                            allow_unmatched=True)
    tx = optim.beta_lasso(schedule, l1, config.beta, mask=mask)
  else:  # validation.validate_config rejects this earlier.
    raise ValueError(f'unknown optimizer {config.optimizer!r}')
  return tx, schedule


# ----------------------------------------------------------------------------
# Update and eval steps.
# ----------------------------------------------------------------------------
def train_step(state: TrainState, batch, *, model, tx, augment, normalize, key):
  """One SGD / beta-LASSO step; returns the new state and step metrics.

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
    logits, new_vars = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, images,
        train=True, mutable=['batch_stats'], rngs={'dropout': dropout_key})
    logits = logits.astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['label']).mean()
    return loss, (logits, new_vars['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      'loss': loss,
      'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
      'param_norm': optax.global_norm(params),
  }
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=batch_stats, opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch, *, model, normalize):
  """Sums of correct predictions, loss and examples over a masked batch."""
  logits = model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                       normalize(batch['image']), train=False)
  logits = logits.astype(jnp.float32)
  mask = batch['mask']
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['label'])
  correct = jnp.argmax(logits, -1) == batch['label']
  return {'correct': jnp.sum(correct * mask), 'loss': jnp.sum(loss * mask),
          'count': jnp.sum(mask)}


_FINITE_CHECKS = ('loss', 'param_norm')


def _stack(pending) -> dict[str, np.ndarray]:
  """Metrics of single steps and of blocks of steps as [steps] numpy arrays."""
  values = jax.device_get(pending)
  return {name: np.concatenate([np.atleast_1d(v[name]) for v in values])
          for name in values[0]}


def _check_finite(metrics: dict[str, np.ndarray], first_step: int,
                  workdir: str):
  """Raises DivergenceError naming the first non-finite step and quantity."""
  finite = np.all([np.isfinite(metrics[name]) for name in _FINITE_CHECKS], 0)
  if finite.all():
    return
  i = int(np.argmin(finite))
  name = next(n for n in _FINITE_CHECKS if not np.isfinite(metrics[n][i]))
  raise DivergenceError(
      f'non-finite {name} ({metrics[name][i]}) at step {first_step + i + 1}; '
      f'the last good checkpoint in {workdir} is kept')


# ----------------------------------------------------------------------------
# The whole run.
# ----------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_change: bool = False) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  Args:
    config: the run's config (see configs/default.py).
    workdir: where checkpoints, TensorBoard events and results.json go.
    allow_config_change: resume a workdir whose saved config differs.

  Returns:
    The results written to `workdir/results.json`, or, when the run was
    preempted, a dict with 'preempted': True and the step it stopped at.

  Raises:
    validation.ConfigError: a bad config value, before anything is computed.
    workdir_lib.ConfigMismatchError: the workdir belongs to another experiment.
    DivergenceError: a non-finite loss, gradient or parameter norm.
  """
  start_time = time.time()
  # Everything that can be wrong with the input, the memory it needs included,
  # is caught before any compute and before the workdir is touched.
  validation.validate_config(config)
  workdir_lib.check_config(workdir, config, allow_change=allow_config_change)
  info = datasets.base_info(config)
  checkpoints = checkpointing.Checkpointer(
      epath.Path(workdir) / 'checkpoints', config.max_checkpoints_to_keep)
  if workdir_lib.read_config(workdir) is None:
    # Without config.json, the newest checkpoint still knows its run's config.
    workdir_lib.check_config(workdir, config, allow_change=allow_config_change,
                             saved=checkpoints.saved_extras().get('config'))

  # --- Mesh: ('data', 'model') over every device of every process. ---
  mesh = sharding.create_mesh(config)
  replicated = jax.NamedSharding(mesh, jax.P())
  data_sharding = jax.NamedSharding(mesh, jax.P(sharding.DATA))
  logging.info('Process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())

  # --- Input. ---
  train_images, train_labels = input_pipeline.load_split(
      config.dataset, config.train_split, config.data_dir, config.download,
      config.get('data_file'))
  test_images, test_labels = input_pipeline.load_split(
      config.dataset, config.eval_split, config.data_dir, config.download,
      config.get('data_file'))
  val_split = None
  if config.get('val_split'):  # Model selection, as the paper does.
    val_split = input_pipeline.load_split(
        config.dataset, config.val_split, config.data_dir, config.download,
        config.get('data_file'))
  info = datasets.with_stats(info, config, train_images,
                             workdir_lib.read_dataset(workdir))
  steps_per_epoch = input_pipeline.steps_per_epoch(len(train_labels),
                                                   config.batch_size)
  num_train_steps = epochs_to_steps(config.num_epochs, steps_per_epoch)
  eval_every = epochs_to_steps(config.eval_every_epochs, steps_per_epoch)
  checkpoint_every = epochs_to_steps(config.checkpoint_every_epochs,
                                     steps_per_epoch)
  dtype = jnp.bfloat16 if config.half_precision else jnp.float32
  augment = augmentation.augment_fn(config.augment, info)
  normalize = functools.partial(augmentation.normalize, info=info, dtype=dtype)
  permutation = None
  if config.get('permute_pixels'):
    permutation = workdir_lib.pixel_permutation(
        workdir, augmentation.pixel_permutation(info.image_shape, config.seed))
    # After augmentation, which acts on the image's own geometry; at eval too.
    unpermuted_normalize = normalize
    normalize = lambda x: unpermuted_normalize(
        augmentation.permute_pixels(x, permutation))

  # --- Model and optimizer, created already sharded. ---
  model = models.create_model(
      config.model, num_classes=info.num_classes, alpha=config.alpha,
      dropout_rate=config.dropout_rate, dtype=dtype,
      local_impl=config.get('local_impl', 'auto'), **config.model_kwargs)
  key = jax.random.key(config.seed)
  init_key, train_key = jax.random.split(key)
  dummy = jnp.zeros((1, *train_images.shape[1:]), dtype)

  def init(rng):
    return model.init(rng, dummy, train=False)

  param_shapes = jax.eval_shape(init, init_key)['params']
  tx, schedule = create_optimizer(config, param_shapes, num_train_steps,
                                  steps_per_epoch)

  def init_state(rng):
    return TrainState.create(init(rng), tx)

  # Big kernels (and their optimizer state) split over the mesh; see sharding.
  state_sharding = sharding.state_shardings(
      jax.eval_shape(init_state, init_key), mesh, config)
  state = jax.jit(init_state, out_shardings=state_sharding)(init_key)
  logging.info('Mesh %s; sharded: %s', dict(mesh.shape),
               sharding.describe(state) or 'nothing')
  weights = optim.count_weights(state.params)
  logging.info('Model %s, alpha %s: %s kernel weights %s', config.model,
               config.alpha, f'{sum(weights.values()):,}', weights)

  # --- Checkpoints: resume from the latest complete one. ---
  state, history, extras = checkpoints.restore_latest(state)
  initial_step = int(state.step)
  if initial_step:
    logging.info('Resumed from step %d of %d', initial_step, num_train_steps)
  # The run has started: only now is the workdir's config recorded.
  workdir_lib.save_config(workdir, config)
  workdir_lib.write_dataset(workdir, datasets.describe(info, config))
  if permutation is not None:
    workdir_lib.save_pixel_permutation(workdir, permutation)
  # Wall time of the earlier processes of this run, up to their last save.
  earlier_seconds = extras.get('wall_seconds', 0.0)

  def saved_extras():
    return {'config': workdir_lib.flatten(config),
            'wall_seconds': earlier_seconds + time.time() - start_time}

  # --- Compiled steps. The state is donated: only one copy lives on device. ---
  step_fn = functools.partial(train_step, model=model, tx=tx, augment=augment,
                              normalize=normalize, key=train_key)
  eval_fn = functools.partial(eval_step, model=model, normalize=normalize)
  p_train_step = jax.jit(
      step_fn, in_shardings=(state_sharding, data_sharding),
      out_shardings=(state_sharding, replicated), donate_argnums=0)
  p_eval_step = jax.jit(
      eval_fn, in_shardings=(state_sharding, data_sharding),
      out_shardings=replicated)
  on_device = None
  if config.get('device_loop'):
    on_device = device_loop.DeviceLoop(
        step_fn, eval_fn, batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size, seed=config.seed,
        steps_per_dispatch=config.steps_per_dispatch,
        state_sharding=state_sharding, replicated=replicated,
        data_sharding=data_sharding)
    # From here on the splits are the copies on the accelerator.
    train_images, train_labels = on_device.put(train_images, train_labels)
    test_images, test_labels = on_device.put(test_images, test_labels)
    if val_split is not None:
      val_split = on_device.put(*val_split)
  # Counted on device: only one number per leaf comes back to the host.
  p_nonzeros = jax.jit(lambda p: jax.tree.map(jnp.count_nonzero, p),
                       out_shardings=replicated)

  def global_batch(local):
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(data_sharding, x),
        local)

  def accuracy_and_loss(state, images, labels):
    """Accuracy and mean loss over a whole split, without augmentation."""
    if on_device:
      totals = on_device.eval_totals(state, images, labels)
    else:
      totals = None
      for batch in input_pipeline.eval_batches(
          images, labels, config.eval_batch_size,
          jax.process_index(), jax.process_count()):
        out = p_eval_step(state, global_batch(batch))
        totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    return (float(totals['correct'] / totals['count']),
            float(totals['loss'] / totals['count']))

  def evaluate(state):
    accuracy, loss = accuracy_and_loss(state, test_images, test_labels)
    val = {}
    if val_split is not None:
      val_accuracy, val_loss = accuracy_and_loss(state, *val_split)
      val = {'val_accuracy': val_accuracy, 'val_loss': val_loss}
    nnz = optim.sum_per_layer(jax.device_get(p_nonzeros(state.params)), int,
                              optim.weight_mask(state.params))
    return {'test_accuracy': accuracy, 'test_loss': loss, **val,
            'nnz': nnz, **first_layer_locality(state.params)}

  def first_layer_locality(params):
    """{'locality': summary} for models whose first layer can be measured."""
    name = models.FIRST_LAYER.get(config.model)
    if name is None:
      return {}
    kernel = params[name]['kernel']
    if permutation is not None and kernel.ndim != 2:
      return {}  # Patches of permuted pixels have no image geometry to measure.
    # Measured on the kernel's devices, as sharded; only per-unit numbers come
    # to the host.
    return {'locality': locality.summarize(
        kernel, info.image_shape, pixel_permutation=permutation)}

  def train_block(state, step):
    """Steps from `step` on: one on the host path, a block on the device.

    Returns:
      (state, metrics, steps done).
    """
    if on_device:
      end = device_loop.block_end(
          step, num_train_steps, on_device.max_steps,
          (config.log_every_steps, eval_every, checkpoint_every))
      return *on_device.train(state, train_images, train_labels,
                              end - step), end
    indices = input_pipeline.train_indices(
        len(train_labels), config.batch_size, config.seed, step,
        jax.process_index(), jax.process_count())
    batch = input_pipeline.train_batch(train_images, train_labels, indices)
    return *p_train_step(state, global_batch(batch)), step + 1

  # --- Metrics and progress. ---
  writer, report_progress = writers.create(
      workdir, num_train_steps, just_logging=jax.process_index() > 0)
  if initial_step == 0:
    writer.write_hparams(workdir_lib.flatten(config))

  # --- The loop. ---
  logging.info('Training %d steps (%d per epoch) from step %d',
               num_train_steps, steps_per_epoch, initial_step)
  pending = []  # Step metrics not yet checked for finiteness.
  last_eval = None
  done = initial_step
  # Leaving the block (normally, preempted or diverged) waits for the save in
  # flight, so the last good checkpoint is never left half-written.
  with checkpointing.PreemptionGuard() as guard, checkpoints:
    while done < num_train_steps:
      state, metrics, done = train_block(state, done)
      pending.append(metrics)
      report_progress(done)

      is_last = done == num_train_steps
      log_now = done % config.log_every_steps == 0 or is_last
      eval_now = done % eval_every == 0 or is_last
      save_now = done % checkpoint_every == 0 or is_last
      preempted = guard.triggered or checkpoints.reached_preemption(done)
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
          last_eval = evaluate(state)
        eval_seconds = time.time() - eval_start
        writer.write_scalars(done, {
            'test_accuracy': last_eval['test_accuracy'],
            'test_loss': last_eval['test_loss'],
            **{k: last_eval[k] for k in ('val_accuracy', 'val_loss')
               if k in last_eval},
            **{f'nnz/{k}': v for k, v in last_eval['nnz'].items()},
            **{f'locality/{k}': v
               for k, v in last_eval.get('locality', {}).items()
               if k.endswith('/median')}})
        # The best validation step is saved and kept whatever max_to_keep.
        is_best = selection.improves(history, last_eval)
        # Epoch and wall time place the eval on a learning curve; with the
        # eval's own time they give the training throughput between evals
        # (launch/full_scale.py reports it).
        history.append({'step': done, 'epoch': done / steps_per_epoch,
                        'wall_seconds': saved_extras()['wall_seconds'],
                        'eval_seconds': eval_seconds, **last_eval})
        logging.info('Step %d: test accuracy %.4f, non-zeros %s', done,
                     last_eval['test_accuracy'], last_eval['nnz'])
      if save_now or preempted or is_best:
        with report_progress.timed('checkpoint'):
          checkpoints.save(done, state, history, saved_extras(), best=is_best)
      if preempted and not is_last:
        # Leaving the block waits for this save to finish.
        writer.flush()
        logging.warning('Preempted at step %d of %d: checkpoint saved in %s; '
                        'run the same command to resume.', done,
                        num_train_steps, workdir)
        return {'preempted': True, 'step': done}

  writer.flush()
  if last_eval is None:  # Resumed after the final step: evaluate once more.
    last_eval = evaluate(state)
  # The training error of the final network, as the MDL bounds need it: the
  # whole train split, unaugmented, like the test split.
  train_accuracy, train_loss = accuracy_and_loss(state, train_images,
                                                 train_labels)
  results = {
      'test_accuracy': last_eval['test_accuracy'],
      'test_loss': last_eval['test_loss'],
      **selection.results(history),
      'train_accuracy': train_accuracy,
      'train_loss': train_loss,
      'train_examples': len(train_labels),
      'nnz': last_eval['nnz'],
      'locality': last_eval.get('locality'),
      'weights': weights,
      'steps': int(state.step),
      'epochs': int(state.step) / steps_per_epoch,
      # Over every process of the run (each up to its last save), and this one.
      'wall_seconds': saved_extras()['wall_seconds'],
      'wall_seconds_last': time.time() - start_time,
      'history': history,
      'config': json.loads(config.to_json_best_effort()),
      'dataset': datasets.describe(info, config),
  }
  workdir_lib.write_results(workdir, results)
  logging.info('Test accuracy %.4f after %d steps; non-zeros / weights: %s',
               results['test_accuracy'], results['steps'],
               {k: f'{results["nnz"][k]:,} / {weights[k]:,}' for k in weights})
  return results
