"""Read and write the PyTorch baseline's files (google-research/wide-sparse-nets).

Baseline formats (ResNet18/ folder):

* ``model_{init,final,last,best}.pt``: a pickled dict ``{epoch, args (argparse.Namespace),
  current_acc, best_acc, state_dict, optimizer (torch SGD state_dict), scheduler}``.
* ``smask.pt``: ``{underscore layer name: bool tensor (True = FROZEN) | None (dense)}``;
  full weight shape, or (out, in) for conv layers in the baseline's io_only mode.
* ``stats.pt``: ``{'loss': {epoch: {'train', 'test'}}, 'acc1': {epoch: {...}}}`` (percent).

MLP/ folder: ``*.ckpt`` = ``{epoch, state_dict, optimizer, args}`` with ``layers.fc.*``,
``layers.cl.*`` (and ``layers.bn.*`` with BatchNorm). There is no mask file: the baseline
itself recovers its smask as ``weight == 0`` (MLP/main.py), and so does :func:`load_baseline`
when ``args.width > args.base_width``. Its ``stats.pth`` uses ``'acc'`` (a fraction).

This project's side (docs/contracts.md): Flax variables ``{'params', 'batch_stats'}`` of
``models.ResNet18`` / ``models.MLP`` (HWIO conv kernels, (in, out) dense kernels, BN
``scale/bias`` + ``mean/var``) and a keep-mask pytree (True = KEEP, None = dense / uncounted).

Conversion rules: conv OIHW <-> HWIO, linear (out, in) <-> (in, out), BN weight/bias <->
scale/bias, running_mean/var <-> mean/var (eval-mode identical: both use var + eps; note
PyTorch *updates* running_var with the unbiased batch variance, Flax with the biased one),
``layer2.0.shortcut.0.weight`` <-> ``layer2_0/shortcut_0/kernel``, smask True = frozen <->
mask True = keep. ``num_batches_tracked`` (int64) is not kept on our side; it is written as
``num_batches_tracked`` (argument) on export. Momentum buffers of torch SGD (indexed in
``model.parameters()`` order) <-> a params-shaped pytree (optax ``TraceState.trace``).

CLI (``python -m widesparse_jax.baseline``)::

  logits  --model-file M [--mask-file S] --width W --num-classes C --input X.npy --output Y.npy
  convert --model-file M [--mask-file S] --width W --num-classes C --output V.npz
  export  --input (ckpt dir | V.npz) --out-dir D [--width W --num-classes C --base-width B ...]
  stats   --stats-file stats.pt

torch is optional (``pip install -e .[torch]``) and imported lazily.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
from typing import Any, Mapping, Optional, Sequence

import numpy as np

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

# --------------------------------------------------------------------------- layouts


@dataclasses.dataclass(frozen=True)
class Layer:
    """One module of the baseline: torch prefix, our path, kind and torch weight shape."""

    prefix: str  # 'layer2.0.shortcut.0'
    path: tuple[str, ...]  # ('layer2_0', 'shortcut_0')
    kind: str  # 'conv' | 'bn' | 'linear'
    shape: tuple[int, ...]  # torch weight shape (conv OIHW, linear (out, in), bn (C,))
    bias: bool = True  # linear only

    @property
    def smask_key(self) -> str:
        return "_".join(self.path)


@dataclasses.dataclass(frozen=True)
class Layout:
    """The ordered modules of a baseline model (order = ``model.parameters()`` order)."""

    model: str  # 'resnet18' | 'mlp'
    layers: tuple[Layer, ...]
    description: str

    def param_keys(self) -> list[str]:
        """state_dict keys of the trainable parameters in ``model.parameters()`` order."""
        keys = []
        for l in self.layers:
            if l.kind == "conv":
                keys.append(f"{l.prefix}.weight")
            elif l.kind == "bn" or (l.kind == "linear" and l.bias):
                keys += [f"{l.prefix}.weight", f"{l.prefix}.bias"]
            else:
                keys.append(f"{l.prefix}.weight")
        return keys

    def weight_layers(self) -> list[Layer]:
        return [l for l in self.layers if l.kind in ("conv", "linear")]


def resnet18_layout(
    width: int, num_classes: int, in_channels: int = 3, stem: str = "cifar"
) -> Layout:
    """Layout of the baseline ResNet-18 (and our ``models.ResNet18``) for these sizes."""
    for name, v in (("width", width), ("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"stem={stem!r}; allowed: 'cifar', 'imagenet'")
    k = 3 if stem == "cifar" else 7
    w = int(width)
    layers = [
        Layer("conv1", ("conv1",), "conv", (w, in_channels, k, k)),
        Layer("bn1", ("bn1",), "bn", (w,)),
    ]
    cin = w
    for s, mult in enumerate((1, 2, 4, 8), start=1):
        cout = mult * w
        for b in range(2):
            t, p = f"layer{s}.{b}", f"layer{s}_{b}"
            c_in_block = cin if b == 0 else cout
            layers += [
                Layer(f"{t}.conv1", (p, "conv1"), "conv", (cout, c_in_block, 3, 3)),
                Layer(f"{t}.bn1", (p, "bn1"), "bn", (cout,)),
                Layer(f"{t}.conv2", (p, "conv2"), "conv", (cout, cout, 3, 3)),
                Layer(f"{t}.bn2", (p, "bn2"), "bn", (cout,)),
            ]
            if b == 0 and (s > 1 or c_in_block != cout):
                layers += [
                    Layer(f"{t}.shortcut.0", (p, "shortcut_0"), "conv", (cout, c_in_block, 1, 1)),
                    Layer(f"{t}.shortcut.1", (p, "shortcut_1"), "bn", (cout,)),
                ]
        cin = cout
    layers.append(Layer("linear", ("linear",), "linear", (int(num_classes), 8 * w)))
    return Layout(
        "resnet18",
        tuple(layers),
        f"resnet18 width={width} num_classes={num_classes} in_channels={in_channels} stem={stem}",
    )


def mlp_layout(
    width: int, num_classes: int, input_dim: int = 784, batch_norm: bool = False, bias: bool = True
) -> Layout:
    """Layout of the baseline MLP1 / our ``models.MLP``: ``layers.fc`` -> ``fc``, etc.

    ``model.parameters()`` order is fc, cl, bn (the baseline adds ``bn`` to its ModuleDict last).
    """
    for name, v in (("width", width), ("num_classes", num_classes), ("input_dim", input_dim)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    layers = [
        Layer("layers.fc", ("fc",), "linear", (int(width), int(input_dim)), bias),
        Layer("layers.cl", ("cl",), "linear", (int(num_classes), int(width)), bias),
    ]
    if batch_norm:
        layers.append(Layer("layers.bn", ("bn",), "bn", (int(width),)))
    return Layout(
        "mlp",
        tuple(layers),
        f"mlp width={width} num_classes={num_classes} input_dim={input_dim} "
        f"batch_norm={batch_norm} bias={bias}",
    )


def detect_model(state_dict: Mapping[str, Any]) -> str:
    """'resnet18' or 'mlp' from a state_dict's keys; ValueError otherwise."""
    if "conv1.weight" in state_dict and "linear.weight" in state_dict:
        return "resnet18"
    if "layers.fc.weight" in state_dict and "layers.cl.weight" in state_dict:
        return "mlp"
    raise ValueError(
        "model file holds neither the baseline ResNet-18 (conv1.weight, "
        "linear.weight) nor its MLP (layers.fc.weight, layers.cl.weight); keys: "
        f"{sorted(state_dict)[:8]} ..."
    )


