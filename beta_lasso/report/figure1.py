"""Figure 1: weights against base channels and against image side.

Drawn by `python -m beta_lasso.params --out=fig1.png`, from the sizing code's
exact counts.
"""
from collections.abc import Sequence

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def plot_figure1(path: str, grids: dict[str, Sequence[int]],
                 sides: Sequence[int], sizes: dict[str, int],
                 num_classes: int, memory_label: str, *,
                 sizing) -> None:
  """Writes Figure 1: weights vs size and vs image side, one line per model.

  Args:
    path: PNG file to write.
    grids: model -> sizes for the left panel (alpha; ResNet18: k).
    sides: image sides for the right panel, at `PAPER_SIZE`.
    sizes: model -> largest size that fits, marked with a star (0: none).
    num_classes: outputs of the head.
    memory_label: what the stars mean, for the legend.
    sizing: `beta_lasso.params`'s NAMES, PAPER_SIZE, weight_count and
      size_label, passed in: under `python -m beta_lasso.params` that module
      is `__main__`, and importing it again would define its flags twice.
  """
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
  for i, (name, grid) in enumerate(grids.items()):
    color = f'C{i}'
    style = '--' if name == 'resnet18' else '-'
    label = sizing.NAMES[name] + (' (x = kernel size)' if name == 'resnet18' else '')
    xs = sorted(set(grid) | ({sizes[name]} if sizes.get(name) else set()))
    left.plot(xs, [sizing.weight_count(name, x, 32, num_classes) for x in xs], style,
              color=color, marker='.', label=label)
    if sizes.get(name):
      left.plot([sizes[name]], [sizing.weight_count(name, sizes[name], 32,
                                             num_classes)],
                '*', color=color, markersize=14, markeredgecolor='k')
    right.plot(sides, [sizing.weight_count(name, sizing.PAPER_SIZE[name], s, num_classes)
                       for s in sides], style, color=color, marker='o',
               label=f'{sizing.NAMES[name]} ({sizing.size_label(name)})')
  left.plot([], [], '*', color='w', markeredgecolor='k', markersize=14,
            label=memory_label)
  left.set(xscale='log', yscale='log', xlabel='base channels alpha',
           ylabel='weights', title='Weights vs base channels (32x32x3)')
  right.set(xscale='log', yscale='log', xlabel='image side s',
            ylabel='weights', title='Weights vs image side (paper sizes)')
  right.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
  right.set_xticks(list(sides), [str(s) for s in sides])
  for ax in (left, right):
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
