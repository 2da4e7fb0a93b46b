r"""Training-step throughput on this backend, side by side with PyTorch.

  python -m benchmarks.train_step --models=sconv:16,slocal,sfc --alpha=8 \
      --batch_size=256 --local_impls=conv_local,patches,masked_dense

`--models` names models of `beta_lasso.models` (`name:alpha` overrides
`--alpha` for one of them). What is printed:

- **matmul peak**: the rate of a float32 JAX matmul on this backend, the
  yardstick for every FLOP/s share; timed again in every round of the steps,
  and each share is the median over rounds against that round's matmul.
- **step**, per model (and per locally connected implementation in
  `--local_impls` for models with local layers): images/s of the whole
  compiled training step (`train.train_step`: augmentation `--augment`,
  forward, backward, SGD with weight decay), the same network's step in
  PyTorch (`benchmarks/torch_models.py`, S family only) and the ratio,
  achieved FLOP/s and its share of the matmul peak, compile time, and XLA's
  memory for the step (arguments, outputs and temporaries). The JAX and
  PyTorch steps alternate in rounds in this one process, and the medians over
  rounds are printed, so load from other work moves both alike.
  FLOPs are XLA's count of the step built with the 'patches' local layer
  (no multiply-add wasted on padding or zeros): the work of the step, the
  same whatever implementation runs it.
- **input**: images/s of the host's part (batch indices and gather) and of
  each augmentation on the device (`augmentation.augment_fn` + normalize).
- **loop** (`--loop_model`): images/s of `train.train_and_evaluate` on a
  synthetic data file, on the host path and with `config.device_loop`,
  against its bare step: the loop's cost is the
  difference of two runs of different lengths (compile, evaluation and
  checkpoints cancel), its host overhead the gap to the bare step.

Threads: PyTorch gets `torch.set_num_threads` equal to the CPUs this process
may run on, the size of XLA's CPU thread pool. Needs jax, flax, optax,
orbax-checkpoint and ml_collections (pure Python); no TensorFlow, TFDS or
clu. torch is optional (`benchmarks/requirements.txt`): without it the
PyTorch columns are empty. Pass `--json=FILE` to keep every number.
"""

import argparse
import functools
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

# Triton, which torch's default CUDA wheels ship and torch imports when its
# first optimizer is built, crashes the process (SIGSEGV in
# `triton._C.libtriton`) when it loads after TensorFlow's libraries, as it
# would here: `beta_lasso.train` loads TensorFlow (through clu). Loaded first,
# both work.
if importlib.util.find_spec('triton') is not None:
  import triton  # pylint: disable=unused-import  # noqa: F401

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# pylint: disable=g-import-not-at-top,wrong-import-position
from beta_lasso import models
from beta_lasso import train
from beta_lasso.data import augmentation
from beta_lasso.data import data_file as data_file_lib
from beta_lasso.data import input_pipeline
from beta_lasso.models import layers
from beta_lasso.models import local
from configs import default

# pylint: enable=g-import-not-at-top,wrong-import-position

torch = torch_models = None  # Imported by main() where installed.

# The models with locally connected layers, whose implementation is a choice.
_LOCAL_MODELS = tuple(
    name for name, spec in models.MODELS.items() if spec.layer_type == 'local'
)


def parse_models(spec: str, alpha: int) -> list[tuple[str, int]]:
  """'sconv:16,slocal' -> [('sconv', 16), ('slocal', alpha)].

  Raises:
    ValueError: an unknown model or a bad alpha.
  """
  out = []
  for item in filter(None, (s.strip() for s in spec.split(','))):
    name, _, arg = item.partition(':')
    if name not in models.MODELS:
      raise ValueError(
          f'model {name!r} is not valid; choose from: '
          f'{", ".join(models.MODELS)}'
      )
    if arg and not (arg.isdigit() and int(arg) > 0):
      raise ValueError(f'alpha {arg!r} of {name} is not a positive integer')
    out.append((name, int(arg) if arg else alpha))
  return out


def parse_impls(spec: str) -> list[str]:
  """'patches,conv_local' -> a list of `local.IMPLEMENTATIONS`."""
  impls = [s.strip() for s in spec.split(',') if s.strip()]
  for impl in impls:
    local.resolve_impl(impl)  # Raises for a bad name.
  return impls


