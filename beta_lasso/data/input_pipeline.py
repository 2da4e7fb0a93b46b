"""Input pipeline: splits held in host memory, batches chosen by step.

The datasets of the paper (CIFAR-10, CIFAR-100, SVHN) hold at most ~100k images
of 32x32x3, so each process reads a split once through TFDS into a uint8 numpy
array (~150 MB) and never touches tf.data again. Everything random is a pure
function of (seed, step):

- `train_indices` picks which examples form a step's batch, from the
  permutation `epoch_permutation` keyed by (seed, epoch) (`device_loop`
  computes the same one on the accelerator);
- `augmentation.augment` (random crop, horizontal flip, Cutout; with
  `autoaugment.fast_autoaugment` before them for 'fast_autoaugment') runs on
  the accelerator inside the jitted train step, keyed by a PRNG key the caller
  derives from (seed, step), e.g. `jax.random.fold_in(jax.random.key(seed),
  step)`.

So a run resumed from a checkpoint at step t sees bit-identical batches to one
that never stopped, with no iterator state to save.

Typical use::

  info = input_pipeline.DATASETS['cifar10']
  images, labels = input_pipeline.load_split('cifar10', 'train')
  aug = augmentation.augment_fn('crop_flip_cutout', info)
  # host side, every step:
  idx = input_pipeline.train_indices(len(labels), 512, seed, step,
                                     jax.process_index(), jax.process_count())
  batch = input_pipeline.train_batch(images, labels, idx)
  # inside the jitted step:
  x = augmentation.normalize(aug(batch['image'], rng), info)
"""

import functools
import os
import re
from typing import Iterator
from typing import NamedTuple
from typing import Optional

import jax
import numpy as np

from beta_lasso import errors
from beta_lasso.data import data_file as data_file_lib

# TensorFlow and TFDS are imported where a TFDS split is read, not here: a
# host that trains from a data file (beta_lasso.data.data_file) needs neither.
# TensorFlow only decodes records here. Its C++ start-up notices would bury
# our console: the level hides most; the oneDNN notice goes only with
# oneDNN's ops, which decoding does not use.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')


class DatasetInfo(NamedTuple):
  """What the pipeline and the models need to know about a dataset.

  Attributes:
    tfds_name: TFDS builder name (optionally with ':version').
    num_classes: number of labels.
    image_shape: (height, width, channels).
    flip: whether horizontal flips preserve the label (not for digits).
    cutout: Cutout side in pixels used by the paper's recipe.
    autoaugment_policy: the Fast AutoAugment policy (a key of
      `autoaugment.POLICIES`) that Lim et al. train this dataset with; None
      for a dataset they did not search a policy for.
    mean: per-channel mean of the training images, 0-255 scale.
    std: per-channel standard deviation over all training pixels, 0-255 scale.
  """

  tfds_name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  flip: bool
  cutout: int
  autoaugment_policy: str | None
  mean: tuple[float, float, float]
  std: tuple[float, float, float]


# CIFAR statistics are over every pixel of the original training sets (std is
# the population std of all pixels, not the mean of per-image stds that the
# widespread (0.2023, 0.1994, 0.2010) CIFAR-10 values come from). The JPEG'd
# CIFAR-10 copy in ../shared/tfds is within 0.5 grey levels of these. SVHN's
# are the widely used (0.4377, 0.4438, 0.4728) / (0.198, 0.201, 0.197) x 255,
# not re-measured here (no SVHN copy offline).
# Flip and Cutout sizes follow the paper's appendix A.2: no flip for SVHN's
# digits, Cutout 16 on CIFAR and 20 on SVHN. Fast AutoAugment trains CIFAR-10
# and CIFAR-100 with the policy searched on reduced CIFAR-10.
DATASETS = {
    'cifar10': DatasetInfo(
        tfds_name='cifar10',
        num_classes=10,
        image_shape=(32, 32, 3),
        flip=True,
        cutout=16,
        autoaugment_policy='reduced_cifar10',
        mean=(125.307, 122.950, 113.865),
        std=(62.993, 62.089, 66.705),
    ),
    'cifar100': DatasetInfo(
        tfds_name='cifar100',
        num_classes=100,
        image_shape=(32, 32, 3),
        flip=True,
        cutout=16,
        autoaugment_policy='reduced_cifar10',
        mean=(129.304, 124.070, 112.434),
        std=(68.170, 65.392, 70.418),
    ),
    'svhn_cropped': DatasetInfo(
        tfds_name='svhn_cropped',
        num_classes=10,
        image_shape=(32, 32, 3),
        flip=False,
        cutout=20,
        autoaugment_policy='reduced_svhn',
        mean=(111.61, 113.17, 120.56),
        std=(50.49, 51.26, 50.24),
    ),
}


