r"""Table 2 at the paper's size on one accelerator: S-FC with beta-LASSO, then SGD.

  python -m launch.full_scale --workdir_root=/tmp/full_scale \
      --epochs=4000 --time_limit=540

Trains S-FC at alpha 150 (256M weights) with beta-LASSO as Table 2 does
(`configs/sfc_beta_lasso.py`: beta 50, lambda 2e-5 on layer 1 and 5e-6 on the
FC layers, lr 0.1 with a per-step cosine, batch 512), bfloat16 compute with
float32 weights, data and loop resident on the accelerator
(`config.device_loop`), for EPOCHS; then the SGD baseline (`configs/sfc.py`)
for the same EPOCHS. Each run checkpoints every tenth of its budget; the
beta-LASSO run also writes a compact, lossless copy of each checkpoint to
WORKDIR_ROOT/beta_lasso.compact (`beta_lasso.compact`; its size at each tenth
is in the report). With
--time_limit the command stops after that many seconds (the running run saves
a checkpoint first) and the same command carries on where it stopped, so a
run longer than any one session completes over several commands.

At the end it prints, per run: epochs done, epochs/s and images/s of training
between its first and last eval (compiling, loading data and the evals
excluded), MFU, test accuracy
and the non-zero weights of every layer. MFU counts the dense layers' matmul
FLOPs per image, forward and backward: 6 per weight, 4 in the first layer
(the images need no gradient), against the bf16 (or
fp32) matmul peak measured on the same device at the end, and against the
vendor's peak where the device is known.

Arguments after `--` go to both runs, e.g. `-- --config.data_file=cifar10.npz`
on a host without TensorFlow. `--alpha=2 --epochs=2` runs it end to end on a
laptop CPU in a minute.
"""

import sys
import time
from typing import Sequence

from absl import app
from absl import flags
import jax

from benchmarks import train_step
from beta_lasso import compact
from beta_lasso import errors
from beta_lasso import models
from beta_lasso.training import loading
from beta_lasso.training import selection
from launch import planning
from launch import sweep as sweep_lib

# Table 2's two rows: the beta-LASSO run and the SGD baseline of equal budget.
RUNS = (('beta_lasso', 'configs/sfc_beta_lasso.py'), ('sgd', 'configs/sfc.py'))

# The beta-LASSO run's compact copy goes to WORKDIR_ROOT/beta_lasso.compact.
COMPACT_SUFFIX = '.compact'

# Dense bf16 matmul peak (FLOP/s) by `device_kind` prefix, from the vendors'
# data sheets (no sparsity). fp32 peaks are not listed: GPUs run fp32 matmuls
# through TF32 or not, depending on flags.
VENDOR_BF16_PEAK = {
    'NVIDIA H100': 989e12,
    'NVIDIA H200': 989e12,
    'NVIDIA A100': 312e12,
    'NVIDIA L4': 121e12,
    'TPU v4': 275e12,
    'TPU v5 lite': 197e12,
    'TPU v5e': 197e12,
    'TPU v5p': 459e12,
    'TPU v6 lite': 918e12,
}


def runs(
    workdir_root: str,
    alpha: int,
    epochs: float,
    batch_size: int,
    half_precision: bool,
) -> list[tuple[str, planning.Run]]:
  """(config file, run) of beta-LASSO and of SGD, checked against the configs.

  Raises:
    planning.SweepError: a value that the configs reject.
  """
  # The device loop: one accelerator, and no host work between steps.
  overrides = {
      'alpha': alpha,
      'num_epochs': float(epochs),
      'batch_size': batch_size,
      'half_precision': half_precision,
      'device_loop': True,
      'eval_every_epochs': epochs / 10,
      'checkpoint_every_epochs': epochs / 10,
  }
  planned = []
  root = workdir_root.rstrip('/')
  for name, config_file in RUNS:
    config = planning.load_config(config_file)
    run_overrides = dict(overrides)
    if config.optimizer == 'beta_lasso':
      # Its whole state in a few megabytes, to carry the run to another host
      # (`python -m beta_lasso.compact --restore`).
      run_overrides['compact_dir'] = f'{root}/{name}{COMPACT_SUFFIX}'
    cast = planning.apply_overrides(config, run_overrides)
    planned.append(
        (
            config_file,
            planning.Run(name=name, overrides=cast, workdir=f'{root}/{name}'),
        )
    )
  return planned


def dense_flops_per_image(weights: dict[str, int], first_layer: str) -> float:
  """Matmul FLOPs of one image, forward and backward, of a fully connected net.

  Each kernel weight is one multiply-add forward and two backward (the input
  gradient and the weight gradient), except in `first_layer`: the images need
  no gradient, so its weights do two multiply-adds, not three.
  """
  return 6.0 * sum(weights.values()) - 2.0 * weights[first_layer]


def throughput(history: Sequence[dict]) -> tuple[int, float, float] | None:
  """(steps, epochs, training seconds) between the first and last timed eval.

  Compiling and loading data come before the first eval; the evals between
  are taken out (each records its own time). Across a resume the restart is
  counted.
  """
  timed = [h for h in history if 'wall_seconds' in h and 'epoch' in h]
  if len(timed) < 2:
    return None
  first, last = timed[0], timed[-1]
  evals = sum(h.get('eval_seconds', 0.0) for h in timed[1:])
  return (
      last['step'] - first['step'],
      last['epoch'] - first['epoch'],
      last['wall_seconds'] - first['wall_seconds'] - evals,
  )


