"""Dense masked kernels <-> compact kept-weights form.

A 2-D kernel ``w`` [fan_in, fan_out] with keep-mask ``m`` becomes ``values`` [nnz] plus
``rows`` / ``cols`` int32 [nnz], ordered by (col, row): every output unit's inputs are
contiguous and ``cols`` is sorted (segment sums may assume sorted ids). ``to_dense`` puts
the values back in a zero kernel: ``to_dense(from_dense(w, m)) == w * m`` exactly.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Compact:
    """Static index structure of one compact kernel (numpy, no values).

    shape: the dense kernel's shape (fan_in, fan_out). rows, cols: int32 [nnz], sorted by
    (col, row).
    """

    shape: tuple
    rows: np.ndarray
    cols: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.rows.size)


def layout_of(mask) -> Compact:
    """The compact index structure of a 2-D bool keep-mask [fan_in, fan_out]."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.dtype != np.bool_:
        raise ValueError(f"a compact kernel needs a 2-D bool mask, got {m.dtype} {m.shape}")
    cols, rows = np.nonzero(m.T)  # column-major: sorted by col, then row
    return Compact(tuple(m.shape), rows.astype(np.int32), cols.astype(np.int32))


def from_dense(kernel, layout: Compact) -> jax.Array:
    """Values [nnz] of ``kernel`` [fan_in, fan_out] at the kept positions."""
    if tuple(kernel.shape) != layout.shape:
        raise ValueError(f"kernel shape {tuple(kernel.shape)} != layout shape {layout.shape}")
    return jnp.asarray(kernel)[layout.rows, layout.cols]


def to_dense(values, layout: Compact) -> jax.Array:
    """The dense kernel [fan_in, fan_out]: ``values`` at the kept positions, 0 elsewhere."""
    zeros = jnp.zeros(layout.shape, jnp.asarray(values).dtype)
    return zeros.at[layout.rows, layout.cols].set(values)


def _layout_for(name: str, layouts: dict) -> Compact | None:
    """The layout of a leaf named ``name`` or ending in ``/<layer name>`` (optax states
    nest the params' names under their own, e.g. ``'0/trace/fc/kernel'``)."""
    for key, layout in layouts.items():
        if name == key or name.endswith("/" + key):
            return layout
    return None


def _convert(tree, layouts: dict, fn):
    """Apply ``fn(leaf, layout)`` to every leaf named after a compact layer in ``tree``
    (params or optimizer state); other leaves pass through unchanged.
    ``layouts``: {layer name ('fc/kernel'): Compact}."""
    from widesparse_jax import tree as tree_lib

    def leaf_fn(path, leaf):
        layout = _layout_for(tree_lib.path_name(path), layouts)
        return leaf if layout is None else fn(leaf, layout)

    return tree_lib.map_with_path(leaf_fn, tree)


def compact_tree(tree, layouts: dict):
    """Dense masked params (or a params-shaped optimizer-state subtree) -> compact values."""
    return _convert(tree, layouts, from_dense)


def dense_tree(tree, layouts: dict):
    """Compact values -> dense masked kernels (checkpoints store this form)."""
    return _convert(tree, layouts, to_dense)
