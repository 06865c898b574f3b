"""Static random sparsity masks for wide sparse networks (pure functions, no Flax).

Everything here works on *any* params pytree made of nested dicts (``dict`` /
``FrozenDict`` / any ``Mapping``), with arrays, ``jax.ShapeDtypeStruct`` or anything
with a ``.shape`` as leaves.

Vocabulary
----------
* A **layer** is identified by its *path*: the tuple of dict keys down to a kernel leaf,
  e.g. ``('layer1_0', 'conv1', 'kernel')``; its *name* is ``'/'.join(path)``.
* **Counted** layers (the ones that count as "weights" and may be sparsified) are leaves
  named ``kernel`` with ``ndim >= 2`` (conv kernels HWIO, dense kernels (in, out)).
  Biases and BatchNorm parameters are never counted. The predicate is configurable.
* A **mask pytree** mirrors the params pytree: a counted leaf is a bool array of the
  kernel's shape (``True`` = KEEP) or ``None`` for a layer left dense; every uncounted
  leaf is ``None``.
* A **plan** (:class:`MaskPlan`) says how many weights each layer keeps.

Sparsity distributions (how many weights each layer loses)
----------------------------------------------------------
* ``'paper'``: the baseline's levelling algorithm (google-research/wide-sparse-nets,
  ``ResNet18/utils.py: get_nwtf`` + ``main.py: prep_model_and_smask``), reproduced exactly;
  see :func:`paper_distribution`.
* ``'uniform'``: the same fraction from every layer (largest-remainder rounding).
* ``'erk'``: Erdős–Rényi-kernel densities (RigL / jaxpruner), dense capping.
* ``'explicit'``: per-layer removal counts given by the caller. The baseline **MLP** does
  not use the levelling algorithm: its ``MLP/utils.py: get_NWTF`` takes the number to remove
  from the classifier ``cl`` as a free parameter (at most a fraction ``fract_freeze_cl`` of
  ``cl``; the published NTK configuration uses 0) and removes the rest from the hidden
  layer ``fc`` (keeping at least one weight there). See :func:`baseline_mlp_removals`; with
  ``fract_freeze_cl = 0`` this equals any method with ``dense_layers=('cl/kernel',)``.

Granularity
-----------
* ``'weight'``: single weights (the exact count is always reached).
* ``'kernel'`` (the baseline's ``io_only``): whole ``kh x kw`` kernels of conv layers, i.e.
  input/output-channel connections; dense layers lose single weights. The exact count may
  be impossible; the plan keeps the closest total it finds and reports the difference.

Random masks
------------
Each layer's mask is drawn from ``fold_in(key, crc32(name))``, so it depends only on the
seed, the layer's own name, shape and kept count — never on other layers. Within a layer
the kept positions are a uniformly random subset of exactly the planned size.
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import dataclasses
import json
import math
import os
import sys
import zlib
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import jax
import jax.extend  # noqa: F401  (jax.extend.core: Jaxpr, ClosedJaxpr, Var)
import jax.numpy as jnp
import numpy as np

Path = tuple
Params = Any
Predicate = Callable[[Path, Any], bool]

METHODS = ("paper", "uniform", "erk", "explicit")
GRANULARITIES = ("weight", "kernel")

__all__ = [
    "LayerPlan",
    "MaskPlan",
    "METHODS",
    "GRANULARITIES",
    "is_counted",
    "path_name",
    "counted_paths",
    "insertion_order",
    "forward_order",
    "paper_distribution",
    "uniform_distribution",
    "erk_distribution",
    "baseline_mlp_removals",
    "make_plan",
    "draw_masks",
    "draw_layer_mask",
    "layer_key",
    "apply_masks",
    "count_weights",
    "count_kept",
    "density_report",
    "format_density_report",
    "check_masks",
    "rescale_for_density",
    "main",
]


# --------------------------------------------------------------------------------------
# Paths and tree walking
# --------------------------------------------------------------------------------------


def _shape(leaf: Any) -> Optional[tuple]:
    shape = getattr(leaf, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


def is_counted(path: Path, leaf: Any) -> bool:
    """Default predicate: a leaf named ``kernel`` with ``ndim >= 2`` (conv or dense weight)."""
    shape = _shape(leaf)
    return bool(path) and path[-1] == "kernel" and shape is not None and len(shape) >= 2


def path_name(path: Union[Path, str]) -> str:
    """``('layer1_0', 'conv1', 'kernel') -> 'layer1_0/conv1/kernel'`` (names pass through)."""
    if isinstance(path, str):
        return path
    return "/".join(str(k) for k in path)


def walk_leaves(tree: Any, prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Yields ``(path, leaf)`` for every leaf, dicts walked in insertion order."""
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from walk_leaves(v, prefix + (k,))
    elif isinstance(tree, (list, tuple)) and not _is_shape_tuple(tree):
        for i, v in enumerate(tree):
            yield from walk_leaves(v, prefix + (i,))
    else:
        yield prefix, tree


