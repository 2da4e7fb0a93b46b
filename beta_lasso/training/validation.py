"""Checks a config before any compute, so a typo costs seconds, not a day.

Every error is one line naming the bad value and what would be valid. Nothing
here touches the workdir.
"""

import contextlib
import logging as pylogging
import math
import numbers

from absl import logging
import jax
import ml_collections

from beta_lasso import errors
from beta_lasso import models
from beta_lasso.data import augmentation
from beta_lasso.data import data_file as data_file_lib
from beta_lasso.data import datasets
from beta_lasso.data import input_pipeline
from beta_lasso.models import local
from beta_lasso.training import fits
from beta_lasso.training import sharding

OPTIMIZERS = ('sgd', 'beta_lasso')
REGULARIZE = ('kernels', 'all')

# The settings that a choice leaves unused: (field, value) -> (the fields it
# does not read, why). An unused field must be off (None, 0 or False), so that
# a saved config says what ran and an override of an unused field is an error
# instead of a no-op.
UNUSED = {
    ('optimizer', 'sgd'): (
        ('l1', 'l1_conv', 'beta'),
        'SGD has no L1 term and no threshold',
    ),
    ('optimizer', 'beta_lasso'): (
        ('momentum', 'weight_decay'),
        'beta-LASSO (Algorithm 1) has no momentum, and its L1 term replaces '
        'weight decay',
    ),
    ('augment', 'none'): (('flip', 'cutout'), 'it does not augment'),
    ('augment', 'crop_flip'): (('cutout',), 'it has no Cutout'),
}


def _unused_by_model(spec: models.ModelSpec) -> tuple[tuple[str, ...], str]:
  """(fields, why) that a model leaves unused; no fields for none.

  alpha, unless it is the model's size; l1_conv, when no layer of the model
  stands for a convolution (its first layer is a plain dense one).
  """
  fields, why = [], []
  if spec.size_field != 'alpha':
    fields.append('alpha')
    why.append(
        f'{spec.display_name} is sized by '
        + ' and '.join(f'model_kwargs.{k}' for k in spec.model_kwargs)
    )
  if spec.first_layer is not None and spec.first_layer.kind == 'dense':
    fields.append('l1_conv')
    why.append('has no layer that stands for a convolution')
  return tuple(fields), ' and '.join(why)


# The models' entries follow from the registry.
UNUSED.update(
    {
        ('model', spec.name): unused
        for spec in models.MODELS.values()
        if (unused := _unused_by_model(spec))[0]
    }
)


class ConfigError(errors.UserError, ValueError):
  """A config value that cannot work."""


def _choice(config, field, valid):
  value = config[field]
  if value not in valid:
    raise ConfigError(
        f'config.{field}={value!r} is not valid; choose one of: '
        f'{", ".join(valid)}'
    )


def _number(
    config, field, *, positive=False, integer=False, below=None, name=None
):
  value = config[field]
  field = name or field
  kind = 'an integer' if integer else 'a number'
  ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
  if ok and integer:
    ok = float(value).is_integer()
  if not ok:
    raise ConfigError(
        f'config.{field}={value!r} is not valid; it must be {kind}'
    )
  if not math.isfinite(value):  # inf epochs would only fail at int(round()).
    raise ConfigError(
        f'config.{field}={value!r} is not valid; it must be finite'
    )
  if positive and not value > 0:
    raise ConfigError(f'config.{field}={value!r} is not valid; it must be > 0')
  if not positive and value < 0:
    raise ConfigError(f'config.{field}={value!r} is not valid; it must be >= 0')
  if below is not None and not value < below:
    raise ConfigError(
        f'config.{field}={value!r} is not valid; it must be < {below}'
    )


def unused_fields(config: ml_collections.ConfigDict) -> dict[str, str]:
  """Field -> why, for every field that `config`'s choices leave unused."""
  unused = {}
  for (choice, value), (fields, why) in UNUSED.items():
    if config.get(choice) == value:
      for field in fields:
        unused.setdefault(field, f'with {choice}={value!r} ({why})')
  return unused


