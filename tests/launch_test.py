"""Tests of the sweep runner and sweep files; nothing here trains."""

import csv
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from launch import planning
from launch import summary
from launch import sweep as sweep_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
SWEEPS = REPO / 'launch' / 'sweeps'
# Sweep file -> runs it adds.
EXPECTED_RUNS = {
    'sgd_grid': 20,
    'table2': 3,
    'lambda_grid': 50,
    'resnet_kernels': 8,
    'study': 8,
}


def _sweep(name):
  return planning.load_sweep(str(SWEEPS / f'{name}.py'))


def _cli(*args, cwd=REPO):
  return subprocess.run(
      [sys.executable, '-m', 'launch.sweep', *args],
      cwd=cwd,
      capture_output=True,
      text=True,
      timeout=60,
      check=False,
  )


def _write_sweep(tmp_path, body):
  path = tmp_path / 'sweep_file.py'
  path.write_text(
      f'CONFIG = "configs/sfc.py:cpu"\n\n\ndef sweep(add):\n{body}\n'
  )
  return str(path)


def test_every_sweep_file_is_tested():
  assert sorted(p.stem for p in SWEEPS.glob('*.py')) == sorted(EXPECTED_RUNS)


@pytest.mark.parametrize('name', sorted(EXPECTED_RUNS))
def test_expand_counts_runs(name):
  assert len(planning.expand(_sweep(name).sweep)) == EXPECTED_RUNS[name]


@pytest.mark.parametrize('name', sorted(EXPECTED_RUNS))
@pytest.mark.parametrize('suffix', ['', ':cpu'])
def test_overrides_are_fields_of_the_sweeps_config(name, suffix):
  module = _sweep(name)
  config = planning.load_config(module.CONFIG + suffix)
  fields = set(planning.config_fields(config))
  for overrides in planning.expand(module.sweep):
    assert set(overrides) <= fields
  # plan() also checks the value types against the config.
  assert len(planning.plan(planning.expand(module.sweep), config, '/r')) == (
      EXPECTED_RUNS[name]
  )


@pytest.mark.parametrize('name', sorted(EXPECTED_RUNS))
def test_workdir_names_are_unique_and_safe(name):
  module = _sweep(name)
  runs = planning.plan(
      planning.expand(module.sweep), planning.load_config(module.CONFIG), '/r/'
  )
  names = [run.name for run in runs]
  assert len(set(names)) == len(names)
  for run in runs:
    assert re.fullmatch(r'[A-Za-z0-9._,=+-]+', run.name)
    assert run.workdir == f'/r/{run.name}'


def test_grids_are_the_papers():
  dropout = (0.0, 0.5)  # On the last two FC layers, or nowhere.
  assert {
      (o['momentum'], o['weight_decay'], o['dropout_rate'])
      for o in planning.expand(_sweep('sgd_grid').sweep)
  } == {
      (m, wd, d)
      for m in (0.0, 0.9)
      for wd in (0.0, 1e-4, 2e-4, 5e-4, 1e-3)
      for d in dropout
  }
  lambdas = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5)
  assert {
      (o['l1_conv'], o['l1'], o['dropout_rate'])
      for o in planning.expand(_sweep('lambda_grid').sweep)
  } == {(a, b, d) for a in lambdas for b in lambdas for d in dropout}
  assert [o['beta'] for o in planning.expand(_sweep('table2').sweep)] == [
      0.0,
      1.0,
      50.0,
  ]


def test_resnet_beta_lasso_runs_match_the_config_argument():
  # The sweep cannot pass `:beta_lasso` per run, so it repeats its fields.
  module = _sweep('resnet_kernels')
  for suffix in ('', 'cpu'):
    sgd = planning.load_config(f'configs/resnet18.py:{suffix}')
    bl = planning.load_config(f'configs/resnet18.py:beta_lasso,{suffix}')
    changed = {
        k for k in planning.config_fields(sgd) if _get(sgd, k) != _get(bl, k)
    }
    assert changed <= set(module.BETA_LASSO)
    for key, value in module.BETA_LASSO.items():
      assert _get(bl, key) == value, key
  sizes = [o['model_kwargs.kernel_size'] for o in planning.expand(module.sweep)]
  assert sorted(set(sizes)) == [3, 7, 11, 15]


def _get(config, dotted):
  for part in dotted.split('.'):
    config = config[part]
  return config


