"""beta-LASSO (Neyshabur 2020, Algorithm 1) as optax gradient transformations.

One step of Algorithm 1 is

  theta <- theta - lr * (grad + lambda * sign(theta))
  theta <- theta * 1[|theta| >= beta * lambda]

which here is `optax.chain(add_l1_sign, scale_by_learning_rate,
hard_threshold)`. The threshold beta * lambda is not scaled by the learning
rate. Non-finite values propagate as in `optax.sgd`: a NaN gradient gives a
NaN parameter, never a zero.

What is regularized. By default every floating-point leaf with ndim >= 2
(the usual weight-decay convention: weight matrices and conv kernels in any
framework, whatever their names) except leaves named like biases or norm
parameters ('bias', 'scale', and Haiku's 'b', 'offset'): the unshared bias of
`models.LocallyConnected2D` and the per-position BatchNorm of S-FC and D-FC
are 3-D. `kernel_mask` selects Flax `kernel` leaves by name instead; the
training code here uses it, as the paper regularizes kernels. A `mask` is a
pytree of bools, a callable params -> pytree of bools, or a regex string
searched in each '/'-joined path; a mask that selects no parameter is an error.

Paths. Masks, `per_layer_l1` and the counts name a leaf by its keys from the
root of the tree they receive, joined by '/' (dict keys, sequence indices,
attribute names), e.g. 'layer1/kernel' for linen `params` but
'params/layer1/kernel' for the whole `variables`. The trailing `.value` of a
Flax NNX Variable is dropped, so NNX state reads like linen
(`beta_lasso.pytree.path_str`, which every module here names leaves with).

Per-parameter values (`l1`, `threshold`) are looked up by path: a tree that
holds only the leaves a transform regularizes (e.g. the subtree it sees under
`optax.multi_transform`) is enough, and a value for a subtree applies to its
leaves.

The module also has helpers to pick parameters by path, build per-layer
lambdas and count the non-zero weights of each layer (the path, mask and
counting ones are `beta_lasso.pytree`'s, re-exported here).
"""

from typing import Any
from typing import NamedTuple
from typing import Sequence
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from beta_lasso import pytree

# A float, a schedule (step count -> float) or a pytree of floats like params.
Hyperparam = Union[float, jax.Array, optax.Schedule, Any]


class L1SignState(NamedTuple):
  """State of `add_l1_sign` with a constant or per-parameter `l1`."""


class HardThresholdState(NamedTuple):
  """State of `hard_threshold` with a constant or per-parameter threshold."""


class ScheduleCountState(NamedTuple):
  """State of `add_l1_sign` / `hard_threshold` when the value is a schedule."""

  count: jax.Array


# ----------------------------------------------------------------------------
# Paths and masks.
# ----------------------------------------------------------------------------
# The path, mask and counting primitives live in `pytree`; these are the
# public names of optim's API.
Mask = pytree.Mask
path_mask = pytree.path_mask
weight_mask = pytree.weight_mask
kernel_mask = pytree.kernel_mask
layer_order = pytree.layer_order
sum_per_layer = pytree.sum_per_layer
count_nonzero = pytree.count_nonzero
count_weights = pytree.count_weights


def _check_selects_some(mask, params, caller: str):
  """Raises when `params` holds arrays but `mask` selects none of them."""
  selected = mask(params) if callable(mask) else mask
  if any(jax.tree.leaves(selected)):
    return
  paths = [
      pytree.path_str(path)
      for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
      if hasattr(leaf, 'shape')
  ]
  if paths:  # optax's tree_map_params calls init with a placeholder.
    shown = ', '.join(paths[:6]) + (', ...' if len(paths) > 6 else '')
    raise ValueError(
        f'{caller}: the mask selects no parameter, so nothing would be '
        f'regularized (parameters: {shown}). The default mask takes floating '
        'leaves with ndim >= 2 not named like biases; pass mask= as a pytree '
        'of bools, a callable or a regex over these paths.'
    )


# ----------------------------------------------------------------------------
# Hyperparameters.
# ----------------------------------------------------------------------------
def _check_nonnegative(
    caller: str, name: str, value: Any, schedule: bool = True
):
  """Raises one ValueError naming `name` unless value is finite and >= 0.

  Traced values (under `optax.inject_hyperparams` in jit) cannot be read and
  pass; a schedule is checked when it runs.
  """
  kinds = (
      'a finite number >= 0, a schedule or a pytree of such numbers'
      if schedule
      else 'a finite number >= 0'
  )
  if callable(value) and schedule:
    return
  leaves = jax.tree.leaves(value)
  if not leaves or not (schedule or len(leaves) == 1):
    raise ValueError(f'{caller}: {name} must be {kinds}; got {value!r}.')
  for leaf in leaves:
    if isinstance(leaf, (str, bytes, bool, np.bool_)):
      raise ValueError(
          f'{caller}: {name} must be {kinds}; got {leaf!r} '
          f'({type(leaf).__name__}).'
      )
    try:
      x = np.asarray(leaf)
    except (
        jax.errors.TracerArrayConversionError,
        jax.errors.ConcretizationTypeError,
    ):
      continue
    if not np.issubdtype(x.dtype, np.number):
      raise ValueError(f'{caller}: {name} must be {kinds}; got {leaf!r}.')
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)) or np.any(x < 0):
      raise ValueError(f'{caller}: {name} must be {kinds}; got {leaf!r}.')


