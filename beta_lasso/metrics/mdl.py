"""The paper's MDL generalization bounds (Section 3), for a trained network.

Theorem 1 (Shalev-Shwartz and Ben-David, Theorem 7.7): with probability
1 - delta over m training examples, for every hypothesis h of a prefix-free
description language d,

    L_D(h) <= L_S(h) + sqrt((|d(h)| + ln(2 / delta)) / (2 m)).

Describing every one of n weights with b bits gives |d(h)| = n b.

Theorem 2: a network whose n weights take k distinct non-zero b-bit values
(w_i = p_g(i)) satisfies

    L_D(f_w) <= L_S(f_w) + sqrt((k b + |d(g)| + ln(2 n / delta)) / (2 m)),

with a language for which |d(g)| <= ||w||_0 log2(k n) + 2 log2(n). Without
weight sharing (our networks), k = ||w||_0: the non-zero weights.

Description lengths are in bits and the confidence terms in nats, as in the
proof of Theorem 7.7 (a hypothesis of |d| bits has prior weight 2^-|d|, and
ln 2^|d| <= |d|). Losses are 0-1 errors.
"""

import math
from typing import NamedTuple


class Bounds(NamedTuple):
  """Both bounds on the test error and the description lengths behind them."""

  theorem1: float  # Test error bound describing every weight.
  theorem2: float  # Test error bound describing the non-zero weights.
  dense_bits: float  # n b.
  sparse_bits: float  # k b + |d(g)|.


def theorem1_bound(
    train_error: float, description_bits: float, m: int, delta: float = 0.05
) -> float:
  """Theorem 1: train error plus sqrt((|d(h)| + ln(2/delta)) / (2m))."""
  _check(train_error, m, delta)
  return train_error + math.sqrt(
      (description_bits + math.log(2 / delta)) / (2 * m)
  )


def sharing_bits(nonzeros: int, k: int, n: int) -> float:
  """Theorem 2's |d(g)| <= ||w||_0 log2(k n) + 2 log2(n)."""
  if not 0 < k <= n:
    raise ValueError(f'k={k} must be in [1, n={n}]')
  return nonzeros * math.log2(k * n) + 2 * math.log2(n)


def theorem2_bound(
    train_error: float,
    k: int,
    n: int,
    bits: int,
    m: int,
    delta: float = 0.05,
    nonzeros: int | None = None,
) -> float:
  """Theorem 2: train error plus sqrt((k b + |d(g)| + ln(2n/delta)) / (2m)).

  Args:
    train_error: 0-1 error on the m training examples.
    k: distinct non-zero values (without weight sharing, the non-zeros).
    n: weights of the network.
    bits: bits per value, b.
    m: training examples.
    delta: the bound holds with probability 1 - delta.
    nonzeros: ||w||_0; default k.

  Returns:
    The bound on the test error (above 1 when vacuous).
  """
  _check(train_error, m, delta)
  nonzeros = k if nonzeros is None else nonzeros
  return train_error + math.sqrt(
      (k * bits + sharing_bits(nonzeros, k, n) + math.log(2 * n / delta))
      / (2 * m)
  )


def bounds(
    train_error: float,
    nonzeros: int,
    weights: int,
    m: int,
    *,
    bits: int = 32,
    delta: float = 0.05,
) -> Bounds:
  """Both theorems for a network with `nonzeros` of `weights` non-zero."""
  k = max(1, nonzeros)
  return Bounds(
      theorem1=theorem1_bound(train_error, weights * bits, m, delta),
      theorem2=theorem2_bound(train_error, k, weights, bits, m, delta),
      dense_bits=float(weights * bits),
      sparse_bits=k * bits + sharing_bits(k, k, weights),
  )


def _check(train_error: float, m: int, delta: float):
  if not 0 <= train_error <= 1:
    raise ValueError(f'train_error={train_error} must be in [0, 1]')
  if m < 1:
    raise ValueError(f'm={m} must be at least 1')
  if not 0 < delta < 1:
    raise ValueError(f'delta={delta} must be in (0, 1)')
