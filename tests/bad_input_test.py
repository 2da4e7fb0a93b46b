"""Bad input fails fast and touches nothing; a workdir is one experiment's.

Config and workdir errors are tested in-process where they can be, and through
the real CLI (see cli_runs.py) for the one-line message and the untouched
workdir.
"""
import json
import logging as pylogging
import os
import pathlib
import re
import shutil
import socket

import orbax.checkpoint as ocp
import pytest

from beta_lasso.training import fits
from beta_lasso.data import input_pipeline
from beta_lasso import train
from beta_lasso.training import validation
from beta_lasso.training import workdir as workdir_lib
from cli_runs import (_IMPORT_NOISE, IGNORE_UNFINISHED_RESTORES, NUM_STEPS,
                      _copy, _env, _file_hashes, _finish, _run, _start)
from configs import sconv

pytestmark = IGNORE_UNFINISHED_RESTORES


# ----------------------------------------------------------------------------
# 1. Bad input: one line, non-zero exit, the workdir never created.
# ----------------------------------------------------------------------------
_BAD_VALUES = [
    ('model', 'mlp', r"config\.model='mlp' .* one of: sconv, slocal, sfc"),
    ('dataset', 'mnist_typo', r"config\.dataset='mnist_typo': Unknown "
     r"dataset 'mnist_typo': not one of cifar10, cifar100, svhn_cropped nor a "
     r'TFDS dataset'),
    ('dataset', 'cats_vs_dogs', r"config\.dataset='cats_vs_dogs' has images of "
     r'varying size \(None, None, 3\)'),
    ('val_split', 'train[50000:]', r"config\.val_split='train\[50000:\]' "
     r'holds 0 examples; it must hold at least 1$'),
    ('optimizer', 'beta_lasso', r'config\.momentum=0\.9 is not used with '
     r"optimizer='beta_lasso' \(beta-LASSO \(Algorithm 1\) has no momentum.*"
     r'set it to 0 or None$'),
    ('l1', 1e-5, r"config\.l1=1e-05 is not used with optimizer='sgd' \(SGD "
     r'has no L1 term and no threshold\)'),
    ('cutout', 8, r"config\.cutout=8 is not used with augment='crop_flip'"),
    ('cutout', -2, r'config\.cutout=-2 .* >= 0'),
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
    ('seed', 2**64, rf'config\.seed={2**64} .* < {2**63}$'),
    ('eval_batch_size', 20000, r'config\.eval_batch_size=20000 is larger '
     r"than config\.eval_split='test' \(10000 examples\); use at most 10000$"),
    ('alpha', 3000, r'config\.alpha=3000 needs about [\d.]+ GiB .* more than '
     r'the [\d.]+ GiB of host memory; the largest alpha that fits is \d+$'),
    ('warmup_epochs', 400.0, r'config\.warmup_epochs=400\.0 .* < num_epochs'),
    ('steps_per_dispatch', 0, r'config\.steps_per_dispatch=0 .* > 0$'),
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


_BAD_MODEL_KWARGS = [
    ('3fc', 'width', 0, r'config\.model_kwargs\.width=0 .* > 0'),
    ('3fc', 'width', -5, r'config\.model_kwargs\.width=-5 .* > 0'),
    ('3fc', 'width', 2.5, r'config\.model_kwargs\.width=2\.5 .* an integer'),
    ('resnet18', 'kernel_size', 0,
     r'config\.model_kwargs\.kernel_size=0 .* > 0'),
]


@pytest.mark.parametrize('model,field,value,message', _BAD_MODEL_KWARGS,
                         ids=[f'{m}.{f}={v}' for m, f, v, _ in
                              _BAD_MODEL_KWARGS])
def test_model_kwargs_are_checked(model, field, value, message):
  config = sconv.get_config('cpu')
  config.model = model
  config.alpha = None  # Both are sized by their model_kwargs.
  config.model_kwargs = {'width': 64, field: value}
  with pytest.raises(validation.ConfigError, match=message):
    validation.validate_config(config)


def test_largest_size_that_fits_does_and_one_more_does_not(monkeypatch):
  config = sconv.get_config()
  monkeypatch.setattr(fits, 'capacity', lambda: (2**30, 'test memory'))
  with pytest.raises(fits.TooBigError) as error:
    fits.check(config)
  largest = int(re.search(r'the largest alpha that fits is (\d+)$',
                          str(error.value)).group(1))
  config.alpha = largest
  fits.check(config)
  config.alpha = largest + 1
  with pytest.raises(fits.TooBigError):
    fits.check(config)


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
    # Refused before anything is allocated, instead of hanging in XLA.
    'too_big': ((), ['--config.alpha=3000'],
                r'^error: config\.alpha=3000 needs about [\d.]+ GiB .* the '
                r'largest alpha that fits is \d+$'),
}


