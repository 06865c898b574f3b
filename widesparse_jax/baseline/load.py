"""Load a baseline model file (+ smask) into our variables, masks and momentum."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Mapping, Optional

from widesparse_jax.baseline.formats import _get, _set, load_torch_file, state_dict_to_variables
from widesparse_jax.baseline.layout import Layout, layout_for_state_dict
from widesparse_jax.baseline.optimizer import optimizer_state_to_momentum
from widesparse_jax.baseline.smask import apply_keep_masks, empty_masks, smask_to_masks


@dataclasses.dataclass
class BaselineModel:
    """A loaded baseline model file (numpy, our layouts)."""

    variables: dict  # {'params', 'batch_stats'}
    masks: dict  # keep-mask pytree (True = keep, None = dense)
    momentum: Optional[dict]  # params-shaped SGD momentum buffers, or None
    layout: Layout
    args: dict  # vars(args) of the file ({} if absent)
    epoch: Optional[int]
    info: dict  # current_acc, best_acc, optimizer hyper-parameters, scheduler


def _check_args(args: Mapping[str, Any], width: int, num_classes: int, path: str) -> None:
    for name, want in (("width", width), ("num_classes", num_classes)):
        got = args.get(name)
        if got is not None and int(got) != int(want):
            raise ValueError(
                f"{path!r}: args.{name}={got} in the file, but {name}={want} was requested"
            )


def load_baseline(
    model_file: str,
    mask_file: Optional[str] = None,
    *,
    width: int,
    num_classes: int,
    stem: Optional[str] = None,
    apply_masks: bool = True,
    allow_pickle: bool = False,
) -> BaselineModel:
    """Loads a baseline ``model_*.pt`` (ResNet-18) or MLP ``*.ckpt`` and optional ``smask.pt``.

    Args:
      model_file: path of the pickled checkpoint dict (or a bare state_dict).
      mask_file: the baseline's ``smask.pt``; None = dense, except for a sparse MLP
        (args.width > args.base_width) whose masks are ``weight != 0`` as in the baseline.
      width, num_classes: the sizes the file must have; a mismatch raises ValueError naming
        the key and the expected/found shapes.
      stem: 'cifar' | 'imagenet' | None (read from conv1's kernel size).
      apply_masks: zero masked weights (a no-op on the baseline's own files, which keep them 0).
    """
    ckpt = load_torch_file(model_file, allow_pickle=allow_pickle)
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{model_file!r} holds a {type(ckpt).__name__}, expected a dict")
    sd = ckpt["state_dict"] if "state_dict" in ckpt else ckpt
    args = (
        vars(ckpt["args"])
        if isinstance(ckpt.get("args"), argparse.Namespace)
        else dict(ckpt.get("args") or {})
    )
    layout = layout_for_state_dict(sd, width, num_classes, stem)
    variables = state_dict_to_variables(sd, layout)  # shape errors name the key
    _check_args(args, width, num_classes, model_file)
    if mask_file is not None:
        smask = load_torch_file(mask_file, allow_pickle=allow_pickle)
        if not isinstance(smask, Mapping):
            raise ValueError(f"{mask_file!r} holds a {type(smask).__name__}, expected a dict")
        masks = smask_to_masks(smask, variables["params"], layout)
    elif layout.model == "mlp" and args.get("width", 0) > args.get("base_width", 1 << 62):
        masks = empty_masks(variables["params"])
        for l in layout.weight_layers():
            k = _get(variables["params"], l.path + ("kernel",), "params")
            _set(masks, l.path + ("kernel",), k != 0)
    else:
        masks = empty_masks(variables["params"])
    if apply_masks:
        variables = dict(variables, params=apply_keep_masks(variables["params"], masks))
    opt = ckpt.get("optimizer") if isinstance(ckpt.get("optimizer"), Mapping) else None
    momentum = optimizer_state_to_momentum(opt, layout, variables["params"])
    info = {k: ckpt.get(k) for k in ("current_acc", "best_acc", "scheduler") if k in ckpt}
    if opt and opt.get("param_groups"):
        info["optimizer_hparams"] = {
            k: v for k, v in opt["param_groups"][0].items() if k != "params"
        }
    epoch = ckpt.get("epoch")
    return BaselineModel(
        variables, masks, momentum, layout, args, None if epoch is None else int(epoch), info
    )
