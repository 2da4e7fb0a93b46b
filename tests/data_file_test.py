"""Training from a data file, with TensorFlow and TFDS not installed.

Also: broken data files are refused in one line before any compute, and a data
file of any image shape, of any TFDS dataset, trains and reports.
"""

import ast
import io
import json
import pathlib
import re
import shutil
import subprocess
import sys

from cli_runs import IMPORT_NOISE
from cli_runs import run_python
import generated_datasets
import numpy as np
import pytest

from beta_lasso.data import data_file as data_file_lib
from beta_lasso.data import datasets
from beta_lasso.data import input_pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]
_JPEG_BUNDLE = REPO.parent / 'shared' / 'data' / 'cifar10_jpeg.npz'


@pytest.fixture(scope='module')
def data_file(tmp_path_factory):
  """A cache of 1,024 training and 500 test images of real CIFAR-10."""
  path = tmp_path_factory.mktemp('data') / 'cifar10_small.npz'
  data_file_lib.write(
      str(path),
      {
          'train': input_pipeline.load_split('cifar10', 'train[:1024]'),
          'test': input_pipeline.load_split('cifar10', 'test[:500]'),
      },
  )
  return path


def test_a_cache_reads_back_exactly(data_file):
  images, labels = data_file_lib.load_split(str(data_file), 'train[100:300]')
  tfds_images, tfds_labels = input_pipeline.load_split(
      'cifar10', 'train[100:300]'
  )
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


