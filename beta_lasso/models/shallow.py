"""S-CONV, S-LOCAL and S-FC: the shallow family (paper appendix, Table 4).

    layer1: conv 9x9, alpha channels, stride 2, SAME  (s x s -> s/2 x s/2)
            | locally connected, same geometry        (S-LOCAL)
            | dense 3 s^2 -> alpha s^2 / 4            (S-FC)
    fc1:    dense 24 alpha
    head:   dense num_classes

BatchNorm then ReLU follow layer1 (`bn1`) and fc1 (`bn2`). Only the head has
a bias. Optional dropout acts on the inputs of fc1 and head (the paper's
"dropout on the last two FC layers"). Odd image sides give ceil(s / 2).

Weights (kernels only; s even, c classes):
S-CONV 6 s^2 a^2 + (243 + 24 c) a; S-LOCAL 6 s^2 a^2 + (243 s^2 / 4 + 24 c) a;
S-FC 6 s^2 a^2 + (3 s^4 / 4 + 24 c) a.
"""

import functools

from beta_lasso.models import allconv

# (channel multiplier of alpha, kernel size, stride) of layer1.
S_LAYERS = ((1, 9, 2),)

# S-CONV, S-LOCAL and S-FC bind its `layer_type` ('conv', 'local', 'fc') in
# the registry (registry.py).
ShallowNet = functools.partial(
    allconv.AllConvNet, conv_layers=S_LAYERS, fc_multiplier=24
)
