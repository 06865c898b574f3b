"""Sparsity distributions: how many weights each counted layer loses (pure integer math).

* ``'paper'``: the baseline's levelling algorithm (google-research/wide-sparse-nets,
  ``ResNet18/utils.py: get_nwtf`` + ``main.py: prep_model_and_smask``), reproduced exactly;
  see :func:`paper_distribution`.
* ``'uniform'``: the same fraction from every layer (largest-remainder rounding).
* ``'erk'``: Erdős–Rényi-kernel densities (RigL / jaxpruner), dense capping.
* The baseline **MLP** does not use the levelling algorithm: its ``MLP/utils.py:
  get_NWTF`` takes the number to remove from the classifier ``cl`` as a free parameter (at
  most a fraction ``fract_freeze_cl`` of ``cl``; the published NTK configuration uses 0)
  and removes the rest from the hidden layer ``fc`` (keeping at least one weight there).
  See :func:`baseline_mlp_removals`; with ``fract_freeze_cl = 0`` this equals any method
  with ``dense_layers=('cl/kernel',)``.

Each function takes L layer sizes (or shapes) in forward order and a total N to remove and
returns L removal counts (ints, same order) summing to N exactly.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from widesparse_jax.choices import SPARSITY_METHODS

__all__ = [
    "paper_distribution",
    "uniform_distribution",
    "erk_distribution",
    "baseline_mlp_removals",
    "distribute",
]


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


def distribute(method: str, layer_shapes: Sequence[Sequence[int]], num_to_remove: int) -> list[int]:
    """Removals per layer (L ints) of ``method`` in ``'paper' | 'uniform' | 'erk'``."""
    if method == "erk":
        return erk_distribution(layer_shapes, num_to_remove)
    sizes = [math.prod(int(d) for d in s) for s in layer_shapes]
    if method == "paper":
        return paper_distribution(sizes, num_to_remove)
    if method == "uniform":
        return uniform_distribution(sizes, num_to_remove)
    raise ValueError(f"unknown method {method!r}; allowed: {', '.join(SPARSITY_METHODS)}")
