"""Eval-mode logits of baseline files, computed with our Flax models (built by ``setup``)."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from widesparse_jax.baseline.layout import Layout
from widesparse_jax.baseline.load import load_baseline


def flax_logits(
    variables: Mapping[str, Any],
    layout: Layout,
    x: np.ndarray,
    batch_size: int = 256,
    mlp_kwargs: Optional[Mapping[str, Any]] = None,
) -> np.ndarray:
    """Eval-mode logits [N, C] float32 of our Flax model for ``layout`` (x NHWC or [N, d])."""
    import jax

    from widesparse_jax import setup  # lazy: the file formats need no JAX

    num_classes = layout.weight_layers()[-1].shape[0]
    if layout.model == "resnet18":
        conv1 = layout.layers[0].shape
        if x.ndim != 4 or x.shape[-1] != conv1[1]:
            raise ValueError(f"input must be NHWC float32 with C={conv1[1]}, got shape {x.shape}")
        stem = "cifar" if conv1[-1] == 3 else "imagenet"
        model_config = {"name": "resnet18", "width": conv1[0], "stem": stem}
    else:
        fc = layout.layers[0]
        model_config = {"name": "mlp", "width": fc.shape[0], "use_bias": fc.bias}
        model_config["batch_norm"] = any(l.kind == "bn" for l in layout.layers)
        model_config.update(mlp_kwargs or {})
    module = setup.build_model(model_config, num_classes, x.shape[1:], axis_name=None)
    v = {"params": variables["params"]}
    if variables.get("batch_stats"):
        v["batch_stats"] = variables["batch_stats"]
    f = jax.jit(lambda v, xb: module.apply(v, xb, train=False))
    outs = [np.asarray(f(v, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return (
        np.concatenate(outs, 0).astype(np.float32)
        if outs
        else np.zeros((0, num_classes), np.float32)
    )


def _mlp_kwargs(args: Mapping[str, Any]) -> dict:
    """Our MLP options from the baseline MLP args (NTK style, linear)."""
    kw = {}
    if args.get("NTK_style"):
        kw["parametrization"] = "ntk"
    if args.get("make_linear"):
        kw["activation"] = "linear"
    return kw


def baseline_logits(
    model_file: str,
    mask_file: Optional[str],
    x: np.ndarray,
    *,
    width: int,
    num_classes: int,
    allow_pickle: bool = False,
) -> np.ndarray:
    """Eval-mode logits float32 [N, C] of a baseline file, computed with our Flax model."""
    bm = load_baseline(
        model_file, mask_file, width=width, num_classes=num_classes, allow_pickle=allow_pickle
    )
    return flax_logits(
        bm.variables,
        bm.layout,
        np.asarray(x, np.float32),
        mlp_kwargs=_mlp_kwargs(bm.args) if bm.layout.model == "mlp" else None,
    )
