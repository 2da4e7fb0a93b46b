"""Model selection on a held-out split of real CIFAR-10, in bfloat16."""

import json

import pytest

from beta_lasso import train
from beta_lasso.training import checkpointing
from beta_lasso.training import loading
from beta_lasso.training import selection
from configs import sconv


def test_selection_keeps_the_best_validation_step(tmp_path):
  config = sconv.get_config('cpu')
  config.update(
      dict(
          alpha=4,
          batch_size=128,
          eval_batch_size=500,
          half_precision=True,
          train_split='train[:5000]',
          val_split='train[45000:46000]',
          eval_split='test[:1000]',
          num_epochs=1.0,
          eval_every_epochs=0.25,
          checkpoint_every_epochs=1.0,
          max_checkpoints_to_keep=1,
          # The learning rate climbs to 10 (no cosine until the last 2 steps):
          # the network learns, then the large steps undo it, so the best
          # validation step is an early one that max_checkpoints_to_keep=1 alone
          # would drop.
          learning_rate=10.0,
          warmup_epochs=0.95,
      )
  )
  results = train.train_and_evaluate(config, str(tmp_path))

  history = results['history']
  assert [h['step'] for h in history] == [10, 20, 30, 39]
  best = max(history, key=lambda h: h['val_accuracy'])
  assert best['step'] < 39  # Measured: step 10, 0.174 against 0.124 at 39.
  assert best['val_accuracy'] > history[-1]['val_accuracy'] + 0.03
  # bf16 learns: chance is 0.1, give or take 0.01 on 1,000 images.
  assert best['val_accuracy'] > 0.15
  assert {k: results[k] for k in selection.results(history)} == {
      'best_val_accuracy': best['val_accuracy'],
      'best_step': best['step'],
      'test_accuracy_at_best_val': best['test_accuracy'],
  }
  assert results['test_accuracy'] == history[-1]['test_accuracy']
  saved = json.loads((tmp_path / 'results.json').read_text())
  assert saved['best_step'] == best['step']
  # The newest checkpoint and the best one; nothing else.
  steps = sorted(
      int(p.name)
      for p in (tmp_path / 'checkpoints').iterdir()
      if p.name.isdigit()
  )
  assert steps == [best['step'], 39]
  with checkpointing.Checkpointer(tmp_path / 'checkpoints', 1) as checkpoints:
    assert checkpoints.best_step() == best['step']
  assert loading.load_variables(tmp_path, step=best['step'])['step'] == (
      best['step']
  )


@pytest.mark.parametrize(
    'history, expected',
    [
        ([], (None, None, None)),
        ([{'step': 1, 'test_accuracy': 0.5}], (None, None, None)),
        # Ties go to the first step, as the one saved and kept.
        (
            [
                {'step': 1, 'val_accuracy': 0.3, 'test_accuracy': 0.2},
                {'step': 2, 'val_accuracy': 0.4, 'test_accuracy': 0.1},
                {'step': 3, 'val_accuracy': 0.4, 'test_accuracy': 0.5},
            ],
            (0.4, 2, 0.1),
        ),
    ],
)
def test_selection_results(history, expected):
  assert tuple(selection.results(history).values()) == expected
