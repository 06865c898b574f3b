"""Plans: how many weights each counted layer keeps (``LayerPlan``, ``MaskPlan``, ``make_plan``).

Granularity
-----------
* ``'weight'``: single weights (the exact count is always reached).
* ``'kernel'`` (the baseline's ``io_only``): whole ``kh x kw`` kernels of conv layers, i.e.
  input/output-channel connections; dense layers lose single weights. The exact count may
  be impossible; the plan keeps the closest total it finds and reports the difference.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from widesparse_jax.choices import GRANULARITIES, PLAN_METHODS
from widesparse_jax.sparsity.counted import (
    Predicate,
    channels_first,
    counted_leaves,
    is_counted,
    resolve,
)
from widesparse_jax.sparsity.distributions import distribute
from widesparse_jax.tree import Path, as_path, path_name, shape_of

__all__ = ["LayerPlan", "MaskPlan", "make_plan"]


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """One counted layer: ``keep`` of its ``size`` weights stay (``unit`` = removal unit).

    ``channels_first``: the conv weight is OIHW (``weight`` leaves), so whole kernels are
    drawn over its first two axes; HWIO (``kernel`` / ``w``) kernels use the last two.
    """

    path: Path
    name: str
    shape: tuple
    size: int
    keep: int
    unit: int = 1  # weights per removable unit: kh*kw for conv kernels in 'kernel' mode
    channels_first: bool = False

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


# ---- inputs


def _is_shape(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in x
    )


def _counted_shapes(shapes_or_params: Any, predicate: Predicate) -> dict[Path, tuple]:
    """``{path: shape}`` of the counted layers, in insertion order.

    A flat mapping ``{name: shape}`` lists counted layers itself (``predicate`` unused).
    """
    x = shapes_or_params
    if (
        isinstance(x, Mapping)
        and x
        and all(isinstance(k, str) and _is_shape(v) for k, v in x.items())
    ):
        return {as_path(k): tuple(int(d) for d in v) for k, v in x.items()}
    return {p: shape_of(leaf) for p, leaf in counted_leaves(x, predicate)}


def _resolve_order(order: Sequence[Path | str] | None, counted: list[Path]) -> list[Path]:
    """The counted paths in ``order`` (paths or names); each counted layer exactly once."""
    if order is None:
        return list(counted)
    paths, unknown = resolve(order, counted)
    missing = [path_name(p) for p in counted if p not in set(paths)]
    duplicates = len(paths) - len(set(paths))
    if missing or unknown or duplicates:
        raise ValueError(
            f"order must list each counted layer once; missing: {missing}, "
            f"not counted / unknown: {unknown}, duplicates: {duplicates}"
        )
    return paths


def _num_to_remove(total: int, base_total: int | None, num_to_remove: int | None) -> int:
    if (base_total is None) == (num_to_remove is None):
        raise ValueError("give exactly one of base_total and num_to_remove")
    if num_to_remove is not None:
        return int(num_to_remove)
    if base_total > total:
        raise ValueError(
            f"base_total={base_total} exceeds the {total} weights of this "
            f"net: the width is below the base width (allowed: "
            f"0 <= base_total <= {total})"
        )
    return total - int(base_total)


def _free_layers(paths: list[Path], dense_layers: Iterable[Path | str]) -> list[int]:
    """Indices of the layers not kept dense (dense: by weight path or module path)."""
    if isinstance(dense_layers, str):
        dense_layers = (dense_layers,)
    dense, unknown = resolve(dense_layers, paths, module_paths=True)
    if unknown:
        raise ValueError(
            f"dense_layers {unknown} are not counted layers; allowed: "
            f"{[path_name(p) for p in paths]}"
        )
    return [i for i, p in enumerate(paths) if p not in set(dense)]


# ---- removals


def _explicit_removals(
    paths: list[Path], sizes: list[int], num_to_remove: int, removals: Mapping[str, int] | None
) -> list[int]:
    """``removals`` ({layer name: count}) as a list over ``paths``, checked."""
    if removals is None:
        raise ValueError("method='explicit' needs removals={layer name: count}")
    names = [path_name(p) for p in paths]
    bad = [k for k in removals if k not in names]
    if bad:
        raise ValueError(f"removals names {bad} unknown; allowed: {sorted(names)}")
    out = [int(removals.get(name, 0)) for name in names]
    for name, r, size in zip(names, out, sizes):
        if not 0 <= r <= size:
            raise ValueError(f"removals[{name!r}]={r}; allowed 0..{size}")
    if sum(out) != num_to_remove:
        raise ValueError(f"explicit removals sum to {sum(out)}, expected {num_to_remove}")
    return out


def _unit(shape: tuple, first: bool) -> int:
    """Weights per kernel: prod of the spatial dims of a conv weight, 1 for dense."""
    if len(shape) <= 2:
        return 1
    return math.prod(shape[2:] if first else shape[:-2])


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


def _removals(
    method: str,
    paths: list[Path],
    shapes: list[tuple],
    free: list[int],
    num_to_remove: int,
    removals: Mapping[str, int] | None,
) -> list[int]:
    """Weights removed per layer (dense layers 0) by ``method``, before kernel rounding."""
    sizes = [math.prod(s) for s in shapes]
    free_total = sum(sizes[i] for i in free)
    if num_to_remove < 0 or num_to_remove > free_total:
        raise ValueError(
            f"cannot remove {num_to_remove} weights: allowed 0..{free_total} (the "
            f"sparsifiable layers hold {free_total} weights; a negative "
            f"number means the width is below the base width)"
        )
    if method == "explicit":
        rem = _explicit_removals(
            [paths[i] for i in free], [sizes[i] for i in free], num_to_remove, removals
        )
    else:
        rem = distribute(method, [shapes[i] for i in free], num_to_remove)
    out = [0] * len(paths)
    for i, r in zip(free, rem):
        out[i] = r
    return out


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")


def make_plan(
    shapes_or_params: Any,
    order: Sequence[Path | str] | None = None,
    *,
    base_total: int | None = None,
    num_to_remove: int | None = None,
    method: str = "paper",
    granularity: str = "weight",
    dense_layers: Iterable[Path | str] = (),
    removals: Mapping[str, int] | None = None,
    predicate: Predicate = is_counted,
) -> MaskPlan:
    """Plans how many weights each counted layer keeps.

    Args:
      shapes_or_params: any params pytree (arrays / ShapeDtypeStruct leaves), or a flat
        mapping ``{name: shape}`` of the counted layers.
      order: counted layer paths (or names) in forward order; default: walk (insertion)
        order. Must list every counted layer exactly once.
      base_total: the kept total to reach (the dense base-width count), or
      num_to_remove: the number of weights to remove (give exactly one of the two).
      method: 'paper' | 'uniform' | 'erk' | 'explicit' (needs ``removals``: {name: count}).
      granularity: 'weight' | 'kernel' (whole kh*kw kernels of conv layers; the weight
        distribution of ``method`` is rounded to kernels, then the remainder is fixed
        exactly with kernel-size-1 layers of the sparsified group when there are any, else
        by single-kernel moves while they get closer; the miss is ``plan.difference``).
      dense_layers: layers kept dense and excluded from the distribution, by weight path
        ('cl/kernel') or module path ('cl'), e.g. the MLP's last layer in the NTK setting.
      predicate: which leaves are counted (default :func:`is_counted`); none is an error.
    Returns:
      MaskPlan, layers in ``order``.
    """
    _check_choice("method", method, PLAN_METHODS)
    _check_choice("granularity", granularity, GRANULARITIES)
    shapes = _counted_shapes(shapes_or_params, predicate)
    paths = _resolve_order(order, list(shapes))
    layer_shapes = [shapes[p] for p in paths]
    sizes = [math.prod(s) for s in layer_shapes]
    n = _num_to_remove(sum(sizes), base_total, num_to_remove)
    free = _free_layers(paths, dense_layers)
    removal = _removals(method, paths, layer_shapes, free, n, removals)
    first = [channels_first(p) for p in paths]
    units = [1] * len(paths)
    if granularity == "kernel":
        units = [_unit(s, f) for s, f in zip(layer_shapes, first)]
        removal = _to_kernel_units(removal, sizes, units, n)
    layers = tuple(
        LayerPlan(p, path_name(p), s, sz, sz - r, u, f)
        for p, s, sz, r, u, f in zip(paths, layer_shapes, sizes, removal, units, first)
    )
    return MaskPlan(
        layers, method, granularity, sum(sizes), sum(sizes) - n, sum(l.keep for l in layers)
    )
