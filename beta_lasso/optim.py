"""beta-LASSO (Neyshabur 2020, Algorithm 1) as optax gradient transformations.

One step of Algorithm 1 is

  theta <- theta - lr * (grad + lambda * sign(theta))
  theta <- theta * 1[|theta| >= beta * lambda]

which here is `optax.chain(add_l1_sign, scale_by_learning_rate,
hard_threshold)`. The threshold beta * lambda is not scaled by the learning
rate. By default only Flax `kernel` leaves (weight matrices and conv kernels)
are regularized; biases and BatchNorm parameters are left alone.

The module also has helpers to pick parameters by path, build per-layer
lambdas and count the non-zero weights of each layer.
"""

import math
import re
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

# A float, a schedule (step count -> float) or a pytree of floats like params.
Hyperparam = Union[float, jax.Array, optax.Schedule, Any]
Mask = Optional[Union[Any, Callable[[optax.Params], Any]]]


class L1SignState(NamedTuple):
  """State of `add_l1_sign` with a constant or per-parameter `l1`."""


class HardThresholdState(NamedTuple):
  """State of `hard_threshold` with a constant or per-parameter threshold."""


class ScheduleCountState(NamedTuple):
  """State of `add_l1_sign` / `hard_threshold` when the value is a schedule."""
  count: jax.Array


def _key_str(key) -> str:
  for attr in ('key', 'idx', 'name'):  # DictKey, SequenceKey, GetAttrKey.
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _path_str(path) -> str:
  return '/'.join(_key_str(k) for k in path)


def path_mask(params: Any, pattern: str) -> Any:
  """Pytree of bools, True where `re.search(pattern, '/'-joined path)`."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: re.search(pattern, _path_str(path)) is not None, params)


def kernel_mask(params: Any) -> Any:
  """Pytree of bools, True exactly for leaves whose last key is 'kernel'."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: bool(path) and _key_str(path[-1]) == 'kernel', params)


def per_layer_l1(params: Any, default: float,
                 overrides: Sequence[tuple[str, float]] = ()) -> Any:
  """Per-parameter lambdas: the first (regex, value) whose regex matches wins.

  Args:
    params: the parameter pytree (arrays or `jax.ShapeDtypeStruct`s).
    default: lambda for paths that no regex matches.
    overrides: (regex, value) pairs, tried in order with `re.search` on the
      '/'-joined path, e.g. `[(r'^layer1/', 2e-5)]`.

  Returns:
    A pytree with the structure of `params` and float leaves.
  """
  def pick(path, _):
    name = _path_str(path)
    return next((v for r, v in overrides if re.search(r, name)), default)
  return jax.tree_util.tree_map_with_path(pick, params)


def _is_leaf(x) -> bool:
  # optax.masked hands the inner transform MaskedNode for skipped leaves;
  # treating them as leaves lets a full-size hyperparameter tree line up.
  return x is None or isinstance(x, optax.MaskedNode)


def _map(fn, updates, params, value):
  """Applies fn(u, p, v) leafwise; `value` is a scalar or a tree like params."""
  if jax.tree_util.treedef_is_leaf(jax.tree.structure(value)):
    return jax.tree.map(
        lambda u, p: u if _is_leaf(u) else fn(u, p, value),
        updates, params, is_leaf=_is_leaf)
  return jax.tree.map(
      lambda u, p, v: u if _is_leaf(u) else fn(u, p, v),
      updates, params, value, is_leaf=_is_leaf)


def _leafwise(name: str, value: Hyperparam, fn, empty_state,
              mask: Mask) -> optax.GradientTransformation:
  """Builds a transform u -> fn(u, p, value at this step), masked like optax."""

  def init_fn(params):
    del params
    if callable(value):
      return ScheduleCountState(count=jnp.zeros([], jnp.int32))
    return empty_state

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
          f'{name} needs params: pass them as `opt.update(updates, state, '
          'params)`.')
    if callable(value):
      current = value(state.count)
      state = ScheduleCountState(optax.safe_increment(state.count))
    else:
      current = value
    return _map(fn, updates, params, current), state

  return optax.masked(optax.GradientTransformation(init_fn, update_fn),
                      kernel_mask if mask is None else mask)


def add_l1_sign(l1: Hyperparam,
                mask: Mask = None) -> optax.GradientTransformation:
  """Adds the L1 subgradient: updates += l1 * sign(params).

  Example:
    >>> opt = optax.chain(add_l1_sign(1e-5), optax.sgd(0.1))

  Args:
    l1: lambda: a float, a schedule of the step count, or a pytree of floats
      with the structure of params (see `per_layer_l1`).
    mask: pytree of bools or callable params -> pytree of bools, as in
      `optax.masked`; None means `kernel_mask`.

  Returns:
    An `optax.GradientTransformation`.
  """
  return _leafwise('add_l1_sign', l1,
                   lambda u, p, s: u + s * jnp.sign(p).astype(u.dtype),
                   L1SignState(), mask)


