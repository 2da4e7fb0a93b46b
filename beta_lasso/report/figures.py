"""What the figures of plots.py and filters.py share.

The input shape they default to, the resolution, how a run is named in
legends and titles, and the Agg canvas they draw on: figures go through
matplotlib's Agg canvas directly, with no display and no pyplot state.
"""

from typing import Any

from etils import epath
from matplotlib import figure as mpl_figure
from matplotlib.backends import backend_agg

from beta_lasso import models
from beta_lasso.data import input_pipeline

# Every dataset of the paper (CIFAR-10, CIFAR-100, SVHN) has CIFAR-10's
# 32x32x3 images: the figures' default where a run does not say its own.
PAPER_IMAGE_SHAPE = input_pipeline.DATASETS['cifar10'].image_shape

DPI = 100


def run_label(config: dict[str, Any], *, size: bool = True) -> str:
  """E.g. 'S-FC, beta-LASSO beta=50, alpha=150' from a run's config."""
  model = config.get('model', '?')
  parts = [model_name(model)]
  spec = models.MODELS.get(model)
  if (
      size
      and spec is not None
      and (spec.size_field == 'model_kwargs.kernel_size')
  ):
    kwargs = config.get('model_kwargs', {})
    parts[0] += f' k={kwargs.get("kernel_size", spec.default_size())}'
  parts.append(optimizer_label(config))
  if size and spec is not None and spec.size_field == 'alpha':
    parts.append(f'α={config.get("alpha")}')
  if config.get('permute_pixels'):
    parts.append('permuted pixels')
  return ', '.join(parts)


def optimizer_label(config: dict[str, Any], *, beta: bool = True) -> str:
  """'β-LASSO β=50' (or 'β-LASSO' without `beta`), 'SGD', from a config."""
  if config.get('optimizer') == 'beta_lasso':
    return f'β-LASSO β={config.get("beta", 0):g}' if beta else 'β-LASSO'
  return str(config.get('optimizer', '?')).upper()


def model_name(model: str) -> str:
  """The paper's name of a model: 'sfc' -> 'S-FC'."""
  return models.display_name(model)


def new_figure(width: float, height: float) -> mpl_figure.Figure:
  """An empty figure of `width` x `height` inches on an Agg canvas."""
  fig = mpl_figure.Figure(figsize=(width, height), dpi=DPI)
  backend_agg.FigureCanvasAgg(fig)
  return fig


def save(fig: mpl_figure.Figure, path):
  """Writes `fig` to `path` as a PNG, creating the folder it goes in."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    fig.savefig(f, format='png', dpi=DPI)
