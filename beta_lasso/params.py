r"""Model sizes (paper Figure 1) and the largest model that fits in memory.

    python -m beta_lasso.params                      # 16 GB, fp32, SGD, 512
    python -m beta_lasso.params --memory_gb=80 --precision=bf16 --out=fig1.png
    python -m beta_lasso.params --devices=8 --memory_gb=16 --out=   # meshes

Prints weights-only counts (kernels, as in the paper) of every registered
model against its size and against the image side, the paper-sized counts
beside Table 1's, and the largest size whose training step fits in
`--memory_gb`; then draws Figure 1. With `--devices=N`, the mesh each model
needs on N such devices: the smallest model axis (`config.mesh_model`, with
or without `config.fsdp`) under which one device's share fits. Everything comes from `jax.eval_shape`:
no model is ever allocated, so paper-sized and bigger models cost a trace.

"Size" is what scales a model: base channels alpha for the S and D families;
for 3-FC the same alpha through `width_3fc` (hidden width proportional to
alpha, `PAPER_WIDTH_3FC` at the S family's alpha 150, where 3-FC has S-FC's
weights as in Table 1; the width does not depend on the image side); for
ResNet18 the kernel size k of its convs (width 64).

Memory of one training step (`memory`), a documented estimate rather than a
measurement:
- float32 master parameters and BatchNorm statistics, whatever `precision`;
- float32 gradients, one per parameter;
- optimizer state: SGD with momentum keeps one float32 copy, beta-LASSO none;
- with bf16, the bf16 copy of every parameter the layers compute with;
- activations kept for the backward pass at `batch_size`: the input and the
  output of every layer (conv, locally connected, dense), every BatchNorm
  (whose ReLU'd output is the next layer's input) and every ResNet block,
  each in its own dtype (BatchNorm outputs are float32 even in bf16).
Transient buffers (activation gradients, XLA workspace) are left out, so
real peaks are somewhat higher. GB means GiB (2^30 bytes).
"""
from collections.abc import Callable, Sequence
import functools
import math
import types
from typing import NamedTuple

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp

from beta_lasso import errors
from beta_lasso import models
from beta_lasso import optim
from beta_lasso.models import layers
from beta_lasso.models import local
from beta_lasso.models import resnet