def machine() -> dict:
  """What the numbers were measured on."""
  cpu = platform.processor()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(
          l.split(':', 1)[1].strip() for l in f if l.startswith('model name')
      )
  except (OSError, StopIteration):
    pass
  return {
      'backend': jax.default_backend(),
      'device': jax.devices()[0].device_kind,
      'cpus': _threads(),
      'cpu_model': cpu,
      'jax': jax.__version__,
      'torch': torch.__version__ if torch else None,
      'date': time.strftime('%Y-%m-%d %H:%M'),
      'load_average': os.getloadavg(),
  }


def _threads() -> int:
  return len(os.sched_getaffinity(0))


def _timed(fn, reps: int) -> list[float]:
  """Seconds of each of `reps` calls of `fn` (which must block)."""
  out = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    out.append(time.perf_counter() - start)
  return out


def matmul_peak(reps: int = 3, dtype=jnp.float32) -> float:
  """Best FLOP/s of `reps` square matmuls of `dtype` in JAX on this backend."""
  size = 2048 if jax.default_backend() == 'cpu' else 8192
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  mm = jax.jit(jnp.matmul)
  mm(a, a).block_until_ready()
  return 2 * size**3 / min(_timed(lambda: mm(a, a).block_until_ready(), reps))


# ----------------------------------------------------------------------------
# The JAX step, exactly as training builds it.
# ----------------------------------------------------------------------------
def make_config(
    name: str, alpha: int, batch_size: int, augment: str, local_impl: str
):
  config = default.get_config()
  config.update(
      model=name,
      alpha=alpha,
      batch_size=batch_size,
      augment=augment,
      local_impl=local_impl,
  )
  return config


def jax_model(config):
  """(model, dataset info) of `config`, as training builds them."""
  info = input_pipeline.DATASETS[config.dataset]
  return (
      models.create_model(
          config.model,
          num_classes=info.num_classes,
          alpha=config.alpha,
          local_impl=config.local_impl,
          **config.model_kwargs,
      ),
      info,
  )


def jax_step(config, steps_per_epoch: int = 195):
  """(jitted step, state, device batch) of `config` on synthetic CIFAR-10."""
  model, info = jax_model(config)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, *info.image_shape))
  )
  tx, _ = train.create_optimizer(
      config, variables['params'], 10_000, steps_per_epoch
  )
  state = train.TrainState.create(variables, tx)
  rng = np.random.default_rng(0)
  batch = {
      'image': jnp.asarray(
          rng.integers(
              0, 256, (config.batch_size, *info.image_shape), dtype=np.uint8
          )
      ),
      'label': jnp.asarray(
          np.arange(config.batch_size, dtype=np.int32) % info.num_classes
      ),
  }
  step = jax.jit(
      functools.partial(
          train.train_step,
          model=model,
          tx=tx,
          augment=augmentation.augment_fn(config.augment, info),
          normalize=functools.partial(augmentation.normalize, info=info),
          key=jax.random.key(1),
      ),
      donate_argnums=0,
  )
  return step, state, batch


def step_flops(config) -> float:
  """XLA's FLOP count of one step with the 'patches' local layer."""
  step, state, batch = jax_step(_with_impl(config, 'patches'))
  lowered = step.lower(state, batch)
  # The lowered program answers on CPU; on GPU only the compiled one does.
  for analyze in (
      lowered.cost_analysis,
      lambda: lowered.compile().cost_analysis(),
  ):
    cost = analyze()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    if cost and 'flops' in cost:
      return float(cost['flops'])
  return float('nan')


def _with_impl(config, impl: str):
  config = config.copy_and_resolve_references()
  config.local_impl = impl
  return config


class JaxStep:
  """A compiled step that runs `steps` steps a call, blocking at the end."""

  def __init__(self, config):
    step, self.state, self.batch = jax_step(config)
    start = time.perf_counter()
    self.step = step.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - start
    mem = self.step.memory_analysis()
    self.memory_bytes = (
        None
        if mem is None
        else (
            mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes
        )
    )
    self(1)  # First run: allocations, thread pools.

  def __call__(self, steps: int):
    for _ in range(steps):
      self.state, metrics = self.step(self.state, self.batch)
    jax.block_until_ready(metrics)