def check_fields(config: ml_collections.ConfigDict):
  """The checks that read nothing but `config`: choices, numbers, unused fields.

  Raises:
    ConfigError: the first bad value.
  """
  _choice(config, 'model', tuple(models.MODELS))
  _choice(config, 'optimizer', OPTIMIZERS)
  _choice(config, 'augment', augmentation.AUGMENTATIONS)
  _choice(config, 'regularize', REGULARIZE)
  if 'local_impl' in config:  # Absent from configs saved before it existed.
    _choice(config, 'local_impl', local.IMPLEMENTATIONS)
  unused = unused_fields(config)

  def number(field, **kwargs):
    # An unused field may be None; whether it is off is checked below.
    if not (field in unused and config.get(field) is None):
      _number(config, field, **kwargs)

  # Fields newer than some configs (e.g. a workdir's saved one) may be absent.
  batch_fields = [f for f in ('batch_size', 'eval_batch_size') if f in config]
  for field in (
      'alpha',
      'log_every_steps',
      'max_checkpoints_to_keep',
      *batch_fields,
  ):
    number(field, positive=True, integer=True)
  for field in (
      'learning_rate',
      'num_epochs',
      'eval_every_epochs',
      'checkpoint_every_epochs',
  ):
    number(field, positive=True)
  for field in ('l1', 'l1_conv', 'beta', 'weight_decay', 'warmup_epochs'):
    number(field)
  number('momentum', below=1)
  number('dropout_rate', below=1)
  if config.get('flip') is not None and not isinstance(config.flip, bool):
    raise ConfigError(
        f'config.flip={config.flip!r} is not valid; it must be '
        "True, False or None (the dataset's default)"
    )
  if config.get('cutout') is not None:
    _number(config, 'cutout', integer=True)
  for field, why in unused.items():
    if config.get(field):  # None, 0 and False are off; absent is too.
      raise ConfigError(
          f'config.{field}={config[field]!r} is not used {why}; '
          'set it to 0 or None'
      )
  # JAX takes a seed as a signed 64-bit integer.
  _number(config, 'seed', integer=True, below=2**63)
  # Every model keyword is a size (width, kernel_size): a positive integer.
  for field in config.model_kwargs:
    _number(
        config.model_kwargs,
        field,
        positive=True,
        integer=True,
        name=f'model_kwargs.{field}',
    )
  for field in ('permute_pixels', 'device_loop'):
    if not isinstance(config.get(field, False), bool):
      raise ConfigError(
          f'config.{field}={config[field]!r} is not valid; it '
          'must be True or False'
      )
  if 'steps_per_dispatch' in config:
    _number(config, 'steps_per_dispatch', positive=True, integer=True)
  if config.get('device_loop') and jax.process_count() > 1:
    raise ConfigError(
        f'config.device_loop=True is not valid with {jax.process_count()} '
        'processes; it runs on one process: set config.device_loop=False'
    )
  if config.warmup_epochs >= config.num_epochs:
    raise ConfigError(
        f'config.warmup_epochs={config.warmup_epochs!r} is not '
        f'valid; it must be < num_epochs ({config.num_epochs})'
    )

  if not isinstance(config.fsdp, bool):
    raise ConfigError(
        f'config.fsdp={config.fsdp!r} is not valid; it must be ' 'True or False'
    )
  _number(config, 'shard_min_weights', integer=True)


def validate_config(config: ml_collections.ConfigDict):
  """Raises ConfigError (or DatasetNotFoundError) for the first bad value."""
  check_fields(config)
  try:
    sharding.mesh_shape(config)
  except sharding.MeshError as e:
    raise ConfigError(str(e)) from None
  devices = jax.device_count()
  for field in ('batch_size', 'eval_batch_size'):
    if field in config and config[field] % devices:
      raise ConfigError(
          f'config.{field}={config[field]} cannot be split over {devices} '
          f'devices; use a multiple of {devices}'
      )
  with _no_tfds_warnings():
    try:
      info = datasets.base_info(config)
    except datasets.DatasetError as e:
      raise ConfigError(str(e)) from None
  if config.augment == 'fast_autoaugment' and info.autoaugment_policy is None:
    searched = [
        name
        for name, table_info in input_pipeline.DATASETS.items()
        if table_info.autoaugment_policy
    ]
    raise ConfigError(
        f"config.augment='fast_autoaugment' has no policy for "
        f'config.dataset={config.dataset!r}; Lim et al. searched policies for '
        f'{", ".join(searched)} only (use crop_flip_cutout)'
    )
  if config.get('cutout') is not None and config.cutout > min(
      info.image_shape[:2]
  ):
    raise ConfigError(
        f'config.cutout={config.cutout} is not valid; it must '
        f'be at most the image side ({min(info.image_shape[:2])})'
    )
  try:  # Building a module allocates nothing; it checks the model's arguments.
    models.create_model(
        config.model,
        num_classes=info.num_classes,
        alpha=config.alpha,
        dropout_rate=config.dropout_rate,
        **config.model_kwargs,
    )
  except (TypeError, ValueError) as e:
    raise ConfigError(
        f'config.model_kwargs={dict(config.model_kwargs)!r} do '
        f'not fit model {config.model!r}: {e}'
    ) from None
  try:
    fits.check(config)
  except fits.TooBigError as e:
    raise ConfigError(str(e)) from None
  if config.get('data_file'):
    _check_data_file(config)
    return
  with _no_tfds_warnings():
    try:
      input_pipeline.check_dataset(
          config.dataset, config.data_dir, config.download
      )
    except input_pipeline.DatasetNotFoundError as e:
      prepared = [
          name
          for name in input_pipeline.DATASETS
          if _is_prepared(name, config.data_dir)
      ]
      raise input_pipeline.DatasetNotFoundError(
          f'{e} Prepared there: {", ".join(prepared) or "none"}.'
      ) from None
    _check_splits(config)


