"""Theorems 1 and 2 against values computed by hand."""

import math

import pytest

from beta_lasso.metrics import mdl


def test_theorem1_by_hand():
  # 0.1 + sqrt((1000 + ln 40) / 10000) = 0.1 + sqrt(0.10036889) = 0.41681.
  assert mdl.theorem1_bound(0.1, 1000, 5000, delta=0.05) == pytest.approx(
      0.4168104922, abs=1e-9
  )


def test_theorem2_by_hand():
  # k = 10 of n = 100 weights, b = 8, m = 1000, delta = 0.1, no training error:
  # |d(g)| = 10 log2(1000) + 2 log2(100) = 99.6578 + 13.2877 = 112.9456 bits;
  # sqrt((80 + 112.9456 + ln 2000) / 2000) = sqrt(200.5465 / 2000) = 0.31666.
  assert mdl.sharing_bits(10, 10, 100) == pytest.approx(112.9455552, abs=1e-6)
  assert mdl.theorem2_bound(0.0, 10, 100, 8, 1000, delta=0.1) == pytest.approx(
      0.3166594841, abs=1e-9
  )


def test_bounds_of_a_sparse_network_are_tighter_than_of_its_dense_count():
  b = mdl.bounds(0.05, nonzeros=1_000, weights=1_000_000, m=50_000)
  assert b.dense_bits == 32_000_000
  assert b.sparse_bits == pytest.approx(
      32_000 + 1_000 * math.log2(1e9) + 2 * math.log2(1e6)
  )
  assert b.theorem2 < 1 < b.theorem1  # Sparse: non-vacuous; dense: vacuous.


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(train_error=1.5), 'train_error'),
        (dict(m=0), 'm=0'),
        (dict(delta=0.0), 'delta'),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
  args = dict(train_error=0.1, description_bits=10, m=100, delta=0.05)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    mdl.theorem1_bound(**args)