def _env_without_tf_settings(**extra) -> dict:
  """The CLI's environment as a user's would be: TF's logging not set up."""
  env = _env(**extra)
  for name in ('TF_CPP_MIN_LOG_LEVEL', 'TF_ENABLE_ONEDNN_OPTS'):
    env.pop(name, None)
  return env


@pytest.fixture(scope='module')
def bad_cli_runs(tmp_path_factory):
  """All the bad command lines, started at once: each is mostly imports."""
  root = tmp_path_factory.mktemp('bad_cli')
  procs = {}
  for name, (env, extra, _) in _BAD_CLI.items():
    procs[name] = _start(root / name, *extra,
                         env=_env_without_tf_settings(**dict([env] if env
                                                             else [])))
  return root, {name: _finish(proc) for name, proc in procs.items()}


@pytest.mark.parametrize('name', sorted(_BAD_CLI))
def test_cli_bad_input_is_one_line_and_touches_nothing(bad_cli_runs, name):
  root, runs = bad_cli_runs
  run = runs[name]
  assert run.returncode == 1
  # Nothing before it, TensorFlow's start-up notices included.
  lines = run.stderr.splitlines()
  assert len(lines) == 1, run.stderr
  assert re.search(_BAD_CLI[name][2], lines[0]), lines[0]
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
  assert not (tmp_path / workdir_lib.CONFIG_FILE).exists()  # Checks only.
  workdir_lib.save_config(tmp_path, config)
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
  workdir_lib.save_config(tmp_path, changed)
  assert json.loads((tmp_path / workdir_lib.CONFIG_FILE).read_text())[
      'alpha'] == config.alpha + 1


def test_checkpoint_config_stands_in_for_a_lost_config_json(tmp_path):
  config = sconv.get_config('cpu')
  saved = workdir_lib.flatten(config)
  workdir_lib.check_config(tmp_path, config, saved=saved)
  changed = sconv.get_config('cpu')
  changed.learning_rate = 0.05
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match=r'learning_rate \(0\.1 -> 0\.05\)'):
    workdir_lib.check_config(tmp_path, changed, saved=saved)


def test_a_workdir_saved_before_newer_fields_still_resumes(tmp_path):
  config = sconv.get_config('cpu')
  old = workdir_lib.flatten(config)
  for field in (*workdir_lib.EXECUTION_FIELDS, *workdir_lib.ADDED_FIELDS):
    del old[field]
  workdir_lib.check_config(tmp_path, config, saved=old)
  # How the run executes may change; what it computes may not.
  config.device_loop, config.mesh_model = True, 2
  workdir_lib.check_config(tmp_path, config, saved=old)
  config.val_split = 'train[45000:]'
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match=r"val_split \(None -> 'train\[45000:\]'\)"):
    workdir_lib.check_config(tmp_path, config, saved=old)