def _check_split_sizes(config: ml_collections.ConfigDict, split_size):
  """The splits hold enough examples, and the eval batch fits the eval splits.

  Args:
    config: the run's config.
    split_size: (field, split) -> examples in that split; raises ConfigError
      for a split that does not exist.
  """
  sizes = {}
  for field, minimum in (
      ('train_split', config.batch_size),
      ('eval_split', 1),
      ('val_split', 1),
  ):
    split = config.get(field)
    if split is None:
      continue
    sizes[field] = size = split_size(field, split)
    if size < minimum:
      raise ConfigError(
          f'config.{field}={split!r} holds {size} examples; it must hold at '
          f'least {minimum}' + (' (one batch)' if minimum > 1 else '')
      )
  # A bigger eval batch is padded up from the split: memory for nothing, and
  # it would fail only after training. The split rounded up to a multiple of
  # the devices is the most that is ever useful.
  if 'eval_batch_size' not in config:
    return
  devices = jax.device_count()
  for field in ('eval_split', 'val_split'):
    if field not in sizes:
      continue
    most = -(-sizes[field] // devices) * devices
    if config.eval_batch_size > most:
      raise ConfigError(
          f'config.eval_batch_size={config.eval_batch_size} is larger than '
          f'config.{field}={config[field]!r} ({sizes[field]} examples); use '
          f'at most {most}'
      )


def _check_data_file(config: ml_collections.ConfigDict):
  """Splits of `config.data_file`: they exist and are large enough."""
  try:
    available = data_file_lib.splits_in(config.data_file)
  except data_file_lib.DataFileError as e:
    raise ConfigError(f'config.data_file: {e}') from None

  def split_size(field, split):
    try:
      name, part = data_file_lib.parse_split(split)
      if name not in available:
        raise ConfigError(
            f'config.{field}={split!r} is not in data file '
            f'{config.data_file}; it holds: {", ".join(available)}'
        )
      return len(
          range(*part.indices(data_file_lib.split_size(config.data_file, name)))
      )
    except data_file_lib.DataFileError as e:
      raise ConfigError(f'config.data_file: {e}') from None

  _check_split_sizes(config, split_size)


def _check_splits(config: ml_collections.ConfigDict):
  """Split names and sizes, from the metadata of a prepared dataset."""
  builder = input_pipeline.dataset_builder(config.dataset, config.data_dir)
  if not builder.is_prepared():
    return  # It is downloaded first; load_split checks the splits then.

  def split_size(field, split):
    try:
      return builder.info.splits[split].num_examples
    except (ValueError, KeyError, TypeError) as e:
      raise ConfigError(
          f'config.{field}={split!r} is not valid: ' f'{str(e).splitlines()[0]}'
      ) from None

  _check_split_sizes(config, split_size)


def _is_prepared(name: str, data_dir) -> bool:
  try:
    input_pipeline.check_dataset(name, data_dir, download=False)
  except input_pipeline.DatasetNotFoundError:
    return False
  return True


class _DropTfds(pylogging.Filter):

  def filter(self, record):
    return 'tensorflow_datasets' not in record.pathname


@contextlib.contextmanager
def _no_tfds_warnings():
  # TFDS warns about each dataset folder it looks into and does not find; the
  # error raised here says it in one line.
  drop = _DropTfds()
  logging.get_absl_logger().addFilter(drop)
  try:
    yield
  finally:
    logging.get_absl_logger().removeFilter(drop)
