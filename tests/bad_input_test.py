"""Bad input fails fast and touches nothing; a workdir is one experiment's.

Config and workdir errors are tested in-process where they can be, and through
the real CLI (see cli_runs.py) for the one-line message and the untouched
workdir.
"""
import json
import logging as pylogging
import os
import re

import orbax.checkpoint as ocp
import pytest

from beta_lasso import input_pipeline
from beta_lasso import train
from beta_lasso import validation
from beta_lasso import workdir as workdir_lib
from cli_runs import (_IMPORT_NOISE, IGNORE_UNFINISHED_RESTORES, NUM_STEPS,
                      _copy, _env, _file_hashes, _finish, _run, _start)
from configs import sconv

pytestmark = IGNORE_UNFINISHED_RESTORES


# ----------------------------------------------------------------------------
# 1. Bad input: one line, non-zero exit, the workdir never created.
# ----------------------------------------------------------------------------
_BAD_VALUES = [
    ('model', 'mlp', r"config\.model='mlp' .* one of: sconv, slocal, sfc"),
    ('dataset', 'mnist', r"config\.dataset='mnist' .* cifar10, cifar100"),
    ('optimizer', 'adam', r"config\.optimizer='adam' .* sgd, beta_lasso"),
    ('augment', 'mixup', r"config\.augment='mixup' .* none, crop_flip"),
    ('regularize', 'some', r"config\.regularize='some' .* kernels, all"),
    ('alpha', 0, r'config\.alpha=0 .* > 0'),
    ('alpha', -4, r'config\.alpha=-4 .* > 0'),
    ('batch_size', 0, r'config\.batch_size=0 .* > 0'),
    ('learning_rate', 0.0, r'config\.learning_rate=0\.0 .* > 0'),
    ('learning_rate', -0.1, r'config\.learning_rate=-0\.1 .* > 0'),
    ('learning_rate', float('nan'), r'config\.learning_rate=nan .* finite'),
    ('num_epochs', 0.0, r'config\.num_epochs=0\.0 .* > 0'),
    ('num_epochs', float('inf'), r'config\.num_epochs=inf .* finite'),
    ('eval_every_epochs', -1.0, r'config\.eval_every_epochs=-1\.0 .* > 0'),
    ('checkpoint_every_epochs', 0.0, r'checkpoint_every_epochs=0\.0 .* > 0'),
    ('l1', -1e-6, r'config\.l1=-1e-06 .* >= 0'),
    ('l1_conv', -1e-6, r'config\.l1_conv=-1e-06 .* >= 0'),
    ('beta', -1.0, r'config\.beta=-1\.0 .* >= 0'),
    ('momentum', 1.0, r'config\.momentum=1\.0 .* < 1'),
    ('dropout_rate', 1.0, r'config\.dropout_rate=1\.0 .* < 1'),
    ('seed', -1, r'config\.seed=-1 .* >= 0'),
    ('warmup_epochs', 400.0, r'config\.warmup_epochs=400\.0 .* < num_epochs'),
    ('log_every_steps', 0, r'config\.log_every_steps=0 .* > 0'),
    ('max_checkpoints_to_keep', 0, r'max_checkpoints_to_keep=0 .* > 0'),
    ('eval_batch_size', 0, r'config\.eval_batch_size=0 .* > 0'),
    ('train_split', 'tset', r"config\.train_split='tset' is not valid: "
     r"Unknown split 'tset'\. Should be one of \['train', 'test'\]"),
    ('train_split', 'train[:100]', r"config\.train_split='train\[:100\]' "
     r'holds 100 examples; it must hold at least 512 \(one batch\)'),
    ('eval_split', 'test[:0]', r'holds 0 examples; it must hold at least 1$'),
]


@pytest.mark.parametrize('field,value,message', _BAD_VALUES,
                         ids=[f'{f}={v}' for f, v, _ in _BAD_VALUES])
def test_validate_config_names_the_bad_value(field, value, message):
  config = sconv.get_config()
  validation.validate_config(config)  # The paper's config is fine.
  config[field] = value
  with pytest.raises(validation.ConfigError) as error:
    validation.validate_config(config)
  assert re.search(message, str(error.value)), str(error.value)
  assert '\n' not in str(error.value)


def test_model_kwargs_the_model_does_not_take():
  config = sconv.get_config()
  config.model_kwargs = {'width': 8}
  with pytest.raises(validation.ConfigError, match=r"model_kwargs=\{'width'"):
    validation.validate_config(config)


def test_missing_dataset_lists_the_prepared_ones(tmp_path):
  config = sconv.get_config()
  config.dataset = 'cifar100'
  config.download = False
  config.data_dir = os.environ['TFDS_DATA_DIR']
  with pytest.raises(input_pipeline.DatasetNotFoundError,
                     match=r"'cifar100' .* not prepared .* Prepared there: "
                           r'cifar10\.$'):
    validation.validate_config(config)


def test_bad_config_fails_before_the_workdir_exists(tmp_path):
  config = sconv.get_config('cpu')
  config.beta = -1.0
  with pytest.raises(validation.ConfigError):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


