r"""The CPU locality study (RESULTS.md): every row at alpha 4, one budget.

  python -m launch.sweep --sweep=launch/sweeps/study.py \
      --workdir_root=workdirs/study --parallel=2

One config for every row of the study, so that rows differ only by the fields
the sweep sets (model, optimizer, beta, permute_pixels, model_kwargs.width):
alpha 4, batch 256, crop and flip, 40 epochs of a per-step cosine from lr 0.1,
an eval (accuracy, non-zeros, first-layer locality) every 4 epochs. The 3-FC
row, whose width field the other models do not take, is `configs/study.py:3fc`.

SGD rows use momentum 0.9 and weight decay 5e-4 (appendix A.2) and no L1;
beta-LASSO rows neither momentum nor weight decay (Algorithm 1), so these are
0 in the base row and set by the SGD rows (launch/sweeps/study.py). Every row
trains on the whole train split and reports test accuracy (no validation). Its lambdas are 5x the paper's, scaled
to the budget: the total L1 shrink of a weight is sum_t lr_t * lambda, which
over 40 epochs (7,800 steps, sum lr_t ~ 390) at 1e-4 is 0.039, about 2 init
standard deviations of S-FC's first layer; the paper's 2e-5 over 4000 epochs
gives 0.39. Scaling lambda by the full 10x would also scale the threshold
beta * lambda to 0.01 at beta 50, half the init standard deviation, which
prunes most of the layer in the first steps; 5x keeps it at 0.005.
"""

from configs import default

# What an SGD row of the study sets (appendix A.2): the sweep's rows too.
SGD = dict(
    optimizer='sgd',
    momentum=0.9,
    weight_decay=5e-4,
    l1=0.0,
    l1_conv=0.0,
    beta=0.0,
)


def get_config(arg=None):
  """The study's base row (S-FC, beta-LASSO); `:3fc` gives the 3-FC row."""
  # ':cpu' is accepted like every config's: the study is CPU-sized already.
  tokens = default.parse_arg(arg, valid=('3fc', 'cpu'))
  config = default.get_config()
  config.model = 'sfc'
  config.optimizer = 'beta_lasso'
  config.alpha = 4
  config.batch_size = 256
  config.eval_batch_size = 1000
  config.num_epochs = 40.0
  config.eval_every_epochs = 4.0
  config.checkpoint_every_epochs = 4.0
  config.log_every_steps = 195
  config.train_split = 'train'
  config.val_split = None
  config.momentum = 0.0
  config.weight_decay = 0.0
  config.l1 = 2.5e-5
  config.l1_conv = 1e-4
  config.beta = 50.0
  if '3fc' in tokens:
    # Width 1024: 4.2M weights, S-FC's 3.2M at alpha 4 in the same range.
    config.model = '3fc'
    config.alpha = None
    config.model_kwargs.width = 1024
    config.update(SGD)
  return config