def vendor_peak(device_kind: str) -> float | None:
  for prefix, peak in VENDOR_BF16_PEAK.items():
    if device_kind.startswith(prefix):
      return peak
  return None


def report(planned, half_precision: bool) -> str:
  """The per-run lines printed at the end (results of unfinished runs too)."""
  # Only now, after the runs, does this process touch the accelerator: it must
  # not hold it while its children train.
  kind = jax.devices()[0].device_kind
  measured = train_step.matmul_peak(
      dtype='bfloat16' if half_precision else 'float32'
  )
  vendor = vendor_peak(kind) if half_precision else None
  lines = [
      f'Device: {kind}; measured matmul peak {measured / 1e12:.2f} '
      f'TFLOP/s' + (f', vendor peak {vendor / 1e12:.0f}' if vendor else '')
  ]
  for _, run in planned:
    try:
      results = loading.load_results(run.workdir)
    except FileNotFoundError:
      lines.append(f'{run.name}: not started')
      continue
    history = results.get('history') or []
    last = history[-1] if history else {}
    epochs = last.get('epoch', 0.0)
    lines.append(
        f'{run.name}: {"finished" if "steps" in results else "unfinished"}'
        f' at epoch {epochs:g} of {run.overrides["num_epochs"]:g}, '
        f'test accuracy {last.get("test_accuracy", float("nan")):.4f}'
    )
    chosen = selection.best(history)
    if chosen:
      lines.append(
          f'  best validation accuracy {chosen["val_accuracy"]:.4f} '
          f'at epoch {chosen["epoch"]:g}, test accuracy there '
          f'{chosen["test_accuracy"]:.4f}'
      )
    timed = throughput(history)
    if timed and timed[2] > 0:
      steps, epochs, seconds = timed
      images_per_s = steps * run.overrides['batch_size'] / seconds
      flops = images_per_s * dense_flops_per_image(
          results['weights'], models.first_layer_name('sfc')
      )  # Both: S-FC.
      mfu = f'MFU {100 * flops / measured:.1f}% of measured'
      if vendor:
        mfu += f', {100 * flops / vendor:.1f}% of vendor'
      lines.append(
          f'  {epochs / seconds:.3f} epochs/s, {images_per_s:,.0f} '
          f'images/s, {flops / 1e12:.2f} TFLOP/s ({mfu})'
      )
    for size in compact.read_sizes(run.workdir):
      lines.append(
          f'  compact copy at step {size["step"]:,}: '
          f'{size["bytes"] / 2**20:.2f} MiB in {size["files"]} files'
      )
    for layer, total in results['weights'].items():
      nnz = last.get('nnz', {}).get(layer)
      if nnz is not None:
        lines.append(
            f'  {layer:>12}: {nnz:>12,} / {total:>12,} non-zero '
            f'({100 * nnz / total:.2f}%)'
        )
  return '\n'.join(lines)


def _define_flags():
  """Defined only when this module is the script (see launch/sweep.py)."""
  flags.DEFINE_string(
      'workdir_root',
      None,
      'The runs train in WORKDIR_ROOT/beta_lasso and ' 'WORKDIR_ROOT/sgd.',
  )
  flags.DEFINE_integer('alpha', 150, 'S-FC width (the paper: 150).')
  flags.DEFINE_float(
      'epochs', 4000, 'Epochs of each run (Table 2: 4000; Table 1: 400).'
  )
  flags.DEFINE_integer('batch_size', 512, 'Global batch.')
  flags.DEFINE_bool(
      'half_precision', True, 'bfloat16 compute, float32 weights.'
  )
  flags.DEFINE_float(
      'time_limit',
      0,
      'Seconds after which the running run saves a '
      'checkpoint and the command stops (0: none); the same command carries '
      'on.',
  )
  flags.mark_flags_as_required(['workdir_root'])


def main(argv):
  args = flags.FLAGS
  extra_args = argv[1:]  # Everything after `--`.
  try:
    for name in ('alpha', 'batch_size', 'epochs'):
      if getattr(args, name) <= 0:
        raise planning.SweepError(
            f'--{name}={getattr(args, name):g} must be positive'
        )
    if args.time_limit < 0:
      raise planning.SweepError(
          f'--time_limit={args.time_limit:g} must be positive (or 0: none)'
      )
    planned = runs(
        args.workdir_root,
        args.alpha,
        args.epochs,
        args.batch_size,
        args.half_precision,
    )
    for config_file, run in planned:
      planning.check_extra_args(
          planning.load_config(config_file), extra_args, set(run.overrides)
      )
  except errors.UserError as e:
    errors.exit_with(e)
  deadline = time.time() + args.time_limit if args.time_limit > 0 else None
  statuses = {}
  for config_file, run in planned:
    if deadline is not None and time.time() >= deadline:
      break
    statuses.update(
        sweep_lib.execute([run], config_file, extra_args, deadline=deadline)
    )
    if statuses[run.name] not in ('done', 'skipped'):
      break  # Stopped or failed: SGD waits for beta-LASSO to finish.
  print(report(planned, args.half_precision), flush=True)
  if any(
      statuses.get(run.name) not in ('done', 'skipped') for _, run in planned
  ):
    sys.exit('not finished; the same command carries on')


if __name__ == '__main__':
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