_BAD_CLI = {
    'model': ((), ['--config.model=mlp'],
              r"^error: config\.model='mlp' is not valid; choose one of: "
              r'sconv, slocal, sfc, dconv, dlocal, dfc, 3fc, resnet18$'),
    'batch_over_8_devices': (
        ('XLA_FLAGS', '--xla_force_host_platform_device_count=8'),
        ['--config.batch_size=12'],
        r'^error: config\.batch_size=12 cannot be split over 8 devices; use '
        r'a multiple of 8$'),
    'missing_dataset': ((), ['--config.dataset=cifar100',
                             '--config.download=False'],
                        r"^error: Dataset 'cifar100' .* is not prepared in "
                        r'data dir .*Prepared there: cifar10\.$'),
    'config_file_arg': ((), ['--config=configs/sconv.py:gpu'],
                        r'^error: flag --config=configs/sconv\.py:gpu: .*'
                        r"config argument 'gpu' is not valid; choose from: "
                        r'cpu'),
    'config_field': ((), ['--config.lamda=1e-6'],
                     r"^error: unknown config field 'lamda'"),
}


@pytest.fixture(scope='module')
def bad_cli_runs(tmp_path_factory):
  """All the bad command lines, started at once: each is mostly imports."""
  root = tmp_path_factory.mktemp('bad_cli')
  procs = {}
  for name, (env, extra, _) in _BAD_CLI.items():
    procs[name] = _start(root / name, *extra,
                         env=_env(**dict([env])) if env else None)
  return root, {name: _finish(proc) for name, proc in procs.items()}


@pytest.mark.parametrize('name', sorted(_BAD_CLI))
def test_cli_bad_input_is_one_line_and_touches_nothing(bad_cli_runs, name):
  root, runs = bad_cli_runs
  run = runs[name]
  assert run.returncode == 1
  ours = [line for line in run.stderr.splitlines()
          if line.strip() and not _IMPORT_NOISE.match(line)]
  assert len(ours) == 1, run.stderr
  assert re.search(_BAD_CLI[name][2], ours[0]), ours[0]
  assert not run.stdout
  assert not (root / name).exists()


# ----------------------------------------------------------------------------
# 2. A workdir belongs to one experiment.
# ----------------------------------------------------------------------------
def test_cli_refuses_a_workdir_of_another_config(reference, tmp_path):
  workdir = _copy(reference.workdir, tmp_path / 'run')
  before = _file_hashes(workdir)
  run = _run(workdir, '--config.learning_rate=0.05', '--config.seed=1')
  assert run.returncode == 1
  ours = [line for line in run.stderr.splitlines()
          if line.strip() and not _IMPORT_NOISE.match(line)]
  assert ours == [
      f'error: workdir {workdir} holds a run with another config: '
      'learning_rate (0.1 -> 0.05), seed (0 -> 1); use a new --workdir, or '
      'pass --allow_config_change to continue it anyway']
  assert _file_hashes(workdir) == before


def test_check_config_refuses_or_allows_a_change(tmp_path):
  config = sconv.get_config('cpu')
  workdir_lib.check_config(tmp_path, config)
  workdir_lib.check_config(tmp_path, config)  # Same config: fine.
  saved = (tmp_path / workdir_lib.CONFIG_FILE).read_text()
  changed = sconv.get_config('cpu')
  changed.alpha = config.alpha + 1
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match=rf'another config: alpha \({config.alpha} -> '
                           rf'{config.alpha + 1}\); use a new'):
    workdir_lib.check_config(tmp_path, changed)
  assert (tmp_path / workdir_lib.CONFIG_FILE).read_text() == saved
  workdir_lib.check_config(tmp_path, changed, allow_change=True)
  assert json.loads((tmp_path / workdir_lib.CONFIG_FILE).read_text())[
      'alpha'] == config.alpha + 1


# ----------------------------------------------------------------------------
# The console: our progress, not orbax's.
# ----------------------------------------------------------------------------
def test_reference_console_shows_progress_not_orbax(reference):
  stderr = reference.run.stderr
  assert re.search(r'[\d.]+ steps/s, 100\.0% \(78/78\), ETA', stderr)
  assert re.search(r'Step 78: test accuracy 0\.\d+', stderr)
  assert 'test accuracy: 0.' in reference.run.stdout
  # Orbax's per-save INFO flood is filtered out of the console.
  assert 'checkpoint_manager.py' not in stderr
  assert 'orbax' not in stderr.lower()
  assert reference.results['history'][-1]['step'] == NUM_STEPS


def test_console_filter_drops_orbax_info_only():
  from beta_lasso import main  # pylint: disable=g-import-not-at-top

  def record(pathname, level, name='absl'):
    return pylogging.LogRecord(name, level, pathname, 1, 'msg', (), None)

  orbax_file = os.path.join(os.path.dirname(ocp.__file__),
                            'checkpoint_manager.py')
  console = main._ConsoleFilter()  # pylint: disable=protected-access
  assert not console.filter(record(orbax_file, pylogging.INFO))
  assert console.filter(record(orbax_file, pylogging.WARNING))
  assert console.filter(record(train.__file__, pylogging.INFO))
  console.quiet = True
  assert not console.filter(record(train.__file__, pylogging.INFO))
  assert console.filter(record(train.__file__, pylogging.WARNING))
