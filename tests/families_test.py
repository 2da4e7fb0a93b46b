"""Every registered model has a config and trains end to end on other images.

The images are not CIFAR's 32x32x3 (on which the paper's models are trained
by the other end-to-end tests) but grayscale 28x28 and RGB 64x64 ones of
datasets outside the table, written through TFDS's builder: every family
must take any image shape, with the classes and shape from TFDS's metadata
and the normalisation measured from the training split.
"""

import importlib
import pathlib

import cli_runs
import generated_datasets
import numpy as np
import pytest

from beta_lasso import models
from beta_lasso import train
from beta_lasso.data import augmentation
from beta_lasso.data import datasets
from beta_lasso.data import input_pipeline
from beta_lasso.training import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_model_has_a_config():
  configs = {p.stem for p in (REPO / 'configs').glob('*.py')}
  assert set(models.MODELS) <= configs


# Tiny sizes: the point is that every family runs through the real loop.
_TINY = {
    'sconv': {'alpha': 2},
    'slocal': {'alpha': 2},
    'sfc': {'alpha': 2},
    'dconv': {'alpha': 1},
    'dlocal': {'alpha': 1},
    'dfc': {'alpha': 1},
    '3fc': {'model_kwargs.width': 16},
    'resnet18': {'model_kwargs.width': 2, 'model_kwargs.kernel_size': 7},
}


# Grayscale 28x28 (smaller than CIFAR's: the test costs less than on CIFAR)
# for all but S-CONV, which takes 64x64 RGB. 28 is no multiple of 16, so the
# D family's strided layers meet odd sides (28, 14, 7, 4, 2).
_DATASET = {name: 'gray28_digits' for name in models.MODELS}
_DATASET['sconv'] = 'rgb64_scenes'


def test_tiny_sizes_cover_the_registry():
  assert set(_TINY) == set(models.MODELS) == set(_DATASET)


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_family_trains_end_to_end(name, tmp_path, generated_data_dir):
  dataset = _DATASET[name]
  shape, num_classes, train_size, test_size = generated_datasets.SHAPES[dataset]
  config = importlib.import_module(f'configs.{name}').get_config('cpu')
  for field, value in _TINY[name].items():
    config.update_from_flattened_dict({field: value})
  config.dataset = dataset
  config.data_dir = generated_data_dir
  config.augment = 'crop_flip_cutout'  # Cutout of half the side, no flip.
  config.batch_size = 32
  config.eval_batch_size = 64  # 100 test images: the last batch is padded.
  config.num_epochs = 3 / (train_size // 32)  # 3 steps.
  results = train.train_and_evaluate(config, str(tmp_path))

  assert results['steps'] == 3
  # Classes and shape from TFDS's metadata, statistics from the train split.
  images, _ = input_pipeline.load_split(dataset, 'train', generated_data_dir)
  mean, std = datasets.measure_stats(images)
  assert results['dataset'] == {
      'dataset': dataset,
      'num_classes': num_classes,
      'image_shape': list(shape),
      'flip': False,
      'cutout': shape[0] // 2,
      'autoaugment_policy': None,
      'mean': list(mean),
      'std': list(std),
      'stats_from': f'{dataset} train',
  }
  np.testing.assert_allclose(mean, images.mean((0, 1, 2)), rtol=1e-12)
  np.testing.assert_allclose(std, images.std((0, 1, 2)), rtol=1e-9)
  model = models.create_model(
      name, num_classes=num_classes, alpha=config.alpha, **config.model_kwargs
  )
  assert results['weights'] == models.kernel_counts(model, (1, *shape))
  assert set(results['nnz']) == set(results['weights'])
  # The padded, batched eval equals the model applied to the split directly.
  state = cli_runs.saved_state(tmp_path)
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  images, labels = input_pipeline.load_split(
      dataset, 'test', generated_data_dir
  )
  assert len(labels) == test_size
  logits = model.apply(
      variables,
      augmentation.normalize(
          images,
          datasets.load(
              workdir_lib.read_dataset(tmp_path), dataset, 'dataset.json'
          ),
      ),
      train=False,
  )
  correct = np.asarray(logits).argmax(-1) == labels
  assert results['test_accuracy'] == pytest.approx(correct.mean(), abs=1e-6)


def test_statistics_are_read_back_not_measured_again(
    tmp_path, monkeypatch, generated_data_dir
):
  config = importlib.import_module('configs.sconv').get_config('cpu')
  config.update(
      dict(
          alpha=1,
          dataset='gray28_digits',
          batch_size=32,
          eval_batch_size=100,
          num_epochs=1 / 9,
          data_dir=generated_data_dir,
      )
  )
  first = train.train_and_evaluate(config, str(tmp_path))
  monkeypatch.setattr(datasets, 'measure_stats', None)  # Would raise.
  # Resumed after its last step: the run evaluates its checkpoint again.
  again = train.train_and_evaluate(config, str(tmp_path))
  assert again['dataset'] == first['dataset']
  assert again['test_accuracy'] == first['test_accuracy']
