"""Figure 1: weights against base channels and against image side.

Drawn by `python -m beta_lasso.params --out=fig1.png`, from the exact
counts of `beta_lasso.models.sizes`.
"""

from collections.abc import Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from beta_lasso import models
from beta_lasso.models import sizes


def plot_figure1(
    path: str,
    grids: dict[str, Sequence[int]],
    sides: Sequence[int],
    largest: dict[str, int],
    num_classes: int,
    memory_label: str,
) -> None:
  """Writes Figure 1: weights vs size and vs image side, one line per model.

  Args:
    path: PNG file to write.
    grids: model -> sizes for the left panel (alpha; ResNet18: k).
    sides: image sides for the right panel, at `sizes.paper_size`.
    largest: model -> largest size that fits, marked with a star (0: none).
    num_classes: outputs of the head.
    memory_label: what the stars mean, for the legend.
  """
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
  for i, (name, grid) in enumerate(grids.items()):
    color = f'C{i}'
    by_kernel = models.spec(name).size_field == 'model_kwargs.kernel_size'
    style = '--' if by_kernel else '-'
    display_name = models.spec(name).display_name
    label = display_name + (' (x = kernel size)' if by_kernel else '')
    xs = sorted(set(grid) | ({largest[name]} if largest.get(name) else set()))
    left.plot(
        xs,
        [sizes.weight_count(name, x, 32, num_classes) for x in xs],
        style,
        color=color,
        marker='.',
        label=label,
    )
    if largest.get(name):
      left.plot(
          [largest[name]],
          [sizes.weight_count(name, largest[name], 32, num_classes)],
          '*',
          color=color,
          markersize=14,
          markeredgecolor='k',
      )
    right.plot(
        sides,
        [
            sizes.weight_count(name, sizes.paper_size(name), s, num_classes)
            for s in sides
        ],
        style,
        color=color,
        marker='o',
        label=f'{display_name} ({sizes.size_label(name)})',
    )
  left.plot(
      [],
      [],
      '*',
      color='w',
      markeredgecolor='k',
      markersize=14,
      label=memory_label,
  )
  left.set(
      xscale='log',
      yscale='log',
      xlabel='base channels alpha',
      ylabel='weights',
      title='Weights vs base channels (32x32x3)',
  )
  right.set(
      xscale='log',
      yscale='log',
      xlabel='image side s',
      ylabel='weights',
      title='Weights vs image side (paper sizes)',
  )
  right.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
  right.set_xticks(list(sides), [str(s) for s in sides])
  for ax in (left, right):
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