@pytest.mark.skipif(not _JPEG_BUNDLE.exists(), reason='no JPEG bundle')
def test_a_packed_jpeg_bundle_holds_the_same_jpegs_in_a_third(tmp_path):
  out = tmp_path / 'packed.npz'
  proc = run_python(
      '-m',
      'beta_lasso.data.cache',
      f'--jpeg_bundle={_JPEG_BUNDLE}',
      f'--out={out}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'stored once: test 623 + 2, train 623 + 2' in proc.stdout
  # 55.8 MB -> 18.1 MB: CIFAR-10's JPEG header is 623 of an image's 921 bytes.
  assert out.stat().st_size < 0.33 * _JPEG_BUNDLE.stat().st_size
  with np.load(_JPEG_BUNDLE) as original, np.load(out) as packed:
    assert set(packed.files) == set(original.files) | {
        f'{s}_jpeg_{a}' for s in ('train', 'test') for a in ('prefix', 'suffix')
    }
    np.testing.assert_array_equal(
        packed['label_names'], original['label_names']
    )
    for split in ('train', 'test'):
      np.testing.assert_array_equal(
          packed[f'{split}_labels'], original[f'{split}_labels']
      )
      # Byte for byte the same JPEGs, every one of them.
      head = packed[f'{split}_jpeg_prefix'].tobytes()
      tail = packed[f'{split}_jpeg_suffix'].tobytes()
      assert tail == b'\xff\xd9'  # JPEG's end-of-image marker.
      bodies, offsets = packed[f'{split}_jpeg'], packed[f'{split}_offsets']
      jpegs, bounds = original[f'{split}_jpeg'], original[f'{split}_offsets']
      assert len(offsets) == len(bounds)
      for i in range(len(bounds) - 1):
        body = bodies[offsets[i] : offsets[i + 1]].tobytes()
        assert head + body + tail == jpegs[bounds[i] : bounds[i + 1]].tobytes()
  # So they decode to the same pixels, through the reader's own path.
  for split in ('test[:300]', 'train[49800:]'):
    np.testing.assert_array_equal(
        data_file_lib.load_split(str(out), split)[0],
        data_file_lib.load_split(str(_JPEG_BUNDLE), split)[0],
    )
  assert data_file_lib.describe(str(out)) == data_file_lib.describe(
      str(_JPEG_BUNDLE)
  )
  # Packing a packed bundle changes nothing; a cache does not pack.
  again = tmp_path / 'again.npz'
  assert data_file_lib.pack_jpeg_bundle(str(out), str(again)) == {
      'train': (623, 2),
      'test': (623, 2),
  }
  with np.load(out) as a, np.load(again) as b:
    for key in a.files:
      np.testing.assert_array_equal(a[key], b[key])
  cache = tmp_path / 'cache.npz'
  np.savez(cache, **_good_arrays())
  with pytest.raises(
      data_file_lib.DataFileError,
      match=r"split '(test|train)' holds decoded images, not JPEGs",
  ):
    data_file_lib.pack_jpeg_bundle(str(cache), str(tmp_path / 'x.npz'))


def test_packing_keeps_every_image_and_an_empty_split(tmp_path):
  bundle, packed = tmp_path / 'bundle.npz', tmp_path / 'packed.npz'
  np.savez(
      bundle,
      **_jpeg_arrays(),
      test_jpeg=np.zeros(0, np.uint8),
      test_offsets=np.zeros(1, np.int64),
      test_labels=np.zeros(0, np.int32),
  )
  lengths = data_file_lib.pack_jpeg_bundle(str(bundle), str(packed))
  assert lengths['test'] == (0, 0) and lengths['train'][0] > 0
  np.testing.assert_array_equal(
      data_file_lib.load_split(str(packed), 'train[1:]')[0],
      data_file_lib.load_split(str(bundle), 'train[1:]')[0],
  )
  assert data_file_lib.describe(str(packed)).splits == {'train': 4, 'test': 0}


@pytest.mark.parametrize(
    'split, message',
    [
        ('validation', "has no split 'validation'"),
        ('train[::2]', 'is not valid for a data file'),
    ],
)
def test_bad_splits_are_named(data_file, split, message):
  with pytest.raises(data_file_lib.DataFileError, match=message):
    data_file_lib.load_split(str(data_file), split)


def test_training_without_tensorflow(data_file, tmp_path):
  workdir = tmp_path / 'run'
  proc = run_python(
      'tests/without_tensorflow.py',
      'beta_lasso.main',
      '--config=configs/sfc.py:cpu',
      '--config.alpha=2',
      '--config.batch_size=128',
      '--config.eval_batch_size=250',
      '--config.num_epochs=2',
      '--config.eval_every_epochs=1',
      f'--config.data_file={data_file}',
      f'--workdir={workdir}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'tensorflow' not in proc.stderr.lower()
  results = json.loads((workdir / 'results.json').read_text())
  assert results['steps'] == 16  # 2 epochs of 8 batches of 128.
  assert results['train_examples'] == 1024
  # Metrics went to the writer that needs no TensorFlow.
  records = [
      json.loads(line)
      for line in (workdir / 'metrics.jsonl').read_text().splitlines()
  ]
  evals = [r for r in records if 'test_accuracy' in r]
  assert [r['step'] for r in evals] == [8, 16]
  assert evals[-1]['test_accuracy'] == results['test_accuracy']
  assert not list(workdir.glob('events.out.tfevents*'))


def test_a_missing_data_file_is_one_line(tmp_path):
  proc = run_python(
      '-m',
      'beta_lasso.main',
      '--config=configs/sfc.py:cpu',
      f'--config.data_file={tmp_path}/nope.npz',
      f'--workdir={tmp_path}/w',
      timeout=120,
  )
  assert proc.returncode != 0
  assert (
      proc.stderr.strip()
      .splitlines()[-1]
      .endswith(f'{tmp_path}/nope.npz does not exist')
  )
  assert not (tmp_path / 'w').exists()


def test_the_cache_command_writes_what_tfds_reads(tmp_path):
  out = tmp_path / 'cifar10_test.npz'
  proc = run_python(
      '-m',
      'beta_lasso.data.cache',
      '--dataset=cifar10',
      f'--out={out}',
      '--splits=test[:300]',
  )
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
  with pytest.raises(
      validation.ConfigError,
      match=r'eval_batch_size=200 is larger than .* \(100 ',
  ):
    validation.validate_config(config)
  config.eval_batch_size = 100
  config.train_split = 'train[:100]'  # Less than one batch of 256.
  with pytest.raises(validation.ConfigError, match='holds 100 examples'):
    validation.validate_config(config)
  config.train_split = 'validation'
  with pytest.raises(validation.ConfigError, match='holds: test, train'):
    validation.validate_config(config)


# ----------------------------------------------------------------------------
# Broken data files: one line naming the file and what is wrong, before any
# compute.
# ----------------------------------------------------------------------------
def _grey_split(count: int, seed: int = 0, shape=(28, 28, 1), classes=4):
  """Images whose class is their brightness, as in generated_datasets."""
  rng = np.random.default_rng(seed)
  labels = np.arange(count) % classes
  level = 40 + 160 * labels / (classes - 1)
  images = rng.normal(level[:, None, None, None], 30, (count, *shape))
  return np.clip(images, 0, 255).astype(np.uint8), labels


def _good_arrays():
  train, test = _grey_split(64), _grey_split(32, seed=1)
  return {
      'train_images': train[0],
      'train_labels': train[1],
      'test_images': test[0],
      'test_labels': test[1],
  }


def _jpeg_arrays():
  """A JPEG bundle of 4 grey 8x8 images, split 'train'."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  jpegs = []
  for value in range(4):
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 60 * value, np.uint8)).save(
        buffer, 'JPEG'
    )
    jpegs.append(buffer.getvalue())
  return {
      'train_jpeg': np.frombuffer(b''.join(jpegs), np.uint8),
      'train_offsets': np.cumsum([0] + [len(j) for j in jpegs]),
      'train_labels': np.arange(4, dtype=np.int32),
  }


def _objects(arrays):
  out = np.empty(len(arrays), object)
  out[:] = list(arrays)
  return out


def _truncated(path):
  np.savez(path, **_good_arrays())
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# Name -> (writes the broken file at the path, what the message says).
_BROKEN = {
    'truncated': (_truncated, r'is not a readable \.npz \(BadZipFile: '),
    'not_a_zip': (
        lambda p: p.write_text('images'),
        r'is not a readable \.npz \(BadZipFile: ',
    ),
    'images_2d': (
        lambda p: np.savez(
            p,
            **{**_good_arrays(), 'train_images': np.zeros((64, 784), np.uint8)},
        ),
        r"'train_images' is uint8 of shape \(64, 784\); it must be "
        r'uint8 images of shape \[N, H, W, C\]$',
    ),
    'object_images': (
        lambda p: np.savez(
            p,
            **{
                **_good_arrays(),
                'train_images': _objects(_good_arrays()['train_images']),
            },
        ),
        r"'train_images' is an array of Python objects, which a "
        'data file may not hold',
    ),
    'object_labels': (
        lambda p: np.savez(
            p, **{**_good_arrays(), 'test_labels': _objects(['cat'] * 32)}
        ),
        r"'test_labels' is an array of Python objects",
    ),
    'float_images': (
        lambda p: np.savez(
            p, **{**_good_arrays(), 'test_images': np.zeros((32, 28, 28, 1))}
        ),
        r"'test_images' is float64 of shape",
    ),
    'labels_missing': (
        lambda p: np.savez(
            p, **{**_good_arrays(), 'train_labels': np.zeros(10, np.int32)}
        ),
        r"split 'train' has 64 images and 10 labels$",
    ),
    'no_split': (
        lambda p: np.savez(p, images=np.zeros((4, 2, 2, 1))),
        r'holds no split: it has no <split>_labels array \(it holds: '
        r'images\)$',
    ),
    'jpeg_prefix_2d': (
        lambda p: np.savez(
            p, **_jpeg_arrays(), train_jpeg_prefix=np.zeros((2, 2), np.uint8)
        ),
        r"'train_jpeg_prefix' is uint8 of shape \(2, 2\); it must be the "
        r"uint8 bytes every JPEG of 'train' shares$",
    ),
    'shapes_differ': (
        lambda p: np.savez(
            p,
            **{
                **_good_arrays(),
                'test_images': np.zeros((32, 32, 32, 3), np.uint8),
            },
        ),
        r'its splits hold images of different shapes \(test '
        r'\(32, 32, 3\), train \(28, 28, 1\)\)$',
    ),
}


@pytest.mark.parametrize('name', sorted(_BROKEN))
def test_a_broken_data_file_is_named_in_one_line(tmp_path, name):
  path = tmp_path / f'{name}.npz'
  _BROKEN[name][0](path)
  for read in (
      data_file_lib.describe,
      data_file_lib.splits_in,
      lambda p: data_file_lib.load_split(p, 'train'),
  ):
    with pytest.raises(data_file_lib.DataFileError) as error:
      read(str(path))
    message = str(error.value)
    assert message.startswith(f'data file {path}'), message
    assert re.search(_BROKEN[name][1], message), message
    assert '\n' not in message


def test_broken_data_files_stop_the_cli_before_anything(tmp_path):
  procs = {}
  for name in ('truncated', 'images_2d', 'object_images'):
    path = tmp_path / f'{name}.npz'
    _BROKEN[name][0](path)
    procs[name] = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'beta_lasso.main',
            '--config=configs/sfc.py:cpu',
            f'--config.data_file={path}',
            f'--workdir={tmp_path / name}',
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
  for name, proc in procs.items():
    stdout, stderr = proc.communicate(timeout=300)
    lines = [
        line for line in stderr.splitlines() if not IMPORT_NOISE.match(line)
    ]
    assert proc.returncode == 1, stderr[-3000:]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f'error: data file {tmp_path / name}.npz')
    assert re.search(_BROKEN[name][1], lines[0]), lines[0]
    assert not stdout
    assert not (tmp_path / name).exists()


# ----------------------------------------------------------------------------
# Data files of any image shape and of any dataset.
# ----------------------------------------------------------------------------
def test_the_image_shape_comes_from_the_data_file(tmp_path):
  from configs import sfc  # pylint: disable=g-import-not-at-top

  path = tmp_path / 'grey.npz'
  data_file_lib.write(
      str(path), {'train': _grey_split(64), 'test': _grey_split(32)}
  )
  assert data_file_lib.describe(str(path)) == data_file_lib.Contents(
      {'test': 32, 'train': 64}, (28, 28, 1), 4
  )
  config = sfc.get_config('cpu')
  config.data_file = str(path)  # config.dataset stays 'cifar10'.
  info = datasets.base_info(config)
  assert (info.image_shape, info.num_classes) == ((28, 28, 1), 4)
  assert info.mean is None  # Measured from the file, not CIFAR-10's.
  # A file of CIFAR-10's shape keeps the table's settings.
  data_file_lib.write(
      str(path),
      {'train': (np.zeros((8, 32, 32, 3)), np.arange(8))},
      num_classes=10,
  )
  assert datasets.base_info(config) == input_pipeline.DATASETS['cifar10']


def test_a_dataset_outside_the_table_trains_and_reports_from_its_data_file(
    generated_data_dir, tmp_path
):
  """gray28_digits (28x28 grey, 4 classes): cache, train, report, export."""
  # pylint: disable=g-import-not-at-top
  from beta_lasso.report import filters
  from beta_lasso.report import plots
  from beta_lasso.report import tables
  from beta_lasso.sparse import export
  from beta_lasso.sparse import prune
  from beta_lasso.training import loading
  # pylint: enable=g-import-not-at-top
  out = tmp_path / 'gray28.npz'
  proc = run_python(
      '-m',
      'beta_lasso.data.cache',
      '--dataset=gray28_digits',
      f'--data_dir={generated_data_dir}',
      f'--out={out}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  shape, classes, train_size, _ = generated_datasets.SHAPES['gray28_digits']
  assert data_file_lib.describe(str(out)).num_classes == classes
  workdir = tmp_path / 'run'
  proc = run_python(
      'tests/without_tensorflow.py',
      'beta_lasso.main',
      '--config=configs/sfc.py:cpu',
      '--config.dataset=gray28_digits',
      '--config.alpha=1',
      '--config.batch_size=100',
      '--config.eval_batch_size=100',
      '--config.num_epochs=2',
      f'--config.data_file={out}',
      f'--workdir={workdir}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads((workdir / 'results.json').read_text())
  assert results['steps'] == 2 * (train_size // 100)
  assert results['dataset']['image_shape'] == list(shape)
  assert results['dataset']['num_classes'] == classes
  assert results['locality']  # Measured on 28x28x1 images.
  # Tables, figures and export read the shape from the run.
  loaded = loading.load_results(workdir)
  assert loading.image_shape(loaded) == shape
  assert tables.row(loaded, bits=32, delta=0.05)
  plots.plot_nonzeros([loaded], tmp_path / 'fig3.png')
  grid = filters.plot_workdir_filters(workdir, tmp_path / 'fig4.png')
  assert grid.shape[-3:] == shape  # Each filter drawn as a 28x28x1 image.
  meta = export.export(workdir, tmp_path / 'sfc.npz')
  assert meta['image_shape'] == list(shape)
  # prune: a killed run (no results.json), its accuracy from its data file.
  killed = tmp_path / 'killed'
  shutil.copytree(workdir, killed)
  (killed / 'results.json').unlink()
  assert prune._last_accuracy(killed) == (  # pylint: disable=protected-access
      f'{results["history"][-1]["test_accuracy"]:.4f}'
  )
  pruned = prune.prune_like(killed, workdir, tmp_path / 'pruned.npz')
  assert prune.accuracy(tmp_path / 'pruned.npz', pruned['meta']['config']) == (
      pytest.approx(results['test_accuracy'], abs=1e-6)
  )


def test_data_code_imports_nothing_of_training():
  """data/ stands below training/: no import of it, and data_file needs numpy."""
  package = REPO / 'beta_lasso' / 'data'
  for path in package.glob('*.py'):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module:
        imported.add(node.module)
      elif isinstance(node, ast.Import):
        imported.update(alias.name for alias in node.names)
    assert not {
        m for m in imported if m.startswith('beta_lasso.training')
    }, path.name
    if path.name == 'data_file.py':
      assert not {m for m in imported if m.startswith('beta_lasso.data')}