def test_unreadable_config_json_is_one_line(tmp_path):
  (tmp_path / workdir_lib.CONFIG_FILE).write_text('{"alpha": 4, "mod')
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r'config\.json is unreadable \(JSONDecodeError: '
                           r'.*\); delete it to take the config saved in the '
                           r'newest checkpoint'):
    workdir_lib.check_config(tmp_path, sconv.get_config('cpu'))


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / 'run'
  path.write_text('')
  for check in (lambda: workdir_lib.check_config(path, sconv.get_config()),
                lambda: workdir_lib.lock(path).__enter__()):
    with pytest.raises(workdir_lib.WorkdirError,
                       match=rf'^--workdir={path} is a file, not a folder'):
      check()


def test_lock_refuses_a_second_run_naming_the_first(tmp_path):
  with workdir_lib.lock(tmp_path):
    with pytest.raises(workdir_lib.WorkdirError,
                       match=rf'in use by another run \(pid {os.getpid()} on '
                             rf'{re.escape(socket.gethostname())}\)'):
      with workdir_lib.lock(tmp_path):
        pass
  with workdir_lib.lock(tmp_path):  # Released with the first.
    pass


def test_cli_refuses_a_workdir_in_use(reference, tmp_path):
  workdir = _copy(reference.workdir, tmp_path / 'run')
  before = _file_hashes(workdir)
  with workdir_lib.lock(workdir):
    run = _run(workdir)
  assert run.returncode == 1
  assert run.stderr.splitlines()[-1] == (
      f'error: workdir {workdir} is in use by another run (pid {os.getpid()} '
      f'on {socket.gethostname()}); wait for it to finish or stop it, or use '
      'a new --workdir')
  assert 'Traceback' not in run.stderr
  del before[workdir_lib.LOCK_FILE]  # The holder wrote itself there.
  after = _file_hashes(workdir)
  del after[workdir_lib.LOCK_FILE]
  assert after == before


def test_cli_lost_config_json_is_checked_against_the_checkpoint(reference,
                                                                 tmp_path):
  workdir = _copy(reference.workdir, tmp_path / 'run')
  (workdir / workdir_lib.CONFIG_FILE).unlink()
  before = _file_hashes(workdir)
  run = _run(workdir, '--config.learning_rate=0.05')
  assert run.returncode == 1
  assert re.search(r'^error: workdir .* holds a run with another config: '
                   r'learning_rate \(0\.1 -> 0\.05\); use a new --workdir',
                   run.stderr.splitlines()[-1]), run.stderr[-2000:]
  assert 'Traceback' not in run.stderr
  after = _file_hashes(workdir)
  assert {k: v for k, v in after.items() if k != workdir_lib.LOCK_FILE} == {
      k: v for k, v in before.items() if k != workdir_lib.LOCK_FILE}


def _truncated_test_split(directory: pathlib.Path) -> pathlib.Path:
  """A copy of CIFAR-10's test split whose third shard lost its second half."""
  source = next((pathlib.Path(os.environ['TFDS_DATA_DIR']) / 'cifar10')
                .iterdir())
  target = directory / 'cifar10' / source.name
  target.mkdir(parents=True)
  for path in source.iterdir():
    if '-train.' not in path.name:
      shutil.copyfile(path, target / path.name)
  shard = sorted(target.glob('*-test.tfrecord-*'))[2]
  shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])
  return shard


def test_damaged_shard_is_named_and_nothing_is_written(tmp_path):
  shard = _truncated_test_split(tmp_path / 'tfds')
  workdir = tmp_path / 'run'
  run = _run(workdir, f'--config.data_dir={tmp_path / "tfds"}',
             '--config.train_split=test', '--config.download=False')
  assert run.returncode == 1
  assert re.search(rf"^error: cannot read split 'test' of dataset 'cifar10': "
                   rf'{re.escape(str(shard))} is damaged \(DataLossError: '
                   r'.*\); delete .* to prepare it anew$',
                   run.stderr.splitlines()[-1]), run.stderr[-2000:]
  assert 'Traceback' not in run.stderr
  # The corrected command must not find a config it would refuse.
  assert not (workdir / workdir_lib.CONFIG_FILE).exists()


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