def layout_for_state_dict(
    state_dict: Mapping[str, Any], width: int, num_classes: int, stem: Optional[str] = None
) -> Layout:
    """Requested-size layout of the model found in ``state_dict`` (in_channels, stem, MLP
    input_dim / BN / bias are read from the file; width and classes are the caller's)."""
    model = detect_model(state_dict)
    if model == "resnet18":
        w = state_dict["conv1.weight"]
        if len(w.shape) != 4:
            raise ValueError(
                f"key 'conv1.weight' has shape {tuple(w.shape)}, expected 4-D (O, I, kh, kw)"
            )
        if stem is None:
            stem = {3: "cifar", 7: "imagenet"}.get(int(w.shape[-1]))
            if stem is None:
                raise ValueError(
                    f"key 'conv1.weight' has kernel size {tuple(w.shape[-2:])}; "
                    "expected 3x3 (cifar stem) or 7x7 (imagenet stem)"
                )
        return resnet18_layout(width, num_classes, int(w.shape[1]), stem)
    fc = state_dict["layers.fc.weight"]
    return mlp_layout(
        width,
        num_classes,
        int(fc.shape[1]),
        batch_norm="layers.bn.weight" in state_dict,
        bias="layers.fc.bias" in state_dict,
    )


# --------------------------------------------------------------------------- torch I/O


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


