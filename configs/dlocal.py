r"""D-LOCAL trained with SGD (Table 1, row D-LOCAL).

  python -m beta_lasso.main --config=configs/dlocal.py --workdir=/tmp/dlocal

Paper (CIFAR-10, 400 / 4000 epochs): 86.13 / 86.07 test accuracy. At alpha 15
D-LOCAL has 11,713,920 weights; the paper prints 3.42M because its formula
undercounts the locally connected layers after the first (a local layer has
output positions x k^2 x C_in x C_out weights).

`configs/dlocal.py:cpu`: alpha 2, 2 epochs, batch 256; its measured accuracy and time are in the
README's CPU table.
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model = 'dlocal'
  config.alpha = 15
  tokens = default.parse_arg(arg)
  default.paper_epochs(config, tokens)
  if 'cpu' in tokens:
    default.cpu_sized(config, num_epochs=2.0, alpha=2)
  return config
