"""Bad input fails fast and touches nothing; a workdir is one experiment's.

Config and workdir errors are tested in-process where they can be, and through
the real CLI (see cli_runs.py) for the one-line message and the untouched
workdir.
"""

import concurrent.futures
import importlib
import json
import logging as pylogging
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys

from cli_runs import IGNORE_UNFINISHED_RESTORES
from cli_runs import IMPORT_NOISE
from cli_runs import NUM_STEPS
from cli_runs import REPO
from cli_runs import checkpoint_steps
from cli_runs import child_env
from cli_runs import copy_run
from cli_runs import file_hashes
from cli_runs import finish_run
from cli_runs import run_main
from cli_runs import start_run
import orbax.checkpoint as ocp
import pytest

from beta_lasso import errors
from beta_lasso import train
from beta_lasso.data import input_pipeline
from beta_lasso.training import checkpointing
from beta_lasso.training import fits
from beta_lasso.training import loading
from beta_lasso.training import validation
from beta_lasso.training import workdir as workdir_lib
from configs import sconv
from launch import planning

pytestmark = IGNORE_UNFINISHED_RESTORES


# ----------------------------------------------------------------------------
# 1. Bad input: one line, non-zero exit, the workdir never created.
# ----------------------------------------------------------------------------
_BAD_VALUES = [
    ('model', 'mlp', r"config\.model='mlp' .* one of: sconv, slocal, sfc"),
    (
        'dataset',
        'mnist_typo',
        r"config\.dataset='mnist_typo': Unknown "
        r"dataset 'mnist_typo': not one of cifar10, cifar100, svhn_cropped nor a "
        r'TFDS dataset',
    ),
    (
        'dataset',
        'cats_vs_dogs',
        r"config\.dataset='cats_vs_dogs' has images of "
        r'varying size \(None, None, 3\)',
    ),
    (
        'val_split',
        'train[50000:]',
        r"config\.val_split='train\[50000:\]' "
        r'holds 0 examples; it must hold at least 1$',
    ),
    (
        'optimizer',
        'beta_lasso',
        r'config\.momentum=0\.9 is not used with '
        r"optimizer='beta_lasso' \(beta-LASSO \(Algorithm 1\) has no momentum.*"
        r'set it to 0 or None$',
    ),
    (
        'l1',
        1e-5,
        r"config\.l1=1e-05 is not used with optimizer='sgd' \(SGD "
        r'has no L1 term and no threshold\)',
    ),
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
    (
        'eval_batch_size',
        20000,
        r'config\.eval_batch_size=20000 is larger '
        r"than config\.eval_split='test' \(10000 examples\); use at most 10000$",
    ),
    (
        'alpha',
        3000,
        r'config\.alpha=3000 needs about [\d.]+ GiB .* more than '
        r'the [\d.]+ GiB of host memory; the largest alpha that fits is \d+$',
    ),
    ('warmup_epochs', 400.0, r'config\.warmup_epochs=400\.0 .* < num_epochs'),
    ('steps_per_dispatch', 0, r'config\.steps_per_dispatch=0 .* > 0$'),
    ('log_every_steps', 0, r'config\.log_every_steps=0 .* > 0'),
    ('max_checkpoints_to_keep', 0, r'max_checkpoints_to_keep=0 .* > 0'),
    ('eval_batch_size', 0, r'config\.eval_batch_size=0 .* > 0'),
    (
        'train_split',
        'tset',
        r"config\.train_split='tset' is not valid: "
        r"Unknown split 'tset'\. Should be one of \['train', 'test'\]",
    ),
    (
        'train_split',
        'train[:100]',
        r"config\.train_split='train\[:100\]' "
        r'holds 100 examples; it must hold at least 512 \(one batch\)',
    ),
    ('eval_split', 'test[:0]', r'holds 0 examples; it must hold at least 1$'),
]


@pytest.mark.parametrize(
    'field,value,message',
    _BAD_VALUES,
    ids=[f'{f}={v}' for f, v, _ in _BAD_VALUES],
)
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
    (
        'resnet18',
        'kernel_size',
        0,
        r'config\.model_kwargs\.kernel_size=0 .* > 0',
    ),
]