class JaxLayer1:
  """The first layer of `config`'s model alone: forward and kernel gradient.

  Timed beside `torch_models.TorchLayer1`, it tells how much of a step's gap to PyTorch is
  the backend's kernel for this one layer (XLA's dot or convolution against
  MKL's or oneDNN's) rather than anything around it. Batch 256 of float32
  images; the input needs no gradient, as in the step.
  """

  def __init__(self, config):
    model, info = jax_model(config)
    multiplier, kernel_size, strides = model.conv_layers[0]
    layer = layers.make_layer(
        model.layer_type,
        multiplier * model.alpha,
        kernel_size,
        strides,
        dtype=None,
        local_impl=config.local_impl,
        name='layer1',
    )
    key = jax.random.key(0)
    self.images = jax.random.normal(key, (config.batch_size, *info.image_shape))
    params = layer.init(key, self.images[:1])
    grad_out = jax.random.normal(
        key, jax.eval_shape(layer.apply, params, self.images).shape
    )
    # d<layer(x), grad_out>/d kernel is the kernel gradient of the step; the
    # value keeps the forward pass, which the gradient of a linear function
    # alone would not need.
    self.fn = jax.jit(
        jax.value_and_grad(lambda p, x: jnp.vdot(layer.apply(p, x), grad_out))
    )
    self.params = params
    self(1)

  def __call__(self, reps: int):
    for _ in range(reps):
      out = self.fn(self.params, self.images)
    jax.block_until_ready(out)


def measure_steps(args) -> list[dict]:
  """One row per (model, local implementation), JAX and PyTorch alternating."""
  rows = []
  for name, alpha in parse_models(args.models, args.alpha):
    impls = parse_impls(args.local_impls) if name in _LOCAL_MODELS else ['auto']
    configs = [
        make_config(name, alpha, args.batch_size, args.augment, impl)
        for impl in impls
    ]
    flops = step_flops(configs[0])
    jax_steps = [JaxStep(c) for c in configs]
    jax_layers = [
        JaxLayer1(c) if models.spec(name).layer_type else None for c in configs
    ]
    torch_step = torch_layer = None
    if torch and name in torch_models.MODELS:
      device = (
          'cuda'
          if jax.default_backend() == 'gpu' and torch.cuda.is_available()
          else 'cpu'
      )
      torch_step = torch_models.TorchStep(name, alpha, args.batch_size, device)
      torch_layer = torch_models.TorchLayer1(
          name, alpha, args.batch_size, device
      )
    times = {impl: [] for impl in impls}
    layer_times = {impl: [] for impl in impls}
    torch_times, torch_layer_times, peaks = [], [], []
    for _ in range(args.rounds):
      peaks.append(matmul_peak(1))
      for impl, step, layer in zip(impls, jax_steps, jax_layers):
        times[impl] += _timed(lambda: step(args.steps), 1)
        if layer:
          layer_times[impl] += _timed(lambda: layer(args.steps), 1)
      if torch_step:
        torch_times += _timed(lambda: torch_step(args.steps), 1)
        torch_layer_times += _timed(lambda: torch_layer(args.steps), 1)
    for impl, step in zip(impls, jax_steps):
      per_step = statistics.median(times[impl]) / args.steps
      row = {
          'model': name,
          'alpha': alpha,
          'local_impl': impl,
          'images_per_s': args.batch_size / per_step,
          'flops_per_step': flops,
          'flop_per_s': flops / per_step,
          # Against the matmul rate of the same rounds (same load).
          'matmul_flop_per_s': statistics.median(peaks),
          'peak_share': statistics.median(
              flops / (t / args.steps) / p for t, p in zip(times[impl], peaks)
          ),
          'compile_s': step.compile_s,
          'memory_mb': _mb(step.memory_bytes),
      }
      if layer_times[impl]:
        row['layer1_ms'] = (
            1e3 * statistics.median(layer_times[impl]) / args.steps
        )
      if torch_step:
        # Ratio per round, then the median: both sides saw that round's load.
        row.update(
            torch_images_per_s=args.batch_size
            * args.steps
            / statistics.median(torch_times),
            torch_memory_mb=_mb(torch_step.memory_bytes),
            ratio=_median_ratio(torch_times, times[impl]),
            torch_layer1_ms=1e3
            * statistics.median(torch_layer_times)
            / args.steps,
            layer1_ratio=_median_ratio(torch_layer_times, layer_times[impl]),
        )
      rows.append(row)
      _print_step(row)
  return rows


