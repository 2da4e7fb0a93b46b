"""Data: TFDS and data-file datasets, the local cache, augmentation and its policies."""