@pytest.mark.parametrize(
    'model,field,value,message',
    _BAD_MODEL_KWARGS,
    ids=[f'{m}.{f}={v}' for m, f, v, _ in _BAD_MODEL_KWARGS],
)
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
  largest = int(
      re.search(
          r'the largest alpha that fits is (\d+)$', str(error.value)
      ).group(1)
  )
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
  with pytest.raises(
      input_pipeline.DatasetNotFoundError,
      match=r"'cifar100' .* not prepared .* Prepared there: " r'cifar10\.$',
  ):
    validation.validate_config(config)


def test_bad_config_fails_before_the_workdir_exists(tmp_path):
  config = sconv.get_config('cpu')
  config.beta = -1.0
  with pytest.raises(validation.ConfigError):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


_BAD_CLI = {
    'model': (
        (),
        ['--config.model=mlp'],
        r"^error: config\.model='mlp' is not valid; choose one of: "
        r'sconv, slocal, sfc, dconv, dlocal, dfc, 3fc, resnet18$',
    ),
    'batch_over_8_devices': (
        ('XLA_FLAGS', '--xla_force_host_platform_device_count=8'),
        ['--config.batch_size=12'],
        r'^error: config\.batch_size=12 cannot be split over 8 devices; use '
        r'a multiple of 8$',
    ),
    'missing_dataset': (
        (),
        ['--config.dataset=cifar100', '--config.download=False'],
        r"^error: Dataset 'cifar100' .* is not prepared in "
        r'data dir .*Prepared there: cifar10\.$',
    ),
    'config_file_arg': (
        (),
        ['--config=configs/sconv.py:gpu'],
        r'^error: flag --config=configs/sconv\.py:gpu: .*'
        r"config argument 'gpu' is not valid; choose from: "
        r'cpu',
    ),
    'config_field': (
        (),
        ['--config.lamda=1e-6'],
        r"^error: unknown config field 'lamda'",
    ),
    # Refused before anything is allocated, instead of hanging in XLA.
    'too_big': (
        (),
        ['--config.alpha=3000'],
        r'^error: config\.alpha=3000 needs about [\d.]+ GiB .* the '
        r'largest alpha that fits is \d+$',
    ),
}


def _env_without_tf_settings(**extra) -> dict:
  """The CLI's environment as a user's would be: TF's logging not set up."""
  env = child_env(**extra)
  for name in ('TF_CPP_MIN_LOG_LEVEL', 'TF_ENABLE_ONEDNN_OPTS'):
    env.pop(name, None)
  return env


@pytest.fixture(scope='module')
def bad_cli_runs(tmp_path_factory):
  """All the bad command lines, started at once: each is mostly imports."""
  root = tmp_path_factory.mktemp('bad_cli')
  procs = {}
  for name, (env, extra, _) in _BAD_CLI.items():
    procs[name] = start_run(
        root / name,
        *extra,
        env=_env_without_tf_settings(**dict([env] if env else [])),
    )
  return root, {name: finish_run(proc) for name, proc in procs.items()}


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
  workdir = copy_run(reference.workdir, tmp_path / 'run')
  before = file_hashes(workdir)
  run = run_main(workdir, '--config.learning_rate=0.05', '--config.seed=1')
  assert run.returncode == 1
  ours = [
      line
      for line in run.stderr.splitlines()
      if line.strip() and not IMPORT_NOISE.match(line)
  ]
  assert ours == [
      f'error: workdir {workdir} holds a run with another config: '
      'learning_rate (0.1 -> 0.05), seed (0 -> 1); use a new --workdir, or '
      'pass --allow_config_change to continue it anyway'
  ]
  assert file_hashes(workdir) == before


def test_check_config_refuses_or_allows_a_change(tmp_path):
  config = sconv.get_config('cpu')
  workdir_lib.check_config(tmp_path, config)
  assert not (tmp_path / workdir_lib.CONFIG_FILE).exists()  # Checks only.
  workdir_lib.save_config(tmp_path, config)
  workdir_lib.check_config(tmp_path, config)  # Same config: fine.
  saved = (tmp_path / workdir_lib.CONFIG_FILE).read_text()
  changed = sconv.get_config('cpu')
  changed.alpha = config.alpha + 1
  with pytest.raises(
      workdir_lib.ConfigMismatchError,
      match=rf'another config: alpha \({config.alpha} -> '
      rf'{config.alpha + 1}\); use a new',
  ):
    workdir_lib.check_config(tmp_path, changed)
  assert (tmp_path / workdir_lib.CONFIG_FILE).read_text() == saved
  workdir_lib.check_config(tmp_path, changed, allow_change=True)
  workdir_lib.save_config(tmp_path, changed)
  assert (
      json.loads((tmp_path / workdir_lib.CONFIG_FILE).read_text())['alpha']
      == config.alpha + 1
  )