def _is_shape_tuple(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in x
    )


def map_with_path(tree: Any, fn: Callable[[Path, Any], Any], prefix: Path = ()) -> Any:
    """Maps ``fn(path, leaf)`` over ``tree`` keeping container types and key order."""
    if isinstance(tree, Mapping):
        items = [(k, map_with_path(v, fn, prefix + (k,))) for k, v in tree.items()]
        try:
            return type(tree)(items)
        except Exception:  # exotic mapping types
            return dict(items)
    if isinstance(tree, (list, tuple)) and not _is_shape_tuple(tree):
        return type(tree)(map_with_path(v, fn, prefix + (i,)) for i, v in enumerate(tree))
    return fn(prefix, tree)


def counted_paths(params: Params, predicate: Predicate = is_counted) -> list[Path]:
    """Paths of the counted leaves of ``params``, in dict insertion order."""
    return [p for p, leaf in walk_leaves(params) if predicate(p, leaf)]


def insertion_order(params: Params, predicate: Predicate = is_counted) -> list[Path]:
    """Counted layer paths in dict insertion order (Flax ``init`` inserts in call order).

    Note: ``jax.tree`` flattening sorts dict keys, which is NOT forward order.
    """
    return counted_paths(params, predicate)


def _leaves_by_path(params: Params) -> dict[Path, Any]:
    return dict(walk_leaves(params))


# --------------------------------------------------------------------------------------
# Forward order by tracing
# --------------------------------------------------------------------------------------


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


def forward_order(
    fn: Callable, params: Params, *args: Any, predicate: Predicate = is_counted, **kwargs: Any
) -> list[Path]:
    """Counted layer paths ordered by their first use in ``fn(params, *args, **kwargs)``.

    ``fn`` is traced with ``jax.make_jaxpr`` (no FLOPs run); ``params`` and the array-like
    leaves of ``args``/``kwargs`` may be real arrays or ``jax.ShapeDtypeStruct``; other
    leaves (e.g. ``train=False``) are passed through unchanged as static values.
    Layers never read by ``fn`` are appended at the end in insertion order.
    """
    walked = list(walk_leaves(params))
    all_paths = [p for p, _ in walked]
    leaves = [leaf for _, leaf in walked]
    counted = [p for p, leaf in walked if predicate(p, leaf)]
    extra, extra_def = jax.tree_util.tree_flatten((args, kwargs))
    dyn = [i for i, x in enumerate(extra) if _is_array_like(x)]

    def rebuild_params(flat):
        it = dict(zip(all_paths, flat))
        return map_with_path(params, lambda p, _: it[p])

    def traced(flat_params, dyn_vals):
        vals = list(extra)
        for i, v in zip(dyn, dyn_vals):
            vals[i] = v
        a, kw = jax.tree_util.tree_unflatten(extra_def, vals)
        return fn(rebuild_params(flat_params), *a, **kw)

    def as_struct(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype)

    closed = jax.make_jaxpr(traced)(
        [as_struct(x) if _is_array_like(x) else x for x in leaves],
        [as_struct(extra[i]) for i in dyn],
    )
    jaxpr = closed.jaxpr
    index = {p: i for i, p in enumerate(all_paths)}
    tracked = {jaxpr.invars[index[p]]: p for p in counted}
    pos = _first_uses(jaxpr, tracked)
    used = sorted((p for p in counted if p in pos), key=lambda p: (pos[p], index[p]))
    return used + [p for p in counted if p not in pos]


# --------------------------------------------------------------------------------------
# Distributions (pure integer arithmetic)
# --------------------------------------------------------------------------------------


def _check_removal(sizes: Sequence[int], num_to_remove: int) -> int:
    total = int(sum(sizes))
    if any(int(s) < 0 for s in sizes):
        raise ValueError(f"layer sizes must be >= 0, got {list(sizes)}")
    n = int(num_to_remove)
    if n != num_to_remove:
        raise ValueError(f"num_to_remove must be an integer, got {num_to_remove!r}")
    if n < 0:
        raise ValueError(
            f"num_to_remove={n} is negative: the width must not be below the base "
            f"width (allowed: 0 <= num_to_remove <= {total})"
        )
    if n > total:
        raise ValueError(
            f"num_to_remove={n} is larger than possible: the layers hold only "
            f"{total} weights (allowed: 0 <= num_to_remove <= {total})"
        )
    return n


