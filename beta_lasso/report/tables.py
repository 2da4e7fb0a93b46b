"""The report's rows and its markdown: one row per run, numbers from its results.

`row` reduces a run's results (see `loading.load_run`) to what the tables
show; `markdown` lays out report.md around the figures.
"""

from collections.abc import Sequence
from typing import Any

from beta_lasso import models
from beta_lasso.metrics import mdl
from beta_lasso.report import figures
from beta_lasso.training import results as results_lib

# The models in the paper's order: the registry's.
_MODEL_ORDER = tuple(models.MODELS)


# How the report names each config field that sets a model's size.
_SIZE_LABELS = {
    'alpha': 'α',
    'model_kwargs.width': 'width',
    'model_kwargs.kernel_size': 'k',
}


def _size(config: dict[str, Any]) -> str:
  """'α 150', 'width 14541', 'k 3': the field that sizes the run's model."""
  spec = models.MODELS.get(config.get('model'))
  if spec is None or spec.size_field == 'alpha':
    return f'α {config.get("alpha")}'
  kwargs = config.get('model_kwargs', {}) or {}
  value = kwargs.get(spec.size_kwarg, spec.default_size())
  return f'{_SIZE_LABELS[spec.size_field]} {value}'


def row(
    results: results_lib.ResultsLike, *, bits: int = 32, delta: float = 0.05
) -> dict[str, Any]:
  """The numbers of one run that the report's tables show.

  Args:
    results: a run's results (finished, or read from its newest checkpoint).
    bits: bits per weight for the MDL bounds.
    delta: confidence of the MDL bounds.

  Returns:
    A flat dict: label, model, optimizer, dataset, size, epochs, accuracies,
    weights and non-zeros, the first layer's locality medians against the
    null, and the MDL bounds (None where the run has no training accuracy).
  """
  results = results_lib.as_results(results)
  config = results.config
  model = config.get('model', '?')
  weights = int(sum(results.weights.values()))
  nnz_layers = results.last('nnz') or {}
  nnz = int(sum(nnz_layers.values())) if nnz_layers else None
  first = models.first_layer_name(model)
  locality = results.last('locality') or results_lib.Locality()
  train_accuracy = results.train_accuracy
  bounds = None
  if train_accuracy is not None and nnz is not None:
    # Runs of the first release did not record their train split's size.
    examples = results.train_examples or 50_000
    bounds = mdl.bounds(
        1 - train_accuracy, nnz, weights, examples, bits=bits, delta=delta
    )
  history = results.history
  return {
      'label': figures.run_label(config),
      'model': model,
      'optimizer': figures.optimizer_label(config),
      'dataset': config.get('dataset', '?'),
      'pixels': 'permuted' if config.get('permute_pixels') else 'image',
      'size': _size(config),
      'finished': results.finished,
      'epochs': results.epochs,
      'planned_epochs': config.get('num_epochs'),
      'last_step': history[-1].step if history else 0,
      'wall_seconds': results.wall_seconds,
      'test_accuracy': results.last('test_accuracy'),
      'train_accuracy': train_accuracy,
      'weights': weights,
      'nnz': nnz,
      'first_layer': first,
      'first_weights': results.weights.get(first) if first else None,
      'first_nnz': nnz_layers.get(first) if first else None,
      'window_share': locality.window_share.active.median,
      'window_share_null': locality.window_share.null_active.median,
      'spread': locality.spread.active.median,
      'spread_null': locality.spread.null_active.median,
      'ipr': locality.ipr.active.median,
      'active_units': locality.active_units,
      'units': locality.units,
      'mdl_theorem1': bounds.theorem1 if bounds else None,
      'mdl_theorem2': bounds.theorem2 if bounds else None,
      'workdir': results.workdir or '',
  }


def sort_key(r: dict[str, Any]):
  """Pixels, models in the paper's order, optimizer, then size."""
  model = (
      _MODEL_ORDER.index(r['model'])
      if r['model'] in _MODEL_ORDER
      else len(_MODEL_ORDER)
  )
  return (
      r['dataset'],
      r['pixels'] != 'image',
      model,
      r['optimizer'],
      r['weights'],
      r['workdir'],
  )


def _pct(x) -> str:
  return '–' if x is None else f'{100 * x:.2f}'


def _num(x, fmt='{:.3g}') -> str:
  return '–' if x is None else fmt.format(x)


def _count(n, total=None) -> str:
  if n is None:
    return '–'
  return f'{n:,}' + (f' ({100 * n / total:.1f}%)' if total else '')


def _epochs(r) -> str:
  if r['finished']:
    return f'{r["epochs"]:g}'
  return f'running (step {r["last_step"]:,} of {r["planned_epochs"]:g} epochs)'


def _minutes(seconds) -> str:
  return '–' if seconds is None else f'{seconds / 60:.1f} min'


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
  out = [
      '| ' + ' | '.join(header) + ' |',
      '|' + '|'.join('---' for _ in header) + '|',
  ]
  out += ['| ' + ' | '.join(line) + ' |' for line in lines]
  return '\n'.join(out)


