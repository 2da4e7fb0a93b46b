r"""ResNet18 with k x k kernels, SGD or beta-LASSO (Figure 5).

  python -m beta_lasso.main --config=configs/resnet18.py:7 --workdir=/tmp/r18k7
  python -m beta_lasso.main --config=configs/resnet18.py:7,beta_lasso \
      --workdir=/tmp/r18k7bl

The argument is a comma-separated list: a kernel size (3, 5, 7, 9, 11, 13 or
15; default 3), `beta_lasso` for beta-LASSO instead of SGD, and `cpu` or a
budget (`400`, `4000` epochs). Every
3x3 conv, the stem included, becomes k x k; 1x1 shortcuts stay 1x1.
ResNet18 (k=3) has 11,164,352 kernel weights. Figure 5 of the paper:
beta-LASSO beats SGD at every kernel size, and the gap grows with k.

`configs/resnet18.py:cpu`: base width 8 instead of 64, 2 epochs, batch 256;
its measured accuracy and time are in the README's CPU table. A step's work
grows with k^2, so on a CPU a step of `resnet18.py:15,cpu` takes over 20
times as long as one at k = 3 (the README gives its step time).
"""

import ml_collections

from configs import default

KERNEL_SIZES = ('3', '5', '7', '9', '11', '13', '15')


def get_config(arg=None):
  args = default.parse_arg(
      arg, valid=KERNEL_SIZES + ('beta_lasso', 'cpu', *default.PAPER_EPOCHS)
  )
  sizes = [int(a) for a in args if a in KERNEL_SIZES]
  if len(sizes) > 1:
    raise ValueError(
        f'config argument {arg!r} names {len(sizes)} kernel ' 'sizes; give one'
    )
  config = default.get_config()
  config.model = 'resnet18'
  config.alpha = None  # Unused: ResNet18 is sized by its width and kernel size.
  config.model_kwargs = ml_collections.ConfigDict(
      {'kernel_size': sizes[0] if sizes else 3}
  )
  if 'beta_lasso' in args:
    config.optimizer = 'beta_lasso'
    config.momentum = 0.0
    config.weight_decay = 0.0
    # Figure 5 uses one lambda: every ResNet layer is a convolution.
    config.l1 = config.l1_conv = 5e-6
    config.beta = 50.0
  default.paper_epochs(config, args)
  if 'cpu' in args:
    default.cpu_sized(config, num_epochs=2.0)
    config.model_kwargs.width = 8
  return config
