"""The baseline's ImageNet preprocessing, from the real torchvision 0.28.0 (CPU torch).

The only torchvision wheel for 0.28.0 on PyPI is the CUDA build. With the CPU torch
(``torch==2.13.0+cpu``) its compiled ops (``_C.so``, linked against ``libc10_cuda.so``) fail to
load, which torchvision tolerates, but ``torchvision/_meta_registrations.py`` then registers
fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally and the import
dies with ``RuntimeError: operator torchvision::nms does not exist``.
:func:`import_torchvision` defines the *schemas* of those two operators (no kernel: calling
them would fail, nothing here does) before the import, so the unmodified pure-Python parts of
torchvision (``transforms``, ``datasets.ImageFolder``) import and run as shipped. Where the
operators already exist (a matching CPU/GPU build) nothing is defined.

Reference transforms (the baseline's ImageNet recipe on PIL images, float [3, H, W] tensors):
``eval_transform``: ``Resize(256) + CenterCrop(224) + ToTensor (+ Normalize)``;
``train_transform``: ``RandomResizedCrop(224, scale=(0.2, 1)) + RandomHorizontalFlip +
ToTensor + Normalize``.
"""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY = []  # keeps the torch.library.Library alive (its definitions die with it)


def _has_op(torch, name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def import_torchvision():
    """``torchvision`` (the module), importable with CPU torch; see the module docstring."""
    import torch

    missing = [name for name in _SCHEMAS if not _has_op(torch, name)]
    if missing and not _LIBRARY:
        lib = torch.library.Library("torchvision", "DEF")
        for name in missing:
            lib.define(_SCHEMAS[name])
        _LIBRARY.append(lib)
    import torchvision

    return torchvision


def eval_transform(size: int = 224, resize: int = 256, normalize: bool = True):
    """Resize(resize) + CenterCrop(size) + ToTensor (+ Normalize): PIL -> float [3, size, size]."""
    t = import_torchvision().transforms
    steps = [t.Resize(resize), t.CenterCrop(size), t.ToTensor()]
    if normalize:
        steps.append(t.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return t.Compose(steps)


def train_transform(size: int = 224, scale: tuple = (0.2, 1.0)):
    """RandomResizedCrop(size, scale) + flip + ToTensor + Normalize: PIL -> float [3, size, size]."""
    t = import_torchvision().transforms
    return t.Compose(
        [
            t.RandomResizedCrop(size, scale=scale),
            t.RandomHorizontalFlip(),
            t.ToTensor(),
            t.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def crop_params(height: int, width: int, scale: tuple, ratio: tuple) -> tuple:
    """torchvision's RandomResizedCrop.get_params on an image of this size: (top, left, h, w).

    Uses torch's global RNG (seed it with ``torch.manual_seed``).
    """
    import torch

    t = import_torchvision().transforms
    return t.RandomResizedCrop.get_params(torch.empty(3, height, width), list(scale), list(ratio))