def paper_distribution(layer_sizes: Sequence[int], num_to_remove: int) -> list[int]:
    """Per-layer removal counts of the paper's levelling algorithm (baseline ``get_nwtf``).

    Args:
      layer_sizes: weights per counted layer, in forward order. Length L.
      num_to_remove: total N to remove, ``0 <= N <= sum(layer_sizes)``.
    Returns:
      list of L ints (removals, in the order of ``layer_sizes``) summing to N.

    Layers are sorted by size, largest first, stably (ties keep forward order). With
    ``s`` the sorted sizes, ``lim[k-1] = sum_{j<k} (j+1) (s_j - s_{j+1})`` is the number of
    weights that levels the ``k`` largest layers down to ``s_k``. The number of levelled
    layers is ``m = i + 1`` for the leftmost ``i`` with ``lim[i] >= N`` (``bisect_left``,
    so at ``N == lim[i]`` the layer ``i + 1`` stays untouched). The ``m`` layers are levelled to
    ``s_{m-1}``, the rest ``R`` of ``N`` is split evenly (``R // m`` each) and the leftover
    ``R % m`` is removed from the first layer of the sorted order.

    Extensions where the baseline crashes: if ``N > lim[-1]`` (or L == 1) all layers are
    levelled; if the leftover would exceed what the first layer holds (only when N is
    within a few weights of everything), it is spread one weight each over the levelled layers.
    """
    sizes = [int(s) for s in layer_sizes]
    n = _check_removal(sizes, num_to_remove)
    L = len(sizes)
    if L == 0:
        return []
    order = sorted(range(L), key=lambda i: -sizes[i])  # stable: ties keep forward order
    s = [sizes[i] for i in order]
    lims, acc = [], 0
    for j in range(L - 1):
        acc += (j + 1) * (s[j] - s[j + 1])
        lims.append(acc)
    idx = bisect.bisect_left(lims, n)
    m = idx + 1  # == L when N is beyond the last limit (all layers levelled)
    level = s[m - 1]
    removed_sorted = [s[j] - level for j in range(m)] + [0] * (L - m)
    rest_tot = n - sum(removed_sorted)
    rest, leftover = divmod(rest_tot, m)
    for j in range(m):
        removed_sorted[j] += rest
    if removed_sorted[0] + leftover <= s[0]:
        removed_sorted[0] += leftover
    else:  # baseline would crash here; stay feasible
        for j in range(leftover):
            removed_sorted[j] += 1
    out = [0] * L
    for j, i in enumerate(order):
        out[i] = removed_sorted[j]
    return out


def _largest_remainder(
    floors: list[int], fracs: Sequence[Any], extra: int, caps: Sequence[int]
) -> list[int]:
    """Adds 1 to the ``extra`` entries with the largest fractional parts (ties: first)."""
    out = list(floors)
    cand = sorted((i for i in range(len(out)) if out[i] < caps[i]), key=lambda i: -fracs[i])
    if extra > len(cand):
        raise ValueError(f"cannot place {extra} more weights (only {len(cand)} layers have room)")
    for i in cand[:extra]:
        out[i] += 1
    return out


