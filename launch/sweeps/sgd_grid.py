r"""The SGD grid of appendix A.2: momentum x weight decay, 10 runs.

  python -m launch.sweep --sweep=launch/sweeps/sgd_grid.py \
      --config=configs/sconv.py:cpu --workdir_root=/tmp/sweeps/sgd_sconv

Momentum {0, 0.9} x weight decay {0, 1e-4, 2e-4, 5e-4, 1e-3}. The paper tunes
every SGD row of Table 1 (and the SGD row of Table 2) over this grid; it works
with any SGD config (`--config=configs/dconv.py`, ...), S-FC by default.

The paper also tries dropout on the last two FC layers or none; to cover that,
run the sweep again in another --workdir_root with
`-- --config.dropout_rate=0.5`. The paper picks the best validation accuracy;
summary.csv reports test accuracy (no split is held out here).
"""

CONFIG = 'configs/sfc.py'
MOMENTA = (0.0, 0.9)
WEIGHT_DECAYS = (0.0, 1e-4, 2e-4, 5e-4, 1e-3)


def sweep(add):
  for momentum in MOMENTA:
    for weight_decay in WEIGHT_DECAYS:
      add(momentum=momentum, weight_decay=weight_decay)