def _median_ratio(torch_times, jax_times) -> float:
  """Median over rounds of PyTorch's time over JAX's (> 1: JAX is faster)."""
  return statistics.median(t / j for t, j in zip(torch_times, jax_times))


def _mb(n):
  return None if n is None else n / 2**20


# ----------------------------------------------------------------------------
# The input path and the loop.
# ----------------------------------------------------------------------------
def measure_input(batch_size: int, reps: int) -> dict:
  """Images/s of the host's batch gather and of each augmentation."""
  info = input_pipeline.DATASETS['cifar10']
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (50_000, *info.image_shape), dtype=np.uint8)
  labels = rng.integers(0, 10, 50_000).astype(np.int32)

  def host(step=[0]):  # pylint: disable=dangerous-default-value
    indices = input_pipeline.train_indices(50_000, batch_size, 0, step[0])
    step[0] += 1
    jax.block_until_ready(
        jax.device_put(input_pipeline.train_batch(images, labels, indices))
    )

  out = {'host_gather': batch_size / statistics.median(_timed(host, reps))}
  batch = jnp.asarray(images[:batch_size])
  for name in augmentation.AUGMENTATIONS:
    fn = jax.jit(
        lambda x, key, f=augmentation.augment_fn(
            name, info
        ): augmentation.normalize(f(x, key), info)
    )
    fn(batch, jax.random.key(0)).block_until_ready()
    out[name] = batch_size / statistics.median(
        _timed(
            lambda f=fn: f(batch, jax.random.key(1)).block_until_ready(), reps
        )
    )
  return out


def measure_loop(
    name: str,
    alpha: int,
    batch_size: int,
    steps: int,
    reps: int,
    device_loop: bool,
) -> dict:
  """`train.train_and_evaluate`'s images/s against its bare step.

  `device_loop` picks the loop: batches gathered on the host, one dispatch a
  step, or the splits resident on the device, a block of steps a dispatch.
  """
  spe = 50
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as tmp:
    data_file = os.path.join(tmp, 'data.npz')
    data_file_lib.write(
        data_file,
        {
            'train': (
                rng.integers(0, 256, (spe * batch_size, 32, 32, 3)),
                rng.integers(0, 10, spe * batch_size),
            ),
            'test': (
                rng.integers(0, 256, (batch_size, 32, 32, 3)),
                rng.integers(0, 10, batch_size),
            ),
        },
    )

    def run(num_steps: int, index: int) -> float:
      config = make_config(name, alpha, batch_size, 'crop_flip', 'auto')
      # Evaluation and checkpoints once, at the end, in both run lengths.
      config.update(
          data_file=data_file,
          train_split='train',
          val_split=None,
          device_loop=device_loop,
          num_epochs=num_steps / spe,
          eval_every_epochs=num_steps / spe,
          checkpoint_every_epochs=num_steps / spe,
          log_every_steps=50,
          eval_batch_size=batch_size,
      )
      start = time.perf_counter()
      train.train_and_evaluate(config, os.path.join(tmp, f'run{index}'))
      return time.perf_counter() - start

    # Compiled programs from a persistent cache after the first run, so the
    # two lengths pay the same (small) fixed cost and it cancels.
    jax.config.update('jax_compilation_cache_dir', os.path.join(tmp, 'xla'))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    run(steps, -1)
    loop = []
    for i in range(reps):
      short, long = run(steps, 2 * i), run(3 * steps, 2 * i + 1)
      loop.append((long - short) / (2 * steps))
  bare = JaxStep(make_config(name, alpha, batch_size, 'crop_flip', 'auto'))
  bare_s = statistics.median(_timed(lambda: bare(steps), reps)) / steps
  loop_s = statistics.median(loop)
  return {
      'model': name,
      'alpha': alpha,
      'device_loop': device_loop,
      'loop_steps_per_s': 1 / loop_s,
      'bare_steps_per_s': 1 / bare_s,
      'loop_images_per_s': batch_size / loop_s,
      'bare_images_per_s': batch_size / bare_s,
      'overhead': loop_s / bare_s - 1,
  }


