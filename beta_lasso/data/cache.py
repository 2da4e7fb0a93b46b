r"""Datasets as one numpy file, for hosts without TensorFlow.

  python -m beta_lasso.data.cache --dataset=cifar10 --out=/data/cifar10.npz

writes every split of a TFDS dataset into one uncompressed .npz (CIFAR-10:
184 MB) that `--config.data_file=/data/cifar10.npz` then trains from with
numpy alone: no TensorFlow, no TFDS. Two layouts are read:

- the cache this command writes: `<split>_images` (uint8 [N, H, W, C]) and
  `<split>_labels` per split;
- a JPEG bundle: `<split>_jpeg` (every image's JPEG bytes concatenated),
  `<split>_offsets` (N + 1; image i is jpeg[offsets[i]:offsets[i + 1]]) and
  `<split>_labels`, decoded with Pillow.

Splits are named as in TFDS, with an optional integer slice:
'train', 'test', 'train[:45000]', 'train[45000:]'.
"""
import concurrent.futures
import functools
import io
import os
import re
import sys

from absl import app
from absl import flags
import numpy as np

_SPLIT = re.compile(r'^(\w+)(?:\[(-?\d*):(-?\d*)\])?$')


class DataFileError(ValueError):
  """A data file that is missing, unreadable or lacks a split."""


def parse_split(split: str) -> tuple[str, slice]:
  """'train[:45000]' -> ('train', slice(None, 45000)).

  Raises:
    DataFileError: a split that is not NAME or NAME[A:B] with integers.
  """
  match = _SPLIT.match(split.strip())
  if not match:
    raise DataFileError(f'split {split!r} is not valid for a data file; use '
                        "NAME or NAME[A:B] with integers, e.g. 'train[:45000]'")
  name, start, stop = match.groups()
  return name, slice(int(start) if start else None, int(stop) if stop else None)


def _decode_jpegs(data: bytes, offsets: np.ndarray) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  def decode(bounds):
    return np.asarray(Image.open(io.BytesIO(data[bounds[0]:bounds[1]])).convert(
        'RGB'))

  # Pillow decodes without the GIL: threads use every core.
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    images = list(pool.map(decode, zip(offsets[:-1], offsets[1:]),
                           chunksize=256))
  return np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)


def splits_in(path: str) -> list[str]:
  """The split names a data file holds."""
  with _open(path) as data:
    return sorted({k.rsplit('_', 1)[0] for k in data.files
                   if k.endswith('_labels')})


def _open(path: str):
  if not os.path.isfile(path):
    raise DataFileError(f'data file {path} does not exist')
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise DataFileError(f'data file {path} is not a readable .npz '
                        f'({type(e).__name__}: {e})') from None


def split_size(path: str, name: str) -> int:
  """Examples in split `name` (no slice) of a data file, without decoding."""
  with _open(path) as data:
    if f'{name}_labels' not in data.files:
      raise DataFileError(f'data file {path} has no split {name!r}')
    return len(data[f'{name}_labels'])


@functools.lru_cache(maxsize=4)
def load_split(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split of a data file into host memory.

  Args:
    path: a .npz in either layout of the module docstring.
    split: 'NAME' or 'NAME[A:B]'.

  Returns:
    (images, labels): uint8 [N, H, W, C] and int32 [N], read-only.

  Raises:
    DataFileError: no such file, not an .npz, or no such split.
  """
  name, part = parse_split(split)
  with _open(path) as data:
    if f'{name}_labels' not in data.files:
      raise DataFileError(
          f'data file {path} has no split {name!r}; it holds: '
          f'{", ".join(sorted(k[:-7] for k in data.files if k.endswith("_labels")))}')
    labels = data[f'{name}_labels'].astype(np.int32)
    if f'{name}_images' in data.files:
      images = data[f'{name}_images'][part]
    else:
      offsets = data[f'{name}_offsets']
      indices = np.arange(len(labels))[part]
      if len(indices) and not np.all(np.diff(indices) == 1):
        raise DataFileError(f'split {split!r}: only contiguous slices')
      lo = indices[0] if len(indices) else 0
      offsets = offsets[lo:lo + len(indices) + 1]
      images = _decode_jpegs(data[f'{name}_jpeg'].tobytes(), offsets)
  labels = labels[part]
  images = np.ascontiguousarray(images, dtype=np.uint8)
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


def write(path: str, splits: dict[str, tuple[np.ndarray, np.ndarray]]):
  """Writes {split: (images, labels)} as a cache, atomically.

  A sliced split is stored under its name: 'train[:1000]' becomes 'train'.
  """
  arrays = {}
  for split, (images, labels) in splits.items():
    name, _ = parse_split(split)
    if f'{name}_images' in arrays:
      raise DataFileError(f'two splits named {name!r} in one data file')
    arrays[f'{name}_images'] = np.asarray(images, np.uint8)
    arrays[f'{name}_labels'] = np.asarray(labels, np.int32)
  tmp = f'{path}.tmp.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _define_flags():
  """The command line's flags, defined only when this module is the script.

  Defined at import, they would clash with other modules' flags of the same
  name (params.py's --out) in every process that imports this module.
  """
  flags.DEFINE_string('dataset', 'cifar10', 'TFDS dataset name.')
  flags.DEFINE_string('out', None, 'The .npz to write.')
  flags.DEFINE_string('data_dir', None, 'TFDS data dir (default: '
                      'TFDS_DATA_DIR or ~/tensorflow_datasets).')
  flags.DEFINE_list('splits', ['train', 'test'], 'Splits to write.')
  flags.mark_flag_as_required('out')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  from beta_lasso.data import input_pipeline  # pylint: disable=g-import-not-at-top
  args = flags.FLAGS
  try:
    splits = {s: input_pipeline.load_split(args.dataset, s, args.data_dir)
              for s in args.splits}
  except (ValueError, input_pipeline.DatasetNotFoundError) as e:
    sys.exit(f'error: {e}')
  write(args.out, splits)
  sizes = ', '.join(f'{s} {len(v[1]):,}' for s, v in splits.items())
  print(f'Wrote {args.out}: {sizes} examples, '
        f'{os.path.getsize(args.out) / 2**20:.0f} MiB')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
