"""Using masks: counts, the density report, mask checks and density-aware rescaling.

A mask pytree mirrors the params pytree: a counted leaf holds a bool array of the weight's
shape (``True`` = keep) or ``None`` for a layer left dense; every uncounted leaf is
``None``. Every function takes ``predicate`` (default :func:`is_counted`) and raises
ValueError, listing the leaf names it saw, when the params tree has no counted leaf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from widesparse_jax.sparsity.counted import (
    Predicate,
    bias_path,
    counted_leaves,
    counted_paths,
    is_counted,
    resolve,
)
from widesparse_jax.tree import Path, PyTree, leaves_by_path, map_with_path, path_name, shape_of

__all__ = [
    "count_weights",
    "count_kept",
    "density_report",
    "format_density_report",
    "check_masks",
    "rescale_for_density",
]


def _size(leaf) -> int:
    return math.prod(shape_of(leaf))


def count_weights(params: PyTree, predicate: Predicate = is_counted) -> int:
    """Number of counted weights (conv + dense weights) in ``params`` (shapes suffice).

    Raises ValueError (listing the leaf names) when nothing is counted rather than
    returning 0: a 0 here always means a wrong predicate, and it would silently turn into
    a plan that removes nothing.
    """
    return sum(_size(leaf) for _, leaf in counted_leaves(params, predicate))


def count_kept(masks: PyTree, params: PyTree, predicate: Predicate = is_counted) -> int:
    """Counted weights kept: mask sum for masked layers, full size for dense ones."""
    by_path = leaves_by_path(masks)
    total = 0
    for p, leaf in counted_leaves(params, predicate):
        mask = by_path.get(p)
        total += _size(leaf) if mask is None else int(np.count_nonzero(mask))
    return total


def check_masks(params: PyTree, masks: PyTree, predicate: Predicate = is_counted) -> None:
    """Raises ValueError (naming the path and both shapes) unless ``masks`` fits ``params``:
    the same leaves, bool masks of the weight's shape on counted leaves only."""
    counted = set(counted_paths(params, predicate))
    pl, ml = leaves_by_path(params), leaves_by_path(masks)
    missing = [path_name(p) for p in pl if p not in ml]
    extra = [path_name(p) for p in ml if p not in pl]
    if missing or extra:
        raise ValueError(
            f"mask structure differs from params: missing in masks {missing}, not in params {extra}"
        )
    for p, leaf in pl.items():
        m = ml[p]
        if m is None:
            continue
        if p not in counted:
            raise ValueError(
                f"mask for {path_name(p)!r} must be None (only counted weights "
                f"may be masked), got shape {shape_of(m)}"
            )
        if shape_of(m) != shape_of(leaf):
            raise ValueError(
                f"mask shape {shape_of(m)} != param shape {shape_of(leaf)} at {path_name(p)!r}"
            )
        if np.dtype(m.dtype) != np.bool_:
            raise ValueError(f"mask at {path_name(p)!r} has dtype {m.dtype}; allowed: bool")


def density_report(
    params: PyTree,
    masks: PyTree,
    order: Sequence[Path | str] | None = None,
    predicate: Predicate = is_counted,
) -> list[dict]:
    """Per counted layer (in ``order`` of paths or names, default walk order): name, shape,
    size, kept, density."""
    counted = counted_paths(params, predicate)
    leaves, by_path = leaves_by_path(params), leaves_by_path(masks)
    paths = counted
    if order is not None:
        paths, unknown = resolve(order, list(leaves))
        if unknown:
            raise ValueError(
                f"order names {unknown} not in params; allowed: {[path_name(p) for p in counted]}"
            )
    rows = []
    for p in paths:
        size = _size(leaves[p])
        mask = by_path.get(p)
        kept = size if mask is None else int(np.count_nonzero(mask))
        rows.append(
            {
                "name": path_name(p),
                "shape": list(shape_of(leaves[p])),
                "size": size,
                "kept": kept,
                "density": kept / size if size else 1.0,
            }
        )
    return rows


def format_density_report(report: Sequence[dict]) -> str:
    """Fixed-width table of a :func:`density_report`, with a total line."""
    w = max([len(r["name"]) for r in report] + [5])
    lines = [f"{'layer':<{w}}  {'shape':<22} {'size':>12} {'kept':>12} {'density':>8}"]
    for r in report:
        lines.append(
            f"{r['name']:<{w}}  {str(tuple(r['shape'])):<22} {r['size']:>12} "
            f"{r['kept']:>12} {r['density']:>8.4f}"
        )
    size = sum(r["size"] for r in report)
    kept = sum(r["kept"] for r in report)
    lines.append(
        f"{'total':<{w}}  {'':<22} {size:>12} {kept:>12} {(kept / size if size else 1.0):>8.4f}"
    )
    return "\n".join(lines)


def _density_scales(params: PyTree, masks: PyTree, predicate: Predicate) -> dict[Path, float]:
    """``{weight path: 1/sqrt(density)}`` per masked layer (0.0 for density 0), checked."""
    counted = set(counted_paths(params, predicate))
    scale = {}
    for p, mask in leaves_by_path(masks).items():
        if mask is None:
            continue
        if p not in counted:
            raise ValueError(
                f"mask for {path_name(p)!r} must be None (only counted weights may be masked)"
            )
        d = float(np.count_nonzero(mask)) / mask.size
        scale[p] = 1.0 / math.sqrt(d) if d > 0 else 0.0
    return scale


def rescale_for_density(params: PyTree, masks: PyTree, predicate: Predicate = is_counted) -> PyTree:
    """Sparse-aware init: per masked layer of density p, the weight and its sibling bias
    (``kernel``/``weight`` -> ``bias``, Haiku ``w`` -> ``b``) are multiplied by
    ``1/sqrt(p)`` and masked entries zeroed. Returns a tree of the structure of ``params``.

    A dense init U(±1/sqrt(fan_in)) becomes U(±1/sqrt(fan_in * p)), as the baseline draws
    (its ``adjust_layer_init`` also redraws the bias with that bound). A layer with p = 0
    gets an all-zero weight and an unchanged bias.
    """
    scale = _density_scales(params, masks, predicate)
    by_path = leaves_by_path(masks)
    bias_scale = {bias_path(p): s for p, s in scale.items() if bias_path(p) and s > 0}

    def rescale(p, leaf):
        if p in scale:
            kept = leaf * jnp.asarray(scale[p], leaf.dtype)
            return jnp.where(by_path[p], kept, jnp.zeros((), leaf.dtype))
        if p in bias_scale and leaf is not None:
            return leaf * jnp.asarray(bias_scale[p], leaf.dtype)
        return leaf

    return map_with_path(rescale, params)
