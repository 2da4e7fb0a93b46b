r"""3-FC trained with SGD (Table 1, row 3-FC).

  python -m beta_lasso.main --config=configs/3fc.py --workdir=/tmp/3fc

Paper (CIFAR-10, 400 / 4000 epochs): 69.19 / 75.12 test accuracy. The paper
does not give the width; 14,541 units per hidden layer make 256,256,043
weights, the same size as S-FC at alpha 150 (256,240,800).

`configs/3fc.py:cpu`: width 1024, 8 epochs, batch 256; its measured accuracy and time are in the
README's CPU table.
"""

import ml_collections

from configs import default

PAPER_WIDTH = 14_541  # Equals beta_lasso.models.PAPER_WIDTH_3FC.


def get_config(arg=None):
  config = default.get_config()
  config.model = '3fc'
  config.alpha = None  # Unused: 3-FC is sized by its width.
  config.model_kwargs = ml_collections.ConfigDict({'width': PAPER_WIDTH})
  tokens = default.parse_arg(arg)
  default.paper_epochs(config, tokens)
  if 'cpu' in tokens:
    default.cpu_sized(config, num_epochs=8.0)
    config.model_kwargs.width = 1024
  return config