class DatasetNotFoundError(errors.UserError, ValueError):
  """A dataset is neither prepared in the data dir nor downloadable."""


class DatasetReadError(errors.UserError, ValueError):
  """A prepared dataset's files are damaged (e.g. a truncated shard)."""


# ----------------------------------------------------------------------------
# Loading.
# ----------------------------------------------------------------------------


def resolve_data_dir(data_dir: Optional[str]) -> str:
  # TFDS reads TFDS_DATA_DIR once, at import; resolving it here, per call,
  # lets tests and launchers set it late and gives error messages a real path.
  if data_dir:
    return os.fspath(data_dir)
  default = os.path.join(os.path.expanduser('~'), 'tensorflow_datasets')
  return os.environ.get('TFDS_DATA_DIR', default)


def dataset_builder(name: str, data_dir: Optional[str]):
  """The TFDS builder of dataset `name` in `data_dir` (None: TFDS_DATA_DIR).

  The one place where the data dir is resolved. Constructing a builder only
  reads dataset_info.json when present; it writes nothing into data_dir (GCS
  look-ups are off by default in TFDS).

  Args:
    name: a key of `DATASETS`, or any TFDS dataset name (registered, or
      prepared in the data dir).
    data_dir: TFDS data dir.

  Raises:
    ValueError: TFDS knows no dataset `name`.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  data_dir = resolve_data_dir(data_dir)
  tfds_name = DATASETS[name].tfds_name if name in DATASETS else name
  try:
    return tfds.builder(tfds_name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    # TFDS's own message lists every dataset it has, one per line.
    raise ValueError(
        f'Unknown dataset {name!r}: not one of {", ".join(DATASETS)} nor a '
        f'TFDS dataset (tfds.list_builders()) or one prepared in data dir '
        f'{data_dir}.'
    ) from None


def supervised_keys(info) -> tuple[str, str]:
  """The (image, label) feature names of a TFDS DatasetInfo."""
  keys = info.supervised_keys
  if (
      isinstance(keys, tuple)
      and len(keys) == 2
      and all(isinstance(k, str) for k in keys)
  ):
    return keys
  return 'image', 'label'  # What image classification builders mostly use.


def _not_found_message(name: str, builder) -> str:
  return (
      f'Dataset {name!r} (TFDS {builder.info.full_name}) is not prepared in '
      f'data dir {builder.data_dir_root} (looked for {builder.data_dir}); '
      'set --config.data_dir or TFDS_DATA_DIR to a TFDS data dir holding it, '
      'or set --config.download=True on a machine with internet.'
  )


def check_dataset(
    name: str, data_dir: Optional[str] = None, download: bool = True
) -> Optional[DatasetInfo]:
  """Fails fast, before any compute, if `name` cannot be loaded.

  Cheap (well under a second): reads at most the dataset's metadata.

  Args:
    name: a key of `DATASETS` or a TFDS dataset name.
    data_dir: TFDS data dir; None means `TFDS_DATA_DIR`, else
      `~/tensorflow_datasets`, as TFDS does.
    download: whether `load_split` may download and prepare the dataset. When
      False, the dataset must already be prepared in `data_dir`.

  Returns:
    The dataset's `DatasetInfo` for the table's datasets; None for the others
    (`beta_lasso.data.datasets` reads theirs from the metadata).

  Raises:
    ValueError: TFDS knows no dataset `name`.
    DatasetNotFoundError: `download` is False and the dataset is not prepared
      in the data dir.
  """
  if not download or name not in DATASETS:
    builder = dataset_builder(name, data_dir)
    if not download and not builder.is_prepared():
      raise DatasetNotFoundError(_not_found_message(name, builder))
  return DATASETS.get(name)


def _hide_gpus_from_tf() -> None:
  # TF only decodes records here; left alone, a GPU build of TF would reserve
  # most of the accelerator memory that JAX needs.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    # TF already initialised its devices (e.g. main.py hid them earlier).
    pass


def load_split(
    name: str,
    split: str,
    data_dir: Optional[str] = None,
    download: bool = True,
    data_file: Optional[str] = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Reads a whole split into host memory.

  The order is TFDS's file order, which is fixed, so indices into the returned
  arrays mean the same examples on every run and every process.

  Args:
    name: a key of `DATASETS` or a TFDS dataset name.
    split: a TFDS split, e.g. 'train', 'test', or a slice such as 'train[:90%]'.
    data_dir: TFDS data dir; None means `TFDS_DATA_DIR`, else
      `~/tensorflow_datasets`.
    download: whether to download and prepare the dataset when it is missing.
    data_file: a .npz of `beta_lasso.data.data_file` to read instead of TFDS
      (no TensorFlow needed).

  Returns:
    (images, labels): uint8 [N, H, W, C] and int32 [N] numpy arrays.

  Raises:
    ValueError: TFDS knows no dataset `name`.
    DatasetNotFoundError: the dataset is missing and `download` is False, or
      downloading or preparing it failed.
  """
  if data_file:
    return data_file_lib.load_split(data_file, split)
  check_dataset(name, data_dir, download)
  _hide_gpus_from_tf()
  builder = dataset_builder(name, data_dir)
  if not builder.is_prepared():
    try:
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except
      # Any failure here (no network, disk full, checksum) means the same to
      # the caller: the data is not there. Keep the message to one line.
      cause = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise DatasetNotFoundError(
          f'Could not download and prepare dataset {name!r} into data dir '
          f'{builder.data_dir_root} ({type(e).__name__}: {cause}); set '
          '--config.data_dir or TFDS_DATA_DIR to a TFDS data dir holding it.'
      ) from e
  return _read_split(name, split, builder.data_dir)


