r"""The full-size training step, timed, profiled, and set against its floor.

  python -m benchmarks.profile_step --out=/tmp/profile \
      --data_file=local_data/cifar10_jpeg.npz

Builds Table 2's run as the campaign trains it (`configs/sfc_beta_lasso.py`
with the paper's recipe, `launch/recipe.py`: S-FC at alpha 150 with
beta-LASSO, batch 512, Fast AutoAugment then Cutout, bf16 compute with
float32 weights, the device loop) from the pieces of `beta_lasso.train`,
then:

1. measures the device's bf16 matmul rate and its device-to-device copy
   bandwidth, and from them the step's floor: its matmul FLOPs (4 per layer-1
   weight, 6 per other weight, per image) at that rate, and the bytes it must
   move (the float32 weights read and written and their gradients read by
   Algorithm 1, the bf16 copy cast for the forward pass) at that bandwidth;
2. times blocks of training steps, as training runs them (the weights cast
   for the forward pass in the update, `training.precast`) and with the
   forward pass casting them, alternately; then one eval (test and
   validation accuracy, non-zeros, layer-1 locality) and one layer-1
   locality measure alone;
3. records `--profile_steps` steps of each way under `jax.profiler.trace`
   into `OUT/trace/cast_in_update/` and `OUT/trace/forward_cast/` (read them
   with TensorBoard's profile plugin or xprof), before the eval is timed;
4. last, writes each way's optimized HLO into `OUT/trace/hlo/` and says in
   `cast_fused` whether one fusion writes layer 1's kernel in float32 and
   bfloat16 (the update and the cast in one pass).

`OUT/profile.json` holds every number; the last line printed is its summary.
`--alpha=2 --profile_steps=3` runs it on a laptop CPU in under a minute.
"""

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# pylint: disable=g-import-not-at-top,wrong-import-position
from beta_lasso import models
from beta_lasso import pytree
from beta_lasso import train
from configs import sfc_beta_lasso
from launch import full_scale
from launch import recipe

# pylint: enable=g-import-not-at-top,wrong-import-position


def _best_seconds(fn, reps: int) -> float:
  """The fastest of `reps` calls of `fn`, which must block."""
  best = float('inf')
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def matmul_rate(dtype=jnp.bfloat16, reps: int = 5) -> float:
  """FLOP/s of the best of `reps` square matmuls of `dtype`."""
  size = 1024 if jax.default_backend() == 'cpu' else 8192
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  mm = jax.jit(jnp.matmul)
  mm(a, a).block_until_ready()
  return 2 * size**3 / _best_seconds(lambda: mm(a, a).block_until_ready(), reps)


def copy_bandwidth(reps: int = 5) -> float:
  """Bytes/s read plus written by an elementwise pass over float32 data."""
  n = 2**22 if jax.default_backend() == 'cpu' else 2**28  # 1 GiB on device.
  x = jnp.ones((n,), jnp.float32)
  bump = jax.jit(lambda v: v + 1.0, donate_argnums=0)
  holder = [bump(x)]

  def run():
    holder[0] = bump(holder[0])
    holder[0].block_until_ready()

  run()
  return 2 * 4 * n / _best_seconds(run, reps)


def step_floor(
    weights: dict[str, int],
    first_layer: str,
    batch_size: int,
    flops_per_s: float,
    bytes_per_s: float,
) -> dict[str, float]:
  """The step's matmul time and memory time at the measured rates.

  Bytes a weight, a step: Algorithm 1 reads the float32 weight (4) and its
  gradient (4) and writes the weight (4); the bf16 forward and backward read
  a bf16 copy cast from it (4 read, 2 written, 2 read again). Activations
  are small beside 256M weights at batch 512 and are left out.
  """
  total = sum(weights.values())
  flops = batch_size * full_scale.dense_flops_per_image(weights, first_layer)
  moved = total * (12 + 8)
  return {
      'flops': flops,
      'bytes': moved,
      'matmul_ms': 1e3 * flops / flops_per_s,
      'memory_ms': 1e3 * moved / bytes_per_s,
      'floor_ms': 1e3 * (flops / flops_per_s + moved / bytes_per_s),
  }


def fuses_cast(hlo: str, shape: tuple[int, ...]) -> bool:
  """Whether one fusion of `hlo` writes a kernel of `shape` in float32 and
  in bfloat16: the update and the cast for the next forward pass in one
  pass (training.precast)."""
  dims = ','.join(str(d) for d in shape)
  for line in hlo.splitlines():
    if ' fusion(' not in line:
      continue
    outputs = line.split(' fusion(')[0]
    if f'f32[{dims}]' in outputs and f'bf16[{dims}]' in outputs:
      return True
  return False


def save(out: pathlib.Path, result: dict):
  """Writes what is measured so far: a window that ends early keeps it."""
  (out / 'profile.json').write_text(json.dumps(result, indent=1))