def per_layer_l1(
    params: Any,
    default: float,
    overrides: Sequence[tuple[str, float]] = (),
    *,
    allow_unmatched: bool = False,
) -> Any:
  """Per-parameter lambdas: the first (regex, value) whose regex matches wins.

  Args:
    params: the parameter pytree (arrays or `jax.ShapeDtypeStruct`s), the one
      the optimizer receives: paths start at its root ('layer1/kernel' for
      linen `params`, 'params/layer1/kernel' for the whole `variables`).
    default: lambda for paths that no regex matches.
    overrides: (regex, value) pairs, tried in order with `re.search` on the
      '/'-joined path, e.g. `[(r'^layer1/', 2e-5)]`.
    allow_unmatched: by default a regex that matches no path is an error, so
      that a misspelt or wrongly anchored one cannot fall back to `default`
      silently; True allows it (e.g. one config for models with and without
      the layer).

  Returns:
    A pytree with the structure of `params` and float leaves.

  Raises:
    ValueError: for a negative or non-finite value, an invalid regex, or a
      regex that matches no path.
  """
  _check_nonnegative('per_layer_l1', 'default', default, schedule=False)
  compiled = []
  for pattern, value in overrides:
    _check_nonnegative(
        'per_layer_l1', f'the value for {pattern!r}', value, schedule=False
    )
    regex = pytree.compile_pattern(pattern, 'per_layer_l1: regex')
    compiled.append((regex, value))
  paths = [
      pytree.path_str(p)
      for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
  ]
  if not allow_unmatched:
    for regex, _ in compiled:
      if not any(regex.search(p) for p in paths):
        shown = ', '.join(paths[:6]) + (', ...' if len(paths) > 6 else '')
        raise ValueError(
            f'per_layer_l1: regex {regex.pattern!r} matches no parameter '
            f'path (paths: {shown}); paths start at the root of the tree '
            'passed.'
        )

  def pick(path, _):
    name = pytree.path_str(path)
    return next((v for r, v in compiled if r.search(name)), default)

  return jax.tree_util.tree_map_with_path(pick, params)


def _is_leaf(x) -> bool:
  # optax.masked hands the inner transform MaskedNode for skipped leaves.
  return x is None or isinstance(x, optax.MaskedNode)


def _values_by_path(value: Any) -> dict[str, Any]:
  return {
      pytree.path_str(path): v
      for path, v in jax.tree_util.tree_flatten_with_path(
          value, is_leaf=_is_leaf
      )[0]
      if not _is_leaf(v)
  }


def _lookup(table: dict[str, Any], path: str, caller: str, name: str):
  """The value at `path`, or at its longest prefix (a value for a subtree)."""
  parts = path.split('/')
  for end in range(len(parts), 0, -1):
    key = '/'.join(parts[:end])
    if key in table:
      return table[key]
  shown = ', '.join(list(table)[:6]) + (', ...' if len(table) > 6 else '')
  raise ValueError(
      f'{caller}: {name} has no value for parameter {path!r} (it has: '
      f'{shown}). A pytree {name} must hold the paths of the params the '
      'transform receives, from their root, at least for the leaves it '
      'regularizes.'
  )


def _map(fn, updates, params, value, caller: str, name: str):
  """Applies fn(u, p, v) leafwise; `value` is a scalar or a tree by path."""
  if jax.tree_util.treedef_is_leaf(jax.tree.structure(value)):
    return jax.tree.map(
        lambda u, p: u if _is_leaf(u) else fn(u, p, value),
        updates,
        params,
        is_leaf=_is_leaf,
    )
  table = _values_by_path(value)
  return jax.tree_util.tree_map_with_path(
      lambda path, u, p: u
      if _is_leaf(u)
      else fn(u, p, _lookup(table, pytree.path_str(path), caller, name)),
      updates,
      params,
      is_leaf=_is_leaf,
  )


# ----------------------------------------------------------------------------
# Transforms.
# ----------------------------------------------------------------------------
def _leafwise(
    caller: str, name: str, value: Hyperparam, fn, empty_state, mask: Mask
) -> optax.GradientTransformationExtraArgs:
  """Builds a transform u -> fn(u, p, value at this step), masked like optax."""
  _check_nonnegative(caller, name, value)
  mask = pytree.as_mask(mask, caller)

  def init_fn(params):
    del params
    if callable(value):
      return ScheduleCountState(count=jnp.zeros([], jnp.int32))
    return empty_state

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
          f'{caller} needs params: pass them as `opt.update(updates, state, '
          'params)`.'
      )
    if callable(value):
      current = value(state.count)
      state = ScheduleCountState(optax.safe_increment(state.count))
    else:
      current = value
    return _map(fn, updates, params, current, caller, name), state

  masked = optax.masked(optax.GradientTransformation(init_fn, update_fn), mask)

  def masked_init(params):
    _check_selects_some(mask, params, caller)
    if not callable(value) and not jax.tree_util.treedef_is_leaf(
        jax.tree.structure(value)
    ):
      # Fails here, not at the first step, when a value is missing.
      table = _values_by_path(value)
      mask_tree = mask(params) if callable(mask) else mask
      selected = jax.tree.map(
          lambda m, p: p if m else optax.MaskedNode(), mask_tree, params
      )
      for path, leaf in jax.tree_util.tree_flatten_with_path(
          selected, is_leaf=_is_leaf
      )[0]:
        if not _is_leaf(leaf):
          _lookup(table, pytree.path_str(path), caller, name)
    return masked.init(params)

  return optax.GradientTransformationExtraArgs(masked_init, masked.update)


