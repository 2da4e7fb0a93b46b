"""Training from a data file, with TensorFlow and TFDS not installed."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from beta_lasso.data import data_file as data_file_lib
from beta_lasso.data import input_pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]
_JPEG_BUNDLE = REPO.parent / 'shared' / 'data' / 'cifar10_jpeg.npz'


@pytest.fixture(scope='module')
def data_file(tmp_path_factory):
  """A cache of 1,024 training and 500 test images of real CIFAR-10."""
  path = tmp_path_factory.mktemp('data') / 'cifar10_small.npz'
  data_file_lib.write(str(path), {
      'train': input_pipeline.load_split('cifar10', 'train[:1024]'),
      'test': input_pipeline.load_split('cifar10', 'test[:500]')})
  return path


def test_a_cache_reads_back_exactly(data_file):
  images, labels = data_file_lib.load_split(str(data_file), 'train[100:300]')
  tfds_images, tfds_labels = input_pipeline.load_split('cifar10',
                                                       'train[100:300]')
  np.testing.assert_array_equal(images, tfds_images)
  np.testing.assert_array_equal(labels, tfds_labels)
  assert data_file_lib.splits_in(str(data_file)) == ['test', 'train']


@pytest.mark.skipif(not _JPEG_BUNDLE.exists(), reason='no JPEG bundle')
def test_the_jpeg_bundle_decodes_to_the_tfds_images():
  images, labels = data_file_lib.load_split(str(_JPEG_BUNDLE), 'test[:200]')
  assert images.shape == (200, 32, 32, 3) and images.dtype == np.uint8
  # Both copies hold the same 10,000 test images, in other orders: every
  # bundle image is one of the TFDS split's (matched by its bytes).
  tfds_images, tfds_labels = input_pipeline.load_split('cifar10', 'test')
  index = {img.tobytes(): i for i, img in enumerate(tfds_images)}
  matches = [index.get(img.tobytes()) for img in images]
  assert None not in matches
  np.testing.assert_array_equal(tfds_labels[matches], labels)


@pytest.mark.parametrize('split, message', [
    ('validation', "has no split 'validation'"),
    ('train[::2]', 'is not valid for a data file'),
])
def test_bad_splits_are_named(data_file, split, message):
  with pytest.raises(data_file_lib.DataFileError, match=message):
    data_file_lib.load_split(str(data_file), split)


def test_training_without_tensorflow(data_file, tmp_path):
  workdir = tmp_path / 'run'
  proc = subprocess.run(
      [sys.executable, 'tests/without_tensorflow.py', 'beta_lasso.main',
       '--config=configs/sfc.py:cpu', '--config.alpha=2',
       '--config.batch_size=128', '--config.eval_batch_size=250',
       '--config.num_epochs=2',
       '--config.eval_every_epochs=1', f'--config.data_file={data_file}',
       f'--workdir={workdir}'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'tensorflow' not in proc.stderr.lower()
  results = json.loads((workdir / 'results.json').read_text())
  assert results['steps'] == 16  # 2 epochs of 8 batches of 128.
  assert results['train_examples'] == 1024
  # Metrics went to the writer that needs no TensorFlow.
  records = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines()]
  evals = [r for r in records if 'test_accuracy' in r]
  assert [r['step'] for r in evals] == [8, 16]
  assert evals[-1]['test_accuracy'] == results['test_accuracy']
  assert not list(workdir.glob('events.out.tfevents*'))


def test_a_missing_data_file_is_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'beta_lasso.main', '--config=configs/sfc.py:cpu',
       f'--config.data_file={tmp_path}/nope.npz', f'--workdir={tmp_path}/w'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].endswith(
      f'{tmp_path}/nope.npz does not exist')
  assert not (tmp_path / 'w').exists()


def test_the_cache_command_writes_what_tfds_reads(tmp_path):
  out = tmp_path / 'cifar10_test.npz'
  proc = subprocess.run(
      [sys.executable, '-m', 'beta_lasso.data.cache', '--dataset=cifar10',
       f'--out={out}', '--splits=test[:300]'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'Wrote {out}: test[:300] 300 examples' in proc.stdout
  images, labels = data_file_lib.load_split(str(out), 'test')  # Named 'test'.
  tfds_images, tfds_labels = input_pipeline.load_split('cifar10', 'test[:300]')
  np.testing.assert_array_equal(images, tfds_images)
  np.testing.assert_array_equal(labels, tfds_labels)


def test_a_data_file_run_checks_its_splits_like_a_tfds_run(data_file):
  from beta_lasso.training import validation  # pylint: disable=g-import-not-at-top
  from configs import sfc  # pylint: disable=g-import-not-at-top
  config = sfc.get_config('cpu')
  config.data_file = str(data_file)
  config.eval_split = 'test[:100]'
  config.eval_batch_size = 200
  with pytest.raises(validation.ConfigError,
                     match=r"eval_batch_size=200 is larger than .* \(100 "):
    validation.validate_config(config)
  config.eval_batch_size = 100
  config.train_split = 'train[:100]'  # Less than one batch of 256.
  with pytest.raises(validation.ConfigError, match='holds 100 examples'):
    validation.validate_config(config)
  config.train_split = 'validation'
  with pytest.raises(validation.ConfigError, match='holds: test, train'):
    validation.validate_config(config)
