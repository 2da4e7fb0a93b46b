"""Any TFDS image classification dataset by name: classes, shape, statistics.

The paper's three datasets keep their published settings
(`input_pipeline.DATASETS`). Any other TFDS dataset whose examples are one
fixed-shape image and a class label trains too:

- the number of classes and the image shape come from its TFDS metadata;
- flips are off (they change what digits, letters and text mean: set
  `config.flip=True` for natural images) and Cutout is half the image side
  (the paper's 16 pixels on 32x32 CIFAR); `config.flip` and `config.cutout`
  override these for every dataset;
- the normalisation statistics are measured once from the run's training
  split and kept in the workdir's dataset.json, which a resumed run reads back.

A data file (`config.data_file`) gives its own image shape and number of
classes (`data_file.describe`): a file of the table's dataset with the table's
image shape keeps the table's settings; any other file is treated like a
dataset outside the table, whatever `config.dataset` says.

dataset.json is written for every run: what the run used, table or measured.
This module reads and writes no file of the workdir: the caller passes what
`training.workdir.read_dataset` read.
"""

import functools
from typing import Optional

import ml_collections
import numpy as np

from beta_lasso import errors
from beta_lasso.data import data_file as data_file_lib
from beta_lasso.data import input_pipeline
from beta_lasso.data.input_pipeline import DatasetInfo


class DatasetError(errors.UserError, ValueError):
  """A dataset that the models cannot train on, or an unknown name."""


def base_info(config: ml_collections.ConfigDict) -> DatasetInfo:
  """`config.dataset`'s info with `config`'s flip and Cutout, before any data.

  Cheap: a table entry, the TFDS metadata, or a data file's headers and
  labels (no image is decoded). The statistics of a dataset outside the table
  are None until `with_stats`.

  Raises:
    DatasetError: an unknown name, or a dataset of no fixed image shape or
      without a class label.
    data_file.DataFileError: a data file that is missing or malformed.
  """
  name = config.dataset
  table = input_pipeline.DATASETS.get(name)
  if config.get('data_file'):
    contents = data_file_lib.describe(config.data_file)
    if (
        table is not None
        and contents.image_shape == table.image_shape
        and contents.num_classes <= table.num_classes
    ):
      info = table
    else:
      info = _unknown(name, contents.image_shape, contents.num_classes)
  elif table is not None:
    info = table
  else:
    info = tfds_info(name, config.data_dir)
  overrides = {
      field: config[field]
      for field in ('flip', 'cutout')
      if config.get(field) is not None
  }
  return info._replace(**overrides)


def _unknown(
    name: str, shape: tuple[int, int, int], num_classes: int
) -> DatasetInfo:
  """The settings of a dataset outside the table, statistics still unknown."""
  return DatasetInfo(
      tfds_name=name,
      num_classes=num_classes,
      image_shape=tuple(shape),
      flip=False,
      cutout=min(shape[:2]) // 2,
      autoaugment_policy=None,
      mean=None,
      std=None,
  )


def tfds_info(name: str, data_dir: str | None = None) -> DatasetInfo:
  """The info of a TFDS dataset outside the table, from its metadata.

  Raises:
    DatasetError: an unknown name, or a dataset of no fixed image shape or
      without a class label.
  """
  return _from_tfds(name, input_pipeline.resolve_data_dir(data_dir))


@functools.lru_cache(maxsize=16)
def _from_tfds(name: str, data_dir: str) -> DatasetInfo:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    builder = input_pipeline.dataset_builder(name, data_dir)
  except ValueError as e:
    raise DatasetError(f'config.dataset={name!r}: {e}') from None
  image_key, label_key = input_pipeline.supervised_keys(builder.info)
  features = builder.info.features
  image = features[image_key] if image_key in features else None
  label = features[label_key] if label_key in features else None
  if not isinstance(image, tfds.features.Image) or not isinstance(
      label, tfds.features.ClassLabel
  ):
    raise DatasetError(
        f'config.dataset={name!r} is not an image classification dataset: '
        f'its features are {sorted(features)}, not an Image {image_key!r} '
        f'and a ClassLabel {label_key!r}'
    )
  shape = tuple(image.shape)
  if None in shape:
    raise DatasetError(
        f'config.dataset={name!r} has images of varying size {shape}; choose '
        'one whose images share one shape (e.g. a resized variant)'
    )
  return _unknown(name, shape, label.num_classes)


def measure_stats(
    images: np.ndarray,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and (population) std over every pixel, 0-255 scale."""
  channels = images.shape[-1]
  total = np.zeros(channels)
  squares = np.zeros(channels)
  # In chunks: a float64 copy of a whole split would be 8x its size.
  for start in range(0, len(images), 4096):
    chunk = (
        images[start : start + 4096].reshape(-1, channels).astype(np.float64)
    )
    total += chunk.sum(0)
    squares += np.square(chunk).sum(0)
  count = images.size // channels
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def with_stats(
    info: DatasetInfo,
    config: ml_collections.ConfigDict,
    train_images: np.ndarray,
    saved: dict | None,
) -> DatasetInfo:
  """`info` with its statistics: the table's, cached, or measured now.

  Args:
    info: from `base_info`.
    config: the run's config.
    train_images: the training split the statistics are measured on.
    saved: what an earlier start of the run recorded (`describe`), or None.

  Returns:
    `info` with `mean` and `std` set.
  """
  if info.mean is not None:
    return info
  if saved is not None and saved.get('stats_from') == _stats_source(
      config, measured=True
  ):
    mean, std = saved['mean'], saved['std']
  else:
    mean, std = measure_stats(train_images)
  return info._replace(mean=tuple(mean), std=tuple(std))


def _stats_source(
    config: ml_collections.ConfigDict, measured: bool
) -> Optional[str]:
  if not measured:
    return None  # Published values.
  if config.get('data_file'):
    return f'{config.data_file} {config.train_split}'
  return f'{config.dataset} {config.train_split}'


def describe(info: DatasetInfo, config: ml_collections.ConfigDict) -> dict:
  """What the run used, for dataset.json and results.json."""
  return {
      'dataset': config.dataset,
      'num_classes': info.num_classes,
      'image_shape': list(info.image_shape),
      'flip': info.flip,
      'cutout': info.cutout,
      'autoaugment_policy': info.autoaugment_policy,
      'mean': list(info.mean),
      'std': list(info.std),
      # None: the table's published values.
      'stats_from': _stats_source(
          config, measured=not _published(info, config.dataset)
      ),
  }


def _published(info: DatasetInfo, name: str) -> bool:
  table = input_pipeline.DATASETS.get(name)
  return table is not None and tuple(info.mean) == tuple(table.mean)


def load(saved: dict | None, name: str, where: str) -> DatasetInfo:
  """The info a finished run used: its dataset.json, else the table's entry.

  Args:
    saved: the run's dataset.json (`training.workdir.read_dataset`), or None.
    name: the run's `config.dataset`.
    where: the path of the run's dataset.json, for the message.

  Raises:
    DatasetError: neither is there.
  """
  if saved is not None:
    return DatasetInfo(
        tfds_name=name,
        num_classes=saved['num_classes'],
        image_shape=tuple(saved['image_shape']),
        flip=saved['flip'],
        cutout=saved['cutout'],
        autoaugment_policy=saved.get('autoaugment_policy'),
        mean=tuple(saved['mean']),
        std=tuple(saved['std']),
    )
  if name in input_pipeline.DATASETS:
    return input_pipeline.DATASETS[name]
  raise DatasetError(
      f'there is no {where} and dataset {name!r} is not in ' 'the table'
  )
