"""Forward order: counted layers sorted by their first use in the forward pass.

Dict insertion order is the call order only for Flax Linen ``init``; Haiku, Equinox, NNX
state and JAX's own flattening order layers otherwise (often by sorted names). Tracing the
forward function with ``jax.make_jaxpr`` (no FLOPs run) gives the true order for any model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.extend  # noqa: F401  (jax.extend.core: Jaxpr, ClosedJaxpr, Var)

from widesparse_jax.sparsity.counted import Predicate, counted_paths, is_counted
from widesparse_jax.tree import Path, PyTree, map_with_path, walk

__all__ = ["forward_order"]


def _sub_jaxprs(eqn) -> list:
    subs = []
    for v in eqn.params.values():
        vals = v if isinstance(v, (list, tuple)) else (v,)
        for x in vals:
            if isinstance(x, jax.extend.core.ClosedJaxpr):
                subs.append(x.jaxpr)
            elif isinstance(x, jax.extend.core.Jaxpr):
                subs.append(x)
    return subs


def _first_uses(jaxpr, tracked: dict) -> dict:
    """Position (tuple, lexicographic) of the first equation that reads each tracked var."""
    found: dict = {}
    for i, eqn in enumerate(jaxpr.eqns):
        used = [
            (j, v)
            for j, v in enumerate(eqn.invars)
            if isinstance(v, jax.extend.core.Var) and v in tracked and tracked[v] not in found
        ]
        if not used:
            continue
        subs = _sub_jaxprs(eqn)
        inner_pos: dict = {}
        # Call-like primitives (pjit, remat, custom_jvp/vjp, closed_call) pass their operands
        # 1:1 to the inner jaxpr: look inside to order layers within one call.
        if len(subs) == 1 and len(subs[0].invars) == len(eqn.invars):
            inner_tracked = {subs[0].invars[j]: tracked[v] for j, v in used}
            inner_pos = _first_uses(subs[0], inner_tracked)
        for j, v in used:
            ident = tracked[v]
            found[ident] = (i,) + inner_pos.get(ident, (-1, j))
    return found


def _is_array_like(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _struct(x: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _trace(fn: Callable, params: PyTree, args: tuple, kwargs: dict) -> tuple[Any, list[Path]]:
    """(jaxpr, paths of the params leaves that are its first invars, in order).

    Array-like leaves of ``params``, ``args`` and ``kwargs`` are traced as abstract values;
    every other leaf (functions and flags of Equinox modules, ``train=False``) stays static.
    """
    dyn_paths = [p for p, leaf in walk(params) if _is_array_like(leaf)]
    extra, extra_def = jax.tree_util.tree_flatten((args, kwargs))
    dyn = [i for i, x in enumerate(extra) if _is_array_like(x)]

    def traced(flat_params, dyn_vals):
        it = iter(flat_params)
        rebuilt = map_with_path(lambda _, leaf: next(it) if _is_array_like(leaf) else leaf, params)
        vals = list(extra)
        for i, v in zip(dyn, dyn_vals):
            vals[i] = v
        a, kw = jax.tree_util.tree_unflatten(extra_def, vals)
        return fn(rebuilt, *a, **kw)

    structs = [_struct(leaf) for _, leaf in walk(params) if _is_array_like(leaf)]
    closed = jax.make_jaxpr(traced)(structs, [_struct(extra[i]) for i in dyn])
    return closed.jaxpr, dyn_paths


def forward_order(
    fn: Callable, params: PyTree, *args: Any, predicate: Predicate = is_counted, **kwargs: Any
) -> list[Path]:
    """Counted layer paths ordered by their first use in ``fn(params, *args, **kwargs)``.

    ``params`` is any pytree (Flax / Haiku dicts, an Equinox module, NNX ``State``...);
    its array-like leaves and those of ``args``/``kwargs`` may be real arrays or
    ``jax.ShapeDtypeStruct``; other leaves (e.g. ``train=False``, an Equinox activation)
    are passed through unchanged as static values. Layers never read by ``fn`` are appended
    at the end in walk order. Raises ValueError when nothing is counted.
    """
    counted = counted_paths(params, predicate)
    jaxpr, dyn_paths = _trace(fn, params, args, kwargs)
    index = {p: i for i, p in enumerate(dyn_paths)}
    tracked = {jaxpr.invars[index[p]]: p for p in counted if p in index}
    pos = _first_uses(jaxpr, tracked)
    used = sorted((p for p in counted if p in pos), key=lambda p: (pos[p], index[p]))
    return used + [p for p in counted if p not in pos]
