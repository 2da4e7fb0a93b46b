r"""Model sizes (paper Figure 1) and the largest model that fits in memory.

    python -m beta_lasso.params                      # 16 GB, fp32, SGD, 512
    python -m beta_lasso.params --memory_gb=80 --precision=bf16 --out=fig1.png
    python -m beta_lasso.params --devices=8 --memory_gb=16 --out=   # meshes

Prints weights-only counts (kernels, as in the paper) of every registered
model against its size and against the image side, the paper-sized counts
beside Table 1's, and the largest size whose training step fits in
`--memory_gb`; then draws Figure 1. With `--devices=N`, the mesh each model
needs on N such devices: the smallest model axis (`config.mesh_model`, with
or without `config.fsdp`) under which one device's share fits. Everything
comes from `jax.eval_shape`: no model is ever allocated, so paper-sized and
bigger models cost a trace.

This module is the command line only: the counts, the memory estimate and
the search are `beta_lasso.models.sizes` (which says what "size" means for
each model and what the estimate counts), the facts of each model the
registry's (`beta_lasso.models.MODELS`).
"""

from collections.abc import Callable
from collections.abc import Sequence

from absl import app
from absl import flags

from beta_lasso import errors
from beta_lasso import models
from beta_lasso.models import registry
from beta_lasso.models import sizes
from beta_lasso.report import figure1
from beta_lasso.training import sharding

# The grids of the tables: the S family and 3-FC share the alphas of
# --alphas_s, the D family those of --alphas_d, ResNet18 --kernel_sizes.
_S_GRID = registry.family(registry.SHALLOW) + registry.family(registry.THREE_FC)
_D_GRID = registry.family(registry.DEEP)
_K_GRID = registry.family(registry.RESNET)

# A ~1B-weight S-FC (1.03B kernel entries at 32x32x3), beside the paper sizes.
BILLION_SFC = 350

_GIB = sizes.GIB


def _define_flags():
  """The command line's flags, defined only when this module is the script.

  Defined at import, they would join the command line of every program that
  imports the module (`python -m beta_lasso.main` among them).
  """
  flags.DEFINE_float(
      'memory_gb',
      16.0,
      "Accelerator memory in GiB (16: the paper's V100; "
      '80: H100/A100-80GB).',
  )
  flags.DEFINE_integer('batch_size', 512, 'Training batch size.')
  flags.DEFINE_enum(
      'precision',
      'fp32',
      ['fp32', 'bf16'],
      'Computation dtype (parameters stay fp32).',
  )
  flags.DEFINE_enum(
      'optimizer',
      'sgd',
      ['sgd', 'beta_lasso'],
      'sgd: momentum, one extra copy of the parameters; beta_lasso: none.',
  )
  flags.DEFINE_integer('num_classes', 10, 'Outputs of the head.')
  flags.DEFINE_integer(
      'devices',
      1,
      'Devices of a run (a TPU slice, a GPU host); above 1, the '
      'mesh each model needs is printed.',
  )
  flags.DEFINE_string(
      'out', 'fig1.png', 'Where to write Figure 1; empty: no figure.'
  )
  flags.DEFINE_list(
      'alphas_s', '1,2,4,8,16,32,64,128,150', 'Alphas of the S family and 3-FC.'
  )
  flags.DEFINE_list(
      'alphas_d', '1,2,4,8,15,16,32,64', 'Alphas of the D family.'
  )
  flags.DEFINE_list('kernel_sizes', '3,7,11,15', 'ResNet18 kernel sizes.')
  flags.DEFINE_list(
      'image_sides', '8,16,32,64', 'Image sides, at the paper-sized models.'
  )


def _name(model: str) -> str:
  return models.spec(model).display_name