_MEMORY_GB = flags.DEFINE_float(
    'memory_gb', 16.0, 'Accelerator memory in GiB (16: the paper\'s V100; '
    '80: H100/A100-80GB).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 512, 'Training batch size.')
_PRECISION = flags.DEFINE_enum('precision', 'fp32', ['fp32', 'bf16'],
                               'Computation dtype (parameters stay fp32).')
_OPTIMIZER = flags.DEFINE_enum(
    'optimizer', 'sgd', ['sgd', 'beta_lasso'],
    'sgd: momentum, one extra copy of the parameters; beta_lasso: none.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 10, 'Outputs of the head.')
_DEVICES = flags.DEFINE_integer(
    'devices', 1, 'Devices of a run (a TPU slice, a GPU host); above 1, the '
    'mesh each model needs is printed.')
_OUT = flags.DEFINE_string('out', 'fig1.png',
                           'Where to write Figure 1; empty: no figure.')
_ALPHAS_S = flags.DEFINE_list('alphas_s', '1,2,4,8,16,32,64,128,150',
                              'Alphas of the S family and 3-FC.')
_ALPHAS_D = flags.DEFINE_list('alphas_d', '1,2,4,8,15,16,32,64',
                              'Alphas of the D family.')
_KERNEL_SIZES = flags.DEFINE_list('kernel_sizes', '3,7,11,15',
                                  'ResNet18 kernel sizes.')
_IMAGE_SIDES = flags.DEFINE_list('image_sides', '8,16,32,64',
                                 'Image sides, at the paper-sized models.')

NAMES = {'sconv': 'S-CONV', 'slocal': 'S-LOCAL', 'sfc': 'S-FC',
         'dconv': 'D-CONV', 'dlocal': 'D-LOCAL', 'dfc': 'D-FC',
         '3fc': '3-FC', 'resnet18': 'ResNet18'}
S_FAMILY = ('sconv', 'slocal', 'sfc', '3fc')
D_FAMILY = ('dconv', 'dlocal', 'dfc')

# Table 1's sizes: alpha 150 (S), 15 (D), the 3-FC of S-FC's weights, k = 3.
PAPER_SIZE = {'sconv': 150, 'slocal': 150, 'sfc': 150, '3fc': 150,
              'dconv': 15, 'dlocal': 15, 'dfc': 15, 'resnet18': 3}

# Table 1 "#param (M) orig.", and the FC embedding each model belongs to.
PAPER_MILLIONS = {'dconv': 1.45, 'dlocal': 3.42, 'dfc': 256, 'sconv': 138,
                  'slocal': 147, 'sfc': 256, '3fc': 256}
FC_EMBEDDING = {'sconv': 'sfc', 'slocal': 'sfc', 'sfc': 'sfc', 'dconv': 'dfc',
                'dlocal': 'dfc', 'dfc': 'dfc', '3fc': '3fc'}

_GIB = 2**30

# Module outputs the backward pass keeps (see the module docstring).
_STORED_OUTPUTS = (nn.Conv, nn.Dense, nn.BatchNorm, local.LocallyConnected2D,
                   layers.FeatureMapDense, resnet.BasicBlock)


def width_3fc(alpha: int) -> int:
  """3-FC hidden width for an S-family alpha: linear, paper width at 150."""
  return round(models.PAPER_WIDTH_3FC * alpha / PAPER_SIZE['sfc'])


def model_kwargs(name: str, size: int) -> dict[str, int]:
  """`create_model` keyword arguments of model `name` at `size`."""
  if name == '3fc':
    return {'width': width_3fc(size)}
  if name == 'resnet18':
    return {'kernel_size': size}
  if name in S_FAMILY + D_FAMILY:
    return {'alpha': size}
  raise ValueError(f'Unknown model {name!r}; valid names: {", ".join(NAMES)}.')


def _model(name: str, size: int, num_classes: int,
           dtype: jnp.dtype | None = None) -> nn.Module:
  return models.create_model(name, num_classes=num_classes, dtype=dtype,
                             **model_kwargs(name, size))


@functools.lru_cache(maxsize=None)
def weight_count(name: str, size: int, image_side: int = 32,
                 num_classes: int = 10) -> int:
  """Weights (kernel entries) of `name` at `size` on side x side x 3 images."""
  model = _model(name, size, num_classes)
  return sum(models.kernel_counts(model, (1, image_side, image_side, 3))
             .values())


class Memory(NamedTuple):
  """Bytes of one training step, by kind (see the module docstring)."""
  weights: int  # Kernel entries, for reference; not bytes.
  params: int
  grads: int
  optimizer: int
  compute_copy: int
  activations: int

  @property
  def total(self) -> int:
    return (self.params + self.grads + self.optimizer + self.compute_copy +
            self.activations)


def per_device(m: Memory, fraction: float) -> int:
  """`m.total` on one device that holds `fraction` of the parameters.

  Parameters, their gradients, optimizer state and bf16 copies are sharded
  alike (beta_lasso.training.sharding); activations are those of one device's batch.
  """
  return (round((m.params + m.grads + m.optimizer + m.compute_copy) * fraction)
          + m.activations)


def _nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


@functools.lru_cache(maxsize=None)
def memory(name: str, size: int, *, batch_size: int = 512,
           precision: str = 'fp32', optimizer: str = 'sgd',
           image_side: int = 32, num_classes: int = 10) -> Memory:
  """Estimates the memory of a training step of `name` at `size`.

  Args:
    name: a registered model.
    size: alpha, or the kernel size for 'resnet18'.
    batch_size: examples per step.
    precision: 'fp32' or 'bf16' computation.
    optimizer: 'sgd' (with momentum) or 'beta_lasso'.
    image_side: images are image_side x image_side x 3.
    num_classes: outputs of the head.

  Returns:
    The estimate, from shapes only.
  """
  return module_memory(
      _model(name, size, num_classes,
             jnp.bfloat16 if precision == 'bf16' else jnp.float32),
      batch_size=batch_size, precision=precision, optimizer=optimizer,
      image_shape=(image_side, image_side, 3))


def module_memory(model: nn.Module, *, batch_size: int, precision: str,
                  optimizer: str, image_shape: Sequence[int]) -> Memory:
  """`memory` of any model module, e.g. one built from a run's config.

  Args:
    model: an unbound module, built with the computation dtype of `precision`.
    batch_size: examples per step (on one device).
    precision: 'fp32' or 'bf16' computation.
    optimizer: 'sgd' (with momentum) or 'beta_lasso'.
    image_shape: (height, width, channels) of the images.

  Returns:
    The estimate, from shapes only.
  """
  if optimizer not in ('sgd', 'beta_lasso'):
    raise ValueError(f'optimizer {optimizer!r} is not sgd or beta_lasso')
  if precision not in ('fp32', 'bf16'):
    raise ValueError(f'precision {precision!r} is not fp32 or bf16')
  dtype = jnp.bfloat16 if precision == 'bf16' else jnp.float32

  # One trace gives the variables and the stored outputs: init in train mode
  # runs the training forward pass (dropout is off at rate 0).
  def train_forward():
    x = jnp.zeros((batch_size, *image_shape), dtype)
    variables = model.init(
        jax.random.key(0), x, train=True,
        capture_intermediates=lambda m, method: (
            method == '__call__' and isinstance(m, _STORED_OUTPUTS)))
    return x, variables

  x, variables = jax.eval_shape(train_forward)
  stored = variables.pop('intermediates')
  n_params = sum(p.size for p in jax.tree.leaves(variables['params']))
  grads = 4 * n_params
  return Memory(
      weights=sum(optim.count_weights(variables['params'],
                                      optim.kernel_mask).values()),
      params=_nbytes(variables),
      grads=grads,
      optimizer=grads if optimizer == 'sgd' else 0,
      compute_copy=2 * n_params if precision == 'bf16' else 0,
      activations=_nbytes(x) + _nbytes(stored))


@functools.lru_cache(maxsize=None)
def _param_shapes(name: str, size: int, image_side: int, num_classes: int):
  model = _model(name, size, num_classes)
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, image_side, image_side, 3)),
      train=False))['params']