def accuracy_table(rows: Sequence[dict[str, Any]]) -> str:
  """Tables 1 and 2 style: accuracy, weights and non-zeros per run."""
  return _table(
      [
          'model',
          'optimizer',
          'pixels',
          'dataset',
          'size',
          'epochs',
          'test acc. (%)',
          'train acc. (%)',
          'weights',
          'non-zeros',
          'wall',
      ],
      [
          [
              figures.model_name(r['model']),
              r['optimizer'],
              r['pixels'],
              r['dataset'],
              r['size'],
              _epochs(r),
              _pct(r['test_accuracy']),
              _pct(r['train_accuracy']),
              f'{r["weights"]:,}',
              _count(r['nnz'], r['weights']),
              _minutes(r['wall_seconds']),
          ]
          for r in rows
      ],
  )


def locality_table(rows: Sequence[dict[str, Any]]) -> str:
  """First-layer non-zeros and locality against the null, and MDL bounds."""
  lines = []
  for r in rows:
    if r['first_layer'] is None:
      continue
    lines.append(
        [
            f'{figures.model_name(r["model"])}, {r["optimizer"]}, {r["size"]}'
            + (', permuted' if r['pixels'] == 'permuted' else ''),
            _count(r['first_nnz'], r['first_weights']),
            (
                f'{int(r["active_units"]):,} / {int(r["units"]):,}'
                if r['units'] is not None
                else '–'
            ),
            f'{_num(r["window_share"], "{:.3f}")} vs {_num(r["window_share_null"], "{:.3f}")}',
            f'{_num(r["spread"], "{:.2f}")} vs {_num(r["spread_null"], "{:.2f}")}',
            _num(r['ipr'], '{:.4f}'),
            _num(r['mdl_theorem2'], '{:.3g}'),
            _num(r['mdl_theorem1'], '{:.3g}'),
        ]
    )
  return _table(
      [
          'run',
          'first-layer non-zeros',
          'units ≥ 20 nz / all',
          'window share (run vs null)',
          'spread px (run vs null)',
          'IPR',
          'MDL bound, Thm 2',
          'MDL bound, Thm 1',
      ],
      lines,
  )


def markdown(
    rows: Sequence[dict[str, Any]],
    made: dict[str, str],
    filters: Sequence[tuple[str, str]],
    *,
    bits: int,
    delta: float,
    command: str,
) -> str:
  """report.md: both tables, the figures, and how the numbers were made."""
  parts = [
      '# Report',
      '',
      f'Made by `{command}` from {len(rows)} runs. Every number comes from '
      "the runs' results.json (a run still going: its newest checkpoint).",
      '',
      '## Accuracy, weights and non-zeros (Tables 1 and 2)',
      '',
      accuracy_table(rows),
      '',
      '## First-layer locality and MDL bounds',
      '',
      'Locality is measured on the layer that sees the image (S-FC/D-FC '
      '`layer1`, 3-FC `fc1`, the conv or locally connected `layer1`): per '
      'unit, the largest share of its weight energy inside a 9x9 window, '
      'the RMS distance of its energy from its centroid, and the inverse '
      'participation ratio (medians over units with at least 20 non-zeros). '
      'The null is the same weights with pixel positions permuted at random: '
      'a run is local only as far as it beats its null. Runs on permuted '
      "pixels are measured in the image's own coordinates.",
      '',
      f'MDL bounds on the test error (0-1; above 1 is vacuous), b = {bits} '
      f'bits, delta = {delta}, m = the training examples, the training error '
      'of the final network: Theorem 1 describes every weight (n b bits), '
      'Theorem 2 the non-zeros (k b + k log2(k n) + 2 log2 n bits).',
      '',
      locality_table(rows),
      '',
  ]
  captions = {
      'fig2': 'Figure 2: test accuracy against weights.',
      'fig3': 'Figure 3: non-zero weights per layer over training.',
      'locality': 'First-layer locality over training, against the null '
      '(dashed).',
      'fig5': 'Figure 5: ResNet18 accuracy against kernel size.',
      'accuracy': 'Test accuracy and loss over training.',
  }
  parts += ['## Figures', '']
  for key in ('fig2', 'fig3', 'locality', 'fig5', 'accuracy'):
    if key in made:
      parts += [f'{captions[key]}', '', f'![{key}]({made[key]})', '']
  if filters:
    parts += [
        'Figure 4: first-layer filters (16 units drawn at random among '
        'those with at least 20 non-zeros; zero is mid-grey).',
        '',
    ]
    for i in range(0, len(filters), 3):
      chunk = filters[i : i + 3]
      parts.append(
          _table(
              [label for label, _ in chunk],
              [[f'![{label}]({f})' for label, f in chunk]],
          )
      )
      parts.append('')
  return '\n'.join(parts)
