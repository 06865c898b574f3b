"""The baseline's ``smask.pt`` (True = frozen) <-> our keep-mask pytrees (True = keep)."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from widesparse_jax.baseline.formats import _get, _np, _set, empty_masks
from widesparse_jax.baseline.layout import Layout, _check_shape, _to_ours, _to_torch
from widesparse_jax.torch_reference import require_torch


def smask_to_masks(
    smask: Optional[Mapping[str, Any]], params: Mapping[str, Any], layout: Layout
) -> dict:
    """Baseline smask (True = frozen, None = dense) -> our keep-mask pytree mirroring params.

    io_only masks of shape (out, in) are broadcast over the kernel window. Keys missing from
    ``smask`` are dense. Raises ValueError for an unknown key, a non-bool value or a shape
    mismatch (naming the key, expected and found shapes).
    """
    masks = empty_masks(params)
    if smask is None:
        return masks
    by_key = {l.smask_key: l for l in layout.weight_layers()}
    for key, m in smask.items():
        if key not in by_key:
            raise ValueError(f"mask file: unknown layer key {key!r}; allowed: {sorted(by_key)}")
        if m is None:
            continue
        l = by_key[key]
        a = _np(m)
        if a.dtype != np.bool_:
            raise ValueError(
                f"mask file: key {key!r} has dtype {a.dtype}, expected bool (True = frozen)"
            )
        if l.kind == "conv" and a.shape == l.shape[:2]:
            a = np.broadcast_to(a[:, :, None, None], l.shape)  # baseline io_only mask
        _check_shape("mask file", key, a.shape, l.shape, layout)
        _set(masks, l.path + ("kernel",), _to_ours(l.kind, ~a))
    return masks


def masks_to_smask(masks: Optional[Mapping[str, Any]], layout: Layout) -> dict:
    """Our keep-mask pytree -> baseline smask dict (torch.bool, True = frozen, None = dense).

    Keys are ordered like the baseline's (layers sorted by size, largest first, ties in forward
    order). A layer whose mask keeps everything is still written as a tensor.
    """
    torch = require_torch()
    layers = layout.weight_layers()
    order = sorted(range(len(layers)), key=lambda i: -int(np.prod(layers[i].shape)))
    out = {}
    for i in order:
        l = layers[i]
        m = None
        if masks is not None:
            try:
                m = _get(masks, l.path + ("kernel",), "masks")
            except ValueError:
                m = None
        if m is None:
            out[l.smask_key] = None
            continue
        a = np.asarray(m)
        if a.dtype != np.bool_:
            raise ValueError(
                f"masks: leaf {'/'.join(l.path)}/kernel has dtype {a.dtype}, expected bool"
            )
        frozen = ~_to_torch(l.kind, a)
        _check_shape("masks", "/".join(l.path + ("kernel",)), frozen.shape, l.shape, layout)
        out[l.smask_key] = torch.from_numpy(np.ascontiguousarray(frozen))
    return out


def apply_keep_masks(params: Mapping[str, Any], masks: Mapping[str, Any]) -> dict:
    """params with entries where ``mask`` is False set to 0.0 (numpy; None leaves untouched)."""
    out = {}
    for k, v in params.items():
        m = masks.get(k) if isinstance(masks, Mapping) else None
        if isinstance(v, Mapping):
            out[k] = apply_keep_masks(v, m if isinstance(m, Mapping) else {})
        elif m is None:
            out[k] = v
        else:
            out[k] = np.where(np.asarray(m), np.asarray(v), np.zeros((), np.asarray(v).dtype))
    return out


def count_kept(masks: Mapping[str, Any], params: Mapping[str, Any], layout: Layout) -> dict:
    """{smask key: kept weights} per weight layer (a None mask keeps the whole layer)."""
    out = {}
    for l in layout.weight_layers():
        m = _get(masks, l.path + ("kernel",), "masks")
        out[l.smask_key] = int(np.prod(l.shape)) if m is None else int(np.sum(np.asarray(m)))
    return out
