"""The baseline's file formats: torch ``.pt`` state_dicts, ``stats.pt`` logs and our npz."""

from __future__ import annotations

import argparse
import collections
import json
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from widesparse_jax.baseline.layout import Layout, _check_shape, _to_ours, _to_torch
from widesparse_jax.torch_reference import require_torch


def load_torch_file(path: str, allow_pickle: bool = False) -> Any:
    """``torch.load`` on CPU with ``weights_only=True`` and ``argparse.Namespace`` allow-listed.

    allow_pickle=True falls back to ``weights_only=False`` (arbitrary code: trusted files only).
    """
    torch = require_torch()
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}")
    if allow_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals([argparse.Namespace, collections.Counter]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError or RuntimeError
        raise ValueError(
            f"{path!r} could not be loaded with weights_only=True ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300]}). If you trust the file, pass allow_pickle=True "
            "(CLI: --allow-pickle)."
        ) from e


def _np(t: Any) -> np.ndarray:
    if hasattr(t, "detach"):
        return t.detach().cpu().numpy().copy()
    return np.asarray(t).copy()


def _set(tree: dict, path: Sequence[str], value: Any) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _get(tree: Mapping, path: Sequence[str], what: str) -> Any:
    node = tree
    for i, p in enumerate(path):
        if not isinstance(node, Mapping) or p not in node:
            raise ValueError(f"{what}: missing entry {'/'.join(path[: i + 1])!r}")
        node = node[p]
    return node


def empty_masks(params: Mapping[str, Any]) -> dict:
    """A mask pytree of all-None leaves mirroring ``params`` (dense)."""
    return {k: empty_masks(v) if isinstance(v, Mapping) else None for k, v in params.items()}


def state_dict_to_variables(state_dict: Mapping[str, Any], layout: Layout) -> dict:
    """Baseline ``state_dict`` -> ``{'params': ..., 'batch_stats': ...}`` (numpy float32).

    Raises ValueError naming the key for a missing/unexpected key or a shape mismatch.
    MLPs without BatchNorm get an empty ``batch_stats`` dict.
    """
    expected = set()
    params: dict = {}
    stats: dict = {}
    for l in layout.layers:
        names = {
            "conv": ["weight"],
            "linear": ["weight"] + (["bias"] if l.bias else []),
            "bn": ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"],
        }[l.kind]
        for n in names:
            key = f"{l.prefix}.{n}"
            expected.add(key)
            if key not in state_dict:
                raise ValueError(f"model file: missing key {key!r} for {layout.description}")
            v = _np(state_dict[key])
            if n == "num_batches_tracked":
                continue
            exp = l.shape if n == "weight" or l.kind == "bn" else (l.shape[0],)
            _check_shape("model file", key, v.shape, exp, layout)
            v = v.astype(np.float32, copy=False)
            if l.kind == "bn":
                if n in ("weight", "bias"):
                    _set(params, l.path + ({"weight": "scale", "bias": "bias"}[n],), v)
                else:
                    _set(stats, l.path + ({"running_mean": "mean", "running_var": "var"}[n],), v)
            else:
                _set(params, l.path + ("kernel" if n == "weight" else "bias",), _to_ours(l.kind, v))
    extra = sorted(set(state_dict) - expected)
    if extra:
        raise ValueError(f"model file: unexpected keys {extra[:6]} for {layout.description}")
    return {"params": params, "batch_stats": stats}


def variables_to_state_dict(
    variables: Mapping[str, Any], layout: Layout, num_batches_tracked: int = 0
) -> "collections.OrderedDict":
    """Our variables -> a baseline ``state_dict`` (OrderedDict of CPU torch tensors, float32
    weights, int64 ``num_batches_tracked``), keys in the baseline module's order."""
    torch = require_torch()
    params = variables.get("params", variables)
    stats = variables.get("batch_stats", {})
    out = collections.OrderedDict()
    for l in layout.layers:
        if l.kind == "bn":
            entries = [
                ("weight", params, "scale"),
                ("bias", params, "bias"),
                ("running_mean", stats, "mean"),
                ("running_var", stats, "var"),
            ]
            for n, tree, ours in entries:
                v = np.asarray(_get(tree, l.path + (ours,), "variables"), np.float32)
                _check_shape("variables", "/".join(l.path + (ours,)), v.shape, l.shape, layout)
                out[f"{l.prefix}.{n}"] = torch.from_numpy(v.copy())
            out[f"{l.prefix}.num_batches_tracked"] = torch.tensor(
                int(num_batches_tracked), dtype=torch.int64
            )
            continue
        v = np.asarray(_get(params, l.path + ("kernel",), "variables"), np.float32)
        tv = _to_torch(l.kind, v)
        _check_shape("variables", "/".join(l.path + ("kernel",)), tv.shape, l.shape, layout)
        out[f"{l.prefix}.weight"] = torch.from_numpy(tv.copy())
        if l.kind == "linear" and l.bias:
            b = np.asarray(_get(params, l.path + ("bias",), "variables"), np.float32)
            _check_shape("variables", "/".join(l.path + ("bias",)), b.shape, (l.shape[0],), layout)
            out[f"{l.prefix}.bias"] = torch.from_numpy(b.copy())
    return out


def read_stats(path: str) -> dict:
    """Baseline training log -> plain python/numpy.

    Returns ``{'epochs': int array, 'train_loss', 'test_loss', 'train_acc1', 'test_acc1':
    float64 arrays}`` (acc1 in percent; the MLP's ``'acc'`` fractions are converted to percent);
    a missing value is NaN. Extra tags (acc5) appear as ``train_acc5``/``test_acc5``.
    """
    stats = load_torch_file(path)
    if not isinstance(stats, Mapping) or "loss" not in stats:
        raise ValueError(
            f"{path!r}: expected a dict with a 'loss' entry, got "
            f"{type(stats).__name__} {list(stats)[:5] if isinstance(stats, Mapping) else ''}"
        )
    tags = dict(stats)
    scale = {}
    if "acc" in tags and "acc1" not in tags:
        tags["acc1"] = tags.pop("acc")
        scale["acc1"] = 100.0
    epochs = sorted({int(e) for t in tags.values() for e in t})
    out: dict = {"epochs": np.asarray(epochs, np.int64)}
    for tag, per_epoch in tags.items():
        for split in ("train", "test"):
            vals = [
                float(per_epoch.get(e, {}).get(split, np.nan)) * scale.get(tag, 1.0) for e in epochs
            ]
            out[f"{split}_{tag}"] = np.asarray(vals, np.float64)
    return out


# --------------------------------------------------------------------------- npz format


def _flatten(tree: Mapping[str, Any], prefix: str, out: dict) -> None:
    for k, v in tree.items():
        if "/" in str(k):
            raise ValueError(f"key {k!r} contains '/', which the npz format uses as separator")
        name = f"{prefix}/{k}"
        if isinstance(v, Mapping):
            _flatten(v, name, out)
        elif v is not None:
            out[name] = np.asarray(v)


def save_npz(
    path: str,
    variables: Mapping[str, Any],
    masks: Optional[Mapping] = None,
    momentum: Optional[Mapping] = None,
    meta: Optional[Mapping[str, Any]] = None,
) -> None:
    """Flattened variables (``params/conv1/kernel``, ``batch_stats/bn1/mean``), non-None mask
    leaves (``masks/...``), momentum (``momentum/...``) and a JSON ``__meta__`` into one .npz."""
    out: dict = {}
    _flatten(variables, "", out)
    if masks is not None:
        _flatten(masks, "/masks", out)
    if momentum is not None:
        _flatten(momentum, "/momentum", out)
    out = {k.lstrip("/"): v for k, v in out.items()}
    out["__meta__"] = np.asarray(json.dumps(dict(meta or {})))
    np.savez(path, **out)


def load_npz(path: str) -> tuple[dict, dict, Optional[dict], dict]:
    """Inverse of :func:`save_npz`: (variables, masks (None where absent), momentum, meta)."""
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}")
    trees: dict = {}
    meta = {}
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            if k == "__meta__":
                meta = json.loads(str(z[k]))
                continue
            parts = k.split("/")
            _set(trees.setdefault(parts[0], {}), parts[1:], z[k])
    if "params" not in trees:
        raise ValueError(f"{path!r}: no 'params/...' arrays; keys look like {sorted(trees)[:5]}")
    variables = {"params": trees["params"], "batch_stats": trees.get("batch_stats", {})}
    masks = empty_masks(variables["params"])

    def fill(dst, src):
        for k, v in src.items():
            if isinstance(v, Mapping):
                fill(dst.setdefault(k, {}), v)
            else:
                dst[k] = v.astype(bool)

    fill(masks, trees.get("masks", {}))
    return variables, masks, trees.get("momentum"), meta