def test_checkpoint_config_stands_in_for_a_lost_config_json(tmp_path):
  config = sconv.get_config('cpu')
  saved = workdir_lib.flatten(config)
  workdir_lib.check_config(tmp_path, config, saved=saved)
  changed = sconv.get_config('cpu')
  changed.learning_rate = 0.05
  with pytest.raises(
      workdir_lib.ConfigMismatchError, match=r'learning_rate \(0\.1 -> 0\.05\)'
  ):
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
  with pytest.raises(
      workdir_lib.ConfigMismatchError,
      match=r"val_split \(None -> 'train\[45000:\]'\)",
  ):
    workdir_lib.check_config(tmp_path, config, saved=old)


def test_unreadable_config_json_is_one_line(tmp_path):
  (tmp_path / workdir_lib.CONFIG_FILE).write_text('{"alpha": 4, "mod')
  with pytest.raises(
      workdir_lib.WorkdirError,
      match=r'config\.json is unreadable \(JSONDecodeError: '
      r'.*\); delete it to take the config saved in the '
      r'newest checkpoint',
  ):
    workdir_lib.check_config(tmp_path, sconv.get_config('cpu'))


@pytest.mark.parametrize(
    'text, kind',
    [
        ('[1, 2]', 'array'),
        ('"sconv"', 'string'),
        ('4', 'number'),
        ('null', 'null'),
    ],
)
def test_config_json_that_is_not_an_object_is_one_line(tmp_path, text, kind):
  (tmp_path / workdir_lib.CONFIG_FILE).write_text(text)
  with pytest.raises(
      workdir_lib.WorkdirError,
      match=rf'config\.json holds a JSON {kind}, not an object '
      r'of config fields; delete it',
  ):
    workdir_lib.check_config(tmp_path, sconv.get_config('cpu'))


def test_workdir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / 'run'
  path.write_text('')
  for check in (
      lambda: workdir_lib.check_config(path, sconv.get_config()),
      lambda: workdir_lib.lock(path).__enter__(),
  ):
    with pytest.raises(
        workdir_lib.WorkdirError,
        match=rf'^--workdir={path} is a file, not a folder',
    ):
      check()


def test_lock_refuses_a_second_run_naming_the_first(tmp_path):
  with workdir_lib.lock(tmp_path):
    with pytest.raises(
        workdir_lib.WorkdirError,
        match=rf'in use by another run \(pid {os.getpid()} on '
        rf'{re.escape(socket.gethostname())}\)',
    ):
      with workdir_lib.lock(tmp_path):
        pass
  with workdir_lib.lock(tmp_path):  # Released with the first.
    pass


def test_cli_refuses_a_workdir_in_use(reference, tmp_path):
  workdir = copy_run(reference.workdir, tmp_path / 'run')
  before = file_hashes(workdir)
  with workdir_lib.lock(workdir):
    run = run_main(workdir)
  assert run.returncode == 1
  assert run.stderr.splitlines()[-1] == (
      f'error: workdir {workdir} is in use by another run (pid {os.getpid()} '
      f'on {socket.gethostname()}); wait for it to finish or stop it, or use '
      'a new --workdir'
  )
  assert 'Traceback' not in run.stderr
  del before[workdir_lib.LOCK_FILE]  # The holder wrote itself there.
  after = file_hashes(workdir)
  del after[workdir_lib.LOCK_FILE]
  assert after == before


