r"""D-CONV trained with SGD (Table 1, row D-CONV).

  python -m beta_lasso.main --config=configs/dconv.py --workdir=/tmp/dconv

Paper (CIFAR-10, 400 / 4000 epochs): 88.84 / 89.79 test accuracy; 1,445,955
weights at alpha 15 (the paper prints 1.45M).

`configs/dconv.py:cpu`: alpha 4, 3 epochs, batch 256; its measured accuracy and time are in the
README's CPU table.
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model = 'dconv'
  config.alpha = 15
  tokens = default.parse_arg(arg)
  default.paper_epochs(config, tokens)
  if 'cpu' in tokens:
    default.cpu_sized(config, num_epochs=3.0, alpha=4)
  return config
