"""Image classification datasets outside the table, written with TFDS's builder.

`build(data_dir)` prepares two small datasets in a TFDS data dir through
`tfds.dataset_builders.store_as_tfds_dataset`, TFDS's own builder for data in
hand, so they are read back exactly as any prepared TFDS dataset is: by name,
with metadata (classes, image shape) and splits.
"""

import numpy as np

# Name -> (image shape, classes, train examples, test examples).
SHAPES = {
    'gray28_digits': ((28, 28, 1), 4, 300, 100),
    'rgb64_scenes': ((64, 64, 3), 3, 240, 100),
}


def _examples(shape, num_classes, count, seed):
  """(key, example) pairs: each class is its own brightness, plus noise."""
  rng = np.random.default_rng(seed)
  for i in range(count):
    label = i % num_classes
    level = 40 + 160 * label / max(1, num_classes - 1)
    image = np.clip(rng.normal(level, 30, shape), 0, 255).astype(np.uint8)
    yield i, {'image': image, 'label': label}


def build(data_dir: str):
  """Prepares every dataset of `SHAPES` in `data_dir`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  for seed, (name, (shape, classes, train, test)) in enumerate(SHAPES.items()):
    features = tfds.features.FeaturesDict(
        {
            'image': tfds.features.Image(shape=shape),
            'label': tfds.features.ClassLabel(num_classes=classes),
        }
    )
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name,
        version='1.0.0',
        features=features,
        data_dir=data_dir,
        split_datasets={
            'train': list(_examples(shape, classes, train, 2 * seed)),
            'test': list(_examples(shape, classes, test, 2 * seed + 1)),
        },
    )
