"""Which leaves of a params pytree count as weights, their paths and their names.

A **counted** leaf is a weight that may be sparsified. The default predicate
:func:`is_counted` counts a floating leaf with ``ndim >= 2`` whose last key is ``kernel``
(Flax Linen / NNX), ``w`` (Haiku) or ``weight`` (Equinox, PyTorch-style names); biases,
BatchNorm parameters and anything else are never counted. Every function of the mask
library that counts, plans, draws or reports takes ``predicate`` with this default.

Layouts: ``kernel`` and ``w`` conv weights are HWIO (spatial axes first, ``(in, out)``
last); ``weight`` conv weights are OIHW (``(out, in)`` first, spatial axes last). Dense
weights have no spatial axes, so their layout does not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax.numpy as jnp

from widesparse_jax.tree import Path, PyTree, path_name, shape_of, walk

Predicate = Callable[[Path, Any], bool]

WEIGHT_NAMES = ("kernel", "w", "weight")
_BIAS_OF = {"kernel": "bias", "w": "b", "weight": "bias"}
_LISTED = 20  # leaf names listed in the "nothing counted" error


def is_counted(path: Path, leaf: Any) -> bool:
    """Default predicate: floating leaf, ``ndim >= 2``, last key in :data:`WEIGHT_NAMES`.

    A shape-only stand-in without a ``dtype`` counts as floating.
    """
    shape = shape_of(leaf)
    if not path or shape is None or len(shape) < 2 or path[-1] not in WEIGHT_NAMES:
        return False
    dtype = getattr(leaf, "dtype", None)
    return dtype is None or bool(jnp.issubdtype(dtype, jnp.floating))


def counted_leaves(params: PyTree, predicate: Predicate = is_counted) -> list[tuple[Path, Any]]:
    """``[(path, leaf)]`` of the counted leaves of ``params``, in walk (insertion) order.

    Raises ValueError listing the leaf names seen when nothing is counted, and when two
    counted leaves share a name (masks are seeded and looked up by name).
    """
    walked = list(walk(params))
    found = [(p, leaf) for p, leaf in walked if predicate(p, leaf)]
    if not found:
        names = [path_name(p) for p, leaf in walked if leaf is not None]
        more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
        raise ValueError(
            f"no counted weights in this tree: the predicate counts none of its leaves "
            f"{names[:_LISTED]}{more} (default: floating, ndim >= 2, last key in "
            f"{list(WEIGHT_NAMES)}; pass predicate=... to count others)"
        )
    seen: dict[str, Path] = {}
    for p, _ in found:
        if seen.setdefault(path_name(p), p) != p:
            raise ValueError(
                f"counted leaves {seen[path_name(p)]} and {p} share the name {path_name(p)!r}"
            )
    return found


def counted_paths(params: PyTree, predicate: Predicate = is_counted) -> list[Path]:
    """Paths of the counted leaves of ``params``, in walk order (dicts: insertion order;
    Flax ``init`` inserts in call order). Raises like :func:`counted_leaves`."""
    return [p for p, _ in counted_leaves(params, predicate)]


def resolve(
    entries: Iterable[Path | str], paths: Sequence[Path], module_paths: bool = False
) -> tuple[list[Path], list[str]]:
    """Maps paths or names to the matching ``paths`` -> ``(found, unknown names)``.

    An entry matches a path equal to it or with the same name (``'layers/0/weight'`` names
    ``('layers', 0, 'weight')``; Haiku keys hold ``/`` themselves). With ``module_paths``, a
    module path (``'cl'``) also names its weight (``'cl/kernel'``, ``'cl/w'``, ``'cl/weight'``).
    """
    by_name = {path_name(p): p for p in paths}
    found, unknown = [], []
    for entry in entries:
        name = path_name(entry)
        candidates = [name] + ([f"{name}/{w}" for w in WEIGHT_NAMES] if module_paths else [])
        hit = next((by_name[c] for c in candidates if c in by_name), None)
        if hit is None:
            unknown.append(name)
        else:
            found.append(hit)
    return found, unknown


def channels_first(path: Path) -> bool:
    """True for ``weight`` leaves (OIHW conv weights), False for ``kernel`` / ``w`` (HWIO)."""
    return bool(path) and path[-1] == "weight"


def bias_path(path: Path) -> Path | None:
    """The sibling bias of a weight: ``kernel``/``weight`` -> ``bias``, ``w`` -> ``b``."""
    if not path or path[-1] not in _BIAS_OF:
        return None
    return path[:-1] + (_BIAS_OF[path[-1]],)
