"""Export our variables / run workdirs / npz files as the baseline's model file + smask.pt."""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import numpy as np

from widesparse_jax import tree
from widesparse_jax.baseline.formats import _get, load_npz, variables_to_state_dict
from widesparse_jax.baseline.layout import resnet18_layout
from widesparse_jax.baseline.optimizer import (
    _RESNET_ARG_DEFAULTS,
    _scheduler_state,
    make_args,
    momentum_to_optimizer_state,
)
from widesparse_jax.baseline.smask import masks_to_smask
from widesparse_jax.torch_reference import require_torch


def export_baseline(
    variables: Mapping[str, Any],
    masks: Optional[Mapping[str, Any]],
    out_dir: str,
    *,
    width: int,
    num_classes: int,
    base_width: Optional[int] = None,
    stem: str = "cifar",
    in_channels: int = 3,
    momentum: Optional[Mapping] = None,
    epoch: int = -1,
    num_batches_tracked: int = 0,
    current_acc: float = 0.0,
    best_acc: float = 0.0,
    model_name: str = "model_final.pt",
    args: Optional[Mapping[str, Any]] = None,
) -> tuple[str, str]:
    """Writes our ResNet-18 variables (+ masks, momentum) as the baseline's files.

    Writes ``out_dir/model_name`` (``{epoch, args, current_acc, best_acc, state_dict,
    optimizer, scheduler}``) and ``out_dir/smask.pt``. ``args`` overrides fields of the
    baseline's args Namespace (lr, momentum, wd, seed, dataset, ...). The baseline's epoch
    convention: 0 = init file, -1 = final file. Returns (model path, smask path).
    """
    torch = require_torch()
    layout = resnet18_layout(width, num_classes, in_channels, stem)
    a = dict(args or {})
    a.update(
        width=int(width),
        num_classes=int(num_classes),
        num_in_channels=int(in_channels),
        base_width=int(base_width if base_width is not None else width),
    )
    ns = make_args(**a)
    sd = variables_to_state_dict(variables, layout, num_batches_tracked)
    opt = momentum_to_optimizer_state(
        momentum, layout, lr=ns.lr, momentum_coef=ns.momentum, weight_decay=ns.wd
    )
    ckpt = {
        "epoch": int(epoch),
        "args": ns,
        "current_acc": current_acc,
        "best_acc": best_acc,
        "state_dict": sd,
        "optimizer": opt,
        "scheduler": _scheduler_state(ns.lr, max(int(epoch), 0)),
    }
    os.makedirs(out_dir, exist_ok=True)
    mpath = os.path.join(out_dir, model_name)
    spath = os.path.join(out_dir, "smask.pt")
    torch.save(ckpt, mpath)
    torch.save(masks_to_smask(masks, layout), spath)
    return mpath, spath


def _load_ours(src: str) -> tuple[dict, dict, Optional[dict], dict]:
    """Our variables from a .npz (:func:`save_npz`) or a checkpoint dir (checkpoint module)."""
    if os.path.isdir(src):
        from widesparse_jax import restore  # lazy: the npz path needs no JAX training stack

        variables, masks, config = restore.load_variables(src)
        cfg = (
            dict(config)
            if isinstance(config, Mapping)
            else (config.to_dict() if hasattr(config, "to_dict") else {})
        )

        def to_np(t):
            return {
                k: to_np(v)
                if isinstance(v, Mapping)
                # noqa: E731
                else (None if v is None else np.asarray(v))
                for k, v in t.items()
            }

        variables = {k: to_np(v) for k, v in variables.items() if k in ("params", "batch_stats")}
        return variables, to_np(masks) if masks is not None else None, None, cfg
    return load_npz(src)


def _args_from_meta(meta: Mapping[str, Any]) -> dict:
    """Baseline args fields from our run config (nested ``config.to_dict()``) or npz metadata."""
    out = {
        k: v
        for k, v in dict(meta.get("baseline_args") or {}).items()
        if k in _RESNET_ARG_DEFAULTS and k not in ("width", "num_classes", "num_in_channels")
    }
    for field, names in (
        ("lr", ("optimizer.lr", "lr")),
        ("momentum", ("optimizer.momentum",)),
        ("wd", ("optimizer.weight_decay",)),
        ("seed", ("train.seed", "seed")),
        ("mbs", ("train.batch_size",)),
        ("num_epochs", ("train.num_epochs",)),
        ("scheduler", ("optimizer.schedule",)),
        ("dataset", ("dataset.name",)),
    ):
        v = _meta_get(meta, *names)
        if v is not None:
            out[field] = v
    if out.get("dataset") == "svhn_cropped":
        out["dataset"] = "svhn"
    if _meta_get(meta, "sparsity.granularity") == "kernel":
        out["io_only"] = True
    return out


def export_from(
    src: str,
    out_dir: str,
    *,
    width: Optional[int] = None,
    num_classes: Optional[int] = None,
    base_width: Optional[int] = None,
    stem: Optional[str] = None,
    epoch: int = -1,
    model_name: str = "model_final.pt",
    args: Optional[Mapping[str, Any]] = None,
) -> tuple[str, str]:
    """Our run (checkpoint workdir via ``restore.load_variables``, or a .npz written by
    :func:`save_npz` / ``convert``) -> the baseline's model file + smask.pt in ``out_dir``.

    Width, classes, input channels and stem are read from the params (conv1/linear kernels)
    and checked against the given values; base width and hyper-parameters come from the
    run's config / npz metadata unless given. Momentum is exported when the .npz holds it
    (``restore.load_variables`` does not return the optimizer state).
    """
    variables, masks, momentum, meta = _load_ours(src)
    model = _meta_get(meta, "model.name", "model")
    if model not in (None, "resnet18"):
        raise ValueError(f"export supports the ResNet-18 only; {src!r} holds model {model!r}")
    params = variables["params"]
    conv1 = np.shape(_get(params, ("conv1", "kernel"), f"{src!r} params"))
    lin = np.shape(_get(params, ("linear", "kernel"), f"{src!r} params"))
    found = {"width": conv1[-1], "num_classes": lin[-1]}
    for name, want in (("width", width), ("num_classes", num_classes)):
        if want is not None and int(want) != int(found[name]):
            raise ValueError(
                f"{src!r}: params have {name}={found[name]} (conv1/kernel {conv1}, "
                f"linear/kernel {lin}), but {name}={want} was requested"
            )
    got_stem = {3: "cifar", 7: "imagenet"}.get(int(conv1[0]))
    if stem is not None and stem != got_stem:
        raise ValueError(f"{src!r}: conv1/kernel {conv1} is the {got_stem} stem, not {stem!r}")
    base = (
        base_width if base_width is not None else _meta_get(meta, "model.base_width", "base_width")
    )
    a = _args_from_meta(meta)
    a.update(args or {})
    return export_baseline(
        variables,
        masks,
        out_dir,
        width=int(found["width"]),
        num_classes=int(found["num_classes"]),
        base_width=None if base is None else int(base),
        stem=got_stem or "cifar",
        in_channels=int(conv1[2]),
        momentum=momentum,
        epoch=epoch,
        model_name=model_name,
        args=a,
    )


def _meta_get(meta: Mapping[str, Any], *names: str) -> Any:
    """The first of the dotted fields ``names`` present (and not None) in ``meta``, or None."""
    for n in names:
        v = tree.get_dotted(meta, n, None)
        if v is not None:
            return v
    return None