def _check_shape(
    what: str, key: str, found: Sequence[int], expected: Sequence[int], layout: Layout
) -> None:
    if tuple(found) != tuple(expected):
        raise ValueError(
            f"{what}: key {key!r} has shape {tuple(found)}, expected {tuple(expected)} "
            f"for {layout.description}"
        )


def _to_ours(kind: str, w: np.ndarray) -> np.ndarray:
    if kind == "conv":
        return np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)))  # OIHW -> HWIO
    if kind == "linear" and w.ndim == 2:
        return np.ascontiguousarray(w.T)
    return w


def _to_torch(kind: str, w: np.ndarray) -> np.ndarray:
    if kind == "conv":
        return np.ascontiguousarray(np.transpose(w, (3, 2, 0, 1)))  # HWIO -> OIHW
    if kind == "linear" and w.ndim == 2:
        return np.ascontiguousarray(w.T)
    return w


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


# --------------------------------------------------------------------------- masks


def empty_masks(params: Mapping[str, Any]) -> dict:
    """A mask pytree of all-None leaves mirroring ``params`` (dense)."""
    return {k: empty_masks(v) if isinstance(v, Mapping) else None for k, v in params.items()}


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


# --------------------------------------------------------------------------- optimizer state


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


def set_momentum(opt_state: Any, momentum: PyTree) -> Any:
    """``opt_state`` with its ``TraceState.trace`` replaced by ``momentum`` (same structure)."""
    import jax  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top

    old = get_momentum(opt_state)
    if old is None:
        raise ValueError("opt_state holds no optax TraceState (momentum buffer) to set")
    new = jax.tree.map(
        lambda o, n: np.asarray(n, np.asarray(o).dtype).reshape(np.shape(o)), old, momentum
    )
    return optax.tree_utils.tree_set(opt_state, trace=new)


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


# --------------------------------------------------------------------------- high level


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


# --------------------------------------------------------------------------- logits


