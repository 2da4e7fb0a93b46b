"""Evaluation: what an eval records of the network, and the console's line.

`Evaluator` measures accuracy and loss over whole splits through the run's
compiled steps (`training.steps.Steps`), counts non-zeros per layer on device, and
measures the first layer's locality (`metrics.locality`); `eval_scalars` is
what TensorBoard gets of an eval and `eval_line` what the console gets.
"""

from typing import Any
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from beta_lasso import models
from beta_lasso import pytree
from beta_lasso.metrics import locality
from beta_lasso.training import results as results_lib
from beta_lasso.training.steps import Split


# ----------------------------------------------------------------------------
# Evaluation: accuracy and loss, non-zeros, the first layer's locality.
# ----------------------------------------------------------------------------
class Evaluator:
  """What an eval records of the network: an entry of the run's history."""

  def __init__(
      self,
      steps,
      *,
      model: str,
      image_shape,
      permutation: Optional[np.ndarray] = None,
  ):
    """Compiles nothing yet.

    Args:
      steps: the run's compiled steps (`training.steps.Steps`).
      model: the config's model name, to find its first layer.
      image_shape: (H, W, C) of the input, the geometry locality is measured in.
      permutation: a permuted-pixel run's pixel permutation.
    """
    self._steps = steps
    self.first_layer = models.first_layer_name(model)
    self._image_shape = image_shape
    self._permutation = permutation
    # Counted on device: only one number per leaf comes back to the host.
    self._nonzeros = jax.jit(
        lambda p: jax.tree.map(jnp.count_nonzero, p),
        out_shardings=steps.replicated,
    )

  def accuracy_and_loss(self, state, split: Split) -> tuple[float, float]:
    """Accuracy and mean loss over a whole split, without augmentation."""
    totals = self._steps.eval_totals(state, split)
    return (
        float(totals['correct'] / totals['count']),
        float(totals['loss'] / totals['count']),
    )

  def nonzeros(self, params) -> dict[str, int]:
    """Non-zero kernel weights per layer."""
    return pytree.sum_per_layer(
        jax.device_get(self._nonzeros(params)), int, pytree.weight_mask(params)
    )

  def measures_locality(self, params) -> bool:
    """Whether the first layer's locality is measured (`locality`)."""
    if self.first_layer is None:
      return False
    # Patches of permuted pixels have no image geometry to measure.
    return (
        self._permutation is None
        or params[self.first_layer]['kernel'].ndim == 2
    )

  def can_be_nonlocal(self, params) -> bool:
    """Whether the first layer is dense: a conv or locally connected one is
    local by construction, however it is trained."""
    return (
        self.measures_locality(params)
        and params[self.first_layer]['kernel'].ndim == 2
    )

  def locality(self, params) -> Optional[dict[str, float]]:
    """`locality.summarize` of the first layer; None where not measured."""
    if not self.measures_locality(params):
      return None
    # Measured on the kernel's devices, as sharded; only per-unit numbers come
    # to the host.
    return locality.summarize(
        params[self.first_layer]['kernel'],
        self._image_shape,
        pixel_permutation=self._permutation,
    )

  def __call__(
      self, state, test: Split, val: Optional[Split] = None
  ) -> dict[str, Any]:
    """test_accuracy, test_loss, val_accuracy and val_loss (with `val`), nnz
    and locality (where measured)."""
    accuracy, loss = self.accuracy_and_loss(state, test)
    entry = {'test_accuracy': accuracy, 'test_loss': loss}
    if val is not None:
      entry['val_accuracy'], entry['val_loss'] = self.accuracy_and_loss(
          state, val
      )
    entry['nnz'] = self.nonzeros(state.params)
    measured = self.locality(state.params)
    if measured is not None:
      entry['locality'] = measured
    return entry


def eval_scalars(entry: dict[str, Any]) -> dict[str, float]:
  """What TensorBoard gets of an eval: accuracies, losses, non-zeros per
  layer and the locality medians."""
  return {
      'test_accuracy': entry['test_accuracy'],
      'test_loss': entry['test_loss'],
      **{k: entry[k] for k in ('val_accuracy', 'val_loss') if k in entry},
      **{f'nnz/{k}': v for k, v in entry['nnz'].items()},
      **{
          f'locality/{k}': v
          for k, v in entry.get('locality', {}).items()
          if k.endswith('/median')
      },
  }


# ----------------------------------------------------------------------------
# The console: one line per eval. The full record is in results.json and
# TensorBoard.
# ----------------------------------------------------------------------------
def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  if seconds >= 60:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds}s'


def eval_line(
    step: int,
    entry: dict[str, Any],
    *,
    epoch: float,
    train_accuracy: Optional[float],
    first_layer: Optional[str],
    weights: dict[str, int],
    show_locality: bool,
    eta_seconds: Optional[float],
) -> str:
  """The console's line for one eval.

  'Step 98: test accuracy 0.3912, train 0.3721, val 0.3800 | epoch 0.50 |
  layer1 1,944/1,944 non-zero | window share 0.412 vs null 0.118 | ETA 1m05s'

  Args:
    step: steps done.
    entry: the eval (`Evaluator.__call__`).
    epoch: epochs done.
    train_accuracy: over the train batches since the previous log.
    first_layer: the layer whose non-zeros are shown; None: no such layer.
    weights: kernel weights per layer.
    show_locality: give the first layer's window share against its null (only
      for a layer that can be non-local: for the others it is 1).
    eta_seconds: the time left; None when not yet known.
  """
  accuracies = [f'test accuracy {entry["test_accuracy"]:.4f}']
  if train_accuracy is not None:
    accuracies.append(f'train {train_accuracy:.4f}')
  if 'val_accuracy' in entry:
    accuracies.append(f'val {entry["val_accuracy"]:.4f}')
  parts = [f'Step {step}: ' + ', '.join(accuracies), f'epoch {epoch:.2f}']
  if first_layer in entry['nnz'] and first_layer in weights:
    parts.append(
        f'{first_layer} {entry["nnz"][first_layer]:,}/'
        f'{weights[first_layer]:,} non-zero'
    )
  if show_locality and entry.get('locality'):
    share = results_lib.Locality.from_json(entry['locality']).window_share
    parts.append(
        f'window share {share.active.median:.3f} vs null '
        f'{share.null_active.median:.3f}'
    )
  if eta_seconds is not None:
    parts.append(f'ETA {_duration(eta_seconds)}')
  return ' | '.join(parts)
