"""Drawing random keep-masks from a plan, seeded per layer name.

Each layer's mask is drawn from ``fold_in(key, crc32(name))``, so it depends only on the
seed, the layer's own name, shape and kept count — never on other layers. Within a layer
the kept positions are a uniformly random subset of exactly the planned size.
"""

from __future__ import annotations

import concurrent.futures
import os
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from widesparse_jax.sparsity.counted import Predicate, counted_leaves, is_counted
from widesparse_jax.sparsity.plan import LayerPlan, MaskPlan
from widesparse_jax.tree import Path, PyTree, leaves_by_path, map_with_path, path_name, shape_of

__all__ = ["layer_key", "draw_layer_mask", "draw_masks"]


def _as_key(key: Any) -> jax.Array:
    """An int seed -> ``jax.random.key(seed)``; keys pass through."""
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    return key


def layer_key(key: Any, name: Path | str) -> jax.Array:
    """``fold_in(key, crc32(name))``: the layer's own key, independent of other layers."""
    return jax.random.fold_in(_as_key(key), zlib.crc32(path_name(name).encode("utf-8")))


def _numpy_rng(key: jax.Array) -> np.random.Generator:
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    data = np.asarray(jax.random.key_data(key) if typed else key).astype(np.uint32).ravel()
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


def draw_layer_mask(key: Any, layer: LayerPlan) -> np.ndarray | None:
    """Mask (numpy bool, ``layer.shape``, True = keep) of one planned layer; None if dense.

    ``key`` is the global key; the layer's own key is ``layer_key(key, layer.name)``.
    Kernel granularity (``layer.unit > 1``) keeps whole kernels: the mask is drawn over the
    two channel axes (the last two of HWIO, the first two of OIHW when
    ``layer.channels_first``) and broadcast over the spatial axes.
    """
    if layer.dense:
        return None
    rng = _numpy_rng(layer_key(key, layer.name))
    if layer.unit == 1:
        return _exact_subset(rng, layer.size, layer.keep).reshape(layer.shape)
    spatial = (1,) * (len(layer.shape) - 2)
    io = layer.shape[:2] if layer.channels_first else layer.shape[-2:]
    sub = _exact_subset(rng, io[0] * io[1], layer.keep // layer.unit)
    sub = sub.reshape(io + spatial if layer.channels_first else spatial + io)
    return np.ascontiguousarray(np.broadcast_to(sub, layer.shape))


def _plan_targets(params: PyTree, plan: MaskPlan, predicate: Predicate) -> dict[Path, LayerPlan]:
    """``{params path: layer plan}``, plan layers matched by name; checks shapes and that
    every counted leaf is planned."""
    counted = counted_leaves(params, predicate)
    leaves = leaves_by_path(params)
    by_name = {path_name(p): p for p in leaves}
    targets = {}
    for lp in plan.layers:
        path = lp.path if lp.path in leaves else by_name.get(lp.name)
        if path is None:
            raise ValueError(f"plan layer {lp.name!r} not found in params")
        if shape_of(leaves[path]) != lp.shape:
            raise ValueError(
                f"plan layer {lp.name!r} has shape {lp.shape}, params have {shape_of(leaves[path])}"
            )
        targets[path] = lp
    missing = [path_name(p) for p, _ in counted if p not in targets]
    if missing:
        raise ValueError(f"counted layer {missing[0]!r} is missing from the plan")
    return targets


def draw_masks(
    key: Any,
    params: PyTree,
    plan: MaskPlan,
    *,
    num_threads: int | None = None,
    predicate: Predicate = is_counted,
) -> PyTree:
    """Random keep-masks for ``params`` following ``plan`` (see module doc).

    Args:
      key: a JAX PRNG key (typed or raw uint32[2]) or an int seed.
      params: any params pytree (arrays or ShapeDtypeStruct; only shapes are read).
      plan: from :func:`make_plan` for these params (layers matched by path or name).
      num_threads: layers drawn in parallel (default: one thread per CPU core).
      predicate: which leaves are counted; each must be in the plan.
    Returns:
      mask pytree with the structure of ``params``: numpy bool arrays (True = keep) for
      sparse counted layers, None for dense and uncounted leaves.
    """
    targets = _plan_targets(params, plan, predicate)
    key = _as_key(key)
    todo = [(p, lp) for p, lp in targets.items() if not lp.dense]
    workers = num_threads or min(len(todo), os.cpu_count() or 1) or 1
    if workers > 1:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            drawn = pool.map(lambda item: draw_layer_mask(key, item[1]), todo)
            masks = dict(zip([p for p, _ in todo], drawn))
    else:
        masks = {p: draw_layer_mask(key, lp) for p, lp in todo}
    return map_with_path(lambda p, _: masks.get(p), params)