def test_cli_lost_config_json_is_checked_against_the_checkpoint(
    reference, tmp_path
):
  workdir = copy_run(reference.workdir, tmp_path / 'run')
  (workdir / workdir_lib.CONFIG_FILE).unlink()
  before = file_hashes(workdir)
  run = run_main(workdir, '--config.learning_rate=0.05')
  assert run.returncode == 1
  assert re.search(
      r'^error: workdir .* holds a run with another config: '
      r'learning_rate \(0\.1 -> 0\.05\); use a new --workdir',
      run.stderr.splitlines()[-1],
  ), run.stderr[-2000:]
  assert 'Traceback' not in run.stderr
  after = file_hashes(workdir)
  assert {k: v for k, v in after.items() if k != workdir_lib.LOCK_FILE} == {
      k: v for k, v in before.items() if k != workdir_lib.LOCK_FILE
  }


def _truncated_test_split(directory: pathlib.Path) -> pathlib.Path:
  """A copy of CIFAR-10's test split whose third shard lost its second half."""
  source = next(
      (pathlib.Path(os.environ['TFDS_DATA_DIR']) / 'cifar10').iterdir()
  )
  target = directory / 'cifar10' / source.name
  target.mkdir(parents=True)
  for path in source.iterdir():
    if '-train.' not in path.name:
      shutil.copyfile(path, target / path.name)
  shard = sorted(target.glob('*-test.tfrecord-*'))[2]
  shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
  return shard


def test_damaged_shard_is_named_and_nothing_is_written(tmp_path):
  shard = _truncated_test_split(tmp_path / 'tfds')
  workdir = tmp_path / 'run'
  run = run_main(
      workdir,
      f'--config.data_dir={tmp_path / "tfds"}',
      '--config.train_split=test',
      '--config.download=False',
  )
  assert run.returncode == 1
  assert re.search(
      rf"^error: cannot read split 'test' of dataset 'cifar10': "
      rf'{re.escape(str(shard))} is damaged \(DataLossError: '
      r'.*\); delete .* to prepare it anew$',
      run.stderr.splitlines()[-1],
  ), run.stderr[-2000:]
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

  orbax_file = os.path.join(
      os.path.dirname(ocp.__file__), 'checkpoint_manager.py'
  )
  console = main._ConsoleFilter()  # pylint: disable=protected-access
  assert not console.filter(record(orbax_file, pylogging.INFO))
  assert console.filter(record(orbax_file, pylogging.WARNING))
  assert console.filter(record(train.__file__, pylogging.INFO))
  console.quiet = True
  assert not console.filter(record(train.__file__, pylogging.INFO))
  assert console.filter(record(train.__file__, pylogging.WARNING))


# ----------------------------------------------------------------------------
# Every user error is one `errors.UserError`, and every command line shows it
# in one line.
# ----------------------------------------------------------------------------
_PACKAGES = ('beta_lasso', 'launch')


def _modules() -> dict[str, pathlib.Path]:
  """Module name -> its file, over the project's packages."""
  modules = {}
  for package in _PACKAGES:
    for path in sorted((REPO / package).rglob('*.py')):
      name = '.'.join(path.relative_to(REPO).with_suffix('').parts)
      modules[name.removesuffix('.__init__')] = path
  return modules


def test_every_error_class_of_the_project_is_a_user_error():
  classes = set()
  for name, path in _modules().items():
    # Entry points that define flags at import (main, report, params) share
    # flag names: importing them all into one process would fail.
    if re.search(r'^_\w+ = flags\.DEFINE', path.read_text(), re.M):
      continue
    module = importlib.import_module(name)
    classes |= {
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == name
    }
  assert len(classes) >= 14, classes
  assert not [
      c.__qualname__ for c in classes if not issubclass(c, errors.UserError)
  ]


def test_one_line_keeps_what_failed_and_why():
  assert errors.one_line(ValueError('a\n  b\n\n c')) == 'a: c'
  assert errors.one_line(ValueError('listing:\n x\n y')) == 'listing: y'
  assert errors.one_line(KeyError()) == 'KeyError'
  assert errors.one_line(ValueError('bad'), with_type=True) == 'ValueError: bad'
  assert errors.one_line(IsADirectoryError(21, 'Is a directory', '/x')) == (
      '/x: Is a directory'
  )


