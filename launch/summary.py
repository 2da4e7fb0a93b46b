"""The summary of a sweep: each run's results, as a table and a CSV."""

import csv
import io
import json
from typing import Optional
from typing import Sequence

from etils import epath

from beta_lasso.training import results as results_lib
from beta_lasso.training import workdir as workdir_lib
from launch import planning

SUMMARY_FILE = 'summary.csv'
_UNREADABLE = object()  # A results.json that does not parse.
# What results.json reports of the step of best validation accuracy.
_SELECTION = ('best_val_accuracy', 'best_step', 'test_accuracy_at_best_val')


def read_results(workdir: str) -> Optional[dict]:
  """The run's results.json as JSON, or None while it has not finished.

  A file that does not parse (torn by a kill, edited by hand) reads as
  {'unreadable': True}: the sweep runs it again.
  """
  path = epath.Path(workdir) / workdir_lib.RESULTS_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {'unreadable': True}


def summarize(
    runs: Sequence[planning.Run], statuses: Optional[dict[str, str]] = None
) -> list[dict]:
  """One row per run, from its results.json.

  Args:
    runs: the sweep's runs.
    statuses: run name -> what happened in this invocation ('failed (exit 1)',
      ...), shown for runs without results; the rest are 'missing'.

  Returns:
    Rows with the run's name, overrides, status, test_accuracy,
    best_val_accuracy, best_step, test_accuracy_at_best_val, nonzero_weights
    and weights (None where there are no results), epochs, wall_seconds and
    workdir. Ranked as the paper selects: by best validation accuracy, best
    first; runs without one follow in sweep order.
  """
  statuses = statuses or {}
  rows = []
  for run in runs:
    try:
      results = results_lib.Results.load(run.workdir)
    except (OSError, ValueError):
      results = _UNREADABLE
    row = {
        'name': run.name,
        **run.overrides,
        'status': 'finished',
        'test_accuracy': None,
        **dict.fromkeys(_SELECTION),
        'nonzero_weights': None,
        'weights': None,
        'epochs': None,
        'wall_seconds': None,
        'workdir': run.workdir,
    }
    if results is None:
      row['status'] = statuses.get(run.name, 'missing')
    elif results is _UNREADABLE:
      row['status'] = f'unreadable {workdir_lib.RESULTS_FILE}'
    else:
      row['test_accuracy'] = results.test_accuracy
      row.update({k: getattr(results, k) for k in _SELECTION})
      # Totals over layers; the per-layer counts stay in results.json.
      if results.nnz is not None:
        row['nonzero_weights'] = sum(results.nnz.values())
      if results.weights:
        row['weights'] = sum(results.weights.values())
      row['epochs'] = results.epochs
      row['wall_seconds'] = results.wall_seconds
    rows.append(row)
  # A stable sort: equal or missing validation accuracies keep sweep order.
  return sorted(
      rows,
      key=lambda row: (
          row['best_val_accuracy'] is None,
          -(row['best_val_accuracy'] or 0.0),
      ),
  )


def format_table(rows: Sequence[dict]) -> str:
  """A fixed-width text table: run, status, accuracies, non-zero weights.

  With validation, the best validation accuracy and the test accuracy at its
  step come before the final test accuracy.
  """
  selected = any(row.get('best_val_accuracy') is not None for row in rows)
  accuracies = (
      ('best_val_accuracy', 'test_accuracy_at_best_val') if selected else ()
  ) + ('test_accuracy',)
  header = (
      'run',
      'status',
      *(('val_acc', 'test_acc@val') if selected else ()),
      'test_acc',
      'non-zero',
      'weights',
  )
  lines = [header]
  for row in rows:
    lines.append(
        (
            row['name'],
            row['status'],
            *(
                '-' if row.get(k) is None else f'{row[k]:.4f}'
                for k in accuracies
            ),
            *(
                '-' if row[k] is None else f'{row[k]:,}'
                for k in ('nonzero_weights', 'weights')
            ),
        )
    )
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  return '\n'.join(
      '  '.join(
          cell.ljust(w) if i < 2 else cell.rjust(w)
          for i, (cell, w) in enumerate(zip(line, widths))
      ).rstrip()
      for line in lines
  )


def write_summary(rows: Sequence[dict], workdir_root: str) -> str:
  """Writes the rows to WORKDIR_ROOT/summary.csv; returns its path."""
  fixed = (
      'status',
      'test_accuracy',
      *_SELECTION,
      'nonzero_weights',
      'weights',
      'epochs',
      'wall_seconds',
      'workdir',
  )
  columns = ['name']
  for row in rows:  # The union of the runs' overrides, in the order first seen.
    columns += [k for k in row if k not in columns and k not in fixed]
  columns += fixed
  text = io.StringIO()
  writer = csv.DictWriter(text, fieldnames=columns, lineterminator='\n')
  writer.writeheader()
  writer.writerows(rows)
  path = epath.Path(workdir_root) / SUMMARY_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text.getvalue())
  return str(path)
