"""A minimal PyTorch twin of the baseline's models and masked-SGD step.

Written for comparisons only (JAX vs PyTorch, this project vs the baseline of
google-research/wide-sparse-nets). Parameter names follow the baseline exactly, so
`state_dict()` of these modules loads the baseline's `model_*.pt` files and vice versa:

ResNet-18 (`TorchResNet18`)::

    conv1.weight (w, Cin, 3, 3) | (w, Cin, 7, 7) imagenet stem
    bn1.{weight, bias, running_mean, running_var, num_batches_tracked}
    layer{1..4}.{0,1}.{conv1,conv2}.weight, layer{1..4}.{0,1}.{bn1,bn2}.*
    layer{2,3,4}.0.shortcut.0.weight (1x1 conv), layer{2,3,4}.0.shortcut.1.* (its BN)
    linear.{weight (C, 8w), bias (C,)}

MLP (`TorchMLP`, the baseline's `MLP1`)::

    layers.fc.{weight (n, d), bias (n,)}, layers.cl.{weight (C, n), bias (C,)}
    layers.bn.*  (optional BatchNorm1d after the activation, as in the baseline)

Masks here use the baseline's polarity: `smask[name]` is a bool tensor, True = frozen
(removed), or None for a dense layer; `name` is the underscore-joined module path
(`layer2_0_shortcut_0`, `fc`).

torch is an optional dependency (`pip install -e .[torch]`); it is imported lazily, and
every public function raises ImportError with that hint when it is missing.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Sequence

import numpy as np

_INSTALL_HINT = (
    "PyTorch is required for widesparse_jax.torch_reference / widesparse_jax.baseline; "
    "install the optional extra with `pip install -e .[torch]`."
)


def require_torch():
    """Returns the `torch` module, or raises ImportError naming the extra to install."""
    try:
        import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError(_INSTALL_HINT) from e
    return torch


def _torch_nn():
    """(torch.nn, torch.nn.functional)."""
    torch = require_torch()
    return torch.nn, torch.nn.functional


@functools.lru_cache(maxsize=None)
def _block_class():
    """The ResNet's BasicBlock class, built on first use (keeps `import torch` lazy)."""
    nn, F = _torch_nn()

    class BasicBlock(nn.Module):
        """conv3x3-BN-ReLU-conv3x3-BN + shortcut (1x1 conv + BN when shape changes), ReLU."""

        def __init__(self, in_planes: int, planes: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            else:
                self.shortcut = nn.Sequential()

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    return BasicBlock


@functools.lru_cache(maxsize=None)
def _resnet_class():
    """The `TorchResNet18` class, built on first use."""
    nn, F = _torch_nn()

    BasicBlock = _block_class()

    class TorchResNet18(nn.Module):
        """ResNet-18, widths (w, 2w, 4w, 8w), NCHW input.

        stem='cifar': conv3x3/1 pad 1 (the baseline's). stem='imagenet': conv7x7/2 pad 3,
        BN, ReLU, max-pool 3x3/2 pad 1. Head: global average pool (equal to the baseline's
        4x4 average pool on 32x32 CIFAR inputs), then `linear`.
        """

        def __init__(
            self, width: int, num_classes: int, num_in_channels: int = 3, stem: str = "cifar"
        ):
            super().__init__()
            if stem not in ("cifar", "imagenet"):
                raise ValueError(f"stem={stem!r}; allowed: 'cifar', 'imagenet'")
            if width < 1 or num_classes < 1:
                raise ValueError(f"width={width}, num_classes={num_classes}; both must be >= 1")
            self.stem = stem
            if stem == "cifar":
                self.conv1 = nn.Conv2d(num_in_channels, width, 3, stride=1, padding=1, bias=False)
            else:
                self.conv1 = nn.Conv2d(num_in_channels, width, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            in_planes = width
            for i, (mult, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 2))):
                planes = mult * width
                blocks = [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
                setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
                in_planes = planes
            self.linear = nn.Linear(8 * width, num_classes)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            if self.stem == "imagenet":
                out = F.max_pool2d(out, kernel_size=3, stride=2, padding=1)
            for i in range(1, 5):
                out = getattr(self, f"layer{i}")(out)
            out = out.mean(dim=(2, 3))
            return self.linear(out)

    return TorchResNet18


@functools.lru_cache(maxsize=None)
def _mlp_class():
    """The `TorchMLP` class, built on first use."""
    nn, F = _torch_nn()

    class TorchMLP(nn.Module):
        """The baseline's MLP1: fc -> (prefactor) -> ReLU -> [BatchNorm1d] -> cl (prefactor).

        ntk=True multiplies each layer's output by 1/sqrt(fan_in) (the baseline's NTK style).
        Input: [N, d] (images flattened by the caller).
        """

        def __init__(
            self,
            in_features: int,
            width: int,
            num_classes: int,
            batch_norm: bool = False,
            ntk: bool = False,
            bias: bool = True,
            linear: bool = False,
        ):
            super().__init__()
            layers = {
                "fc": nn.Linear(in_features, width, bias=bias),
                "cl": nn.Linear(width, num_classes, bias=bias),
            }
            if batch_norm:
                layers["bn"] = nn.BatchNorm1d(width, eps=1e-5, momentum=0.1)
            self.layers = nn.ModuleDict(layers)
            self.batch_norm = batch_norm
            self.activation = not linear
            self.prefactor = (
                {"fc": 1 / np.sqrt(in_features), "cl": 1 / np.sqrt(width)}
                if ntk
                else {"fc": 1.0, "cl": 1.0}
            )

        def forward(self, x):
            out = self.prefactor["fc"] * self.layers["fc"](x.reshape(x.shape[0], -1))
            if self.activation:
                out = F.relu(out)
            if self.batch_norm:
                out = self.layers["bn"](out)
            return self.prefactor["cl"] * self.layers["cl"](out)

    return TorchMLP


def resnet18(width: int, num_classes: int, num_in_channels: int = 3, stem: str = "cifar"):
    """Builds a `TorchResNet18` (baseline parameter names), float32, CPU."""
    return _resnet_class()(width, num_classes, num_in_channels, stem)


def mlp(
    in_features: int,
    width: int,
    num_classes: int,
    batch_norm: bool = False,
    ntk: bool = False,
    bias: bool = True,
    linear: bool = False,
):
    """Builds a `TorchMLP` (the baseline's MLP1 names `layers.fc`, `layers.cl`)."""
    return _mlp_class()(in_features, width, num_classes, batch_norm, ntk, bias, linear)


def smask_name_to_param(name: str) -> str:
    """Baseline smask key -> state_dict weight key: 'layer2_0_shortcut_0' -> 'layer2.0.shortcut.0.weight'.

    MLP keys ('fc', 'cl') map to 'layers.fc.weight' / 'layers.cl.weight'.
    """
    if name in ("fc", "cl"):
        return f"layers.{name}.weight"
    return name.replace("_", ".") + ".weight"


def make_sgd(model, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4):
    """torch.optim.SGD over `model.parameters()` with coupled weight decay (the baseline's)."""
    torch = require_torch()
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def apply_smask(model, smask: Mapping[str, Any]) -> None:
    """Zeroes frozen weights in place (smask: True = frozen, None = dense)."""
    torch = require_torch()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in smask.items():
            if m is None:
                continue
            w = params[smask_name_to_param(name)]
            w.masked_fill_(_expand(m, w.shape), 0)


def _expand(m, shape):
    """io_only masks are (O, I) for conv weights (O, I, kh, kw): broadcast them."""
    if m.dim() == 2 and len(shape) == 4:
        m = m[:, :, None, None]
    return m.expand(shape)


def masked_sgd_step(model, optimizer, smask: Optional[Mapping[str, Any]], x, y) -> float:
    """One baseline training step; returns the loss (before the update) as a float.

    Train-mode forward, mean cross-entropy, backward, frozen gradient entries set to 0
    (masked_fill with the smask, True = frozen), then `optimizer.step()` (SGD: the coupled
    weight decay wd * w is 0 for frozen weights because they are 0, so they stay 0).
    x: [N, C, H, W] (or [N, d] for the MLP) float32 tensor; y: [N] int64 tensor.
    """
    torch = require_torch()
    model.train()
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    if smask is not None:
        params = dict(model.named_parameters())
        for name, m in smask.items():
            if m is None:
                continue
            p = params[smask_name_to_param(name)]
            p.grad.masked_fill_(_expand(m, p.shape), 0)
    optimizer.step()
    return float(loss.item())


def train_steps(model, optimizer, smask, x, y, num_steps: int) -> list[float]:
    """Runs `num_steps` masked SGD steps on the same batch; returns the per-step losses."""
    return [masked_sgd_step(model, optimizer, smask, x, y) for _ in range(num_steps)]


def eval_logits(model, x) -> np.ndarray:
    """Eval-mode (running BN stats) logits as float32 numpy [N, C]; x: NCHW tensor/array."""
    torch = require_torch()
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(x, np.float32))).numpy()


def momentum_buffers(optimizer, model) -> dict[str, np.ndarray]:
    """SGD momentum buffers keyed by parameter name (numpy float32); missing ones skipped."""
    out = {}
    for name, p in model.named_parameters():
        st = optimizer.state.get(p, {})
        if st.get("momentum_buffer") is not None:
            out[name] = st["momentum_buffer"].detach().numpy().copy()
    return out


def state_numpy(model) -> dict[str, np.ndarray]:
    """`model.state_dict()` as numpy copies (keeps int64 num_batches_tracked)."""
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def layer_order(model) -> Sequence[str]:
    """Baseline smask keys of the Conv2d/Linear layers in module (forward) order."""
    torch = require_torch()
    names = []
    for n, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            names.append(n.replace("layers.", "").replace(".", "_"))
    return names