@functools.lru_cache(maxsize=4)
def _read_split(
    name: str, split: str, data_dir: str
) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a prepared split once per process; the arrays are read-only."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = tfds.builder_from_directory(data_dir)
  # batch_size=-1 decodes the split into one tensor; nearly all of its time is
  # PNG decoding.
  try:
    data = tfds.as_numpy(
        builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
    )
  except tf.errors.OpError as e:
    # TF wraps the cause in the names of its ops.
    cause = re.sub(r'\{\{.*?\}\}|\[Op:.*', '', e.message, flags=re.S).strip()
    shard = _damaged_shard(data_dir, split)
    raise DatasetReadError(
        f'cannot read split {split!r} of dataset {name!r}: '
        f'{shard or data_dir} is damaged ({type(e).__name__}: {cause}); '
        f'delete {data_dir} and run again with --config.download=True (or '
        f'`tfds build {builder.info.name}`) to prepare it anew'
    ) from None
  image_key, label_key = supervised_keys(builder.info)
  images = np.asarray(data[image_key], dtype=np.uint8)
  labels = np.asarray(data[label_key], dtype=np.int32)
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


def _damaged_shard(data_dir: str, split: str) -> Optional[str]:
  """The first record file of `split` that does not read to its end."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  base = split.split('[')[0]
  for path in sorted(
      tf.io.gfile.glob(os.path.join(data_dir, f'*-{base}.tfrecord*'))
  ):
    try:
      for _ in tf.data.TFRecordDataset(path):
        pass
    except tf.errors.OpError:
      return path
  return None


# ----------------------------------------------------------------------------
# Batches (host side, numpy).
# ----------------------------------------------------------------------------


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full batches per epoch; the remainder of each epoch is dropped."""
  return num_examples // global_batch_size


# A fold_in tag that keeps the data order's keys apart from the splits of
# `jax.random.key(seed)` (init, train): `fold_in(key, i)` equals
# `split(key)[i]` for small i.
_DATA_ORDER = 0xDA7A