def hard_threshold(threshold: Hyperparam,
                   mask: Mask = None) -> optax.GradientTransformation:
  """Zeroes parameters whose magnitude after the update is below `threshold`.

  Returns updates u' with p + u' = p + u where |p + u| >= threshold and 0.0
  exactly elsewhere (u' = -p, like `optax.keep_params_nonnegative`), so it
  must be the last transform of a chain.

  Example:
    >>> opt = optax.chain(optax.sgd(0.1), hard_threshold(1e-4))

  Args:
    threshold: a float, a schedule of the step count, or a pytree of floats
      with the structure of params.
    mask: as in `add_l1_sign`; None means `kernel_mask`.

  Returns:
    An `optax.GradientTransformation`.
  """
  return _leafwise('hard_threshold', threshold,
                   lambda u, p, t: jnp.where(jnp.abs(p + u) >= t, u, -p),
                   HardThresholdState(), mask)


def _scaled(beta, value: Hyperparam) -> Hyperparam:
  if callable(value):
    return lambda count: beta * value(count)
  return jax.tree.map(lambda v: beta * v, value)


def beta_lasso(learning_rate: optax.ScalarOrSchedule, l1: Hyperparam,
               beta: float, mask: Mask = None) -> optax.GradientTransformation:
  """beta-LASSO, Algorithm 1 of Neyshabur (2020): L1 SGD, then hard threshold.

  No momentum. Works under `optax.inject_hyperparams` for numeric
  hyperparameters (pass a callable mask with `static_args=('mask',)`).

  Example:
    >>> opt = beta_lasso(optax.cosine_decay_schedule(0.1, 1000), 2e-5, 50.)

  Args:
    learning_rate: a float or an optax schedule.
    l1: lambda, as in `add_l1_sign`.
    beta: parameters with |theta| < beta * lambda are set to zero; beta=0 is
      plain L1 SGD.
    mask: which parameters are regularized and thresholded; None means
      `kernel_mask`.

  Returns:
    An `optax.GradientTransformation`.
  """
  return optax.chain(
      add_l1_sign(l1, mask),
      optax.scale_by_learning_rate(learning_rate),
      hard_threshold(_scaled(beta, l1), mask),
  )


def layer_order(name: str):
  """Network order: layer<N> (conv-standing), then fc<N>, then head."""
  kind = {'layer': 0, 'fc': 1, 'head': 2}
  key = []
  for part in name.split('/'):
    match = re.fullmatch(r'(\D*)(\d*)', part)
    prefix, number = match.groups() if match else (part, '')
    key.append((kind.get(prefix, 3), prefix, int(number) if number else -1))
  return key


def sum_per_layer(params: Any, count: Callable[[Any], int],
                  mask: Mask = None) -> dict[str, int]:
  """Sums `count(leaf)` per layer over the masked leaves (kernels by default).

  Args:
    params: a pytree of arrays (or of per-leaf values computed elsewhere, e.g.
      non-zero counts from a jitted function).
    count: maps a leaf to an int.
    mask: which leaves count; None means `kernel_mask`.

  Returns:
    Dict from the '/'-joined path, less a trailing '/kernel', to a sum.
  """
  mask = kernel_mask(params) if mask is None else mask
  mask = mask(params) if callable(mask) else mask
  out = {}
  for (path, leaf), keep in zip(
      jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(mask)):
    if keep:
      name = _path_str(path)
      name = name[:-len('/kernel')] if name.endswith('/kernel') else name
      out[name] = out.get(name, 0) + int(count(leaf))
  return dict(sorted(out.items(), key=lambda item: layer_order(item[0])))


def count_nonzero(params: Any, mask: Mask = None) -> dict[str, int]:
  """Non-zero entries per layer, e.g. {'layer1': 123, 'head': 45}.

  Args:
    params: parameter pytree (numpy or jax arrays); read on host.
    mask: which leaves count; None means `kernel_mask`.

  Returns:
    Dict from the '/'-joined path, less a trailing '/kernel', to a count.
  """
  return sum_per_layer(params, lambda x: np.count_nonzero(np.asarray(x)), mask)


def count_weights(params: Any, mask: Mask = None) -> dict[str, int]:
  """Total entries per layer, keyed like `count_nonzero`.

  Args:
    params: parameter pytree; arrays or `jax.ShapeDtypeStruct`s.
    mask: which leaves count; None means `kernel_mask`.

  Returns:
    Dict from layer name to its number of entries.
  """
  return sum_per_layer(params, lambda x: math.prod(x.shape), mask)
