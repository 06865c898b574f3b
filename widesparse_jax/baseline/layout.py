"""Layouts of the baseline's models and the flax <-> torch weight layout conversion."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np


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