def mesh_needed(
    name: str,
    size: int,
    memory_gb: float,
    devices: int,
    *,
    batch_size: int = 512,
    image_side: int = 32,
    num_classes: int = 10,
    **kwargs,
) -> tuple[int, bool, int] | None:
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
  shapes = sizes.param_shapes(name, size, image_side, num_classes)
  model_axis = 1
  while model_axis <= devices:
    data = devices // model_axis
    m = sizes.memory(
        name,
        size,
        batch_size=max(1, batch_size // data),
        image_side=image_side,
        num_classes=num_classes,
        **kwargs,
    )
    for fsdp in (False, True):
      fraction = sharding.fraction_per_device(
          shapes,
          {sharding.DATA: data, sharding.MODEL: model_axis},
          fsdp=fsdp,
          min_weights=sharding.MIN_WEIGHTS,
      )
      need = sizes.per_device(m, fraction)
      if need <= memory_gb * _GIB:
        return model_axis, fsdp, need
    model_axis *= 2
  return None


def _table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]]
) -> str:
  cells = [list(header)] + [list(r) for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  lines = [title] + [
      '  '.join(c.rjust(w) for c, w in zip(r, widths)) for r in cells
  ]
  lines.insert(2, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def _grid_table(
    title: str,
    names: Sequence[str],
    grid: Sequence[int],
    count: Callable[[str, int], int],
    label: str,
) -> str:
  rows = [[_name(n)] + [sizes.human(count(n, g)) for g in grid] for n in names]
  return _table(title, [label] + [str(g) for g in grid], rows)


def _paper_table(num_classes: int) -> str:
  rows = []
  for name, spec in models.MODELS.items():
    size = sizes.paper_size(name)
    ours = sizes.weight_count(name, size, 32, num_classes)
    if spec.paper_millions is None:  # Not in Table 1.
      rows.append(
          [spec.display_name, sizes.size_label(name), f'{ours:,}', '-', '-']
      )
      continue
    emb = sizes.weight_count(spec.fc_embedding, size, 32, num_classes)
    mark = '' if spec.agrees_with_paper(ours) else ' *'
    rows.append(
        [
            spec.display_name,
            str(size),
            f'{ours:,}',
            f'{spec.paper_millions}M{mark}',
            f'{emb:,}',
        ]
    )
  dfc = sizes.weight_count('dfc', sizes.paper_size('dfc'), 32, num_classes)
  footnote = (
      '* D-LOCAL: ours counts (output positions) x k^2 x C_in x C_out '
      'weights per\n  locally connected layer: 49 s^2 a^2 + (27 s^2 + 64 c) a. '
      "The paper's\n  13 s^2 a^2 undercounts the layers after the first "
      '(ours: 45 s^2 a^2 from\n  layer2..layer8 and 4 s^2 a^2 from fc1).\n'
      '  D-FC: Table 1 prints the target "roughly 256M"; alpha '
      f'{sizes.paper_size("dfc")} gives {sizes.human(dfc)}.\n'
      f'  3-FC: width {sizes.width_3fc(sizes.paper_size("3fc")):,} at alpha '
      f'{sizes.paper_size("3fc")}.'
  )
  return (
      _table(
          'Paper sizes, 32x32x3, weights only (Table 1 "#param"):',
          ['model', 'alpha', 'ours', 'paper', 'FC-emb. (ours)'],
          rows,
      )
      + '\n'
      + footnote
  )


def _memory_table(largest: dict[str, int], **kwargs) -> str:
  rows = []
  for name, size in largest.items():
    if size == 0:
      rows.append([_name(name), '0'] + ['-'] * 7)
      continue
    m = sizes.memory(name, size, **kwargs)
    # The next size up shows how close the cut is.
    over = sizes.memory(name, size + 1, **kwargs).total
    extra = f' (w={sizes.width_3fc(size)})' if name == '3fc' else ''
    rows.append(
        [_name(name), f'{size}{extra}', sizes.human(m.weights)]
        + [
            f'{v / _GIB:.2f}'
            for v in (
                m.params,
                m.grads + m.optimizer,
                m.compute_copy,
                m.activations,
                m.total,
                over,
            )
        ]
    )
  return _table(
      '',
      [
          'model',
          'max size',
          'weights',
          'params GB',
          'grads+opt GB',
          'bf16 copy GB',
          'acts GB',
          'total GB',
          'size+1 GB',
      ],
      rows,
  )


def _mesh_table(devices: int, memory_gb: float, **kwargs) -> str:
  rows = []
  paper_sized = [
      (name, sizes.paper_size(name)) for name in _S_GRID + _D_GRID + _K_GRID
  ]
  for name, size in [*paper_sized, ('sfc', BILLION_SFC)]:
    found = mesh_needed(name, size, memory_gb, devices, **kwargs)
    if found is None:
      rows.append([_name(name), str(size), 'does not fit', '-', '-'])
      continue
    model_axis, fsdp, need = found
    rows.append(
        [
            _name(name),
            str(size),
            f'data={devices // model_axis} model={model_axis}',
            str(fsdp),
            f'{need / _GIB:.2f}',
        ]
    )
  return _table(
      f'Mesh needed on {devices} devices of {memory_gb:g} GB '
      '(config.mesh_model, config.fsdp):',
      ['model', 'size', 'mesh', 'fsdp', 'GB per device'],
      rows,
  )


def _ints(values: Sequence[str]) -> list[int]:
  return [int(v) for v in values]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  args = flags.FLAGS
  if args.out:  # Refused before the tables, which take a while.
    errors.check_output_file(args.out)
  c = args.num_classes
  alphas_s, alphas_d = _ints(args.alphas_s), _ints(args.alphas_d)
  kernels, sides = _ints(args.kernel_sizes), _ints(args.image_sides)
  count = lambda name, size: sizes.weight_count(name, size, 32, c)

  print(
      _grid_table(
          'Weights vs alpha, S family (3-FC: width '
          f'{models.spec("3fc").paper_size} alpha / '
          f'{sizes.paper_size("3fc")}), 32x32x3:',
          _S_GRID,
          alphas_s,
          count,
          'alpha',
      )
  )
  print()
  print(
      _grid_table(
          'Weights vs alpha, D family, 32x32x3:',
          _D_GRID,
          alphas_d,
          count,
          'alpha',
      )
  )
  print()
  print(
      _grid_table(
          'Weights vs kernel size, ResNet18 (width 64), 32x32x3:',
          _K_GRID,
          kernels,
          count,
          'k',
      )
  )
  print()
  print(
      _grid_table(
          'Weights vs image side s (s x s x 3) at the paper sizes:',
          list(models.MODELS),
          sides,
          lambda name, s: sizes.weight_count(
              name, sizes.paper_size(name), s, c
          ),
          'side',
      )
  )
  print()
  print(_paper_table(c))
  print()

  kwargs = dict(
      batch_size=args.batch_size,
      precision=args.precision,
      optimizer=args.optimizer,
      num_classes=c,
  )
  largest = {
      name: sizes.max_size(name, args.memory_gb, **kwargs)
      for name in models.MODELS
  }
  setting = (
      f'{args.memory_gb:g} GB, {args.precision}, '
      f'{args.optimizer}, batch {args.batch_size}'
  )
  print(
      f'Largest size that trains in {setting} (alpha; ResNet18: k):'
      + _memory_table(largest, **kwargs)
  )

  if args.devices > 1:
    print()
    print(_mesh_table(args.devices, args.memory_gb, **kwargs))

  if args.out:
    grids = {name: alphas_s for name in _S_GRID}
    grids.update({name: alphas_d for name in _D_GRID})
    grids.update({name: kernels for name in _K_GRID})
    figure1.plot_figure1(
        args.out, grids, sides, largest, c, f'largest that fits ({setting})'
    )
    print(f'\nWrote {args.out}')


if __name__ == '__main__':
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