# Every entry point: `python -m MODULE` (each under its own `__main__` guard).
_ENTRY_POINTS = (
    'beta_lasso.main',
    'beta_lasso.report',
    'beta_lasso.report.plots',
    'beta_lasso.sparse.export',
    'beta_lasso.sparse.prune',
    'beta_lasso.data.cache',
    'beta_lasso.params',
    'launch.sweep',
    'launch.cloud',
    'launch.full_scale',
    'launch.local',
    'beta_lasso.compact',
    'launch.paper',
)


def test_every_entry_point_is_listed():
  found = {
      name
      for name, path in _modules().items()
      if "__name__ == '__main__'" in path.read_text()
  }
  found = {n.removesuffix('.__main__') for n in found}
  assert found == set(_ENTRY_POINTS)


def _syntax_error(path):
  path.write_text(
      'CONFIG = "configs/sfc.py:cpu"\n\n\ndef sweep(add):\n'
      '  add(alpha=1 +)\n'
  )


def _raises(path):
  path.write_text(
      'CONFIG = "configs/sfc.py:cpu"\n\n\ndef sweep(add):\n'
      '  add(alpha=1)\n  raise KeyError("alpha")\n'
  )


_BAD_COMMANDS = [f'{m}_unknown_flag' for m in _ENTRY_POINTS] + [
    'export_out_folder',
    'prune_out_folder',
    'cache_out_folder',
    'params_out_folder',
    'report_out_file',
    'plots_out_file',
    'sweep_syntax_error',
    'sweep_raises',
    'cache_unknown_split',
]


def _bad_commands(root: pathlib.Path, reference: pathlib.Path) -> dict:
  """Name -> (argv after python -m, the one line expected, what stays)."""
  folder, file = root / 'a_folder', root / 'a_file'
  folder.mkdir()
  (folder / 'kept').write_text('kept')
  file.write_text('kept')
  _syntax_error(root / 'syntax.py')
  _raises(root / 'raises.py')
  commands = {
      f'{module}_unknown_flag': (
          [module, '--no_such_flag=1'],
          r"^error: Unknown command line flag 'no_such_flag' \(see "
          r'--helpfull\)$',
      )
      for module in _ENTRY_POINTS
  }
  folder_refused = rf'^error: --out={re.escape(str(folder))} is a folder; '
  file_refused = (
      rf'^error: --out={re.escape(str(file))} is a file, not a folder'
  )
  commands.update(
      {
          'export_out_folder': (
              [
                  'beta_lasso.sparse.export',
                  f'--workdir={reference}',
                  f'--out={folder}',
              ],
              folder_refused,
          ),
          'prune_out_folder': (
              [
                  'beta_lasso.sparse.prune',
                  f'--workdir={reference}',
                  f'--like={reference}',
                  f'--out={folder}',
              ],
              folder_refused,
          ),
          'cache_out_folder': (
              ['beta_lasso.data.cache', f'--out={folder}'],
              folder_refused,
          ),
          'params_out_folder': (
              ['beta_lasso.params', f'--out={folder}'],
              folder_refused,
          ),
          'report_out_file': (
              ['beta_lasso.report', f'--workdirs={reference}', f'--out={file}'],
              file_refused,
          ),
          'plots_out_file': (
              [
                  'beta_lasso.report.plots',
                  f'--workdir={reference}',
                  f'--out={file}',
              ],
              file_refused,
          ),
          'cache_unknown_split': (
              [
                  'beta_lasso.data.cache',
                  '--splits=tset',
                  f'--out={root / "cache.npz"}',
              ],
              r"^error: --splits=tset: Unknown split 'tset'",
          ),
          'sweep_syntax_error': (
              [
                  'launch.sweep',
                  f'--sweep={root / "syntax.py"}',
                  f'--workdir_root={root / "sweep"}',
                  '--dry_run',
              ],
              rf'^error: {re.escape(str(root))}/syntax\.py:5: '
              r'SyntaxError: invalid syntax$',
          ),
          'sweep_raises': (
              [
                  'launch.sweep',
                  f'--sweep={root / "raises.py"}',
                  f'--workdir_root={root / "sweep"}',
                  '--dry_run',
              ],
              rf'^error: {re.escape(str(root))}/raises\.py:6: '
              r"KeyError: 'alpha'$",
          ),
      }
  )
  return commands


