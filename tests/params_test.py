"""Tests for the sizing code (`models.sizes`) and its command line, params.

Exact counts, the memory model, the search and the CLI.
"""

import importlib
import pathlib
import subprocess
import sys

from absl import flags
from models_test import _GOLDEN  # Table 1 sizes: one golden table.
import pytest

from beta_lasso import models
from beta_lasso.models import sizes

_REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_model_has_a_paper_size():
  names = {name: sizes.paper_size(name) for name in models.MODELS}
  labels = {spec.display_name for spec in models.MODELS.values()}
  assert set(names) == set(models.MODELS) and len(labels) == len(names)
  assert all(isinstance(size, int) and size > 0 for size in names.values())


@pytest.mark.parametrize('name', sorted(_GOLDEN))
def test_paper_size_counts_are_golden(name):
  assert sizes.weight_count(name, sizes.paper_size(name)) == _GOLDEN[name]


def test_params_defines_its_flags_only_as_a_script():
  # Imported (as nothing else does), it must leave the command line alone.
  importlib.import_module('beta_lasso.params')
  assert 'memory_gb' not in flags.FLAGS and 'alphas_s' not in flags.FLAGS


def test_3fc_width_scales_with_alpha_through_the_paper_width():
  assert sizes.width_3fc(150) == models.PAPER_WIDTH_3FC
  assert sizes.width_3fc(300) == 2 * models.PAPER_WIDTH_3FC
  w, s = sizes.width_3fc(8), 16
  assert sizes.weight_count('3fc', 8, s) == 3 * s * s * w + w * w + 10 * w


def test_counts_follow_image_side_and_classes():
  # S-FC: 6 s^2 a^2 + (3 s^4 / 4 + 24 c) a; ResNet18: 1,220,800 k^2 + 177,152.
  s, a, c = 16, 5, 100
  assert sizes.weight_count('sfc', a, s, c) == (
      6 * s**2 * a**2 + (3 * s**4 // 4 + 24 * c) * a
  )
  assert sizes.weight_count('resnet18', 7) == 1_220_800 * 49 + 177_152


def test_memory_components_of_sconv():
  a, batch = 4, 8
  m = sizes.memory('sconv', a, batch_size=batch)
  n_kernels = 6 * 32**2 * a**2 + (243 + 24 * 10) * a
  # Parameters: kernels, head bias 10, BN scale+bias of a and 24a channels.
  n_params = n_kernels + 10 + 2 * (a + 24 * a)
  n_stats = 2 * (a + 24 * a)
  assert m.weights == n_kernels
  assert m.params == 4 * (n_params + n_stats)
  assert m.grads == m.optimizer == 4 * n_params
  assert m.compute_copy == 0
  # Input, layer1 and bn1 outputs (16x16xa), fc1 and bn2 outputs, logits.
  assert m.activations == 4 * batch * (
      32 * 32 * 3 + 2 * 16 * 16 * a + 2 * 24 * a + 10
  )
  assert m.total == sum(m[1:])


def test_memory_options():
  sgd = sizes.memory('dconv', 4, batch_size=8)
  lasso = sizes.memory('dconv', 4, batch_size=8, optimizer='beta_lasso')
  bf16 = sizes.memory('dconv', 4, batch_size=8, precision='bf16')
  assert lasso.optimizer == 0 and lasso.total == sgd.total - sgd.optimizer
  assert bf16.compute_copy == sgd.grads // 2
  # Layer outputs halve, BatchNorm outputs (float32) do not.
  assert sgd.activations / 2 < bf16.activations < sgd.activations
  with pytest.raises(ValueError, match='adam'):
    sizes.memory('dconv', 4, optimizer='adam')


@pytest.mark.parametrize('start', [1, 2, 5, 36, 37, 38, 100, 10_000])
def test_largest_true_finds_the_boundary_from_any_start(start):
  calls = []

  def pred(n):
    calls.append(n)
    return n <= 37

  largest_true = sizes.largest_true
  assert largest_true(pred, start) == 37
  assert len(calls) < 40
  assert largest_true(lambda n: False, start) == 0


_KW = dict(batch_size=512, precision='fp32', optimizer='sgd')


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_max_size_fits_and_the_next_does_not(name):
  size = sizes.max_size(name, 16, **_KW)
  assert size >= 1
  assert sizes.memory(name, size, **_KW).total <= 16 * 2**30
  assert sizes.memory(name, size + 1, **_KW).total > 16 * 2**30


@pytest.mark.parametrize('name', ['sfc', 'dlocal', 'resnet18'])
def test_max_size_is_monotone_in_memory(name):
  largest = [sizes.max_size(name, gb, **_KW) for gb in (2, 16, 80)]
  assert largest == sorted(largest)
  assert largest[0] < largest[-1]


def test_max_size_agrees_with_a_linear_scan():
  budget_gb = 0.03
  scan = 0
  while sizes.memory('sconv', scan + 1, batch_size=64).total <= (
      budget_gb * 2**30
  ):
    scan += 1
  assert scan > 10
  assert sizes.max_size('sconv', budget_gb, batch_size=64) == scan
  # Nothing fits: 0.
  assert sizes.max_size('sconv', 1e-4, batch_size=64) == 0


def test_cli_prints_tables_and_writes_the_figure_without_allocating(tmp_path):
  out = tmp_path / 'fig1.png'
  # D-FC at alpha 64 or on 64x64 images has 4.5G weights (18 GB in fp32),
  # and at 80 GB the search visits 8G-weight models: shapes only.
  # The child reports its own peak: RUSAGE_CHILDREN would also count every
  # earlier subprocess of the test session (training runs included).
  peak_report = tmp_path / 'peak_kb'
  program = (
      'import atexit, resource, runpy, sys; path = sys.argv.pop(1); '
      'atexit.register(lambda: open(path, "w").write(str('
      'resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))); '
      'runpy.run_module("beta_lasso.params", run_name="__main__")'
  )
  result = subprocess.run(
      [
          sys.executable,
          '-c',
          program,
          str(peak_report),
          f'--out={out}',
          '--memory_gb=80',
          '--precision=bf16',
          '--optimizer=beta_lasso',
          '--batch_size=256',
          '--alphas_s=1,150',
          '--alphas_d=15,64',
          '--kernel_sizes=3,15',
          '--image_sides=32,64',
      ],
      cwd=_REPO,
      capture_output=True,
      text=True,
      check=True,
      timeout=120,
  )
  peak_gb = int(peak_report.read_text()) / 2**20
  # JAX and matplotlib alone take 1.5-2.5 GB here (it varies with the load);
  # D-FC at alpha 64 in these tables would take 18 GB if allocated.
  assert peak_gb < 4, peak_gb

  text = result.stdout
  for name in (spec.display_name for spec in models.MODELS.values()):
    assert name in text
  assert '138,312,450' in text and '11,713,920' in text
  assert '4.48G' in text  # D-FC at alpha 64.
  assert '3.42M *' in text and 'undercounts the layers after the first' in text
  assert 'Largest size that trains in 80 GB, bf16, beta_lasso, batch 256' in (
      text
  )
  assert out.stat().st_size > 10_000
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
