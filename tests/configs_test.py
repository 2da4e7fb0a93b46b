"""Every config and every sweep run is valid; unused settings are refused."""

import importlib
import pathlib
import re

import pytest

from beta_lasso.training import fits
from beta_lasso.training import validation
from configs import default
from launch import planning

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    p.stem
    for p in (REPO / 'configs').glob('*.py')
    if p.stem not in ('__init__', 'default')
)
SWEEPS = sorted((REPO / 'launch' / 'sweeps').glob('*.py'))
_ARGS = {
    'resnet18': ('', 'cpu', '7,beta_lasso', '15,beta_lasso,4000'),
    'study': ('', '3fc'),
}


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_validates(name, monkeypatch):
  # Paper sizes need more memory than a test machine: the fields are checked.
  monkeypatch.setattr(fits, 'capacity', lambda: None)
  module = importlib.import_module(f'configs.{name}')
  for arg in _ARGS.get(name, ('', 'cpu', '400', '4000')):
    validation.validate_config(module.get_config(arg))


@pytest.mark.parametrize('path', SWEEPS, ids=[p.stem for p in SWEEPS])
@pytest.mark.parametrize('suffix', ['', ':cpu'])
def test_every_sweep_run_uses_every_field_it_sets(path, suffix):
  module = planning.load_sweep(str(path))
  config = planning.load_config(module.CONFIG + suffix)
  for run in planning.plan(planning.expand(module.sweep), config, '/r'):
    run_config = config.copy_and_resolve_references()
    run_config.update_from_flattened_dict(run.overrides)
    validation.check_fields(run_config)


def test_paper_budgets_from_the_config_argument():
  sfc = importlib.import_module('configs.sfc')
  bl = importlib.import_module('configs.sfc_beta_lasso')
  assert sfc.get_config().num_epochs == 400.0
  assert (
      sfc.get_config('4000').num_epochs,
      sfc.get_config('4000').eval_every_epochs,
  ) == (4000.0, 50.0)
  assert bl.get_config().num_epochs == 4000.0
  assert bl.get_config('400').num_epochs == 400.0
  for arg in ('400,4000', 'cpu,4000'):
    with pytest.raises(ValueError, match=re.escape(f'{arg!r} gives')):
      sfc.get_config(arg)


def test_paper_configs_select_on_a_held_out_split():
  config = importlib.import_module('configs.sconv').get_config()
  assert (config.train_split, config.val_split) == (
      'train[:45000]',
      'train[45000:]',
  )
  cpu = importlib.import_module('configs.sconv').get_config('cpu')
  assert (cpu.train_split, cpu.val_split) == ('train', None)
  assert default.PAPER_EPOCHS['400'][0] == 400.0


@pytest.mark.parametrize(
    'config_name, field, value, message',
    [
        (
            'sfc_beta_lasso',
            'weight_decay',
            5e-4,
            r"config\.weight_decay=0\.0005 is not used with optimizer='beta_lasso' "
            r'\(.*its L1 term replaces weight decay\); set it to 0 or None$',
        ),
        (
            '3fc',
            'alpha',
            8,
            r"config\.alpha=8 is not used with model='3fc' \(3-FC "
            r'is sized by model_kwargs\.width',
        ),
        (
            'resnet18',
            'alpha',
            8,
            r'config\.alpha=8 is not used with ' r"model='resnet18'",
        ),
        (
            'sconv',
            'beta',
            50.0,
            r'config\.beta=50\.0 is not used with ' r"optimizer='sgd'",
        ),
    ],
)
def test_unused_setting_is_refused_in_one_line(
    config_name, field, value, message
):
  config = importlib.import_module(f'configs.{config_name}').get_config('cpu')
  validation.check_fields(config)
  config[field] = value
  with pytest.raises(validation.ConfigError, match=message) as error:
    validation.check_fields(config)
  assert '\n' not in str(error.value)
