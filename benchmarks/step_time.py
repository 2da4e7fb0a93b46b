r"""Seconds per training step of every config's `:cpu` variant.

  python benchmarks/step_time.py [--configs=sconv,resnet18:15] [--steps=20]
  python benchmarks/step_time.py --configs=sfc --alpha=1 --loop --steps=400

A config `name:arg` runs `configs/name.py:arg,cpu` (e.g. resnet18:15 is
ResNet18 with 15x15 kernels at the cpu size).

Each config runs in its own subprocess (so peak memory is per model) with
synthetic uint8 images of CIFAR's shape: this measures the compiled update
step (augmentation, forward, backward, optimizer) and nothing of the input
pipeline. Prints one row per config: ms/step, images/s, an estimate of an
epoch of 50,000 images, the compile time and the peak resident memory.

With --loop, each config also trains `--steps` steps through
`train.train_and_evaluate` on the real CIFAR-10 train split (TFDS_DATA_DIR, or
--data_file), once on the host path and once with `config.device_loop`, and
prints the steps/s of the bare step beside those of each training loop. A
loop's rate is taken between its first and its last train-metrics log, where
the loop waits for the device anyway: it leaves out compilation, the final
evaluation and the checkpoint.
"""
import argparse
import json
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ('sconv', 'slocal', 'sfc', 'sfc_beta_lasso', 'dconv', 'dlocal', 'dfc',
           '3fc', 'resnet18', 'resnet18:15')


def _loop_rate(config, steps: int, device_loop: bool) -> float:
  """Steps/s of `steps` steps of train_and_evaluate's loop on real data."""
  from beta_lasso import train  # pylint: disable=g-import-not-at-top
  from beta_lasso import writers  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  steps_per_epoch = 50_000 // config.batch_size
  config.num_epochs = steps / steps_per_epoch
  # One eval and one checkpoint, after the last step.
  config.eval_every_epochs = config.checkpoint_every_epochs = config.num_epochs
  config.device_loop = device_loop
  logged = {}  # Step -> when its train metrics were written.
  create = writers.create

  def create_timed(*args, **kwargs):
    writer, report_progress = create(*args, **kwargs)
    write_scalars = writer.write_scalars

    def timed(step, scalars):
      if 'train_loss' in scalars:
        logged[step] = time.perf_counter()
      write_scalars(step, scalars)

    writer.write_scalars = timed
    return writer, report_progress

  workdir = tempfile.mkdtemp()
  writers.create = create_timed
  try:
    train.train_and_evaluate(config, workdir)
  finally:
    writers.create = create
    shutil.rmtree(workdir)
  first, last = min(logged), max(logged)
  return (last - first) / (logged[last] - logged[first])


def measure(name: str, steps: int, alpha: int | None = None,
            loop: bool = False, data_file: str | None = None) -> dict:
  """Times `steps` train steps of configs/<name>.py:cpu in this process."""
  sys.path.insert(0, str(REPO))
  import importlib  # pylint: disable=g-import-not-at-top
  import functools  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from beta_lasso import augmentation  # pylint: disable=g-import-not-at-top
  from beta_lasso import input_pipeline  # pylint: disable=g-import-not-at-top
  from beta_lasso import models  # pylint: disable=g-import-not-at-top
  from beta_lasso import train  # pylint: disable=g-import-not-at-top

  module, _, arg = name.partition(':')
  config = importlib.import_module(f'configs.{module}').get_config(
      f'{arg},cpu' if arg else 'cpu')
  if alpha:
    config.alpha = alpha
  if data_file:
    config.data_file = data_file
  info = input_pipeline.DATASETS[config.dataset]
  model = models.create_model(config.model, num_classes=info.num_classes,
                              alpha=config.alpha, **config.model_kwargs)
  images = np.random.default_rng(0).integers(
      0, 256, (config.batch_size, *info.image_shape), dtype=np.uint8)
  labels = np.arange(config.batch_size, dtype=np.int32) % info.num_classes
  batch = {'image': jnp.asarray(images), 'label': jnp.asarray(labels)}
  variables = model.init(jax.random.key(0), jnp.zeros((1, *info.image_shape)),
                         train=False)
  steps_per_epoch = 50_000 // config.batch_size
  tx, _ = train.create_optimizer(config, variables['params'], 10_000,
                                 steps_per_epoch)
  state = train.TrainState(
      step=jnp.zeros((), jnp.int32), params=variables['params'],
      batch_stats=variables.get('batch_stats', {}),
      opt_state=tx.init(variables['params']))
  step = jax.jit(functools.partial(
      train.train_step, model=model, tx=tx,
      augment=augmentation.augment_fn(config.augment, info),
      normalize=functools.partial(augmentation.normalize, info=info),
      key=jax.random.key(1)), donate_argnums=0)
  start = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  per_step = (time.perf_counter() - start) / steps
  loops = {}
  if loop:
    del state, metrics, batch  # Only the loop's state on the device.
    loops = {'host_loop_steps_per_s': _loop_rate(config, steps, False),
             'device_loop_steps_per_s': _loop_rate(config, steps, True)}
  return {
      'config': name, 'ms_per_step': 1000 * per_step,
      'images_per_s': config.batch_size / per_step,
      'epoch_s': steps_per_epoch * per_step, 'compile_s': compile_s,
      'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      'weights': sum(models.kernel_counts(
          model, (1, *info.image_shape)).values()),
      **loops,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--configs', default=','.join(CONFIGS))
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--alpha', type=int, help='overrides every config\'s')
  parser.add_argument('--loop', action='store_true',
                      help='also time the host and the device training loops')
  parser.add_argument('--data_file', help='config.data_file for --loop')
  parser.add_argument('--one', help=argparse.SUPPRESS)  # Subprocess mode.
  args = parser.parse_args()
  if args.one:
    print(json.dumps(measure(args.one, args.steps, args.alpha, args.loop,
                             args.data_file)))
    return
  loop_header = f' {"step/s":>7} {"host/s":>7} {"device/s":>8}' * args.loop
  print(f'{"config":>15} {"weights":>11} {"ms/step":>8} {"img/s":>7} '
        f'{"epoch s":>8} {"compile s":>9} {"peak GB":>7}{loop_header}')
  for name in args.configs.split(','):
    out = subprocess.run(
        [sys.executable, __file__, f'--one={name}', f'--steps={args.steps}',
         *[f'--{flag}={getattr(args, flag)}' for flag in ('alpha', 'data_file')
           if getattr(args, flag)], *['--loop'] * args.loop],
        capture_output=True, text=True)
    if out.returncode:
      sys.exit(f'{name} failed:\n{out.stderr[-3000:]}')
    r = json.loads(out.stdout.strip().splitlines()[-1])
    loops = (f' {1000 / r["ms_per_step"]:>7.1f} '
             f'{r["host_loop_steps_per_s"]:>7.1f} '
             f'{r["device_loop_steps_per_s"]:>8.1f}' if args.loop else '')
    print(f'{name:>15} {r["weights"]:>11,} {r["ms_per_step"]:>8.1f} '
          f'{r["images_per_s"]:>7.0f} {r["epoch_s"]:>8.1f} '
          f'{r["compile_s"]:>9.1f} {r["peak_rss_gb"]:>7.2f}{loops}', flush=True)


if __name__ == '__main__':
  main()
