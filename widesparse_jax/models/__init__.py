"""Models: ResNet-18 (CIFAR / ImageNet stems), one-hidden-layer MLP, bottleneck variants.

All modules are Flax Linen modules called as
``module.init(key, x, train=False)`` and
``module.apply(variables, x, train=bool, mutable=['batch_stats'] | False, masks=None)``;
``masks`` (a mask pytree mirroring ``variables['params']``) makes the forward pass use the
masked weights. :class:`Masked` does the same for any Linen module.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import flax.linen as nn

from widesparse_jax.models.masked import Masked, masked_call
from widesparse_jax.models.mlp import MLP, mlp_weight_count
from widesparse_jax.models.resnet import STEMS, ResNet18, resnet18_weight_count

MODELS = ("resnet18", "mlp", "resnet18_bottleneck", "mlp_bottleneck")

__all__ = [
    "MLP",
    "MODELS",
    "Masked",
    "ResNet18",
    "create_model",
    "input_shape",
    "masked_call",
    "mlp_weight_count",
    "resnet18_weight_count",
]


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"model {model!r} unknown; allowed: {MODELS}")


def _check_kwargs(cls: type, kwargs: dict, reserved: Tuple[str, ...]) -> None:
    allowed = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"} - set(reserved)
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise ValueError(f"unknown option(s) {bad} for {cls.__name__}; allowed: {sorted(allowed)}")


def create_model(
    model: str,
    width: int,
    num_classes: int,
    *,
    stem: str = "cifar",
    input_dim: int = 784,
    **kwargs,
) -> nn.Module:
    """Build a model by name.

    * ``'resnet18'``: :class:`ResNet18` (kwargs: ``dtype``, ``bn_axis_name``).
    * ``'mlp'``: :class:`MLP` (kwargs: ``parametrization``, ``use_bias``, ``activation``,
      ``init_distribution``, ``batch_norm``, ``dtype``). ``stem`` is ignored; ``input_dim`` is
      read from the input at init (it only matters for the bottleneck variant).
    * ``'resnet18_bottleneck'``: ResNet-18 of width ``width`` whose 16 block 3x3 convs are
      factorized to keep the weight count of the dense ``base_width`` net (kwargs:
      ``base_width`` (required), ``bottleneck='linear'|'nonlinear'``, ``dtype``,
      ``bn_axis_name``, ``in_channels=3``). CIFAR stem only.
    * ``'mlp_bottleneck'``: MLP of hidden width ``width`` with ``fc`` (and/or ``cl``)
      factorized at the weight count of the dense ``base_width`` MLP (kwargs: ``base_width``
      (required), ``bottleneck``, ``factorize=('fc',)``, and the MLP kwargs).

    Raises ValueError for an unknown model name or option.
    """
    _check_model(model)
    if model == "resnet18":
        _check_kwargs(
            ResNet18, kwargs, ("width", "num_classes", "stem", "inner_dims", "bottleneck")
        )
        return ResNet18(width=width, num_classes=num_classes, stem=stem, **kwargs)
    if model == "mlp":
        _check_kwargs(MLP, kwargs, ("width", "num_classes"))
        return MLP(width=width, num_classes=num_classes, **kwargs)

    from widesparse_jax.models import bottleneck as bn_mod  # local: keeps import light

    if "base_width" not in kwargs:
        raise ValueError(f"model {model!r} needs base_width=<int> (the dense width to match)")
    if model == "resnet18_bottleneck":
        if stem != "cifar":
            raise ValueError(f"resnet18_bottleneck supports stem='cifar' only, got {stem!r}")
        return bn_mod.make_resnet18_bottleneck(width=width, num_classes=num_classes, **kwargs)
    return bn_mod.make_mlp_bottleneck(
        width=width, num_classes=num_classes, input_dim=input_dim, **kwargs
    )


def input_shape(
    model: str,
    *,
    stem: str = "cifar",
    input_dim: int = 784,
    image_size: Optional[int] = None,
    channels: int = 3,
) -> tuple:
    """Example input shape without the batch dim.

    ResNet: (32, 32, channels) for 'cifar', (224, 224, channels) for 'imagenet' (``image_size``
    overrides the side). MLP: (input_dim,).
    """
    _check_model(model)
    if model.startswith("mlp"):
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        return (input_dim,)
    if stem not in STEMS:
        raise ValueError(f"stem {stem!r} unknown; allowed: {STEMS}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    side = image_size if image_size is not None else (32 if stem == "cifar" else 224)
    if side < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    return (side, side, channels)
