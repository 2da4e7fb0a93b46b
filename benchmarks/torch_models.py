"""S-CONV, S-LOCAL and S-FC in PyTorch, to time beside ours.

The same networks as `beta_lasso.models.shallow` (layer1, BatchNorm, ReLU,
fc1, BatchNorm, ReLU, head; only the head has a bias), the same SAME padding
(asymmetric where the stride needs it, so an explicit pad), and the same
optimizer step (SGD with momentum 0.9, weight decay on kernels only). S-LOCAL's
locally connected layer is `F.unfold` then one batched matmul over output
positions, as PyTorch users write it. `TorchStep` and `TorchLayer1` time the
step and layer1 alone for `benchmarks.train_step`. Nothing here is used for
training; its only job is a fair baseline. torch is optional:
`benchmarks/requirements.txt`.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from beta_lasso import models


def same_padding(
    size: int, kernel_size: int, stride: int
) -> tuple[int, int, int]:
  """(low, high, out) of XLA's SAME padding for one spatial axis."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel_size - size, 0)
  return total // 2, total - total // 2, out


class LocallyConnected2d(nn.Module):
  """Unshared 2D convolution: unfold, then a matmul per output position."""

  def __init__(
      self,
      size: int,
      in_channels: int,
      features: int,
      kernel_size: int,
      stride: int,
  ):
    super().__init__()
    low, high, self.out = same_padding(size, kernel_size, stride)
    self.pad = (low, high, low, high)
    self.kernel_size, self.stride = kernel_size, stride
    fan_in = in_channels * kernel_size**2
    self.weight = nn.Parameter(
        torch.randn(self.out**2, fan_in, features) / math.sqrt(fan_in)
    )

  def forward(self, x):
    patches = F.unfold(
        F.pad(x, self.pad), self.kernel_size, stride=self.stride
    )  # (N, fan_in, positions)
    # Contiguous first: bmm on the permuted view copies batch by batch.
    y = torch.bmm(
        patches.permute(2, 0, 1).contiguous(), self.weight
    )  # (positions, N, F)
    return y.permute(1, 2, 0).reshape(x.shape[0], -1, self.out, self.out)


class ShallowNet(nn.Module):
  """S-CONV ('conv'), S-LOCAL ('local') or S-FC ('fc') on NCHW images."""

  def __init__(
      self,
      layer_type: str,
      alpha: int,
      num_classes: int = 10,
      size: int = 32,
      channels: int = 3,
  ):
    super().__init__()
    kernel_size, stride = 9, 2
    low, high, out = same_padding(size, kernel_size, stride)
    self.layer_type, self.pad = layer_type, (low, high, low, high)
    units = alpha * out * out
    if layer_type == 'conv':
      self.layer1 = nn.Conv2d(channels, alpha, kernel_size, stride, bias=False)
    elif layer_type == 'local':
      self.layer1 = LocallyConnected2d(
          size, channels, alpha, kernel_size, stride
      )
    elif layer_type == 'fc':
      self.layer1 = nn.Linear(channels * size * size, units, bias=False)
    else:
      raise ValueError(
          f'layer_type {layer_type!r} is not one of conv, local, ' 'fc'
      )
    # Per channel after conv / local, per unit after the dense layer (ours).
    self.bn1 = (
        nn.BatchNorm1d(units) if layer_type == 'fc' else nn.BatchNorm2d(alpha)
    )
    self.fc1 = nn.Linear(units, 24 * alpha, bias=False)
    self.bn2 = nn.BatchNorm1d(24 * alpha)
    self.head = nn.Linear(24 * alpha, num_classes)

  def layer1_forward(self, x):
    """layer1 alone, SAME padding included."""
    if self.layer_type == 'fc':
      return self.layer1(x.flatten(1))
    if self.layer_type == 'conv':
      return self.layer1(F.pad(x, self.pad))
    return self.layer1(x)

  def forward(self, x):
    x = F.relu(self.bn1(self.layer1_forward(x))).flatten(1)
    x = F.relu(self.bn2(self.fc1(x)))
    return self.head(x)


# The S family's models -> what stands for their convolution ('conv', ...).
MODELS = {
    name: models.spec(name).layer_type for name in models.family(models.SHALLOW)
}


def train_step_fn(
    model: nn.Module,
    learning_rate: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
  """`step(images, labels) -> loss`: forward, backward and an SGD update."""
  model.train()
  kernels = [p for p in model.parameters() if p.ndim > 1]
  others = [p for p in model.parameters() if p.ndim <= 1]
  optimizer = torch.optim.SGD(
      [
          {'params': kernels, 'weight_decay': weight_decay},
          {'params': others, 'weight_decay': 0.0},
      ],
      lr=learning_rate,
      momentum=momentum,
  )

  def step(images, labels):
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss

  return step


class TorchStep:
  """A network's training step (`train_step_fn`), timed in blocks of steps."""

  def __init__(self, name: str, alpha: int, batch_size: int, device: str):
    self.device = device
    torch.manual_seed(0)
    model = ShallowNet(MODELS[name], alpha).to(device)
    self.step = train_step_fn(model)
    self.images = torch.randn(batch_size, 3, 32, 32, device=device)
    self.labels = torch.arange(batch_size, device=device) % 10
    if device == 'cuda':
      torch.cuda.reset_peak_memory_stats()
    self(1)
    self.memory_bytes = (
        torch.cuda.max_memory_allocated() if device == 'cuda' else None
    )

  def __call__(self, steps: int):
    for _ in range(steps):
      loss = self.step(self.images, self.labels)
    loss.item()  # Waits for the device.


class TorchLayer1:
  """A network's layer1 alone, forward and kernel gradient, timed in blocks."""

  def __init__(self, name: str, alpha: int, batch_size: int, device: str):
    torch.manual_seed(0)
    model = ShallowNet(MODELS[name], alpha).to(device)
    self.forward = model.layer1_forward
    self.kernel = model.layer1.weight
    self.images = torch.randn(batch_size, 3, 32, 32, device=device)
    self.grad_out = torch.randn_like(self.forward(self.images))
    self(1)

  def __call__(self, reps: int):
    for _ in range(reps):
      self.kernel.grad = None
      self.forward(self.images).backward(self.grad_out)
    self.kernel.grad.sum().item()  # Waits for the device.
