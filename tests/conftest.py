"""Test setup: real CIFAR-10 from the offline TFDS copy when one is beside the repo."""
import os
import pathlib

_SHARED_TFDS = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'tfds'

# Machines without internet read the shipped copy; elsewhere TFDS downloads by name.
if 'TFDS_DATA_DIR' not in os.environ and _SHARED_TFDS.is_dir():
  os.environ['TFDS_DATA_DIR'] = str(_SHARED_TFDS)
# TensorFlow only reads data here; keep its logging quiet.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
