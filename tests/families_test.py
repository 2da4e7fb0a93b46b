"""Every registered model has a config and trains end to end on real CIFAR-10."""
import importlib
import pathlib

import pytest

from beta_lasso import models
from beta_lasso import train

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
  config.eval_split = 'test[:256]'  # The full test set is for real runs.
  config.eval_batch_size = 256
  config.num_epochs = 3 / (50_000 // 32)  # 3 steps.
  results = train.train_and_evaluate(config, str(tmp_path))

  assert results['steps'] == 3
  model = models.create_model(name, num_classes=10, alpha=config.alpha,
                              **config.model_kwargs)
  assert results['weights'] == models.kernel_counts(model, (1, 32, 32, 3))
  assert set(results['nnz']) == set(results['weights'])
  assert 0.0 <= results['test_accuracy'] <= 1.0
