r"""D-FC trained with SGD (Table 1, row D-FC).

  python -m beta_lasso.main --config=configs/dfc.py --workdir=/tmp/dfc

Paper (CIFAR-10, 400 / 4000 epochs): 64.78 / 63.62 test accuracy. At alpha 15
(the alpha that gives D-CONV's printed 1.45M) D-FC has 282,203,520 weights;
Table 1 prints 256M, the round size the paper aimed every FC network at.

`configs/dfc.py:cpu`: alpha 1, 2 epochs, batch 256; its measured accuracy and time are in the
README's CPU table.
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model = 'dfc'
  config.alpha = 15
  tokens = default.parse_arg(arg)
  default.paper_epochs(config, tokens)
  if 'cpu' in tokens:
    default.cpu_sized(config, num_epochs=2.0, alpha=1)
  return config
