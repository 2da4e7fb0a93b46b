r"""The SGD grid of appendix A.2: momentum x weight decay x dropout, 20 runs.

  python -m launch.sweep --sweep=launch/sweeps/sgd_grid.py \
      --config=configs/sconv.py:cpu --workdir_root=/tmp/sweeps/sgd_sconv

Momentum {0, 0.9} x weight decay {0, 1e-4, 2e-4, 5e-4, 1e-3} x dropout on the
last two FC layers or none (the paper gives no rate; 0.5 is the usual one).
The paper tunes every SGD row of Table 1 (and the SGD row of Table 2) over
this grid; it works with any SGD config (`--config=configs/dconv.py`, ...),
S-FC by default, and either budget (`--config=configs/sfc.py:4000`).

The paper picks the run of best validation accuracy: the paper configs hold
out train[45000:], and summary.csv ranks the runs by it (`:cpu` variants
train on the whole split and are listed in sweep order, by test accuracy
only).
"""

CONFIG = 'configs/sfc.py'
MOMENTA = (0.0, 0.9)
WEIGHT_DECAYS = (0.0, 1e-4, 2e-4, 5e-4, 1e-3)
DROPOUT_RATES = (0.0, 0.5)


def sweep(add):
  for dropout_rate in DROPOUT_RATES:
    for momentum in MOMENTA:
      for weight_decay in WEIGHT_DECAYS:
        add(
            momentum=momentum,
            weight_decay=weight_decay,
            dropout_rate=dropout_rate,
        )
