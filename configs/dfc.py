r"""D-FC trained with SGD (Table 1, row D-FC).

  python -m beta_lasso.main --config=configs/dfc.py --workdir=/tmp/dfc

Paper (CIFAR-10, 400 / 4000 epochs): 64.78 / 63.62 test accuracy; 282,203,520
weights at alpha 15 (the paper prints 282.2M).

`configs/dfc.py:cpu`: alpha 1, 2 epochs, batch 256 on 2 CPU cores.
"""
from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model = 'dfc'
  config.alpha = 15
  if 'cpu' in default.parse_arg(arg):
    default.cpu_sized(config, num_epochs=2.0, alpha=1)
  return config
