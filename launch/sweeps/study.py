r"""The CPU locality study of RESULTS.md: does beta-LASSO make S-FC local?

  python -m launch.sweep --sweep=launch/sweeps/study.py \
      --workdir_root=workdirs/study --parallel=2
  python -m beta_lasso.main --config=configs/study.py:3fc \
      --workdir=workdirs/study/3fc
  python -m beta_lasso.report --workdirs='workdirs/study/*' --out=report/study

Rows (alpha 4, 40 epochs, see configs/study.py): S-FC with beta-LASSO at
beta 50, 1 and 0 and with SGD; S-CONV and S-LOCAL with SGD as the references;
S-FC (beta-LASSO) and S-CONV on permuted pixels. The slowest rows come first
so that two runs at once finish close together.
"""

from configs import study

CONFIG = 'configs/study.py'
SGD = study.SGD  # Momentum and weight decay on, no L1 (validation.UNUSED).


def sweep(add):
  add(model='slocal', **SGD)
  add(model='sfc', beta=50.0)
  add(model='sfc', **SGD)
  add(model='sconv', **SGD)
  add(model='sfc', beta=1.0)
  add(model='sfc', beta=0.0)
  add(model='sfc', beta=50.0, permute_pixels=True)
  add(model='sconv', permute_pixels=True, **SGD)