# ----------------------------------------------------------------------------
# Output.
# ----------------------------------------------------------------------------
def _print_step(row: dict):
  torch_cols = (
      f'{row["torch_images_per_s"]:>9.0f} {row["ratio"]:>6.2f}x'
      if 'ratio' in row
      else f'{"-":>9} {"-":>7}'
  )
  print(
      f'{row["model"]:>8} {row["alpha"]:>5} {row["local_impl"]:>12} '
      f'{row["images_per_s"]:>8.0f} {torch_cols} '
      f'{row["flop_per_s"] / 1e9:>8.1f} '
      f'{100 * row["peak_share"]:>5.0f}% '
      f'{row["compile_s"]:>8.1f} '
      f'{row["memory_mb"] if row["memory_mb"] is None else round(row["memory_mb"]):>7}'
      f'{_fmt(row.get("layer1_ms"), ".1f", 10)}'
      f'{_fmt(row.get("torch_layer1_ms"), ".1f", 9)}'
      f'{_fmt(row.get("layer1_ratio"), ".2f", 7, "x")}',
      flush=True,
  )


def _fmt(value, spec: str, width: int, suffix: str = '') -> str:
  text = '-' if value is None else format(value, spec) + suffix
  return f'{text:>{width}}'


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='sconv:16,slocal,sfc')
  parser.add_argument('--alpha', type=int, default=8)
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument(
      '--augment',
      default='none',
      choices=augmentation.AUGMENTATIONS,
      help="the step's augmentation ('none': the networks "
      'alone, as PyTorch runs them)',
  )
  parser.add_argument(
      '--local_impls',
      default='auto',
      help='comma-separated local.IMPLEMENTATIONS to time for '
      'models with locally connected layers',
  )
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument(
      '--steps', type=int, default=5, help='steps per round and side'
  )
  parser.add_argument(
      '--input',
      action=argparse.BooleanOptionalAction,
      default=True,
      help='time the input path',
  )
  parser.add_argument(
      '--loop_model',
      default='sfc:1',
      help="'name:alpha' of the loop-vs-bare-step run; empty " 'skips it',
  )
  parser.add_argument('--loop_steps', type=int, default=1000)
  parser.add_argument('--json', help='also write every number here')
  return parser


def main(argv=None):
  global torch, torch_models  # pylint: disable=global-statement
  args = build_parser().parse_args(argv)
  try:
    import torch  # pylint: disable=g-import-not-at-top,redefined-outer-name

    from benchmarks import torch_models  # pylint: disable=g-import-not-at-top,redefined-outer-name
  except ImportError:
    print('torch is not installed: no PyTorch columns')
  parse_models(args.models, args.alpha)  # Bad names fail before any compute.
  parse_impls(args.local_impls)
  loop_model = parse_models(args.loop_model, 1) if args.loop_model else []
  if torch:
    torch.set_num_threads(_threads())
  results = {'machine': machine(), 'args': vars(args)}
  print(' '.join(f'{k}={v}' for k, v in results['machine'].items()))
  print(
      f'float32 matmul peak: {matmul_peak() / 1e9:.1f} GFLOP/s (before the '
      'steps; each share below is against the matmul timed in its rounds)',
      flush=True,
  )
  print(
      f'{"model":>8} {"alpha":>5} {"local_impl":>12} {"img/s":>8} '
      f'{"torch":>9} {"ratio":>7} {"GFLOP/s":>8} {"peak":>6} '
      f'{"compile":>8} {"mem MB":>7} {"layer1 ms":>9} {"torch":>8} '
      f'{"ratio":>6}'
  )
  results['steps'] = measure_steps(args)
  if args.input:
    results['input'] = measure_input(args.batch_size, args.rounds)
    print(
        'input images/s: '
        + ', '.join(f'{k} {v:,.0f}' for k, v in results['input'].items()),
        flush=True,
    )
  results['loop'] = []
  for name, alpha in loop_model:
    for on_device in (False, True):
      r = measure_loop(
          name, alpha, args.batch_size, args.loop_steps, args.rounds, on_device
      )
      results['loop'].append(r)
      print(
          f'loop {name} alpha {alpha} '
          f'({"device_loop" if on_device else "host loop"}): '
          f'{r["loop_steps_per_s"]:.0f} steps/s in train_and_evaluate, '
          f'{r["bare_steps_per_s"]:.0f} bare; overhead '
          f'{100 * r["overhead"]:+.1f}%',
          flush=True,
      )
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
  return results


if __name__ == '__main__':
  main()
