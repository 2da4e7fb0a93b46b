"""Every registered model has a config and trains end to end on real CIFAR-10."""
import importlib
import pathlib

import numpy as np
import pytest

from beta_lasso import augmentation
from beta_lasso import input_pipeline
from beta_lasso import models
from beta_lasso import train
import cli_runs

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_model_has_a_config():
  configs = {p.stem for p in (REPO / 'configs').glob('*.py')}
  assert set(models.MODELS) <= configs


# Tiny sizes: the point is that every family runs through the real loop.
_TINY = {
    'sconv': {'alpha': 2}, 'slocal': {'alpha': 2}, 'sfc': {'alpha': 2},
    'dconv': {'alpha': 1}, 'dlocal': {'alpha': 1}, 'dfc': {'alpha': 1},
    '3fc': {'model_kwargs.width': 16},
    'resnet18': {'model_kwargs.width': 2, 'model_kwargs.kernel_size': 7},
}


def test_tiny_sizes_cover_the_registry():
  assert set(_TINY) == set(models.MODELS)


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_family_trains_end_to_end(name, tmp_path):
  config = importlib.import_module(f'configs.{name}').get_config('cpu')
  for field, value in _TINY[name].items():
    config.update_from_flattened_dict({field: value})
  config.batch_size = 32
  # 300 = 256 + 44: the last eval batch is padded.
  config.eval_split = 'test[:300]'  # The full test set is for real runs.
  config.eval_batch_size = 256
  config.num_epochs = 3 / (50_000 // 32)  # 3 steps.
  results = train.train_and_evaluate(config, str(tmp_path))

  assert results['steps'] == 3
  model = models.create_model(name, num_classes=10, alpha=config.alpha,
                              **config.model_kwargs)
  assert results['weights'] == models.kernel_counts(model, (1, 32, 32, 3))
  assert set(results['nnz']) == set(results['weights'])
  # The padded, batched eval equals the model applied to the split directly.
  state = cli_runs._saved_state(tmp_path)  # pylint: disable=protected-access
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  images, labels = input_pipeline.load_split('cifar10', 'test[:300]')
  logits = model.apply(variables, augmentation.normalize(
      images, input_pipeline.DATASETS['cifar10']), train=False)
  correct = np.asarray(logits).argmax(-1) == labels
  assert results['test_accuracy'] == pytest.approx(correct.mean(), abs=1e-6)

