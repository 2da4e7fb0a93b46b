r"""Figure 5: ResNet18 with k x k kernels, k in {3, 7, 11, 15}, SGD/beta-LASSO.

  python -m launch.sweep --sweep=launch/sweeps/resnet_kernels.py \
      --config=configs/resnet18.py:cpu --workdir_root=/tmp/sweeps/resnet_kernels

8 runs. The paper: beta-LASSO beats SGD at every kernel size, and the gap grows
with k.

`configs/resnet18.py` selects its optimizer with a config argument
(`:7,beta_lasso`), but a sweep has one --config for all of its runs. So every
run starts from the SGD config, and the beta-LASSO runs override the fields
that the `beta_lasso` argument sets; tests/launch_test.py checks that
BETA_LASSO stays equal to what that argument sets.
"""

CONFIG = 'configs/resnet18.py'
KERNEL_SIZES = (3, 7, 11, 15)
# What `configs/resnet18.py:beta_lasso` changes: no momentum or weight decay
# (Algorithm 1), one lambda for all layers (every ResNet layer is a conv),
# beta 50.
BETA_LASSO = dict(
    optimizer='beta_lasso',
    momentum=0.0,
    weight_decay=0.0,
    l1=5e-6,
    l1_conv=5e-6,
    beta=50.0,
)


def sweep(add):
  for kernel_size in KERNEL_SIZES:
    add(**{'model_kwargs.kernel_size': kernel_size})
    add(**{'model_kwargs.kernel_size': kernel_size}, **BETA_LASSO)
