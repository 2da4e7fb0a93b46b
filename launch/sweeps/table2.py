r"""Table 2: S-FC trained with beta-LASSO, beta in {0, 1, 50}.

  python -m launch.sweep --sweep=launch/sweeps/table2.py \
      --config=configs/sfc_beta_lasso.py:cpu --workdir_root=/tmp/sweeps/table2

3 runs of 4000 epochs at alpha 150 (`:cpu`: alpha 8, 8 epochs). Paper
(CIFAR-10 / CIFAR-100 / SVHN): beta 0 82.45 / 55.58 / 93.80, beta 1
82.52 / 55.96 / 93.66, beta 50 85.19 / 59.56 / 94.07. For the other columns add
`-- --config.dataset=cifar100` (or svhn_cropped, with its 73,257 training
images split as e.g. `--config.train_split=train[:65000]
--config.val_split=train[65000:]`) and use another --workdir_root. Table 1's
budget is `--config=configs/sfc_beta_lasso.py:400`.

Only beta is swept: the lambdas come from the config, which holds the published
reproduction's 2e-5 for layer 1 and 5e-6 for the FC layers (`:cpu` holds 10x
those, scaled to its short budget; see configs/sfc_beta_lasso.py). Setting them
here would override that scaling.

Table 2's SGD row (78.63 on CIFAR-10) is another config, not a beta:

  python -m beta_lasso.main --config=configs/sfc.py:4000 \
      --workdir=/tmp/sweeps/table2_sgd

Each run keeps its step of best validation accuracy (train[45000:], held out
by the paper configs); summary.csv gives test accuracy there.
"""

CONFIG = 'configs/sfc_beta_lasso.py'
BETAS = (0.0, 1.0, 50.0)


def sweep(add):
  for beta in BETAS:
    add(beta=beta)
