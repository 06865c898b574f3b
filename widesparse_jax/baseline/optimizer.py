"""torch SGD / MultiStepLR state and the baseline's args <-> our momentum pytrees."""

from __future__ import annotations

import argparse
from typing import Any, Mapping, Optional

import numpy as np

from widesparse_jax.baseline.formats import _get, _np, _set
from widesparse_jax.baseline.layout import Layout, _check_shape, _to_ours, _to_torch
from widesparse_jax.torch_reference import require_torch

PyTree = Any

# Defaults of the baseline's ResNet18/main.py argparse (written into exported args).
_RESNET_ARG_DEFAULTS = dict(
    seed=None,
    half=False,
    workers=2,
    optimizer="sgd",
    momentum=0.9,
    wd=5e-4,
    scheduler="multistep",
    lr=0.1,
    num_epochs=300,
    dataset="cifar10",
    data_dir="./data",
    mbs=128,
    model_name="resnet18",
    base_width=64,
    width=64,
    io_only=False,
    num_in_channels=3,
    num_classes=10,
)
_MULTISTEP_MILESTONES = (50, 120, 200)


def optimizer_state_to_momentum(
    optimizer: Optional[Mapping[str, Any]], layout: Layout, params: Mapping[str, Any]
) -> Optional[dict]:
    """torch SGD state_dict -> params-shaped momentum pytree (numpy float32), or None if it
    holds no momentum buffers (e.g. before the first step). Parameters without a buffer get
    zeros (torch creates buffers lazily; a zero buffer and a missing one give the same step)."""
    if not optimizer or not optimizer.get("state"):
        return None
    keys = layout.param_keys()
    groups = optimizer.get("param_groups", [])
    ids = [i for g in groups for i in g.get("params", [])]
    if len(ids) != len(keys):
        raise ValueError(
            f"optimizer state: {len(ids)} parameters in param_groups, expected "
            f"{len(keys)} for {layout.description}"
        )
    by_key = dict(zip(keys, ids))
    mom: dict = {}
    found = False
    for l in layout.layers:
        if l.kind == "bn":
            pairs = [("weight", "scale", l.shape), ("bias", "bias", l.shape)]
        else:
            pairs = [("weight", "kernel", l.shape)]
            if l.kind == "linear" and l.bias:
                pairs.append(("bias", "bias", (l.shape[0],)))
        for n, ours, shape in pairs:
            key = f"{l.prefix}.{n}"
            st = optimizer["state"].get(by_key[key], {})
            buf = st.get("momentum_buffer")
            if buf is None:
                v = np.zeros(shape, np.float32)
            else:
                found = True
                v = _np(buf).astype(np.float32, copy=False)
                _check_shape("optimizer momentum_buffer", key, v.shape, shape, layout)
            _set(mom, l.path + (ours,), _to_ours(l.kind, v) if ours == "kernel" else v)
    return mom if found else None


def momentum_to_optimizer_state(
    momentum: Optional[Mapping[str, Any]],
    layout: Layout,
    *,
    lr: float,
    momentum_coef: float = 0.9,
    weight_decay: float = 5e-4,
    initial_lr: Optional[float] = None,
    nesterov: bool = False,
) -> dict:
    """params-shaped momentum pytree (or None) -> a torch SGD ``state_dict()`` (one param
    group, indices in ``model.parameters()`` order), loadable by ``torch.optim.SGD``."""
    torch = require_torch()
    keys = layout.param_keys()
    state = {}
    if momentum is not None:
        i = 0
        for l in layout.layers:
            names = (
                ["scale", "bias"]
                if l.kind == "bn"
                else ["kernel"] + (["bias"] if l.kind == "linear" and l.bias else [])
            )
            for ours in names:
                v = np.asarray(_get(momentum, l.path + (ours,), "momentum"), np.float32)
                if ours == "kernel":
                    v = _to_torch(l.kind, v)
                state[i] = {"momentum_buffer": torch.from_numpy(np.ascontiguousarray(v).copy())}
                i += 1
    # Take the group's keys from the installed torch so `load_state_dict` accepts it.
    dummy = torch.nn.Parameter(torch.zeros(1))
    group = torch.optim.SGD(
        [dummy], lr=lr, momentum=momentum_coef, weight_decay=weight_decay, nesterov=nesterov
    ).state_dict()["param_groups"][0]
    group = dict(
        group,
        params=list(range(len(keys))),
        initial_lr=float(lr if initial_lr is None else initial_lr),
    )
    return {"state": state, "param_groups": [group]}


def get_momentum(opt_state: Any) -> Optional[PyTree]:
    """The momentum buffer (optax ``TraceState.trace``) inside an optax state, or None."""
    import optax  # pylint: disable=g-import-not-at-top

    found = optax.tree_utils.tree_get(opt_state, "trace", default=None)
    return found


# --------------------------------------------------------------------------- scheduler / args


def _scheduler_state(
    lr: float, epoch: int, milestones=_MULTISTEP_MILESTONES, gamma: float = 0.1
) -> dict:
    """state_dict of the baseline's MultiStepLR after ``epoch`` scheduler steps."""
    torch = require_torch()
    dummy = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([dummy], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)
    sd = sched.state_dict()
    e = max(int(epoch), 0)
    cur = float(lr) * gamma ** sum(1 for m in milestones if m <= e)
    sd.update(last_epoch=e, _step_count=e + 1, _last_lr=[cur])
    return sd


def make_args(**kwargs) -> argparse.Namespace:
    """The baseline ResNet18/main.py args Namespace: its defaults, updated by kwargs."""
    unknown = set(kwargs) - set(_RESNET_ARG_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown baseline args {sorted(unknown)}; allowed: {sorted(_RESNET_ARG_DEFAULTS)}"
        )
    return argparse.Namespace(**dict(_RESNET_ARG_DEFAULTS, **kwargs))
