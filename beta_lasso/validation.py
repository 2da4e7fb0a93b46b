"""Checks a config before any compute, so a typo costs seconds, not a day.

Every error is one line naming the bad value and what would be valid. Nothing
here touches the workdir.
"""
import numbers

import jax
import ml_collections

from beta_lasso import input_pipeline
from beta_lasso import models

OPTIMIZERS = ('sgd', 'beta_lasso')
REGULARIZE = ('kernels', 'all')


class ConfigError(ValueError):
  """A config value that cannot work."""


def _choice(config, field, valid):
  value = config[field]
  if value not in valid:
    raise ConfigError(f'config.{field}={value!r} is not valid; choose one of: '
                      f'{", ".join(valid)}')


def _number(config, field, *, positive=False, integer=False, below=None):
  value = config[field]
  kind = 'an integer' if integer else 'a number'
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if ok and integer:
    ok = float(value).is_integer()
  if not ok:
    raise ConfigError(f'config.{field}={value!r} is not valid; it must be {kind}')
  if positive and not value > 0:
    raise ConfigError(f'config.{field}={value!r} is not valid; it must be > 0')
  if not positive and value < 0:
    raise ConfigError(f'config.{field}={value!r} is not valid; it must be >= 0')
  if below is not None and not value < below:
    raise ConfigError(
        f'config.{field}={value!r} is not valid; it must be < {below}')


def validate_config(config: ml_collections.ConfigDict):
  """Raises ConfigError (or DatasetNotFoundError) for the first bad value."""
  _choice(config, 'model', tuple(models.MODELS))
  _choice(config, 'dataset', tuple(input_pipeline.DATASETS))
  _choice(config, 'optimizer', OPTIMIZERS)
  _choice(config, 'augment', input_pipeline.AUGMENTATIONS)
  _choice(config, 'regularize', REGULARIZE)
  for field in ('alpha', 'batch_size', 'log_every_steps',
                'max_checkpoints_to_keep'):
    _number(config, field, positive=True, integer=True)
  for field in ('learning_rate', 'num_epochs', 'eval_every_epochs',
                'checkpoint_every_epochs'):
    _number(config, field, positive=True)
  for field in ('l1', 'l1_conv', 'beta', 'weight_decay', 'warmup_epochs'):
    _number(config, field)
  _number(config, 'momentum', below=1)
  _number(config, 'dropout_rate', below=1)
  _number(config, 'seed', integer=True)
  if config.warmup_epochs >= config.num_epochs:
    raise ConfigError(f'config.warmup_epochs={config.warmup_epochs!r} is not '
                      f'valid; it must be < num_epochs ({config.num_epochs})')

  devices = jax.device_count()
  if config.batch_size % devices:
    raise ConfigError(
        f'config.batch_size={config.batch_size} cannot be split over '
        f'{devices} devices; use a multiple of {devices}')
  info = input_pipeline.DATASETS[config.dataset]
  try:  # Building a module allocates nothing; it checks the model's arguments.
    models.create_model(config.model, num_classes=info.num_classes,
                        alpha=config.alpha, dropout_rate=config.dropout_rate,
                        **config.model_kwargs)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'config.model_kwargs={dict(config.model_kwargs)!r} do '
                      f'not fit model {config.model!r}: {e}') from None
  input_pipeline.check_dataset(config.dataset, config.data_dir, config.download)