def test_run_name_and_command():
  overrides = {'l1': 5e-6, 'l1_conv': 2e-5}
  assert planning.run_name(overrides) == 'l1=5e-06,l1_conv=2e-05'
  assert planning.run_name({}) == 'default'
  assert planning.run_name({'data_dir': '/a b'}) == 'data_dir=_a_b'
  assert planning.command(
      'configs/x.py:cpu', '/r/n', overrides, ['--jax_distributed']
  ) == [
      'python',
      '-m',
      'beta_lasso.main',
      '--config=configs/x.py:cpu',
      '--workdir=/r/n',
      '--config.l1=5e-06',
      '--config.l1_conv=2e-05',
      '--jax_distributed',
  ]


def test_values_are_cast_to_the_field_type():
  config = planning.load_config('configs/sfc_beta_lasso.py')
  [run] = planning.plan([{'beta': 50}], config, '/r')
  assert run.name == 'beta=50.0' and isinstance(run.overrides['beta'], float)


@pytest.mark.parametrize(
    'overrides, message',
    [
        ({'bogus': 1}, "unknown config field 'bogus'"),
        ({'model_kwargs.kernel_size': 7}, "unknown config field 'model_kwargs"),
        ({'alpha': 'wide'}, 'alpha='),
        ({'momentum': None}, 'momentum=None'),
    ],
)
def test_bad_overrides_fail(overrides, message):
  config = planning.load_config('configs/sfc.py')
  with pytest.raises(planning.SweepError, match=re.escape(message)):
    planning.plan([{'alpha': 8}, overrides], config, '/r')


def test_duplicate_runs_fail():
  config = planning.load_config('configs/sfc.py')
  with pytest.raises(planning.SweepError, match='same workdir name'):
    planning.plan([{'alpha': 8}, {'alpha': 8}], config, '/r')


@pytest.mark.parametrize(
    'extra, message',
    [
        (['--config.bogus=1'], "unknown config field 'bogus'"),
        (['--workdir=/x'], 'sets --workdir'),
        (['--config.momentum=0.5'], 'varies'),
    ],
)
def test_extra_args_are_checked(extra, message):
  config = planning.load_config('configs/sfc.py')
  with pytest.raises(planning.SweepError, match=re.escape(message)):
    planning.check_extra_args(config, extra, {'momentum'})
  planning.check_extra_args(
      config,
      ['--config.dataset=svhn_cropped', '--jax_distributed'],
      {'momentum'},
  )


def test_dry_run_prints_the_commands(tmp_path):
  root = tmp_path / 'table2'
  result = _cli(
      '--sweep=launch/sweeps/table2.py',
      '--config=configs/sfc_beta_lasso.py:cpu',
      f'--workdir_root={root}',
      '--dry_run',
      '--',
      '--config.dataset=cifar100',
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      f'python -m beta_lasso.main --config=configs/sfc_beta_lasso.py:cpu '
      f'--workdir={root}/beta={b} --config.beta={b} --config.dataset=cifar100'
      for b in ('0.0', '1.0', '50.0')
  ]
  assert not root.exists()


def test_unknown_field_fails_in_one_line_creating_nothing(tmp_path):
  root = tmp_path / 'root'
  sweep_file = _write_sweep(tmp_path, '  add(alpha=4)\n  add(bogus=1)')
  result = _cli(f'--sweep={sweep_file}', f'--workdir_root={root}')
  assert result.returncode != 0
  assert result.stdout == ''
  [line] = result.stderr.strip().splitlines()
  assert "unknown config field 'bogus'" in line
  assert 'valid fields: alpha, augment' in line
  assert not root.exists()


def _fake_results(workdir, accuracy, nnz, val=None):
  workdir.mkdir(parents=True)
  selection = (
      {}
      if val is None
      else {
          'best_val_accuracy': val,
          'best_step': 7,
          'test_accuracy_at_best_val': accuracy - 0.01,
      }
  )
  (workdir / 'results.json').write_text(
      json.dumps(
          {
              'test_accuracy': accuracy,
              'nnz': {'layer1': nnz, 'head': 10},
              'weights': {'layer1': 1000, 'head': 10},
              'epochs': 8.0,
              'wall_seconds': 12.5,
              **selection,
          }
      )
  )


def test_summary_ranks_by_validation_accuracy(tmp_path):
  config = planning.load_config('configs/sfc_beta_lasso.py')
  runs = planning.plan(
      [{'beta': 0.0}, {'beta': 1.0}, {'beta': 50.0}], config, str(tmp_path)
  )
  # The best test accuracy is not the best validation accuracy's run.
  _fake_results(tmp_path / 'beta=0.0', 0.86, 990, val=0.80)
  _fake_results(tmp_path / 'beta=50.0', 0.85, 90, val=0.84)
  rows = summary.summarize(runs)
  assert [
      (r['name'], r['best_val_accuracy'], r['test_accuracy_at_best_val'])
      for r in rows
  ] == [
      ('beta=50.0', 0.84, 0.84),
      ('beta=0.0', 0.80, 0.85),
      ('beta=1.0', None, None),
  ]
  header, first = summary.format_table(rows).splitlines()[:2]
  assert header.split() == [
      'run',
      'status',
      'val_acc',
      'test_acc@val',
      'test_acc',
      'non-zero',
      'weights',
  ]
  assert first.split()[:5] == [
      'beta=50.0',
      'finished',
      '0.8400',
      '0.8400',
      '0.8500',
  ]


