r"""Seconds per training step of every config's `:cpu` variant.

  python benchmarks/step_time.py [--configs=sconv,resnet18:15] [--steps=20]
      [--augment=crop_flip,fast_autoaugment]

A config `name:arg` runs `configs/name.py:arg,cpu` (e.g. resnet18:15 is
ResNet18 with 15x15 kernels at the cpu size).

Each config runs in its own subprocess (so peak memory is per model) with
synthetic uint8 images of CIFAR's shape: this measures the compiled update
step (augmentation, forward, backward, optimizer) and nothing of the input
pipeline. `--augment` times each config with each of the named augmentations
(default: the config's own). Prints one row per config and augmentation:
ms/step, CPU ms/step (all threads; on a shared machine a steadier measure of
the work than wall time), images/s, an estimate of an epoch of 50,000
images, the compile time and the peak resident memory.
"""
import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ('sconv', 'slocal', 'sfc', 'sfc_beta_lasso', 'dconv', 'dlocal', 'dfc',
           '3fc', 'resnet18', 'resnet18:15')


def measure(name: str, steps: int, augment: str = '') -> dict:
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
  config.augment = augment or config.augment
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
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  per_step = (time.perf_counter() - start) / steps
  cpu_per_step = (time.process_time() - cpu_start) / steps
  return {
      'config': name, 'augment': config.augment, 'ms_per_step': 1000 * per_step,
      'cpu_ms_per_step': 1000 * cpu_per_step,
      'images_per_s': config.batch_size / per_step,
      'epoch_s': steps_per_epoch * per_step, 'compile_s': compile_s,
      'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      'weights': sum(models.kernel_counts(
          model, (1, *info.image_shape)).values()),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--configs', default=','.join(CONFIGS))
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--augment', default='')
  parser.add_argument('--one', help=argparse.SUPPRESS)  # Subprocess mode.
  args = parser.parse_args()
  if args.one:
    print(json.dumps(measure(args.one, args.steps, args.augment)))
    return
  print(f'{"config":>15} {"augment":>16} {"weights":>11} {"ms/step":>8} '
        f'{"cpu ms":>7} {"img/s":>7} {"epoch s":>8} {"compile s":>9} {"peak GB":>7}')
  for name in args.configs.split(','):
    for augment in args.augment.split(','):
      out = subprocess.run(
          [sys.executable, __file__, f'--one={name}', f'--steps={args.steps}',
           f'--augment={augment}'],
          check=True, capture_output=True, text=True).stdout
      r = json.loads(out.strip().splitlines()[-1])
      print(f'{name:>15} {r["augment"]:>16} {r["weights"]:>11,} '
            f'{r["ms_per_step"]:>8.1f} {r["cpu_ms_per_step"]:>7.0f} '
            f'{r["images_per_s"]:>7.0f} {r["epoch_s"]:>8.1f} '
            f'{r["compile_s"]:>9.1f} {r["peak_rss_gb"]:>7.2f}', flush=True)


if __name__ == '__main__':
  main()
