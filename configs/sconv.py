r"""S-CONV trained with SGD (Table 1, row S-CONV).

  python -m beta_lasso.main --config=configs/sconv.py --workdir=/tmp/sconv

Paper (CIFAR-10, 400 / 4000 epochs): 84.14 / 87.05 test accuracy, 138.31M
weights at alpha 150.

`configs/sconv.py:cpu` is a laptop-sized run (alpha 16, 10 epochs, batch 256);
its measured accuracy and time are in the
README's CPU table.
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model = 'sconv'
  config.alpha = 150
  tokens = default.parse_arg(arg)
  default.paper_epochs(config, tokens)
  if 'cpu' in tokens:
    default.cpu_sized(config, num_epochs=10.0, alpha=16)
  return config