def test_summary_reads_finished_and_missing_results(tmp_path):
  config = planning.load_config('configs/sfc_beta_lasso.py')
  runs = planning.plan(
      [{'beta': 0.0}, {'beta': 1.0}, {'beta': 50.0}, {'l1': 1e-6}],
      config,
      str(tmp_path),
  )
  _fake_results(tmp_path / 'beta=0.0', 0.8245, 990)
  _fake_results(tmp_path / 'beta=50.0', 0.8519, 90)
  (tmp_path / 'l1=1e-06').mkdir()
  (tmp_path / 'l1=1e-06' / 'results.json').write_text('{not json')
  rows = summary.summarize(runs, {'beta=1.0': 'failed (exit 1)'})
  assert [
      (r['status'], r['test_accuracy'], r['nonzero_weights'], r['weights'])
      for r in rows
  ] == [
      ('finished', 0.8245, 1000, 1010),
      ('failed (exit 1)', None, None, None),
      ('finished', 0.8519, 100, 1010),
      ('unreadable results.json', None, None, None),
  ]
  assert summary.summarize(runs[1:2])[0]['status'] == 'missing'
  table = summary.format_table(rows)
  assert '0.8519' in table and '1,010' in table
  path = summary.write_summary(rows, str(tmp_path))
  with open(path) as f:
    written = list(csv.DictReader(f))
  assert list(written[0])[:4] == ['name', 'beta', 'l1', 'status']
  assert [r['name'] for r in written] == [r.name for r in runs]
  assert written[2]['test_accuracy'] == '0.8519'
  assert written[1]['test_accuracy'] == ''


def test_finished_sweep_is_skipped_and_summarized(tmp_path):
  sweep_file = _write_sweep(tmp_path, '  add(alpha=4)\n  add(alpha=8)')
  root = tmp_path / 'root'
  _fake_results(root / 'alpha=4', 0.5, 900)
  result = _cli(
      f'--sweep={sweep_file}', f'--workdir_root={root}', '--summary_only'
  )
  assert result.returncode == 0, result.stderr
  assert 'missing' in result.stdout and '0.5000' in result.stdout
  _fake_results(root / 'alpha=8', 0.6, 800)
  result = _cli(f'--sweep={sweep_file}', f'--workdir_root={root}')
  assert result.returncode == 0, result.stderr
  assert '[1/2] alpha=4: finished before, skipped' in result.stdout
  assert '[2/2] alpha=8: finished before, skipped' in result.stdout
  assert (root / 'summary.csv').read_text().count(',finished,') == 2


# A stand-in for beta_lasso.main: its workdir name says how it ends.
_FAKE_MAIN = """
import json, pathlib, sys
workdir = pathlib.Path(sys.argv[1])
if 'alpha=2' in workdir.name:
  sys.exit('error: boom')
workdir.mkdir(parents=True, exist_ok=True)
if 'alpha=3' not in workdir.name:  # alpha=3 exits cleanly without results.
  (workdir / 'results.json').write_text(json.dumps(
      {'test_accuracy': 0.5, 'nnz': {'a': 1}, 'weights': {'a': 2}}))
"""


def _fake_sweep(monkeypatch, tmp_path, program: str, alphas) -> list:
  """Runs of S-FC at `alphas` whose command is `program`, not training."""
  monkeypatch.setattr(
      planning,
      'command',
      lambda config_arg, workdir, *args, **kwargs: [
          sys.executable,
          '-c',
          program,
          workdir,
      ],
  )
  config = planning.load_config('configs/sfc.py')
  return planning.plan([{'alpha': a} for a in alphas], config, str(tmp_path))


@pytest.mark.parametrize('parallel', [1, 2])
def test_execute_reports_each_run_and_goes_on(
    tmp_path, monkeypatch, capsys, parallel
):
  runs = _fake_sweep(monkeypatch, tmp_path, _FAKE_MAIN, (1, 2, 3, 4))
  _fake_results(tmp_path / 'alpha=4', 0.9, 1)
  statuses = sweep_lib.execute(runs, 'configs/sfc.py', [], parallel=parallel)
  assert statuses == {
      'alpha=1': 'done',
      'alpha=2': 'failed (exit 1)',
      'alpha=3': 'stopped',
      'alpha=4': 'skipped',
  }
  out = capsys.readouterr().out
  assert '[2/4] alpha=2: failed (exit 1) in 0:00:' in out
  if parallel > 1:  # Each run's output goes to its log, the failure quoted.
    assert 'error: boom (log: ' in out
    assert (tmp_path / 'alpha=2' / 'sweep.log').read_text().strip() == (
        'error: boom'
    )


