"""The one-hidden-layer MLP (``models/mlp.py``, standard parametrization) from kept weights.

Compact params: ``{'fc': {'kernel': [nnz_fc], 'bias': [n]}, 'cl': {'kernel': [nnz_cl],
'bias': [C]}}`` (values in :mod:`format` order). Only the *active* hidden units, those with
at least one kept classifier weight, are computed: a unit that feeds nothing has exactly zero
gradient under dense masking as well, so skipping it changes no number beyond float
round-off. Its weights stay in the compact params (weight decay still reaches them).

Forward (A active units, B examples): gather x.T rows [nnz_a, B] * values -> sorted
segment-sum into [A, B] + bias -> ReLU -> gather [nnz_cl, B] * values -> segment-sum [C, B].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from widesparse_jax.sparse.format import Compact, layout_of


@dataclasses.dataclass(frozen=True)
class MLPLayout:
    """Static structure of a compact MLP (numpy int32 arrays).

    fc, cl: the kernels' Compact layouts. active: [A] hidden units with a kept cl weight.
    fc_sel: [nnz_a] fc entries into active units; fc_rows / fc_seg: their input rows and
    active-unit ids (sorted). cl_rows: [nnz_cl] active-unit id of each cl entry.
    """

    fc: Compact
    cl: Compact
    active: np.ndarray
    fc_sel: np.ndarray
    fc_rows: np.ndarray
    fc_seg: np.ndarray
    cl_rows: np.ndarray

    @property
    def layouts(self) -> dict:
        return {"fc/kernel": self.fc, "cl/kernel": self.cl}


def _mask(masks, shapes, name: str) -> np.ndarray:
    m = masks[name]["kernel"]
    if m is None:  # a layer left dense: every entry kept
        return np.ones(tuple(shapes[name]["kernel"].shape), bool)
    return np.asarray(m)


def mlp_layout(masks, shapes) -> MLPLayout:
    """The compact structure of an MLP from its keep-masks ``{'fc': {'kernel'}, 'cl': ...}``
    (``None`` = dense layer) and its param shapes (e.g. ``run.param_shapes``)."""
    fc, cl = layout_of(_mask(masks, shapes, "fc")), layout_of(_mask(masks, shapes, "cl"))
    width = fc.shape[1]
    if cl.shape[0] != width:
        raise ValueError(f"fc width {width} != cl fan-in {cl.shape[0]}")
    active = np.unique(cl.rows).astype(np.int32)
    position = np.full(width, -1, np.int64)
    position[active] = np.arange(active.size)
    fc_sel = np.nonzero(position[fc.cols] >= 0)[0].astype(np.int32)
    return MLPLayout(
        fc=fc,
        cl=cl,
        active=active,
        fc_sel=fc_sel,
        fc_rows=fc.rows[fc_sel],
        fc_seg=position[fc.cols[fc_sel]].astype(np.int32),
        cl_rows=position[cl.rows].astype(np.int32),
    )


def _spmm_t(xt, values, rows, seg, n_out: int):
    """Sparse product, transposed layout: xt [d, B] -> [n_out, B] = W[:, :n_out].T @ xt."""
    contrib = xt[rows] * values[:, None]
    return jax.ops.segment_sum(contrib, seg, n_out, indices_are_sorted=True)


def mlp_apply(params, x, layout: MLPLayout, activation: str = "relu"):
    """Logits [B, C] f32 of the compact MLP. x: [B, ...] (flattened); params compact."""
    xt = x.reshape((x.shape[0], -1)).astype(jnp.float32).T
    a = layout.active.size
    fc, cl = params["fc"], params["cl"]
    h = _spmm_t(xt, fc["kernel"][layout.fc_sel], layout.fc_rows, layout.fc_seg, a)
    if "bias" in fc:
        h = h + fc["bias"][layout.active][:, None]
    if activation == "relu":
        h = jax.nn.relu(h)
    out = _spmm_t(h, cl["kernel"], layout.cl_rows, layout.cl.cols, layout.cl.shape[1])
    if "bias" in cl:
        out = out + cl["bias"][:, None]
    return out.T
