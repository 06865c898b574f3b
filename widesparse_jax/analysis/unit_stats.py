"""Hidden-unit diagnostics of a one-hidden-layer sparse MLP (784 -> n -> C, ReLU).

Why does the width benefit end at a fixed weight count? A hidden unit contributes only if it
has kept inputs, a kept outgoing weight, and a ReLU that is active on some training example.
These pure numpy functions count each failure from a run's final masks and params:

* ``fan_in(fc_mask)`` / ``fan_out(cl_mask)``: kept weights into / out of each unit, [n];
* ``max_preactivation(images, kernel, bias)``: the largest pre-activation of each unit over a
  set of examples, [n], computed from the kept (nonzero) entries only, so width 65536 costs
  what its kept weights cost;
* ``unit_stats(fc_mask, cl_mask, max_pre)``: the summary dict (fractions of units with no
  inputs, no outputs, dead; "useful" units that have all three; inputs per unit; the share
  of kept weights that touch a useful unit).

Shapes: ``fc_mask`` [d, n] bool (d inputs), ``cl_mask`` [n, C] bool, kernels likewise,
``bias`` [n], ``images`` [N, ...] (flattened to [N, d]). ``None`` for a mask = dense layer.
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np


def _checked(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.ndim != 2:
        raise ValueError(f"a keep-mask must be a 2-D bool array, got {m.dtype} {m.shape}")
    return m


def _as_mask(mask: Optional[np.ndarray], shape: Optional[tuple]) -> np.ndarray:
    """A bool [shape] keep-mask; ``None`` (layer left dense) keeps every entry."""
    if mask is not None:
        return _checked(mask)
    if shape is None:
        raise ValueError("a dense layer (mask None) needs its kernel shape: pass shapes=")
    return np.ones(tuple(shape), bool)


def fan_in(fc_mask: np.ndarray) -> np.ndarray:
    """Kept inputs of each hidden unit: int [n] from the first layer's mask [d, n]."""
    return _checked(fc_mask).sum(axis=0).astype(np.int64)


def fan_out(cl_mask: np.ndarray) -> np.ndarray:
    """Kept outgoing weights of each hidden unit: int [n] from the classifier mask [n, C]."""
    return _checked(cl_mask).sum(axis=1).astype(np.int64)


def _chunks(images: np.ndarray, chunk: int) -> Iterable[np.ndarray]:
    x = np.asarray(images, np.float32).reshape((images.shape[0], -1))
    for start in range(0, x.shape[0], chunk):
        yield x[start : start + chunk]


def max_preactivation(
    images: np.ndarray, kernel: np.ndarray, bias: Optional[np.ndarray] = None, chunk: int = 1000
) -> np.ndarray:
    """max over examples of ``x @ kernel + bias`` per hidden unit: float [n].

    ``kernel`` [d, n] holds the masked weights (removed ones exactly 0, as the runs keep
    them); only its nonzero entries are multiplied (scipy CSC), so the cost is N x nnz.
    A unit without nonzero inputs gets ``bias`` (0 without bias) on every example.
    """
    import scipy.sparse

    k = np.asarray(kernel, np.float32)
    if k.ndim != 2:
        raise ValueError(f"kernel must be [d, n], got shape {k.shape}")
    if images.shape[0] == 0:
        raise ValueError("images is empty: give at least one example")
    d, n = k.shape
    b = np.zeros(n, np.float32) if bias is None else np.asarray(bias, np.float32)
    if b.shape != (n,):
        raise ValueError(f"bias shape {b.shape} != ({n},)")
    rows, cols = np.nonzero(k)
    w = scipy.sparse.csc_matrix((k[rows, cols], (rows, cols)), shape=(d, n))
    used = np.unique(cols)  # units with at least one nonzero input
    w_used = w[:, used]
    out = np.full(n, -np.inf, np.float32)
    for x in _chunks(images, chunk):
        if x.shape[1] != d:
            raise ValueError(f"images flatten to {x.shape[1]} inputs, kernel has {d}")
        h = np.asarray(x @ w_used)  # [chunk, len(used)]
        out[used] = np.maximum(out[used], h.max(axis=0))
    out[used] += b[used]
    rest = np.ones(n, bool)
    rest[used] = False
    out[rest] = b[rest]
    return out


def unit_stats(
    fc_mask: Optional[np.ndarray],
    cl_mask: Optional[np.ndarray],
    max_pre: np.ndarray,
    shapes: Optional[tuple] = None,
) -> dict:
    """Summary of a hidden layer of width n (all fractions over the n units).

    Args:
      fc_mask: [d, n] bool (None: dense; then ``shapes`` must give ((d, n), (n, C))).
      cl_mask: [n, C] bool (None: dense).
      max_pre: [n] largest pre-activation over the training set (``max_preactivation``).

    A unit is *connected* if it has >= 1 kept input and >= 1 kept outgoing weight, *dead* if
    its ReLU is never active (``max_pre <= 0``) and *useful* if connected and not dead. ``useful_weight_fraction``:
    the share of kept weights (fc and cl) attached to useful units; the rest can change no
    output that depends on the input.
    """
    fc_shape, cl_shape = shapes if shapes is not None else (None, None)
    fc = _as_mask(fc_mask, fc_shape)
    cl = _as_mask(cl_mask, cl_shape)
    n = fc.shape[1]
    if cl.shape[0] != n or np.shape(max_pre) != (n,):
        raise ValueError(
            f"width mismatch: fc mask {fc.shape}, cl mask {cl.shape}, max_pre {np.shape(max_pre)}"
        )
    fi, fo = fan_in(fc), fan_out(cl)
    dead = np.asarray(max_pre) <= 0
    connected = (fi > 0) & (fo > 0)
    useful = connected & ~dead
    kept_fc, kept_cl = int(fi.sum()), int(fo.sum())
    kept = kept_fc + kept_cl
    return {
        "width": int(n),
        "kept_fc": kept_fc,
        "kept_cl": kept_cl,
        "inputs_per_unit": kept_fc / n,
        "outputs_per_unit": kept_cl / n,
        "frac_no_inputs": float(np.mean(fi == 0)),
        "frac_no_outputs": float(np.mean(fo == 0)),
        "frac_dead": float(np.mean(dead)),
        "frac_dead_with_inputs": float(np.mean(dead[fi > 0])) if np.any(fi > 0) else 0.0,
        "frac_connected": float(np.mean(connected)),
        "frac_dead_connected": float(np.mean(dead[connected])) if connected.any() else 0.0,
        "frac_useful": float(np.mean(useful)),
        "useful_units": int(useful.sum()),
        "inputs_per_useful_unit": float(fi[useful].mean()) if useful.any() else 0.0,
        "useful_weight_fraction": (int(fi[useful].sum()) + int(fo[useful].sum())) / max(kept, 1),
    }
