"""Datasets as one numpy file: the reader and writer, numpy alone.

A data file is an .npz that `--config.data_file=` trains from without
TensorFlow or TFDS (`python -m beta_lasso.data.cache` writes one from TFDS).
Two layouts are read:

- a cache: `<split>_images` (uint8 [N, H, W, C]) and `<split>_labels`
  (integers [N]) per split;
- a JPEG bundle: `<split>_jpeg` (every image's JPEG bytes concatenated),
  `<split>_offsets` (N + 1; image i is jpeg[offsets[i]:offsets[i + 1]]) and
  `<split>_labels`, decoded with Pillow. Optional `<split>_jpeg_prefix` and
  `<split>_jpeg_suffix` (uint8) are bytes every image of the split starts
  and ends with, stored once (`pack_jpeg_bundle`): image i is then prefix +
  jpeg[offsets[i]:offsets[i + 1]] + suffix. For CIFAR-10's 32x32 JPEGs the
  shared header is 623 of an image's 921 bytes.

An optional scalar `num_classes` gives the number of classes; without it the
largest label does. The image shape and the number of classes come from the
file, so a file of any dataset trains, whatever its images.

Splits are named as in TFDS, with an optional integer slice:
'train', 'test', 'train[:45000]', 'train[45000:]'.

Every array's shape and type are checked from the file's headers before any
image is read (`describe`): a damaged or malformed file is refused in one line
naming the file and what is wrong with it.
"""

import concurrent.futures
import functools
import io
import os
import re
from typing import NamedTuple
import zipfile
import zlib

import numpy as np

from beta_lasso import errors

_SPLIT = re.compile(r'^(\w+)(?:\[(-?\d*):(-?\d*)\])?$')
# What reading a damaged member of an .npz raises, besides our own checks.
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
NUM_CLASSES = 'num_classes'


class DataFileError(errors.UserError, ValueError):
  """A data file that is missing, unreadable, malformed or lacks a split."""


class Contents(NamedTuple):
  """What a data file holds, from its headers and labels.

  Attributes:
    splits: split name -> number of examples.
    image_shape: (height, width, channels), shared by every split.
    num_classes: the file's `num_classes`, else the largest label + 1.
  """

  splits: dict[str, int]
  image_shape: tuple[int, int, int]
  num_classes: int


def parse_split(split: str) -> tuple[str, slice]:
  """'train[:45000]' -> ('train', slice(None, 45000)).

  Raises:
    DataFileError: a split that is not NAME or NAME[A:B] with integers.
  """
  match = _SPLIT.match(split.strip())
  if not match:
    raise DataFileError(
        f'split {split!r} is not valid for a data file; use '
        "NAME or NAME[A:B] with integers, e.g. 'train[:45000]'"
    )
  name, start, stop = match.groups()
  return name, slice(int(start) if start else None, int(stop) if stop else None)


def _decode_jpegs(
    data: bytes, offsets: np.ndarray, prefix: bytes = b'', suffix: bytes = b''
) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  def decode(bounds):
    jpeg = prefix + data[bounds[0] : bounds[1]] + suffix
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB'))

  # Pillow decodes without the GIL: threads use every core.
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
    images = list(
        pool.map(decode, zip(offsets[:-1], offsets[1:]), chunksize=256)
    )
  return np.stack(images) if images else np.zeros((0, 0, 0, 3), np.uint8)


_AFFIXES = ('jpeg_prefix', 'jpeg_suffix')


def _affixes(path: str, data, name: str) -> tuple[bytes, bytes]:
  """(prefix, suffix) every JPEG of split `name` shares; b'' when absent."""
  return tuple(
      _read(path, data, f'{name}_{affix}').tobytes()
      if f'{name}_{affix}' in data.files
      else b''
      for affix in _AFFIXES
  )