def mesh_needed(name: str, size: int, memory_gb: float, devices: int, *,
                batch_size: int = 512, image_side: int = 32,
                num_classes: int = 10, **kwargs) -> tuple[int, bool, int] | None:
  """The smallest mesh of `devices` on which `name` at `size` trains.

  Args:
    name: a registered model.
    size: alpha, or the kernel size for 'resnet18'.
    memory_gb: memory of one device in GiB.
    devices: devices of the run.
    batch_size: the global batch.
    image_side: images are image_side x image_side x 3.
    num_classes: outputs of the head.
    **kwargs: `memory`'s precision and optimizer.

  Returns:
    (mesh_model, fsdp, bytes per device) of the first that fits, trying model
    axes 1, 2, 4, ... without then with FSDP; None when none fits.
  """
  from beta_lasso.training import sharding  # pylint: disable=g-import-not-at-top
  shapes = _param_shapes(name, size, image_side, num_classes)
  model_axis = 1
  while model_axis <= devices:
    data = devices // model_axis
    m = memory(name, size, batch_size=max(1, batch_size // data),
               image_side=image_side, num_classes=num_classes, **kwargs)
    for fsdp in (False, True):
      fraction = sharding.fraction_per_device(
          shapes, {sharding.DATA: data, sharding.MODEL: model_axis},
          fsdp=fsdp, min_weights=2**20)
      need = per_device(m, fraction)
      if need <= memory_gb * _GIB:
        return model_axis, fsdp, need
    model_axis *= 2
  return None


def largest_true(pred: Callable[[int], bool], start: int) -> int:
  """Largest n >= 1 with pred(n), for pred true then false; 0 if none.

  Gallops from `start` then bisects, so a good `start` costs two calls.
  """
  start = max(start, 1)
  if pred(start):
    lo, step = start, 1
    while pred(lo + step):
      lo, step = lo + step, 2 * step
    hi = lo + step
  else:
    hi, step = start, 1
    while hi - step >= 1 and not pred(hi - step):
      hi, step = hi - step, 2 * step
    lo = max(hi - step, 0)
  while hi - lo > 1:  # pred(lo) (or lo == 0) and not pred(hi).
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if pred(mid) else (lo, mid)
  return lo


def max_size(name: str, memory_gb: float, **kwargs) -> int:
  """The largest size of `name` whose training step fits in `memory_gb`.

  Args:
    name: a registered model.
    memory_gb: accelerator memory in GiB.
    **kwargs: `memory`'s keyword arguments (batch_size, precision, ...).

  Returns:
    The largest alpha (kernel size for 'resnet18') with
    `memory(...).total <= memory_gb GiB`; 0 when even size 1 does not fit.
  """
  budget = memory_gb * _GIB
  total = lambda size: memory(name, size, **kwargs).total
  # Weights grow as size^2 and activations as size (ResNet18: constant), so
  # three totals predict the answer; the search only confirms it.
  t1, t2, t4 = total(1), total(2), total(4)
  a = ((t4 - t2) / 2 - (t2 - t1)) / 3  # t(s) = a s^2 + b s + c.
  b = (t2 - t1) - 3 * a
  c = t1 - a - b
  if a > 0:
    guess = (-b + math.sqrt(max(b * b - 4 * a * (c - budget), 0))) / (2 * a)
  else:
    guess = (budget - c) / b if b > 0 else 1
  return largest_true(lambda size: total(size) <= budget, int(guess))


# ----------------------------------------------------------------------------
# Tables and Figure 1.
# ----------------------------------------------------------------------------
def human(n: float) -> str:
  """138312450 -> '138.31M'."""
  for unit, scale in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if abs(n) >= scale:
      return f'{n / scale:.2f}{unit}'
  return f'{n:.0f}'


def _table(title: str, header: Sequence[str],
           rows: Sequence[Sequence[str]]) -> str:
  cells = [list(header)] + [list(r) for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  lines = [title] + ['  '.join(c.rjust(w) for c, w in zip(r, widths))
                     for r in cells]
  lines.insert(2, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def _grid_table(title: str, names: Sequence[str], grid: Sequence[int],
                count: Callable[[str, int], int], label: str) -> str:
  rows = [[NAMES[n]] + [human(count(n, g)) for g in grid] for n in names]
  return _table(title, [label] + [str(g) for g in grid], rows)


def _paper_table(num_classes: int) -> str:
  rows = []
  for name in S_FAMILY[:3] + D_FAMILY + ('3fc',):
    ours = weight_count(name, PAPER_SIZE[name], 32, num_classes)
    emb = weight_count(FC_EMBEDDING[name], PAPER_SIZE[name], 32, num_classes)
    mark = ' *' if name in ('dlocal', 'dfc') else ''
    rows.append([NAMES[name], str(PAPER_SIZE[name]), f'{ours:,}',
                 f'{PAPER_MILLIONS[name]}M{mark}', f'{emb:,}'])
  rows.append(['ResNet18', 'k=3', f'{weight_count("resnet18", 3):,}', '-',
               '-'])
  footnote = (
      '* D-LOCAL: ours counts (output positions) x k^2 x C_in x C_out '
      'weights per\n  locally connected layer: 49 s^2 a^2 + (27 s^2 + 64 c) a. '
      "The paper's\n  13 s^2 a^2 undercounts the layers after the first "
      '(ours: 45 s^2 a^2 from\n  layer2..layer8 and 4 s^2 a^2 from fc1).\n'
      '  D-FC: Table 1 prints the target "roughly 256M"; alpha 15 gives '
      f'{human(weight_count("dfc", 15, 32, num_classes))}.\n'
      f'  3-FC: width {width_3fc(PAPER_SIZE["3fc"]):,} at alpha 150.')
  return _table('Paper sizes, 32x32x3, weights only (Table 1 "#param"):',
                ['model', 'alpha', 'ours', 'paper', 'FC-emb. (ours)'],
                rows) + '\n' + footnote


def _memory_table(sizes: dict[str, int], **kwargs) -> str:
  rows = []
  for name, size in sizes.items():
    if size == 0:
      rows.append([NAMES[name], '0'] + ['-'] * 7)
      continue
    m = memory(name, size, **kwargs)
    # The next size up shows how close the cut is.
    over = memory(name, size + 1, **kwargs).total
    extra = f' (w={width_3fc(size)})' if name == '3fc' else ''
    rows.append([NAMES[name], f'{size}{extra}', human(m.weights)] +
                [f'{v / _GIB:.2f}' for v in (
                    m.params, m.grads + m.optimizer, m.compute_copy,
                    m.activations, m.total, over)])
  return _table('', ['model', 'max size', 'weights', 'params GB',
                     'grads+opt GB', 'bf16 copy GB', 'acts GB', 'total GB',
                     'size+1 GB'], rows)


# A ~1B-weight S-FC (1.03B kernel entries at 32x32x3), beside the paper sizes.
BILLION_SFC = 350


def _mesh_table(devices: int, memory_gb: float, **kwargs) -> str:
  rows = []
  for name, size in [*PAPER_SIZE.items(), ('sfc', BILLION_SFC)]:
    found = mesh_needed(name, size, memory_gb, devices, **kwargs)
    if found is None:
      rows.append([NAMES[name], str(size), 'does not fit', '-', '-'])
      continue
    model_axis, fsdp, need = found
    rows.append([NAMES[name], str(size),
                 f'data={devices // model_axis} model={model_axis}',
                 str(fsdp), f'{need / _GIB:.2f}'])
  return _table(f'Mesh needed on {devices} devices of {memory_gb:g} GB '
                '(config.mesh_model, config.fsdp):',
                ['model', 'size', 'mesh', 'fsdp', 'GB per device'], rows)


def size_label(name: str) -> str:
  if name == 'resnet18':
    return f'k={PAPER_SIZE[name]}'
  return f'alpha={PAPER_SIZE[name]}'


def _ints(values: Sequence[str]) -> list[int]:
  return [int(v) for v in values]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if _OUT.value:  # Refused before the tables, which take a while.
    errors.check_output_file(_OUT.value)
  c = _NUM_CLASSES.value
  alphas_s, alphas_d = _ints(_ALPHAS_S.value), _ints(_ALPHAS_D.value)
  kernels, sides = _ints(_KERNEL_SIZES.value), _ints(_IMAGE_SIDES.value)
  count = lambda name, size: weight_count(name, size, 32, c)

  print(_grid_table('Weights vs alpha, S family (3-FC: width '
                    f'{models.PAPER_WIDTH_3FC} alpha / 150), 32x32x3:',
                    S_FAMILY, alphas_s, count, 'alpha'))
  print()
  print(_grid_table('Weights vs alpha, D family, 32x32x3:', D_FAMILY,
                    alphas_d, count, 'alpha'))
  print()
  print(_grid_table('Weights vs kernel size, ResNet18 (width 64), 32x32x3:',
                    ['resnet18'], kernels, count, 'k'))
  print()
  print(_grid_table(
      'Weights vs image side s (s x s x 3) at the paper sizes:', list(NAMES),
      sides, lambda name, s: weight_count(name, PAPER_SIZE[name], s, c),
      'side'))
  print()
  print(_paper_table(c))
  print()

  kwargs = dict(batch_size=_BATCH_SIZE.value, precision=_PRECISION.value,
                optimizer=_OPTIMIZER.value, num_classes=c)
  sizes = {name: max_size(name, _MEMORY_GB.value, **kwargs) for name in NAMES}
  setting = (f'{_MEMORY_GB.value:g} GB, {_PRECISION.value}, '
             f'{_OPTIMIZER.value}, batch {_BATCH_SIZE.value}')
  print(f'Largest size that trains in {setting} (alpha; ResNet18: k):'
        + _memory_table(sizes, **kwargs))

  if _DEVICES.value > 1:
    print()
    print(_mesh_table(_DEVICES.value, _MEMORY_GB.value, **kwargs))

  if _OUT.value:
    grids = {name: alphas_s for name in S_FAMILY}
    grids.update({name: alphas_d for name in D_FAMILY})
    grids['resnet18'] = kernels
    from beta_lasso.report import figure1  # pylint: disable=g-import-not-at-top
    figure1.plot_figure1(_OUT.value, grids, sides, sizes, c,
                         f'largest that fits ({setting})',
                         sizing=types.SimpleNamespace(
                             NAMES=NAMES, PAPER_SIZE=PAPER_SIZE,
                             weight_count=weight_count,
                             size_label=size_label))
    print(f'\nWrote {_OUT.value}')


if __name__ == '__main__':
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