@pytest.fixture(scope='module')
def bad_commands(reference, tmp_path_factory):
  """Every bad command line, two at a time (each is mostly imports)."""
  root = tmp_path_factory.mktemp('bad_commands')
  workdir = copy_run(reference.workdir, root / 'run')
  commands = _bad_commands(root, workdir)
  assert sorted(commands) == sorted(_BAD_COMMANDS)
  before = file_hashes(root)

  def run(argv):
    return subprocess.run(
        [sys.executable, '-m', *argv],
        cwd=REPO,
        env=_env_without_tf_settings(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    runs = dict(zip(commands, pool.map(run, [c[0] for c in commands.values()])))
  return commands, runs, before, root


@pytest.mark.parametrize('name', _BAD_COMMANDS)
def test_bad_command_line_is_one_line_and_writes_nothing(bad_commands, name):
  commands, runs, before, root = bad_commands
  run = runs[name]
  lines = [
      line
      for line in run.stderr.splitlines()
      if line.strip()
      and not IMPORT_NOISE.match(line)
      and not re.match(r'^I\d{4} ', line)
  ]  # absl INFO of JAX start-up.
  assert run.returncode == 1, run.stderr[-3000:]
  assert len(lines) == 1, run.stderr[-3000:]
  assert re.search(commands[name][1], lines[0]), lines[0]
  assert 'Traceback' not in run.stderr
  assert file_hashes(root) == before  # Nothing written, nothing lost.


def test_sweep_files_that_fail_name_their_line(tmp_path):
  _syntax_error(tmp_path / 'syntax.py')
  _raises(tmp_path / 'raises.py')
  (tmp_path / 'imports.py').write_text('import no_such_module_here\n')
  (tmp_path / 'positional.py').write_text(
      'CONFIG = "configs/sfc.py:cpu"\n\n\ndef sweep(add):\n  add(1)\n'
  )
  for name, message in (
      ('syntax', r'syntax\.py:5: SyntaxError: invalid syntax$'),
      ('raises', r"raises\.py:6: KeyError: 'alpha'$"),
      ('imports', r'imports\.py:1: ModuleNotFoundError: No module named '),
      (
          'positional',
          r'positional\.py:5: TypeError: .*add\(\) takes 0 '
          'positional arguments but 1 was given$',
      ),
  ):
    with pytest.raises(planning.SweepError, match=message):
      planning.load_runs(
          str(tmp_path / f'{name}.py'), None, str(tmp_path / 'runs'), []
      )
  assert not (tmp_path / 'runs').exists()


# ----------------------------------------------------------------------------
# Damaged checkpoints: one line per checkpoint skipped, one when none reads,
# and no library traceback over a recovery that worked.
# ----------------------------------------------------------------------------
def _truncate_data(checkpoint: pathlib.Path, size: int = 1000):
  """Cuts the big data files of a checkpoint's state to `size` bytes.

  Each file at least half the size of the largest: the ones that hold the
  layer-1 kernel and its momentum. The largest alone is not enough: which of
  the two it holds (export and loading never read the momentum) depends on
  the order of orbax's asynchronous writes. The small files, which hold the
  arrays' metadata, stay whole, so the failure is the read of the data.
  """
  files = [p for p in (checkpoint / 'state').rglob('d/*') if p.is_file()]
  largest = max(p.stat().st_size for p in files)
  for path in files:
    if path.stat().st_size >= largest / 2:
      path.write_bytes(path.read_bytes()[:size])


@pytest.fixture(scope='module')
def damaged_runs(reference, tmp_path_factory):
  """The reference with its newest / every checkpoint's data truncated."""
  root = tmp_path_factory.mktemp('damaged')
  newest = copy_run(reference.workdir, root / 'newest')
  steps = checkpoint_steps(newest)
  _truncate_data(newest / 'checkpoints' / str(steps[-1]))
  every = copy_run(reference.workdir, root / 'every')
  for step in steps:
    _truncate_data(every / 'checkpoints' / str(step))
  every_hashes = file_hashes(every)
  procs = {'newest': start_run(newest), 'every': start_run(every)}
  export = subprocess.run(
      [
          sys.executable,
          '-m',
          'beta_lasso.sparse.export',
          f'--workdir={every}',
          f'--out={root / "every.npz"}',
      ],
      cwd=REPO,
      env=child_env(),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  runs = {name: finish_run(proc) for name, proc in procs.items()}
  return root, steps, runs, export, every_hashes


def _our_lines(stderr: str) -> list[str]:
  return [
      line
      for line in stderr.splitlines()
      if line.strip()
      and not IMPORT_NOISE.match(line)
      and not re.match(r'^I\d{4} ', line)
  ]


def test_a_damaged_newest_checkpoint_is_one_line_and_the_run_goes_on(
    damaged_runs, reference
):
  root, steps, runs, _, _ = damaged_runs
  run = runs['newest']
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'Traceback' not in run.stderr
  assert 'Exception ignored' not in run.stderr
  warnings = [line for line in _our_lines(run.stderr) if line.startswith('W')]
  assert len(warnings) == 1, warnings
  assert re.search(
      rf'Checkpoint at step {steps[-1]} does not restore: ValueError: '
      r'OUT_OF_RANGE: .* is not valid for value of size 1000; resuming from '
      rf'step {steps[-2]}, the newest that restores, and moved it to '
      rf'{re.escape(str(root))}/newest/corrupt_checkpoints/{steps[-1]}-\d+\.$',
      warnings[0],
  ), warnings[0]
  results = json.loads((root / 'newest' / 'results.json').read_text())
  assert results['test_accuracy'] == reference.results['test_accuracy']


def test_no_readable_checkpoint_is_one_line_and_nothing_is_moved(damaged_runs):
  root, steps, runs, export, every_hashes = damaged_runs
  run = runs['every']
  assert run.returncode == 1
  lines = _our_lines(run.stderr)
  assert len(lines) == 1, run.stderr[-3000:]
  assert re.search(
      rf'^error: no checkpoint in {re.escape(str(root))}/every/'
      rf'checkpoints restores \(step {steps[-1]}: ValueError: '
      r'OUT_OF_RANGE: .*; move that folder away to start from '
      r'scratch$',
      lines[0],
  ), lines[0]
  for output in (run.stderr, export.stderr):
    assert 'Traceback' not in output and 'Exception ignored' not in output
  # Export: one warning per checkpoint skipped, then the error.
  lines = _our_lines(export.stderr)
  assert export.returncode == 1
  assert [
      re.sub(r' \(.*', '', line.split('] ', 1)[-1]) for line in lines[:-1]
  ] == [
      f'checkpoint {root}/every/checkpoints/{s} does not read'
      for s in reversed(steps)
  ]
  assert lines[-1] == (
      f'error: no checkpoint in {root}/every/checkpoints reads (steps '
      f'{", ".join(map(str, reversed(steps)))} are damaged)'
  )
  assert not (root / 'every.npz').exists()
  after = file_hashes(root / 'every')
  after.pop(workdir_lib.LOCK_FILE, None)
  every_hashes.pop(workdir_lib.LOCK_FILE, None)
  assert after == every_hashes


def test_loading_skips_a_damaged_checkpoint_in_one_line(reference, tmp_path):
  workdir = copy_run(reference.workdir, tmp_path / 'run')
  steps = checkpoint_steps(workdir)
  _truncate_data(workdir / 'checkpoints' / str(steps[-1]))
  variables = loading.load_variables(workdir)
  assert variables['step'] == steps[-2]
  with pytest.raises(
      checkpointing.CheckpointError,
      match=rf'checkpoint .*/{steps[-1]} does not read '
      r'\(ValueError: OUT_OF_RANGE: ',
  ):
    loading.load_params(workdir, step=steps[-1])


def test_asyncio_reports_of_a_failed_restore_are_dropped():
  # orbax's read tasks that fail after a restore gave up reach asyncio's
  # logger as 'Task exception was never retrieved', with a screen of trace.
  keep = checkpointing._AsyncioFilter().filter  # pylint: disable=protected-access

  def record(message, error):
    try:
      raise error
    except type(error):
      exc_info = sys.exc_info()
    return pylogging.LogRecord(
        'asyncio', pylogging.ERROR, __file__, 1, message, (), exc_info
    )

  damaged = ValueError('OUT_OF_RANGE: Error reading "a" in OCDBT database')
  assert not keep(record('Task exception was never retrieved', damaged))
  assert keep(record('Task exception was never retrieved', KeyError('x')))
  assert keep(record('Unclosed client session', damaged))