def epoch_permutation(num_examples: int, seed: int, epoch) -> jax.Array:
  """The order in which epoch `epoch` visits the training examples.

  The one definition of the data order: the host path slices it into batches
  (`train_indices`) and `beta_lasso.training.device_loop` computes it inside compiled
  code, so both train on the same batches. Integer-only, so bit-identical
  wherever it runs.

  Args:
    num_examples: size of the training split.
    seed: non-negative data seed.
    epoch: the epoch, a Python int or a traced int32 scalar.

  Returns:
    int32 [num_examples], a permutation of range(num_examples).
  """
  key = jax.random.fold_in(
      jax.random.fold_in(jax.random.key(seed), _DATA_ORDER), epoch
  )
  return jax.random.permutation(key, num_examples)


_jitted_epoch_permutation = jax.jit(epoch_permutation, static_argnums=(0, 1))


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  # Every step of an epoch needs the same permutation; caching it keeps a
  # step's host work to one slice instead of a fresh shuffle.
  perm = np.asarray(_jitted_epoch_permutation(num_examples, seed, epoch))
  perm.setflags(write=False)
  return perm


def train_indices(
    num_examples: int,
    global_batch_size: int,
    seed: int,
    step: int,
    process_index: int = 0,
    process_count: int = 1,
) -> np.ndarray:
  """Indices of this process's share of the training batch for `step`.

  Each epoch visits a fresh permutation of the examples,
  `epoch_permutation(num_examples, seed, epoch)`, so the result depends only
  on the arguments: a resumed run gets the same batches as an uninterrupted
  one.

  Args:
    num_examples: size of the training split.
    global_batch_size: batch size summed over all processes.
    seed: non-negative data seed.
    step: non-negative global step (0-based).
    process_index: this process, in [0, process_count).
    process_count: number of processes sharing the global batch.

  Returns:
    int64 [global_batch_size // process_count]: process `p` gets the `p`-th
    contiguous part of the global batch.

  Raises:
    ValueError: the batch does not split evenly over processes, exceeds the
      dataset, or an argument is out of range.
  """
  if global_batch_size % process_count:
    raise ValueError(
        f'global_batch_size {global_batch_size} is not divisible by '
        f'process_count {process_count}.'
    )
  if not 0 <= process_index < process_count:
    raise ValueError(
        f'process_index {process_index} is not in [0, {process_count}).'
    )
  if seed < 0 or step < 0:
    raise ValueError(f'seed ({seed}) and step ({step}) must be non-negative.')
  spe = steps_per_epoch(num_examples, global_batch_size)
  if spe == 0:
    raise ValueError(
        f'global_batch_size {global_batch_size} exceeds the {num_examples} '
        'training examples.'
    )
  epoch, step_in_epoch = divmod(step, spe)
  local = global_batch_size // process_count
  start = step_in_epoch * global_batch_size + process_index * local
  perm = _epoch_permutation(num_examples, seed, epoch)
  return perm[start : start + local].astype(np.int64)


def train_batch(
    images: np.ndarray, labels: np.ndarray, indices: np.ndarray
) -> dict[str, np.ndarray]:
  """Gathers the examples at `indices` into {'image', 'label'}."""
  return {'image': images[indices], 'label': labels[indices]}


def eval_batches(
    images: np.ndarray,
    labels: np.ndarray,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Yields the whole split in order, in batches of one fixed shape.

  A single shape means the jitted eval step compiles once; the last batch is
  padded with zero images whose `mask` is False, so metrics must be weighted
  by `mask`.

  Args:
    images: uint8 [N, H, W, C].
    labels: int [N].
    global_batch_size: batch size summed over all processes.
    process_index: this process, in [0, process_count).
    process_count: number of processes sharing each global batch.

  Yields:
    {'image': uint8 [b, H, W, C], 'label': int32 [b], 'mask': bool [b]} with
    b = global_batch_size // process_count; process `p` gets the `p`-th
    contiguous part of each global batch.

  Raises:
    ValueError: `global_batch_size` is not divisible by `process_count`.
  """
  if global_batch_size % process_count:
    raise ValueError(
        f'global_batch_size {global_batch_size} is not divisible by '
        f'process_count {process_count}.'
    )
  num_examples = len(labels)
  local = global_batch_size // process_count
  for start in range(0, num_examples, global_batch_size):
    idx = start + process_index * local + np.arange(local)
    mask = idx < num_examples
    idx = np.where(mask, idx, 0)
    image = images[idx]
    image[~mask] = 0
    label = np.where(mask, labels[idx], 0).astype(np.int32)
    yield {'image': image, 'label': label, 'mask': mask}
