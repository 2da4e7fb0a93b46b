"""Weights cast to the compute dtype by the update that writes them.

With bf16 compute and float32 weights (`config.half_precision`) every layer
casts its kernel to bf16 where it uses it, so each step reads the float32
weights twice: once to cast them for the forward pass, once in the update.
For S-FC at alpha 150 that is 1 GB of reads a step beside 256M weights. In
the device loop the bf16 copy for step t + 1 is cast right after step t's
update, in the same compiled loop iteration, where XLA can fuse the cast into
the update's pass (one read of the weights, both outputs written). The copy
lives only in the loop's carry: the train state, its checkpoints and the host
path never see it.

The numerics are the reference's. Only leaves that the forward pass itself
does nothing with but cast to the compute dtype are copied (`find` reads the
forward pass's jaxpr), so the layer would have cast the same float32 value
with the same rounding; and the gradient with respect to the copy is the one
XLA computes for the cast (a cast's cotangent is the cotangent, cast back),
so training follows the same trajectory (`tests/precast_test.py`).
"""

from typing import Any
from typing import Callable
from typing import NamedTuple

import jax
from jax import extend as jex
import jax.numpy as jnp


def _convert_dtype(eqn):
  if eqn.primitive.name != 'convert_element_type':
    return None
  return jnp.dtype(eqn.params['new_dtype'])


def find(forward: Callable, params: Any, *args, dtype) -> Any:
  """Which leaves of `params` the forward pass only ever casts to `dtype`.

  Args:
    forward: `forward(params, *args)`, the forward pass (e.g. a Flax apply).
    params: the parameters, arrays or `jax.ShapeDtypeStruct`s.
    *args: its other inputs, arrays or `jax.ShapeDtypeStruct`s.
    dtype: the compute dtype.

  Returns:
    A pytree of bools like `params`: True where every use of the leaf at the
    top level of the forward pass is a cast to `dtype` from another dtype.
    A leaf used any other way, or inside a nested call, is False.
  """
  dtype = jnp.dtype(dtype)
  closed = jax.make_jaxpr(forward)(params, *args)
  leaves, treedef = jax.tree.flatten(params)
  invars = closed.jaxpr.invars[: len(leaves)]
  uses = {var: [] for var in invars}
  for eqn in closed.jaxpr.eqns:
    for var in eqn.invars:
      if not isinstance(var, jex.core.Literal) and var in uses:
        uses[var].append(_convert_dtype(eqn))
  outvars = {
      v for v in closed.jaxpr.outvars if not isinstance(v, jex.core.Literal)
  }
  cast = [
      jnp.dtype(leaf.dtype) != dtype
      and var not in outvars
      and bool(uses[var])
      and all(u == dtype for u in uses[var])
      for leaf, var in zip(leaves, invars)
  ]
  return jax.tree.unflatten(treedef, cast)


class Precast(NamedTuple):
  """The leaves copied in the compute dtype, and that dtype.

  Attributes:
    mask: a pytree of bools like the params (`find`), or None: no leaf.
    dtype: the compute dtype.
  """

  mask: Any
  dtype: Any

  def copy(self, params) -> Any:
    """The compute-dtype copies of the masked leaves; None elsewhere."""
    if self.mask is None:
      return None
    return jax.tree.map(
        lambda m, p: p.astype(self.dtype) if m else None, self.mask, params
    )

  def forward_params(self, params, copy) -> Any:
    """What the forward pass reads: the copies where there are, else params."""
    if self.mask is None:
      return params
    return jax.tree.map(
        lambda c, p: p if c is None else c,
        copy,
        params,
        is_leaf=lambda x: x is None,
    )


NONE = Precast(None, None)  # Casts nothing: the forward pass casts.