def _headers(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """{array name: (shape, dtype)} from the .npy headers, reading no data."""
  if not os.path.isfile(path):
    raise DataFileError(f'data file {path} does not exist')
  headers = {}
  try:
    with zipfile.ZipFile(path) as archive:
      for member in archive.namelist():
        if not member.endswith('.npy'):
          continue
        with archive.open(member) as f:
          version = np.lib.format.read_magic(f)
          if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
          else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        headers[member[: -len('.npy')]] = (tuple(shape), dtype)
  except _READ_ERRORS as e:
    raise DataFileError(
        f'data file {path} is not a readable .npz '
        f'({errors.one_line(e, with_type=True)}); write it again, e.g. with '
        'python -m beta_lasso.data.cache'
    ) from None
  return headers


def _read(path: str, data, name: str) -> np.ndarray:
  """Array `name` of the open .npz `data`; a damaged one is a DataFileError."""
  try:
    return data[name]
  except _READ_ERRORS as e:
    raise DataFileError(
        f'data file {path}: array {name!r} does not read '
        f'({errors.one_line(e, with_type=True)}); write the '
        'file again'
    ) from None


def _open(path: str):
  try:
    return np.load(path, allow_pickle=False)
  except _READ_ERRORS as e:
    raise DataFileError(
        f'data file {path} is not a readable .npz '
        f'({errors.one_line(e, with_type=True)})'
    ) from None


def _check_array(path, name, headers, ndim, kinds, what):
  shape, dtype = headers[name]
  if dtype.hasobject:
    raise DataFileError(
        f'data file {path}: {name!r} is an array of Python objects, which a '
        f'data file may not hold (it would need pickle); store {what}'
    )
  if len(shape) != ndim or dtype.kind not in kinds:
    raise DataFileError(
        f'data file {path}: {name!r} is {dtype} of shape '
        f'{shape}; it must be {what}'
    )
  return shape


@functools.lru_cache(maxsize=16)
def _describe(path: str, mtime_ns: int, size: int) -> Contents:
  del mtime_ns, size  # Only the cache's key: a rewritten file is read again.
  headers = _headers(path)
  names = sorted(k[: -len('_labels')] for k in headers if k.endswith('_labels'))
  if not names:
    raise DataFileError(
        f'data file {path} holds no split: it has no <split>_labels array '
        f'(it holds: {", ".join(sorted(headers)) or "nothing"})'
    )
  splits, shapes = {}, {}
  labels_max = -1
  with _open(path) as data:
    for name in names:
      (count,) = _check_array(
          path,
          f'{name}_labels',
          headers,
          1,
          'iu',
          'integer labels of shape [N]',
      )
      if f'{name}_images' in headers:
        shape = _check_array(
            path,
            f'{name}_images',
            headers,
            4,
            'u',
            'uint8 images of shape [N, H, W, C]',
        )
        if headers[f'{name}_images'][1] != np.uint8:
          raise DataFileError(
              f'data file {path}: {name + "_images"!r} is '
              f'{headers[name + "_images"][1]}; it must be uint8 images'
          )
        if shape[0] != count:
          raise DataFileError(
              f'data file {path}: split {name!r} has {shape[0]} images and '
              f'{count} labels'
          )
        shapes[name] = shape[1:]
      elif f'{name}_jpeg' in headers and f'{name}_offsets' in headers:
        _check_array(
            path,
            f'{name}_jpeg',
            headers,
            1,
            'u',
            'the uint8 bytes of the JPEG images',
        )
        (bounds,) = _check_array(
            path,
            f'{name}_offsets',
            headers,
            1,
            'iu',
            f'integer offsets of shape [{count + 1}]',
        )
        if bounds != count + 1:
          raise DataFileError(
              f'data file {path}: {name + "_offsets"!r} has {bounds} entries '
              f'for {count} labels; it must have {count + 1}'
          )
        for affix in _AFFIXES:
          if f'{name}_{affix}' in headers:
            _check_array(
                path,
                f'{name}_{affix}',
                headers,
                1,
                'u',
                f'the uint8 bytes every JPEG of {name!r} shares',
            )
        if count:
          offsets = _read(path, data, f'{name}_offsets')
          first = _read(path, data, f'{name}_jpeg')[offsets[0] : offsets[1]]
          shapes[name] = _decode_jpegs(
              first.tobytes(),
              offsets[:2] - offsets[0],
              *_affixes(path, data, name),
          ).shape[1:]
      else:
        raise DataFileError(
            f'data file {path}: split {name!r} has labels but neither '
            f'{name}_images nor {name}_jpeg with {name}_offsets'
        )
      splits[name] = count
      labels = _read(path, data, f'{name}_labels')
      if count:
        if labels.min() < 0:
          raise DataFileError(
              f'data file {path}: split {name!r} has a '
              f'negative label ({labels.min()})'
          )
        labels_max = max(labels_max, int(labels.max()))
    num_classes = labels_max + 1
    if NUM_CLASSES in headers:
      num_classes = int(_read(path, data, NUM_CLASSES))
      if labels_max >= num_classes:
        raise DataFileError(
            f'data file {path}: a label is {labels_max}, but {NUM_CLASSES} '
            f'is {num_classes}'
        )
  image_shapes = set(shapes.values())
  if len(image_shapes) > 1:
    raise DataFileError(
        f'data file {path}: its splits hold images of different shapes ('
        + ', '.join(f'{n} {s}' for n, s in sorted(shapes.items()))
        + ')'
    )
  if not image_shapes:
    raise DataFileError(f'data file {path} holds no image')
  if num_classes < 1:
    raise DataFileError(f'data file {path} holds no label')
  return Contents(
      splits, tuple(int(d) for d in image_shapes.pop()), num_classes
  )


def describe(path: str) -> Contents:
  """Checks a data file and says what it holds, reading only headers and labels.

  Args:
    path: a .npz in either layout of the module docstring.

  Returns:
    Its `Contents`.

  Raises:
    DataFileError: no such file, not an .npz, or an array of the wrong shape
      or type (objects, images of another rank or type, labels that do not
      match the images).
  """
  try:
    stat = os.stat(path)
  except OSError:
    raise DataFileError(f'data file {path} does not exist') from None
  return _describe(os.fspath(path), stat.st_mtime_ns, stat.st_size)


def splits_in(path: str) -> list[str]:
  """The split names a data file holds."""
  return sorted(describe(path).splits)


def split_size(path: str, name: str) -> int:
  """Examples in split `name` (no slice) of a data file, without decoding."""
  splits = describe(path).splits
  if name not in splits:
    raise DataFileError(f'data file {path} has no split {name!r}')
  return splits[name]


@functools.lru_cache(maxsize=4)
def load_split(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split of a data file into host memory.

  Args:
    path: a .npz in either layout of the module docstring.
    split: 'NAME' or 'NAME[A:B]'.

  Returns:
    (images, labels): uint8 [N, H, W, C] and int32 [N], read-only.

  Raises:
    DataFileError: no such file, not an .npz, a malformed or damaged array,
      or no such split.
  """
  name, part = parse_split(split)
  available = describe(path).splits
  if name not in available:
    raise DataFileError(
        f'data file {path} has no split {name!r}; it holds: '
        f'{", ".join(sorted(available))}'
    )
  with _open(path) as data:
    labels = _read(path, data, f'{name}_labels').astype(np.int32)
    if f'{name}_images' in data.files:
      images = _read(path, data, f'{name}_images')[part]
    else:
      offsets = _read(path, data, f'{name}_offsets')
      indices = np.arange(len(labels))[part]
      if len(indices) and not np.all(np.diff(indices) == 1):
        raise DataFileError(f'split {split!r}: only contiguous slices')
      lo = indices[0] if len(indices) else 0
      offsets = offsets[lo : lo + len(indices) + 1]
      images = _decode_jpegs(
          _read(path, data, f'{name}_jpeg').tobytes(),
          offsets,
          *_affixes(path, data, name),
      )
  labels = labels[part]
  images = np.ascontiguousarray(images, dtype=np.uint8)
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


def write(
    path: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    num_classes: int | None = None,
):
  """Writes {split: (images, labels)} as a cache, atomically.

  A sliced split is stored under its name: 'train[:1000]' becomes 'train'.

  Args:
    path: the .npz to write.
    splits: {split: (uint8 [N, H, W, C] images, integer [N] labels)}.
    num_classes: stored when given (the dataset's, from its metadata); a
      reader otherwise takes the largest label + 1.

  Raises:
    DataFileError: two splits of one name, or images that are not [N, H, W,
      C] with one label each.
  """
  arrays = {}
  for split, (images, labels) in splits.items():
    name, _ = parse_split(split)
    if f'{name}_images' in arrays:
      raise DataFileError(f'two splits named {name!r} in one data file')
    images, labels = np.asarray(images, np.uint8), np.asarray(labels, np.int32)
    if images.ndim != 4 or labels.shape != images.shape[:1]:
      raise DataFileError(
          f'split {split!r}: images of shape {images.shape} and labels of '
          f'shape {labels.shape}; they must be [N, H, W, C] and [N]'
      )
    arrays[f'{name}_images'] = images
    arrays[f'{name}_labels'] = labels
  if num_classes is not None:
    arrays[NUM_CLASSES] = np.asarray(num_classes, np.int32)
  tmp = f'{path}.tmp.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _shared_affixes(images: list[bytes]) -> tuple[int, int]:
  """Lengths of the longest prefix and suffix all `images` share."""
  if not images:
    return 0, 0
  shortest = min(len(b) for b in images)
  first = images[0]
  prefix = 0
  for i in range(shortest):
    if any(b[i] != first[i] for b in images):
      break
    prefix = i + 1
  suffix = 0
  for i in range(1, shortest - prefix + 1):
    if any(b[-i] != first[-i] for b in images):
      break
    suffix = i
  return prefix, suffix


def pack_jpeg_bundle(path: str, out: str) -> dict[str, tuple[int, int]]:
  """Rewrites a JPEG bundle with the bytes its JPEGs share stored once.

  Lossless: every image is the same JPEG byte for byte, so it decodes to the
  same pixels. For the CIFAR-10 bundle 55.8 MB become 18.4 MB, which is what
  lets a run's compact checkpoints travel beside the data.

  Args:
    path: a data file in the JPEG layout (packed already or not).
    out: the .npz to write, atomically.

  Returns:
    {split: (prefix length, suffix length)}.

  Raises:
    DataFileError: `path` is no readable data file, or a split is a cache
      (uint8 images), not JPEGs.
  """
  contents = describe(path)
  arrays, lengths = {}, {}
  with _open(path) as data:
    for name in contents.splits:
      if f'{name}_jpeg' not in data.files:
        raise DataFileError(
            f'data file {path}: split {name!r} holds decoded images, not '
            'JPEGs; only a JPEG bundle packs'
        )
      offsets = _read(path, data, f'{name}_offsets').astype(np.int64)
      jpeg = _read(path, data, f'{name}_jpeg').tobytes()
      prefix, suffix = _affixes(path, data, name)
      images = [
          prefix + jpeg[a:b] + suffix for a, b in zip(offsets[:-1], offsets[1:])
      ]
      head, tail = _shared_affixes(images)
      bodies = [b[head : len(b) - tail] for b in images]
      bounds = np.concatenate([[0], np.cumsum([len(b) for b in bodies])])
      arrays[f'{name}_jpeg'] = np.frombuffer(b''.join(bodies), np.uint8)
      arrays[f'{name}_offsets'] = bounds.astype(
          np.int32 if bounds[-1] < 2**31 else np.int64
      )
      arrays[f'{name}_labels'] = _read(path, data, f'{name}_labels')
      first = images[0] if images else b''
      arrays[f'{name}_jpeg_prefix'] = np.frombuffer(first[:head], np.uint8)
      arrays[f'{name}_jpeg_suffix'] = np.frombuffer(
          first[len(first) - tail :] if tail else b'', np.uint8
      )
      lengths[name] = (head, tail)
    # Anything else the file holds (label names, num_classes) travels too.
    for key in data.files:
      if not any(key.startswith(f'{n}_') for n in contents.splits):
        arrays[key] = _read(path, data, key)
  tmp = f'{out}.tmp.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, out)
  return lengths
