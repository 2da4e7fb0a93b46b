r"""S-LOCAL trained with SGD (Table 1, row S-LOCAL).

  python -m beta_lasso.main --config=configs/slocal.py --workdir=/tmp/slocal

Paper (CIFAR-10, 400 / 4000 epochs): 81.52 / 85.86 test accuracy, 147.61M
weights at alpha 150.

`configs/slocal.py:cpu` is a laptop-sized run (alpha 8, 4 epochs, batch 256);
its measured accuracy and time are in the
README's CPU table.
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model = 'slocal'
  config.alpha = 150
  tokens = default.parse_arg(arg)
  default.paper_epochs(config, tokens)
  if 'cpu' in tokens:
    default.cpu_sized(config, num_epochs=4.0, alpha=8)
  return config