def paper_config(args):
  """Table 2's config with the paper's recipe, as the campaign trains it."""
  config = sfc_beta_lasso.get_config()
  config.update(
      recipe.recipe(**({'augment': args.augment} if args.augment else {}))
  )
  config.alpha = args.alpha
  config.batch_size = args.batch_size
  config.steps_per_dispatch = args.steps_per_dispatch
  if args.data_file:
    config.data_file = args.data_file
  return config


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', required=True, help='folder for the results')
  parser.add_argument('--alpha', type=int, default=150)
  parser.add_argument('--batch_size', type=int, default=512)
  parser.add_argument(
      '--data_file',
      default=None,
      help='a .npz of beta_lasso.data.cache instead of TFDS',
  )
  parser.add_argument(
      '--augment',
      default=None,
      help="the augmentation (default: the paper's recipe, launch/recipe.py)",
  )
  parser.add_argument('--steps_per_dispatch', type=int, default=100)
  parser.add_argument('--timed_blocks', type=int, default=3)
  parser.add_argument('--profile_steps', type=int, default=20)
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  device = jax.devices()[0]
  result = {
      'device': device.device_kind,
      'backend': jax.default_backend(),
      'jax': jax.__version__,
      'alpha': args.alpha,
      'batch_size': args.batch_size,
  }
  result['bf16_matmul_flops_per_s'] = matmul_rate()
  result['copy_bytes_per_s'] = copy_bandwidth()
  print(
      f'bf16 matmul {result["bf16_matmul_flops_per_s"] / 1e12:.1f} TFLOP/s, '
      f'copy {result["copy_bytes_per_s"] / 1e9:.0f} GB/s',
      flush=True,
  )

  config = paper_config(args)
  result['augment'] = config.augment
  pieces = train.build(config, cast_in_update=True)
  # What training runs (the weights cast in the update, `training.precast`)
  # and the reference whose forward pass casts them, timed side by side.
  variants = {
      'cast_in_update': pieces.steps,
      'forward_cast': train.compile_steps(
          config,
          pieces.model,
          pieces.mesh,
          pieces.sharded,
          pieces.augment,
          pieces.normalize,
          pieces.info.image_shape,
          pieces.dtype,
          cast_in_update=False,
      ),
  }
  steps, placed, durations = pieces.steps, pieces.splits, pieces.durations
  state = pieces.sharded.state
  weights = pytree.count_weights(state.params)
  first_layer = models.first_layer_name(config.model)
  result['weights'] = weights
  result['floor'] = step_floor(
      weights,
      first_layer,
      args.batch_size,
      result['bf16_matmul_flops_per_s'],
      result['copy_bytes_per_s'],
  )
  save(out, result)

  block = steps.on_device.max_steps

  def run_block(variant, state):
    state, metrics = variants[variant].on_device.train(
        state, *placed.train, block
    )
    jax.block_until_ready((state, metrics))
    return state

  times = {name: [] for name in variants}
  for name in variants:
    start = time.perf_counter()
    state = run_block(name, state)  # Compiles.
    result[f'compile_and_first_block_s_{name}'] = time.perf_counter() - start
  for _ in range(args.timed_blocks):  # Alternating, so drifts hit both.
    for name in variants:
      start = time.perf_counter()
      state = run_block(name, state)
      times[name].append(time.perf_counter() - start)
  for name in variants:
    result[f'step_ms_{name}'] = 1e3 * min(times[name]) / block
  step_ms = result['step_ms'] = result['step_ms_cast_in_update']
  result['epoch_s'] = step_ms * durations.steps_per_epoch / 1e3
  result['mfu_measured'] = (
      result['floor']['flops']
      / (step_ms / 1e3)
      / result['bf16_matmul_flops_per_s']
  )
  vendor = full_scale.vendor_peak(device.device_kind)
  if vendor:
    result['mfu_vendor'] = result['floor']['flops'] / (step_ms / 1e3) / vendor
  save(out, result)

  # The profile: the same blocks, `profile_steps` steps of each variant,
  # before the evals, so that a window cut short still brings it back.
  trace_dir = out / 'trace'
  for name in variants:
    with jax.profiler.trace(str(trace_dir / name)):
      left = args.profile_steps
      while left > 0:
        n = min(block, left)
        state, metrics = variants[name].on_device.train(state, *placed.train, n)
        jax.block_until_ready((state, metrics))
        left -= n
  result['trace_files'] = sorted(
      str(p.relative_to(out)) for p in trace_dir.rglob('*') if p.is_file()
  )
  save(out, result)

  evaluator = pieces.evaluator
  evaluator(state, placed.test, placed.val)  # Compiles.
  result['eval_s'] = _best_seconds(
      lambda: evaluator(state, placed.test, placed.val), 2
  )
  result['locality_s'] = _best_seconds(
      lambda: evaluator.locality(state.params), 2
  )
  save(out, result)

  # Last, as it may compile again: the programs XLA made of each way, and
  # whether the update and the cast became one pass over layer 1's kernel.
  hlo_dir = trace_dir / 'hlo'
  hlo_dir.mkdir(parents=True, exist_ok=True)
  kernel_shape = state.params[first_layer]['kernel'].shape
  result['cast_fused'] = {}
  for name, variant in variants.items():
    hlo = variant.on_device.compiled_text(state, *placed.train)
    (hlo_dir / f'{name}.txt').write_text(hlo)
    result['cast_fused'][name] = fuses_cast(hlo, kernel_shape)
  save(out, result)
  floor = result['floor']
  print(
      json.dumps(
          {
              'device': result['device'],
              'step_ms': round(step_ms, 3),
              'step_ms_forward_cast': round(result['step_ms_forward_cast'], 3),
              'floor_ms': round(floor['floor_ms'], 3),
              'matmul_ms': round(floor['matmul_ms'], 3),
              'memory_ms': round(floor['memory_ms'], 3),
              'mfu_measured': round(result['mfu_measured'], 3),
              'epoch_s': round(result['epoch_s'], 3),
              'eval_s': round(result['eval_s'], 3),
              'locality_s': round(result['locality_s'], 3),
              'cast_fused': result['cast_fused'],
          }
      )
  )
  return result


if __name__ == '__main__':
  main()