def _l1_sign(u, p, s):
  # Cast back: a float32 lambda must not promote bfloat16 updates.
  return (u + s * jnp.sign(p).astype(u.dtype)).astype(u.dtype)


def _threshold(u, p, t):
  # Zero only where |p + u| < t is known: NaN compares False, so a
  # non-finite parameter stays non-finite instead of becoming 0.
  return jnp.where(jnp.abs(p + u) < t, -p.astype(u.dtype), u)


def add_l1_sign(
    l1: Hyperparam, mask: Mask = None
) -> optax.GradientTransformationExtraArgs:
  """Adds the L1 subgradient: updates += l1 * sign(params).

  Example:
    >>> opt = optax.chain(add_l1_sign(1e-5), optax.sgd(0.1))

  Args:
    l1: lambda >= 0: a float, a schedule of the step count, or a pytree of
      floats looked up by path (see the module docstring and `per_layer_l1`).
    mask: which parameters: a pytree of bools, a callable params -> pytree of
      bools (as in `optax.masked`) or a regex over '/'-joined paths; None
      means `weight_mask` (floating leaves with ndim >= 2, not biases).

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Raises:
    ValueError: at construction for a negative, non-finite or string `l1` or
      an invalid mask; at init when the mask selects no parameter.
  """
  return _leafwise('add_l1_sign', 'l1', l1, _l1_sign, L1SignState(), mask)


def hard_threshold(
    threshold: Hyperparam, mask: Mask = None
) -> optax.GradientTransformationExtraArgs:
  """Zeroes parameters whose magnitude after the update is below `threshold`.

  Returns updates u' with p + u' = p + u where |p + u| >= threshold or is not
  finite, and 0.0 exactly elsewhere (u' = -p, like
  `optax.keep_params_nonnegative`), so it must be the last transform of a
  chain.

  Example:
    >>> opt = optax.chain(optax.sgd(0.1), hard_threshold(1e-4))

  Args:
    threshold: >= 0: a float, a schedule of the step count, or a pytree of
      floats looked up by path.
    mask: as in `add_l1_sign`; None means `weight_mask`.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Raises:
    ValueError: as in `add_l1_sign`.
  """
  return _leafwise(
      'hard_threshold',
      'threshold',
      threshold,
      _threshold,
      HardThresholdState(),
      mask,
  )


def _scaled(beta, value: Hyperparam) -> Hyperparam:
  if callable(value):
    return lambda count: beta * value(count)
  return jax.tree.map(lambda v: beta * v, value)


def beta_lasso(
    learning_rate: optax.ScalarOrSchedule,
    l1: Hyperparam,
    beta: float = 50.0,
    mask: Mask = None,
) -> optax.GradientTransformationExtraArgs:
  """beta-LASSO, Algorithm 1 of Neyshabur (2020): L1 SGD, then hard threshold.

  No momentum. Works under `optax.inject_hyperparams` for numeric
  hyperparameters (pass a callable mask with `static_args=('mask',)`), under
  `optax.multi_transform` (a pytree `l1` may hold only the leaves this
  transform sees), `jax.vmap` over an ensemble and sharded params.

  Example:
    >>> opt = beta_lasso(optax.cosine_decay_schedule(0.1, 1000), 2e-5)

  Args:
    learning_rate: a float >= 0 or an optax schedule.
    l1: lambda, as in `add_l1_sign`.
    beta: parameters with |theta| < beta * lambda are set to zero; the
      paper's 50 by default; 0 is plain L1 SGD.
    mask: which parameters are regularized and thresholded, as in
      `add_l1_sign`; None means `weight_mask` (floating leaves with
      ndim >= 2, not biases). Pass `kernel_mask` for Flax `kernel` leaves.

  Returns:
    An `optax.GradientTransformationExtraArgs`.

  Raises:
    ValueError: at construction for a negative, non-finite or string
      learning_rate, l1 or beta, or an invalid mask; at init when the mask
      selects no parameter.
  """
  _check_nonnegative('beta_lasso', 'learning_rate', learning_rate)
  _check_nonnegative('beta_lasso', 'l1', l1)
  _check_nonnegative('beta_lasso', 'beta', beta, schedule=False)
  return optax.chain(
      add_l1_sign(l1, mask),
      optax.scale_by_learning_rate(learning_rate),
      hard_threshold(_scaled(beta, l1), mask),
  )
