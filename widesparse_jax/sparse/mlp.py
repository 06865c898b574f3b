"""The one-hidden-layer MLP (``models/mlp.py``, standard parametrization) from kept weights.

Compact params: ``{'fc': {'kernel': [nnz_fc], 'bias': [n]}, 'cl': {'kernel': [nnz_cl],
'bias': [C]}}`` (values in :mod:`format` order). Only the *active* hidden units, those with
at least one kept classifier weight, are computed: a unit that feeds nothing has exactly zero
gradient under dense masking as well, so skipping it changes no number beyond float
round-off. Its weights stay in the compact params (weight decay still reaches them).

Forward (A active units, B examples), with no scatter over the batch anywhere (XLA:CPU runs
scatters element by element; the gather + segment-sum form this replaced spent most of its
time in them, forward and backward: 17 ms vs 3.3 ms per step at 50,816 weights, width 4096):

* ``fc``: the active units are ordered by fan-in and cut into buckets of similar fan-in; a
  bucket of n units, each padded to the bucket's largest fan-in k (padding taps read a zero
  weight), is one gather ``x.T[rows]`` [n, k, B] contracted with its weights [n, k] -> [n, B].
  The buckets concatenate into h [A, B] in that order. The gradient of the weights is the
  same gather contracted with the output gradient (a scatter of nnz values, not nnz x B).
* ``cl``: its kept weights are scattered into a dense [A, C] matrix (nnz values, no batch)
  and ``h.T @ W`` is one matmul; both gradients are matmuls, the weights' then gathered back.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from widesparse_jax.sparse.format import Compact, layout_of

# A bucket of fan-ins [lo, hi] holds every fan-in <= PAD_RATIO * lo: exact buckets below 10
# inputs per unit, padding under 10 % of the taps above (fewer buckets: shorter compiles).
# Measured at 50,816 weights, width 4096: exact buckets 3.2 ms, 1.1: 3.2-3.6, 1.25: 3.8-4.1;
# merging the fan-in-0 units into the fan-in-1 gather cost 2.5x at width 65536.
PAD_RATIO = 1.1


@dataclasses.dataclass(frozen=True)
class FanInBucket:
    """n consecutive output units (in the order given to :func:`fan_in_buckets`), each with
    at most k kept inputs. taps, rows: int32 [n, k]: index into the kernel's compact values
    (``nnz`` = a zero padding weight) and the input row of each tap."""

    taps: np.ndarray
    rows: np.ndarray


@dataclasses.dataclass(frozen=True)
class MLPLayout:
    """Static structure of a compact MLP (numpy int32 arrays).

    fc, cl: the kernels' Compact layouts. active: [A] hidden units with a kept cl weight,
    ordered by fc fan-in. fc_buckets: their inputs (:class:`FanInBucket`). cl_rows: [nnz_cl]
    position in ``active`` of each cl entry's unit.
    """

    fc: Compact
    cl: Compact
    active: np.ndarray
    fc_buckets: tuple
    cl_rows: np.ndarray

    @property
    def layouts(self) -> dict:
        return {"fc/kernel": self.fc, "cl/kernel": self.cl}


def _mask(masks, shapes, name: str) -> np.ndarray:
    m = masks[name]["kernel"]
    if m is None:  # a layer left dense: every entry kept
        return np.ones(tuple(shapes[name]["kernel"].shape), bool)
    return np.asarray(m)


def _bucket_bounds(fan: np.ndarray) -> list:
    """[(start, stop)] over fan-ins ``fan`` [n] sorted ascending (see PAD_RATIO)."""
    bounds, start = [], 0
    while start < fan.size:
        stop = int(np.searchsorted(fan, max(PAD_RATIO * fan[start], fan[start]), side="right"))
        bounds.append((start, stop))
        start = stop
    return bounds


def fan_in_buckets(kernel: Compact, units: np.ndarray) -> tuple:
    """The :class:`FanInBucket` s computing output units ``units`` [n] (ordered by fan-in,
    ascending) of a compact kernel: a unit's output is row ``i`` of
    :func:`sparse_matmul_t` when it is ``units[i]``."""
    fan = np.bincount(kernel.cols, minlength=kernel.shape[1])
    first = np.concatenate([[0], np.cumsum(fan)[:-1]])  # unit u's entries: first[u] + 0..
    if np.any(np.diff(fan[units]) < 0):
        raise ValueError("units must be ordered by fan-in")
    buckets = []
    for start, stop in _bucket_bounds(fan[units]):
        sel = units[start:stop]
        tap = np.arange(fan[sel].max(initial=0))[None, :]
        real = tap < fan[sel][:, None]
        taps = np.where(real, first[sel][:, None] + tap, kernel.nnz)
        rows = np.where(real, kernel.rows[np.minimum(taps, max(kernel.nnz - 1, 0))], 0)
        buckets.append(FanInBucket(taps.astype(np.int32), rows.astype(np.int32)))
    return tuple(buckets)


def mlp_layout(masks, shapes) -> MLPLayout:
    """The compact structure of an MLP from its keep-masks ``{'fc': {'kernel'}, 'cl': ...}``
    (``None`` = dense layer) and its param shapes (e.g. ``run.param_shapes``)."""
    fc, cl = layout_of(_mask(masks, shapes, "fc")), layout_of(_mask(masks, shapes, "cl"))
    width = fc.shape[1]
    if cl.shape[0] != width:
        raise ValueError(f"fc width {width} != cl fan-in {cl.shape[0]}")
    fan = np.bincount(fc.cols, minlength=width)
    active = np.unique(cl.rows)
    active = active[np.argsort(fan[active], kind="stable")].astype(np.int32)
    position = np.full(width, -1, np.int64)
    position[active] = np.arange(active.size)
    return MLPLayout(
        fc=fc,
        cl=cl,
        active=active,
        fc_buckets=fan_in_buckets(fc, active),
        cl_rows=position[cl.rows].astype(np.int32),
    )


def sparse_matmul_t(xt, values, buckets: tuple):
    """``(x @ W).T`` restricted to the buckets' units: [n, B]. xt: x.T [fan_in, B]; values:
    the kernel's compact values [nnz]; buckets: :func:`fan_in_buckets`."""
    padded = jnp.concatenate([values, jnp.zeros((1,), values.dtype)])
    parts = [
        jnp.einsum("ukb,uk->ub", xt[b.rows], padded[b.taps])
        if b.taps.shape[1]
        else jnp.zeros((b.taps.shape[0], xt.shape[1]), xt.dtype)
        for b in buckets
    ]
    return jnp.concatenate(parts, 0) if len(parts) > 1 else parts[0]


def mlp_apply(params, x, layout: MLPLayout, activation: str = "relu"):
    """Logits [B, C] f32 of the compact MLP. x: [B, ...] (flattened); params compact."""
    xt = x.reshape((x.shape[0], -1)).astype(jnp.float32).T
    fc, cl = params["fc"], params["cl"]
    h = sparse_matmul_t(xt, fc["kernel"], layout.fc_buckets)
    if "bias" in fc:
        h = h + fc["bias"][layout.active][:, None]
    if activation == "relu":
        h = jax.nn.relu(h)
    w = jnp.zeros((layout.active.size, layout.cl.shape[1]), cl["kernel"].dtype)
    w = w.at[layout.cl_rows, layout.cl.cols].set(cl["kernel"])
    out = h.T @ w
    if "bias" in cl:
        out = out + cl["bias"]
    return out