def uniform_distribution(layer_sizes: Sequence[int], num_to_remove: int) -> list[int]:
    """Removes the same fraction ``N / total`` from every layer, exactly N in total.

    Exact integer arithmetic: ``floor(N * size / total)`` per layer, the remaining few go
    to the layers with the largest remainders (ties: forward order). Returns L ints.
    """
    sizes = [int(s) for s in layer_sizes]
    n = _check_removal(sizes, num_to_remove)
    total = sum(sizes)
    if n == 0 or total == 0:
        return [0] * len(sizes)
    floors = [n * s // total for s in sizes]
    fracs = [(n * s) % total for s in sizes]
    return _largest_remainder(floors, fracs, n - sum(floors), sizes)


def erk_distribution(layer_shapes: Sequence[Sequence[int]], num_to_remove: int) -> list[int]:
    """Erdős–Rényi-kernel distribution (RigL / jaxpruner), returned as removals per layer.

    Density of layer l is ``eps * sum(shape_l) / prod(shape_l)`` (all dims, kernel dims
    included), ``eps`` chosen so the kept total is ``total - N``; layers whose density would
    exceed 1 are made dense one at a time (largest score first) and ``eps`` is recomputed.
    Kept counts are rounded by largest remainder so the total is exact. Returns L ints.
    """
    shapes = [tuple(int(d) for d in s) for s in layer_shapes]
    sizes = [int(np.prod(s)) if len(s) else 1 for s in shapes]
    n = _check_removal(sizes, num_to_remove)
    keep_total = sum(sizes) - n
    L = len(shapes)
    score = [(sum(s) / sz) if sz > 0 else 0.0 for s, sz in zip(shapes, sizes)]
    dense: set = set()
    while True:
        free = [i for i in range(L) if i not in dense]
        budget = keep_total - sum(sizes[i] for i in dense)
        denom = sum(score[i] * sizes[i] for i in free)
        eps = budget / denom if denom > 0 else 0.0
        over = [i for i in free if eps * score[i] > 1.0]
        if not over:
            break
        dense.add(max(over, key=lambda i: (score[i], -i)))
    exact = [float(sizes[i]) if i in dense else eps * score[i] * sizes[i] for i in range(L)]
    floors = [min(sizes[i], int(math.floor(x))) for i, x in enumerate(exact)]
    fracs = [x - math.floor(x) for x in exact]
    keep = _largest_remainder(floors, fracs, keep_total - sum(floors), sizes)
    return [sizes[i] - keep[i] for i in range(L)]


def baseline_mlp_removals(
    fc_size: int, cl_size: int, num_to_remove: int, num_remove_cl: int = 0
) -> tuple[int, int]:
    """The baseline MLP's split (``MLP/utils.py: get_NWTF``): ``(remove_fc, remove_cl)``.

    The classifier loses the chosen ``num_remove_cl`` weights (the published runs use 0,
    i.e. ``fract_freeze_cl = 0``), the hidden layer ``fc`` loses the rest and must keep at
    least one weight. Use with ``make_plan(..., method='explicit', removals=...)``.
    """
    n = _check_removal([fc_size, cl_size], num_to_remove)
    if not 0 <= num_remove_cl <= min(n, cl_size):
        raise ValueError(
            f"num_remove_cl={num_remove_cl} not allowed: 0 <= num_remove_cl <= "
            f"min(num_to_remove={n}, cl_size={cl_size})"
        )
    fc = n - num_remove_cl
    if fc > fc_size - 1:
        raise ValueError(
            f"removing {fc} of the fc layer's {fc_size} weights is not allowed "
            f"(the baseline keeps at least one: at most {fc_size - 1})"
        )
    return fc, num_remove_cl


# --------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """One counted layer: ``keep`` of its ``size`` weights stay (``unit`` = removal unit)."""

    path: Path
    name: str
    shape: tuple
    size: int
    keep: int
    unit: int = 1  # weights per removable unit: kh*kw for conv kernels in 'kernel' mode

    @property
    def remove(self) -> int:
        return self.size - self.keep

    @property
    def density(self) -> float:
        return self.keep / self.size if self.size else 1.0

    @property
    def dense(self) -> bool:
        return self.keep == self.size

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "size": self.size, "keep": self.keep}


@dataclasses.dataclass(frozen=True)
class MaskPlan:
    """Per-layer kept counts, layers in forward order.

    ``total_width``: counted weights of the (wide) net; ``total_base``: the target kept
    total (dense base-width count); ``total_keep``: what the plan keeps;
    ``difference = total_keep - total_base`` (0 except possibly for kernel granularity).
    """

    layers: tuple
    method: str
    granularity: str
    total_width: int
    total_base: int
    total_keep: int

    @property
    def difference(self) -> int:
        return self.total_keep - self.total_base

    @property
    def by_name(self) -> dict:
        return {l.name: l for l in self.layers}

    @property
    def by_path(self) -> dict:
        return {l.path: l for l in self.layers}

    def to_dict(self) -> dict:
        return {
            "layers": [l.to_dict() for l in self.layers],
            "total_base": self.total_base,
            "total_width": self.total_width,
            "total_keep": self.total_keep,
            "method": self.method,
            "granularity": self.granularity,
            "difference": self.difference,
        }


def _as_shapes(shapes_or_params: Any) -> tuple[dict, list[Path]]:
    """-> ({path: shape} of all leaves, counted paths in insertion order)."""
    if (
        isinstance(shapes_or_params, Mapping)
        and shapes_or_params
        and all(isinstance(k, str) and _is_shape_tuple(v) for k, v in shapes_or_params.items())
    ):
        shapes = {
            tuple(k.split("/")): tuple(int(d) for d in v) for k, v in shapes_or_params.items()
        }
        return shapes, list(shapes)
    shapes, counted = {}, []
    for p, leaf in walk_leaves(shapes_or_params):
        shapes[p] = _shape(leaf)
        if is_counted(p, leaf):
            counted.append(p)
    return shapes, counted


def _as_path(x: Union[Path, str]) -> Path:
    return tuple(x.split("/")) if isinstance(x, str) else tuple(x)