# A stand-in for beta_lasso.main that runs until SIGTERM, then exits cleanly
# without results, as a preempted run does.
_FAKE_LONG_MAIN = """
import pathlib, signal, sys, time
workdir = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
workdir.mkdir(parents=True, exist_ok=True)
(workdir / 'ready').touch()
time.sleep(60)
"""


def test_interrupt_stops_runs_and_starts_no_more(tmp_path, monkeypatch):
  runs = _fake_sweep(monkeypatch, tmp_path, _FAKE_LONG_MAIN, (1, 2, 3))

  def interrupt_when_ready():
    deadline = time.time() + 30
    while time.time() < deadline and not all(
        (tmp_path / run.name / 'ready').exists() for run in runs[:2]
    ):
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C.

  before = signal.getsignal(signal.SIGINT)
  threading.Thread(target=interrupt_when_ready, daemon=True).start()
  statuses = sweep_lib.execute(runs, 'configs/sfc.py', [], parallel=2)
  assert statuses == {
      'alpha=1': 'stopped',
      'alpha=2': 'stopped',
      'alpha=3': 'not started',
  }
  # The sweep's handlers are gone again.
  assert signal.getsignal(signal.SIGINT) is before


def test_time_limit_stops_runs_and_starts_no_more(
    tmp_path, monkeypatch, capsys
):
  runs = _fake_sweep(monkeypatch, tmp_path, _FAKE_LONG_MAIN, (1, 2))
  start = time.time()
  statuses = sweep_lib.execute(
      runs, 'configs/sfc.py', [], deadline=time.time() + 3
  )
  # The first run was told to stop (it would sleep 60 s), the second never ran.
  assert statuses == {'alpha=1': 'stopped', 'alpha=2': 'not started'}
  assert 3 <= time.time() - start < 30
  assert 'Time limit reached' in capsys.readouterr().out
  assert not (tmp_path / 'alpha=2').exists()


def test_unreadable_results_run_again(tmp_path, monkeypatch):
  runs = _fake_sweep(monkeypatch, tmp_path, _FAKE_MAIN, (1,))
  (tmp_path / 'alpha=1').mkdir()
  (tmp_path / 'alpha=1' / 'results.json').write_text('{"test_acc')  # Torn.
  assert sweep_lib.execute(runs, 'configs/sfc.py', []) == {'alpha=1': 'done'}
  assert summary.read_results(runs[0].workdir)['test_accuracy'] == 0.5


# A stand-in for gcloud: runs the --command it is given in POSIX sh (not
# bash), as a remote login shell might, in a folder named like REMOTE_DIR.
_FAKE_GCLOUD = """#!/bin/sh
for arg; do
  case "$arg" in --command=*) command="${arg#--command=}" ;; esac
done
cd "$FAKE_HOME" && exec /bin/sh -c "$command"
"""
# A stand-in for python3 on the worker: prints its arguments, one per record.
_FAKE_PYTHON = '#!/bin/sh\nprintf "%s\\0" "$@"\n'


def test_tpu_vm_arguments_reach_a_posix_shell_intact(tmp_path):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for name, text in (('gcloud', _FAKE_GCLOUD), ('python3', _FAKE_PYTHON)):
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  remote_dir = "it's dir"
  (tmp_path / remote_dir).mkdir()
  odd = ['line\nbreak', "it's", '$HOME `id` "q" \\']
  result = subprocess.run(
      [
          'bash',
          str(REPO / 'launch' / 'tpu_vm.sh'),
          'train',
          'configs/sfc.py',
          'gs://b/w',
          *odd,
      ],
      capture_output=True,
      check=False,
      env=dict(
          os.environ,
          PATH=f'{bin_dir}:{os.environ["PATH"]}',
          TPU_NAME='bl',
          REMOTE_DIR=remote_dir,
          FAKE_HOME=str(tmp_path),
          DATA_DIR='gs://b/tfds dir',
      ),
  )
  assert result.returncode == 0, result.stderr
  args = result.stdout.decode().split('\0')[:-1]
  assert args == [
      '-m',
      'beta_lasso.main',
      '--config=configs/sfc.py',
      '--workdir=gs://b/w',
      '--jax_distributed',
      *odd,
  ]
