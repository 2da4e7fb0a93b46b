r"""S-FC trained with SGD (Table 1, row S-FC; Table 2, row SGD).

  python -m beta_lasso.main --config=configs/sfc.py --workdir=/tmp/sfc

Paper (CIFAR-10, 400 / 4000 epochs): 72.77 / 78.63 test accuracy, 256.24M
weights at alpha 150. `configs/sfc.py:4000` is Table 2's SGD row.

`configs/sfc.py:cpu` is a laptop-sized run (alpha 8, 8 epochs, batch 256);
its measured accuracy and time are in the
README's CPU table.
"""

from configs import default


def get_config(arg=None):
  config = default.get_config()
  config.model = 'sfc'
  config.alpha = 150
  tokens = default.parse_arg(arg)
  default.paper_epochs(config, tokens)
  if 'cpu' in tokens:
    default.cpu_sized(config, num_epochs=8.0, alpha=8)
  return config
