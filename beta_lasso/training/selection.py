"""Model selection by validation accuracy, as the paper picks its runs' steps.

Every eval of a run with `config.val_split` records `val_accuracy` beside
`test_accuracy` in the run's history. The selected step is the first one with
the highest validation accuracy; its test accuracy is what the paper reports.
The history lives in every checkpoint, so a resumed run selects as an
uninterrupted one would.
"""

from typing import Optional
from typing import Sequence

METRIC = 'val_accuracy'


def best(history: Sequence[dict]) -> Optional[dict]:
  """The first eval with the highest validation accuracy; None without any."""
  chosen = None
  for entry in history:
    if METRIC in entry and (chosen is None or entry[METRIC] > chosen[METRIC]):
      chosen = entry
  return chosen


def improves(history: Sequence[dict], entry: dict) -> bool:
  """Whether `entry` beats every eval in `history` on validation accuracy."""
  previous = best(history)
  return METRIC in entry and (
      previous is None or entry[METRIC] > previous[METRIC]
  )


def results(history: Sequence[dict]) -> dict:
  """best_val_accuracy, best_step and test_accuracy_at_best_val (None: no val)."""
  chosen = best(history)
  if chosen is None:
    return {
        'best_val_accuracy': None,
        'best_step': None,
        'test_accuracy_at_best_val': None,
    }
  return {
      'best_val_accuracy': chosen[METRIC],
      'best_step': chosen['step'],
      'test_accuracy_at_best_val': chosen['test_accuracy'],
  }