def flax_logits(
    variables: Mapping[str, Any],
    layout: Layout,
    x: np.ndarray,
    batch_size: int = 256,
    mlp_kwargs: Optional[Mapping[str, Any]] = None,
) -> np.ndarray:
    """Eval-mode logits [N, C] float32 of our Flax model for ``layout`` (x NHWC or [N, d])."""
    import jax  # pylint: disable=g-import-not-at-top

    from widesparse_jax import models  # pylint: disable=g-import-not-at-top

    num_classes = layout.weight_layers()[-1].shape[0]
    if layout.model == "resnet18":
        conv1 = layout.layers[0].shape
        if x.ndim != 4 or x.shape[-1] != conv1[1]:
            raise ValueError(f"input must be NHWC float32 with C={conv1[1]}, got shape {x.shape}")
        module = models.ResNet18(
            width=conv1[0], num_classes=num_classes, stem="cifar" if conv1[-1] == 3 else "imagenet"
        )
    else:
        fc = layout.layers[0]
        kw = dict(use_bias=fc.bias, batch_norm=any(l.kind == "bn" for l in layout.layers))
        kw.update(mlp_kwargs or {})
        module = models.MLP(width=fc.shape[0], num_classes=num_classes, **kw)
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


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m widesparse_jax.baseline",
        description="PyTorch baseline (wide-sparse-nets) interop.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def model_args(q):
        q.add_argument("--model-file", required=True)
        q.add_argument("--mask-file", default=None)
        q.add_argument("--width", type=int, required=True)
        q.add_argument("--num-classes", type=int, required=True)
        q.add_argument(
            "--allow-pickle",
            action="store_true",
            help="load with weights_only=False (trusted files only)",
        )

    q = sub.add_parser("logits", help="eval-mode logits of a baseline file with our Flax model")
    model_args(q)
    q.add_argument("--input", required=True, help=".npy, NHWC float32 (MLP: [N, d] or images)")
    q.add_argument("--output", required=True, help=".npy, float32 [N, C]")
    q = sub.add_parser("convert", help="baseline files -> .npz of our variables + masks")
    model_args(q)
    q.add_argument("--output", required=True)
    q = sub.add_parser("export", help="our checkpoint dir or .npz -> model file + smask.pt")
    q.add_argument("--input", required=True, help="checkpoint dir (restore.load_variables) or .npz")
    q.add_argument("--out-dir", required=True)
    q.add_argument("--width", type=int, default=None)
    q.add_argument("--num-classes", type=int, default=None)
    q.add_argument("--base-width", type=int, default=None)
    q.add_argument("--stem", default=None, choices=["cifar", "imagenet"])
    q.add_argument("--epoch", type=int, default=-1)
    q.add_argument("--model-name", default="model_final.pt")
    q.add_argument("--lr", type=float, default=None)
    q = sub.add_parser("stats", help="print a stats.pt log as JSON")
    q.add_argument("--stats-file", required=True)
    return p


def _meta_get(meta: Mapping[str, Any], *names: str) -> Any:
    for n in names:
        node = meta
        ok = True
        for part in n.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                ok = False
                break
        if ok and node is not None:
            return node
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit code (errors: message on stderr, code 2)."""
    a = _parser().parse_args(argv)
    try:
        if a.cmd == "logits":
            if not os.path.isfile(a.input):
                raise ValueError(f"--input {a.input!r}: no such file")
            x = np.load(a.input, allow_pickle=False)
            if x.dtype != np.float32:
                x = x.astype(np.float32)
            y = baseline_logits(
                a.model_file,
                a.mask_file,
                x,
                width=a.width,
                num_classes=a.num_classes,
                allow_pickle=a.allow_pickle,
            )
            np.save(a.output, y)
            print(f"wrote {a.output} {y.shape} float32")
        elif a.cmd == "convert":
            bm = load_baseline(
                a.model_file,
                a.mask_file,
                width=a.width,
                num_classes=a.num_classes,
                allow_pickle=a.allow_pickle,
            )
            meta = {
                "model": bm.layout.model,
                "width": a.width,
                "num_classes": a.num_classes,
                "layout": bm.layout.description,
                "epoch": bm.epoch,
                "base_width": bm.args.get("base_width"),
                "source": os.path.abspath(a.model_file),
                "baseline_args": {
                    k: v
                    for k, v in bm.args.items()
                    if v is None or isinstance(v, (bool, int, float, str))
                },
            }
            save_npz(a.output, bm.variables, bm.masks, bm.momentum, meta)
            print(f"wrote {a.output}")
        elif a.cmd == "export":
            overrides = {"lr": a.lr} if a.lr is not None else {}
            paths = export_from(
                a.input,
                a.out_dir,
                width=a.width,
                num_classes=a.num_classes,
                base_width=a.base_width,
                stem=a.stem,
                epoch=a.epoch,
                model_name=a.model_name,
                args=overrides,
            )
            print("wrote " + " ".join(paths))
        elif a.cmd == "stats":
            s = read_stats(a.stats_file)
            print(json.dumps({k: v.tolist() for k, v in s.items()}))
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
