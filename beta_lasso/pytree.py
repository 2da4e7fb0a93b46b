"""Pytree primitives: parameter paths, masks and per-layer counts.

A leaf is named by its keys from the root of the tree it is in, joined by '/'
(dict keys, sequence indices, attribute names): 'layer1/kernel' in linen
`params`, 'params/layer1/kernel' in the whole `variables`. The trailing
`.value` of a Flax NNX Variable is dropped, so NNX state reads like linen.
Masks, counts, sharding rules and checkpoint fingerprints all name leaves
this way, through `path_str`.

A mask is a pytree of bools, a callable params -> pytree of bools, or a regex
string searched in each path (`as_mask`); `beta_lasso.optim` takes the same
masks and re-exports these functions.
"""

import math
import re
from typing import Any
from typing import Callable
from typing import Optional
from typing import Union

import jax
import jax.numpy as jnp
import numpy as np

# A pytree of bools, a callable params -> pytree of bools, or a path regex.
Mask = Optional[Union[str, Any, Callable[[Any], Any]]]


# ----------------------------------------------------------------------------
# Paths.
# ----------------------------------------------------------------------------
def _key_str(key) -> str:
  for attr in ('key', 'idx', 'name'):  # DictKey, SequenceKey, GetAttrKey.
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_str(path) -> str:
  """The '/'-joined names of a key path, e.g. 'layer1/kernel'.

  Args:
    path: a key path from `jax.tree_util.tree_flatten_with_path` or
      `tree_map_with_path`.

  Returns:
    The keys joined by '/', without the `.value` that ends an NNX Variable's
    path.
  """
  # An NNX Variable flattens to its `.value`: drop it so that
  # 'layer1/kernel' means the same in linen params and NNX state.
  if (
      path
      and isinstance(path[-1], jax.tree_util.GetAttrKey)
      and (path[-1].name == 'value')
  ):
    path = path[:-1]
  return '/'.join(_key_str(k) for k in path)


def compile_pattern(pattern: str, what: str) -> re.Pattern:
  """`re.compile(pattern)`, or a ValueError that names `what` the pattern is."""
  try:
    return re.compile(pattern)
  except (re.error, TypeError) as e:
    raise ValueError(f'{what} {pattern!r} is not a valid regex: {e}') from None


# ----------------------------------------------------------------------------
# Masks.
# ----------------------------------------------------------------------------
def path_mask(params: Any, pattern: str) -> Any:
  """Pytree of bools, True where `re.search(pattern, '/'-joined path)`."""
  regex = compile_pattern(pattern, 'path_mask: pattern')
  return jax.tree_util.tree_map_with_path(
      lambda path, _: regex.search(path_str(path)) is not None, params
  )


# Biases and norm parameters in Flax and Haiku; some are 3-D (an unshared
# local bias, a per-position BatchNorm), so ndim alone does not tell.
_NOT_WEIGHTS = ('bias', 'scale', 'b', 'offset')


def weight_mask(params: Any) -> Any:
  """Pytree of bools, True for the weights: floating leaves with ndim >= 2.

  Leaves whose last key is a bias or norm name (`_NOT_WEIGHTS`) are not
  weights whatever their shape. The default of every function here. Under
  `jax.vmap` (an ensemble) it sees the shapes of one member.
  """

  def is_weight(path, x):
    dtype = getattr(x, 'dtype', None)
    return (
        dtype is not None
        and jnp.issubdtype(dtype, jnp.floating)
        and len(getattr(x, 'shape', ())) >= 2
        and path_str(path).split('/')[-1] not in _NOT_WEIGHTS
    )

  return jax.tree_util.tree_map_with_path(is_weight, params)


def kernel_mask(params: Any) -> Any:
  """Pytree of bools, True exactly for leaves whose last key is 'kernel'."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path_str(path).split('/')[-1] == 'kernel', params
  )


def as_mask(mask: Mask, caller: str):
  """`mask` as optax.masked takes it; None means `weight_mask`.

  Args:
    mask: a pytree of bools, a callable, a path regex or None.
    caller: the public function's name, for error messages.

  Returns:
    A pytree of bools or a callable params -> pytree of bools.

  Raises:
    ValueError: a bad regex, or a pytree with leaves that are not bools.
  """
  if mask is None:
    return weight_mask
  if isinstance(mask, str):
    # optax.masked would take a string as "every leaf" (it is truthy).
    regex = compile_pattern(mask, f'{caller}: mask')
    return lambda params: path_mask(params, regex.pattern)
  if callable(mask):
    return mask
  for leaf in jax.tree.leaves(mask):
    if not isinstance(leaf, (bool, np.bool_)):
      raise ValueError(
          f'{caller}: mask must be a pytree of bools, a callable or a path '
          f'regex; it holds {leaf!r} ({type(leaf).__name__}).'
      )
  return mask


# ----------------------------------------------------------------------------
# Counting.
# ----------------------------------------------------------------------------
def layer_order(name: str):
  """Network order: layer<N> (conv-standing), then fc<N>, then head."""
  kind = {'layer': 0, 'fc': 1, 'head': 2}
  key = []
  for part in name.split('/'):
    match = re.fullmatch(r'(\D*)(\d*)', part)
    prefix, number = match.groups() if match else (part, '')
    key.append((kind.get(prefix, 3), prefix, int(number) if number else -1))
  return key


def sum_per_layer(
    params: Any, count: Callable[[Any], int], mask: Mask = None
) -> dict[str, int]:
  """Sums `count(leaf)` per layer over the masked leaves.

  Args:
    params: a pytree of arrays (or of per-leaf values computed elsewhere, e.g.
      non-zero counts from a jitted function: then pass the mask of the
      arrays, since the default looks at shapes).
    count: maps a leaf to an int.
    mask: which leaves count (see `as_mask`); None means `weight_mask`.

  Returns:
    Dict from the '/'-joined path, less a trailing '/kernel', to a sum, in
    network order (see `layer_order`).

  Raises:
    ValueError: when the mask selects no leaf.
  """
  mask = as_mask(mask, 'sum_per_layer')
  mask = mask(params) if callable(mask) else mask
  out = {}
  for (path, leaf), keep in zip(
      jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(mask)
  ):
    if keep:
      name = path_str(path)
      name = name[: -len('/kernel')] if name.endswith('/kernel') else name
      out[name] = out.get(name, 0) + int(count(leaf))
  if not out and jax.tree.leaves(params):
    raise ValueError('sum_per_layer: the mask selects no leaf.')
  return dict(sorted(out.items(), key=lambda item: layer_order(item[0])))


def count_nonzero(params: Any, mask: Mask = None) -> dict[str, int]:
  """Non-zero entries per layer, e.g. {'layer1': 123, 'head': 45}.

  Args:
    params: parameter pytree (numpy or jax arrays); read on host.
    mask: which leaves count; None means `weight_mask`.

  Returns:
    Dict from the '/'-joined path, less a trailing '/kernel', to a count.
  """
  return sum_per_layer(params, lambda x: np.count_nonzero(np.asarray(x)), mask)


def count_weights(params: Any, mask: Mask = None) -> dict[str, int]:
  """Total entries per layer, keyed like `count_nonzero`.

  The one weight counter: `models.kernel_counts`, `models.sizes` and the
  training loop use it.

  Args:
    params: parameter pytree; arrays or `jax.ShapeDtypeStruct`s.
    mask: which leaves count; None means `weight_mask`.

  Returns:
    Dict from layer name to its number of entries.
  """
  return sum_per_layer(params, lambda x: math.prod(x.shape), mask)
