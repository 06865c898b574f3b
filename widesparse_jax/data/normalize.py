"""Pixel scaling: uint8 images -> float32, per-channel constants or a per-pixel mean/std image.

'channel' subtracts/divides per-channel mean/std on the [0, 1] scale (the dataset's own
constants, or ImageNet's for RGB data with channel_stats='imagenet'); 'pixel' uses the mean and
std images of the training (sub)set (pixels with zero std map to 0); 'none' only scales to
[0, 1].
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from widesparse_jax.data.spec import DataSpec

# Standard per-channel statistics on the [0, 1] scale (mean, std over all training pixels).
CHANNEL_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclasses.dataclass(frozen=True)
class Normalizer:
    """x_uint8 [..., H, W, C] -> float32 (x / 255 - mean) / std, where std == 0 gives 0."""

    mean: np.ndarray  # float32, broadcastable to [H, W, C]
    std: np.ndarray

    def __call__(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32) * np.float32(1.0 / 255.0)
        safe = np.where(self.std > 0, self.std, np.float32(1.0))
        out = (x - self.mean) / safe
        if np.any(self.std == 0):
            out = np.where(self.std > 0, out, np.float32(0.0))
        return out.astype(np.float32)


def channel_mean_std(spec: DataSpec) -> tuple:
    """(mean float32 [C], std float32 [C]) of spec's dataset under ``spec.channel_stats``."""
    key = spec.name
    if spec.channel_stats == "imagenet" and spec.image_shape[2] == 3:
        key = "imagenet2012"
    mean, std = CHANNEL_STATS[key]
    return np.asarray(mean, np.float32), np.asarray(std, np.float32)


def pixel_stats(images: np.ndarray) -> tuple:
    """Per-pixel mean and std images ([H, W, C] float32, [0, 1] scale) of uint8 [N, H, W, C]."""
    x = images.astype(np.float64) / 255.0
    return x.mean(axis=0).astype(np.float32), x.std(axis=0).astype(np.float32)


def make_normalizer(spec: DataSpec, train_images: Optional[np.ndarray] = None) -> Normalizer:
    """The Normalizer of ``spec.normalization``; 'pixel' needs the training (sub)set images."""
    if spec.normalization == "channel":
        return Normalizer(*channel_mean_std(spec))
    if spec.normalization == "pixel":
        if train_images is None:
            raise ValueError("normalization='pixel' needs the training images.")
        return Normalizer(*pixel_stats(train_images))
    return Normalizer(np.float32(0.0), np.float32(1.0))