def _unit(shape: tuple) -> int:
    """Weights per kernel: prod of the spatial dims of an HWIO conv kernel, 1 for dense."""
    return int(np.prod(shape[:-2])) if len(shape) > 2 else 1


def _to_kernel_units(
    removals: list[int], sizes: list[int], units: list[int], num_to_remove: int
) -> list[int]:
    """Rounds weight removals to whole kernels and fixes the remainder (see make_plan)."""
    group = [i for i, r in enumerate(removals) if r > 0]
    kern = [0] * len(removals)
    for i in group:
        kern[i] = min(sizes[i] // units[i], (2 * removals[i] + units[i]) // (2 * units[i]))
    diff = num_to_remove - sum(k * u for k, u in zip(kern, units))
    # Layers with unit 1 in the group absorb the remainder exactly (largest first).
    for i in sorted((i for i in group if units[i] == 1), key=lambda i: -sizes[i]):
        step = max(-kern[i], min(diff, sizes[i] - kern[i]))
        kern[i] += step
        diff -= step
    # Otherwise: single-kernel moves while they bring the total closer to the target.
    while diff != 0:
        sign = 1 if diff > 0 else -1
        best, best_abs = None, abs(diff)
        for i in group:
            ok = kern[i] < sizes[i] // units[i] if sign > 0 else kern[i] > 0
            if ok and abs(diff - sign * units[i]) < best_abs:
                best, best_abs = i, abs(diff - sign * units[i])
        if best is None:
            break
        kern[best] += sign
        diff -= sign * units[best]
    return [k * u for k, u in zip(kern, units)]


def make_plan(
    shapes_or_params: Any,
    order: Optional[Sequence[Union[Path, str]]] = None,
    *,
    base_total: Optional[int] = None,
    num_to_remove: Optional[int] = None,
    method: str = "paper",
    granularity: str = "weight",
    dense_layers: Iterable[Union[Path, str]] = (),
    removals: Optional[Mapping[str, int]] = None,
) -> MaskPlan:
    """Plans how many weights each counted layer keeps.

    Args:
      shapes_or_params: a params pytree (arrays / ShapeDtypeStruct leaves) or a flat
        mapping ``{name: shape}`` of the counted layers.
      order: counted layer paths (or names) in forward order; default: insertion order.
        Must list every counted layer exactly once.
      base_total: the kept total to reach (the dense base-width count), or
      num_to_remove: the number of weights to remove (give exactly one of the two).
      method: 'paper' | 'uniform' | 'erk' | 'explicit' (needs ``removals``: {name: count}).
      granularity: 'weight' | 'kernel' (whole kh*kw kernels of conv layers; the weight
        distribution of ``method`` is rounded to kernels, then the remainder is fixed
        exactly with kernel-size-1 layers of the sparsified group when there are any, else
        by single-kernel moves while they get closer; the miss is ``plan.difference``).
      dense_layers: layers kept dense and excluded from the distribution, by kernel path
        ('cl/kernel') or module path ('cl') (e.g. the MLP's
        last layer in the NTK setting).
    Returns:
      MaskPlan, layers in ``order``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"unknown granularity {granularity!r}; allowed: {', '.join(GRANULARITIES)}"
        )
    shapes, counted = _as_shapes(shapes_or_params)
    if order is None:
        paths = counted
    else:
        paths = [_as_path(p) for p in order]
        missing = [path_name(p) for p in counted if p not in set(paths)]
        extra = [path_name(p) for p in paths if p not in set(counted)]
        if missing or extra or len(set(paths)) != len(paths):
            raise ValueError(
                f"order must list each counted layer once; missing: {missing}, "
                f"not counted / unknown: {extra}, "
                f"duplicates: {len(paths) - len(set(paths))}"
            )
    layer_shapes = [shapes[p] for p in paths]
    sizes = [int(np.prod(s)) for s in layer_shapes]
    total = sum(sizes)
    if (base_total is None) == (num_to_remove is None):
        raise ValueError("give exactly one of base_total and num_to_remove")
    if base_total is not None:
        if base_total > total:
            raise ValueError(
                f"base_total={base_total} exceeds the {total} weights of this "
                f"net: the width is below the base width (allowed: "
                f"0 <= base_total <= {total})"
            )
        n = total - int(base_total)
    else:
        n = int(num_to_remove)
    # A dense layer is named by its kernel path ('cl/kernel') or its module path ('cl').
    path_set = set(paths)
    dense = {
        q if q in path_set or q + ("kernel",) not in path_set else q + ("kernel",)
        for q in (_as_path(p) for p in dense_layers)
    }
    unknown = [path_name(p) for p in dense if p not in path_set]
    if unknown:
        raise ValueError(
            f"dense_layers {unknown} are not counted layers; allowed: "
            f"{[path_name(p) for p in paths]}"
        )
    free = [i for i, p in enumerate(paths) if p not in dense]
    free_sizes = [sizes[i] for i in free]
    if n < 0 or n > sum(free_sizes):
        raise ValueError(
            f"cannot remove {n} weights: allowed 0..{sum(free_sizes)} (the "
            f"sparsifiable layers hold {sum(free_sizes)} weights; a negative "
            f"number means the width is below the base width)"
        )
    if method == "paper":
        rem_free = paper_distribution(free_sizes, n)
    elif method == "uniform":
        rem_free = uniform_distribution(free_sizes, n)
    elif method == "erk":
        rem_free = erk_distribution([layer_shapes[i] for i in free], n)
    else:
        if removals is None:
            raise ValueError("method='explicit' needs removals={layer name: count}")
        names = {path_name(paths[i]): i for i in free}
        bad = [k for k in removals if k not in names]
        if bad:
            raise ValueError(f"removals names {bad} unknown; allowed: {sorted(names)}")
        rem_free = [int(removals.get(path_name(paths[i]), 0)) for i in free]
        for i, r in zip(free, rem_free):
            if not 0 <= r <= sizes[i]:
                raise ValueError(f"removals[{path_name(paths[i])!r}]={r}; allowed 0..{sizes[i]}")
        if sum(rem_free) != n:
            raise ValueError(f"explicit removals sum to {sum(rem_free)}, expected {n}")
    removal = [0] * len(paths)
    for i, r in zip(free, rem_free):
        removal[i] = r
    units = [_unit(s) if granularity == "kernel" else 1 for s in layer_shapes]
    if granularity == "kernel":
        removal = _to_kernel_units(removal, sizes, units, n)
    layers = tuple(
        LayerPlan(path=p, name=path_name(p), shape=s, size=sz, keep=sz - r, unit=u)
        for p, s, sz, r, u in zip(paths, layer_shapes, sizes, removal, units)
    )
    return MaskPlan(
        layers=layers,
        method=method,
        granularity=granularity,
        total_width=total,
        total_base=total - n,
        total_keep=sum(l.keep for l in layers),
    )


# --------------------------------------------------------------------------------------
# Drawing masks
# --------------------------------------------------------------------------------------


def layer_key(key: Any, name: Union[Path, str]) -> jax.Array:
    """``fold_in(key, crc32(name))``: the layer's own key, independent of other layers."""
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    return jax.random.fold_in(key, zlib.crc32(path_name(name).encode("utf-8")))


def _numpy_rng(key: jax.Array) -> np.random.Generator:
    data = (
        np.asarray(
            jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        )
        .astype(np.uint32)
        .ravel()
    )
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(data.tolist())))


