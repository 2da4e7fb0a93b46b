r"""Writes a TFDS dataset into a data file, for hosts without TensorFlow.

  python -m beta_lasso.data.cache --dataset=cifar10 --out=/data/cifar10.npz

writes every split of a TFDS dataset into one uncompressed .npz (CIFAR-10:
184 MB) that `--config.data_file=/data/cifar10.npz` then trains from with
numpy alone: no TensorFlow, no TFDS. Any TFDS image classification dataset of
one image shape works (e.g. `--dataset=mnist`); its number of classes is kept
in the file. The file's layout, and its reader, are in
`beta_lasso.data.data_file`.

  python -m beta_lasso.data.cache --jpeg_bundle=cifar10_jpeg.npz --out=small.npz

instead repacks a JPEG bundle with the bytes its JPEGs share (their header)
stored once: the same JPEGs byte for byte, 18 MB instead of 56 for CIFAR-10,
for hosts that receive the data over a small transfer budget.
"""

import os

from absl import app
from absl import flags

from beta_lasso import errors
from beta_lasso.data import data_file
from beta_lasso.data import datasets
from beta_lasso.data import input_pipeline


def _define_flags():
  """The command line's flags, defined only when this module is the script.

  Defined at import, they would clash with other modules' flags of the same
  name (params.py's --out) in every process that imports this module.
  """
  flags.DEFINE_string('dataset', 'cifar10', 'TFDS dataset name.')
  flags.DEFINE_string('out', None, 'The .npz to write.')
  flags.DEFINE_string(
      'data_dir',
      None,
      'TFDS data dir (default: ' 'TFDS_DATA_DIR or ~/tensorflow_datasets).',
  )
  flags.DEFINE_list('splits', ['train', 'test'], 'Splits to write.')
  flags.DEFINE_string(
      'jpeg_bundle',
      None,
      'A JPEG bundle (data file) to repack losslessly with its shared JPEG '
      'header stored once, instead of reading TFDS.',
  )
  flags.mark_flag_as_required('out')


def num_classes(dataset: str, data_dir: str | None) -> int:
  """The dataset's number of classes: the table's, else its TFDS metadata."""
  if dataset in input_pipeline.DATASETS:
    return input_pipeline.DATASETS[dataset].num_classes
  return datasets.tfds_info(dataset, data_dir).num_classes


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  args = flags.FLAGS
  if os.path.isdir(args.out):
    raise data_file.DataFileError(
        f'--out={args.out} is a folder; give the ' '.npz file to write'
    )
  if args.jpeg_bundle:
    lengths = data_file.pack_jpeg_bundle(args.jpeg_bundle, args.out)
    shared = ', '.join(f'{s} {p} + {t}' for s, (p, t) in lengths.items())
    print(
        f'Wrote {args.out}: {os.path.getsize(args.out) / 2**20:.1f} MiB '
        f'(from {os.path.getsize(args.jpeg_bundle) / 2**20:.1f}); bytes '
        f'shared by every JPEG, stored once: {shared}'
    )
    return
  flag = f'--dataset={args.dataset}'
  try:
    input_pipeline.check_dataset(args.dataset, args.data_dir)
    splits = {}
    for split in args.splits:
      flag = f'--splits={split}'
      splits[split] = input_pipeline.load_split(
          args.dataset, split, args.data_dir
      )
  except ValueError as e:  # TFDS's unknown dataset or split.
    if isinstance(e, errors.UserError):
      raise
    raise data_file.DataFileError(f'{flag}: {errors.one_line(e)}') from None
  data_file.write(
      args.out, splits, num_classes=num_classes(args.dataset, args.data_dir)
  )
  sizes = ', '.join(f'{s} {len(v[1]):,}' for s, v in splits.items())
  print(
      f'Wrote {args.out}: {sizes} examples, '
      f'{os.path.getsize(args.out) / 2**20:.0f} MiB'
  )


if __name__ == '__main__':
  _define_flags()
  app.run(errors.command_line(main, OSError), flags_parser=errors.parse_flags)