def _exact_subset(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Bool vector of length n with exactly k True at uniformly random positions.

    Marks the minority class by drawing i.i.d. uniform indices in rounds of exactly the
    number still missing (so it never overshoots); the marked set is the set of distinct
    values of an i.i.d. uniform sequence stopped when it has k distinct values, which by
    exchangeability is a uniformly random k-subset. Cost ~ min(k, n-k) random indices.
    """
    invert = k > n - k
    m = n - k if invert else k
    out = np.zeros(n, dtype=bool)
    have = 0
    while have < m:
        idx = rng.integers(0, n, size=m - have, dtype=np.int64 if n > 2**31 - 1 else np.int32)
        out[idx] = True
        have = int(np.count_nonzero(out))
    if invert:
        np.logical_not(out, out=out)
    return out


def draw_layer_mask(key: Any, layer: LayerPlan) -> Optional[np.ndarray]:
    """Mask (numpy bool, ``layer.shape``, True = keep) of one planned layer; None if dense.

    ``key`` is the global key; the layer's own key is ``layer_key(key, layer.name)``.
    Kernel granularity (``layer.unit > 1``) keeps whole kernels: the mask is drawn over the
    last two (input, output) axes and broadcast over the spatial axes.
    """
    if layer.dense:
        return None
    rng = _numpy_rng(layer_key(key, layer.name))
    if layer.unit > 1:
        io = layer.shape[-2:]
        sub = _exact_subset(rng, io[0] * io[1], layer.keep // layer.unit).reshape(io)
        return np.ascontiguousarray(np.broadcast_to(sub, layer.shape))
    return _exact_subset(rng, layer.size, layer.keep).reshape(layer.shape)


def draw_masks(
    key: Any, params: Params, plan: MaskPlan, *, num_threads: Optional[int] = None
) -> Params:
    """Random keep-masks for ``params`` following ``plan`` (see module doc).

    Args:
      key: a JAX PRNG key (typed or raw uint32[2]) or an int seed.
      params: params pytree (arrays or ShapeDtypeStruct; only shapes are read).
      plan: from :func:`make_plan` for these params.
    Returns:
      mask pytree with the structure of ``params``: numpy bool arrays (True = keep) for
      sparse counted layers, None for dense and uncounted leaves.
    """
    leaves = _leaves_by_path(params)
    by_path = plan.by_path
    for lp in plan.layers:
        if lp.path not in leaves:
            raise ValueError(f"plan layer {lp.name!r} not found in params")
        if _shape(leaves[lp.path]) != lp.shape:
            raise ValueError(
                f"plan layer {lp.name!r} has shape {lp.shape}, params have "
                f"{_shape(leaves[lp.path])}"
            )
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    todo = [lp for lp in plan.layers if not lp.dense]
    workers = num_threads or min(len(todo), os.cpu_count() or 1) or 1
    if workers > 1:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            drawn = dict(
                zip([lp.path for lp in todo], pool.map(lambda lp: draw_layer_mask(key, lp), todo))
            )
    else:
        drawn = {lp.path: draw_layer_mask(key, lp) for lp in todo}

    def leaf_mask(p, leaf):
        if p in by_path:
            return drawn.get(p)
        if is_counted(p, leaf):
            raise ValueError(f"counted layer {path_name(p)!r} is missing from the plan")
        return None

    return map_with_path(params, leaf_mask)


# --------------------------------------------------------------------------------------
# Using masks
# --------------------------------------------------------------------------------------


def _pairs(params: Params, masks: Params) -> Iterator[tuple[Path, Any, Any]]:
    m = _leaves_by_path(masks)
    for p, leaf in walk_leaves(params):
        yield p, leaf, m.get(p)


def check_masks(params: Params, masks: Params, predicate: Predicate = is_counted) -> None:
    """Raises ValueError (naming the path and both shapes) unless ``masks`` fits ``params``."""
    pl, ml = _leaves_by_path(params), _leaves_by_path(masks)
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
        if not predicate(p, leaf):
            raise ValueError(
                f"mask for {path_name(p)!r} must be None (only counted kernels "
                f"may be masked), got shape {_shape(m)}"
            )
        if _shape(m) != _shape(leaf):
            raise ValueError(
                f"mask shape {_shape(m)} != param shape {_shape(leaf)} at {path_name(p)!r}"
            )
        if np.dtype(m.dtype) != np.bool_:
            raise ValueError(f"mask at {path_name(p)!r} has dtype {m.dtype}; allowed: bool")


def apply_masks(params: Params, masks: Params) -> Params:
    """Zeroes the removed weights: ``where(mask, w, 0)`` per masked leaf (jit-safe)."""
    m = _leaves_by_path(masks)

    def f(p, leaf):
        mk = m.get(p)
        return leaf if mk is None else jnp.where(mk, leaf, jnp.zeros((), leaf.dtype))

    return map_with_path(params, f)


def count_weights(params: Params, predicate: Predicate = is_counted) -> int:
    """Number of counted weights (conv + dense kernels) in ``params`` (shapes suffice)."""
    return sum(int(np.prod(_shape(leaf))) for p, leaf in walk_leaves(params) if predicate(p, leaf))


def count_kept(masks: Params, params: Params, predicate: Predicate = is_counted) -> int:
    """Counted weights kept: mask sum for masked layers, full size for dense ones."""
    total = 0
    for p, leaf, m in _pairs(params, masks):
        if predicate(p, leaf):
            total += int(np.prod(_shape(leaf))) if m is None else int(np.count_nonzero(m))
    return total


def density_report(
    params: Params,
    masks: Params,
    order: Optional[Sequence[Union[Path, str]]] = None,
    predicate: Predicate = is_counted,
) -> list[dict]:
    """Per counted layer (in ``order``, default insertion order): name, shape, size, kept,
    density."""
    leaves = _leaves_by_path(params)
    m = _leaves_by_path(masks)
    paths = [_as_path(p) for p in order] if order is not None else counted_paths(params, predicate)
    rows = []
    for p in paths:
        shape = _shape(leaves[p])
        size = int(np.prod(shape))
        mk = m.get(p)
        kept = size if mk is None else int(np.count_nonzero(mk))
        rows.append(
            {
                "name": path_name(p),
                "shape": list(shape),
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


def rescale_for_density(params: Params, masks: Params) -> Params:
    """Sparse-aware init: per masked layer of density p, kernel and sibling ``bias`` are
    multiplied by ``1/sqrt(p)`` and masked entries zeroed.

    A dense init U(±1/sqrt(fan_in)) becomes U(±1/sqrt(fan_in * p)), as the baseline draws
    (its ``adjust_layer_init`` also redraws the bias with that bound). A layer with p = 0
    gets an all-zero kernel and an unchanged bias.
    """
    m = _leaves_by_path(masks)
    scale: dict = {}
    for p, mk in m.items():
        if mk is not None:
            d = float(np.count_nonzero(mk)) / mk.size
            scale[p] = 1.0 / math.sqrt(d) if d > 0 else 0.0

    def f(p, leaf):
        if p in scale:
            return jnp.where(
                m[p], leaf * jnp.asarray(scale[p], leaf.dtype), jnp.zeros((), leaf.dtype)
            )
        if p and p[-1] == "bias":
            kp = p[:-1] + ("kernel",)
            if kp in scale and scale[kp] > 0:
                return leaf * jnp.asarray(scale[kp], leaf.dtype)
        return leaf

    return map_with_path(params, f)


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _model_shapes(model_name: str, width: int, num_classes: int, stem: str, input_dim: int):
    """(params shapes, other variable shapes, input struct) from ``jax.eval_shape``."""
    from widesparse_jax.models import create_model, input_shape  # lazy: keeps masks Flax-free

    model = create_model(model_name, width, num_classes, stem=stem, input_dim=input_dim)
    x = jax.ShapeDtypeStruct(
        (1,) + tuple(input_shape(model_name, stem=stem, input_dim=input_dim)), jnp.float32
    )
    variables = jax.eval_shape(lambda k, xx: model.init(k, xx, train=False), jax.random.key(0), x)
    variables = dict(variables)
    params = variables.pop("params")
    return model, params, variables, x


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m widesparse_jax.masks --model resnet18 --width 64 --base-width 18 ...``.

    Prints the plan as JSON: layers in forward order (name, shape, size, keep), totals,
    method, granularity, difference. Builds parameter shapes only.
    """
    ap = argparse.ArgumentParser(
        prog="python -m widesparse_jax.masks",
        description="Per-layer sparsity plan of a wide sparse net.",
    )
    ap.add_argument("--model", required=True, help="resnet18 | mlp (see widesparse_jax.models)")
    ap.add_argument("--stem", default="cifar", help="resnet stem: cifar | imagenet")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--input-dim", type=int, default=784, help="MLP input dimension")
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument(
        "--base-width",
        type=int,
        default=None,
        help="dense base width whose weight count is kept (default: dense net)",
    )
    ap.add_argument("--method", default="paper", help=f"one of {', '.join(METHODS[:3])}")
    ap.add_argument("--granularity", default="weight", help="weight | kernel")
    ap.add_argument(
        "--dense-layers", default="", help="comma-separated layer names kept dense, e.g. cl/kernel"
    )
    ap.add_argument("--seed", type=int, default=0, help="mask seed (used with --draw)")
    ap.add_argument(
        "--draw",
        action="store_true",
        help="also draw the masks and report the kept count per layer",
    )
    a = ap.parse_args(argv)
    if a.method not in METHODS[:3]:
        ap.error(f"--method {a.method!r} unknown; allowed: {', '.join(METHODS[:3])}")
    if a.granularity not in GRANULARITIES:
        ap.error(f"--granularity {a.granularity!r} unknown; allowed: {', '.join(GRANULARITIES)}")
    base_width = a.width if a.base_width is None else a.base_width
    if base_width > a.width:
        ap.error(
            f"--width {a.width} is below --base-width {base_width} (allowed: width >= base width)"
        )
    if base_width < 1:
        ap.error(f"--base-width {base_width} must be >= 1")
    model, params, others, x = _model_shapes(a.model, a.width, a.num_classes, a.stem, a.input_dim)
    order = forward_order(
        lambda p, o, xx: model.apply({"params": p, **o}, xx, train=False), params, others, x
    )
    if base_width == a.width:
        base_total = count_weights(params)
    else:
        _, base_params, _, _ = _model_shapes(
            a.model, base_width, a.num_classes, a.stem, a.input_dim
        )
        base_total = count_weights(base_params)
    dense = [d for d in a.dense_layers.split(",") if d]
    try:
        plan = make_plan(
            params,
            order,
            base_total=base_total,
            method=a.method,
            granularity=a.granularity,
            dense_layers=dense,
        )
    except ValueError as e:
        ap.error(str(e))
    out = plan.to_dict()
    out.update(model=a.model, width=a.width, base_width=base_width)
    if a.draw:
        masks = draw_masks(jax.random.key(a.seed), params, plan)
        rows = density_report(params, masks, [l.path for l in plan.layers])
        for layer, row in zip(out["layers"], rows):
            layer["kept_drawn"] = row["kept"]
        out["seed"] = a.seed
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
