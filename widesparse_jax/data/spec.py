"""DataSpec: which dataset a run reads and how it is preprocessed, validated once.

Static facts per dataset (class count, native image shape) live here too: they are what a
spec needs to know about its dataset without reading any data.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import numpy as np

from widesparse_jax import choices
from widesparse_jax.data.sources import IDX_DATASETS

NUM_CLASSES = {
    "mnist": 10,
    "fashion_mnist": 10,
    "cifar10": 10,
    "cifar100": 100,
    "svhn_cropped": 10,
    "imagenet2012": 1000,
}
# (H, W, C) of the small datasets as stored; the model sees exactly this.
NATIVE_SHAPE = {
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "cifar100": (32, 32, 3),
    "svhn_cropped": (32, 32, 3),
}
IMAGENET_IMAGE_SIZE = 224  # default side of the (square) ImageNet crop
_MIN_IMAGENET_SIZE = 8


def check_int(value: Any, what: str, minimum: int) -> int:
    """``value`` as a Python int, or ValueError naming ``what`` if not an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_choice(field: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {field} {value!r}; allowed: {', '.join(allowed)}.")


def _optional_int(value: Any, what: str, minimum: int) -> Optional[int]:
    return None if value is None else check_int(value, what, minimum)


def _optional_path(value: Any, what: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{what} must be a path (str) or None, got {value!r}.")
    return os.fspath(value)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What to read and how to preprocess it; every field is checked on construction.

    name: one of ``choices.DATASETS``. data_dir: TFDS data_dir (None: TFDS default).
    source: 'auto' (prepared TFDS data, else IDX files), 'tfds' (may download) or 'idx'.
    idx_dir: directory of the IDX files (None: ``sources.DEFAULT_IDX_DIRS``).
    augment: 'cifar_crop_flip' (pad ``crop_padding`` + crop + flip), 'crop' (no flip),
    'imagenet' (RandomResizedCrop + flip; imagenet2012 only) or 'none' (None is accepted as an
    alias). normalization: 'channel' (per-channel constants, see ``channel_stats``), 'pixel'
    (mean/std image of the training (sub)set; small datasets only) or 'none' ([0, 1]).
    channel_stats: 'dataset' or 'imagenet' (the PyTorch baseline's constants for RGB data).
    train_subset: train on N examples: the first N, or a random N drawn with ``subset_seed``.
    image_size: ImageNet crop side (None: 224); small datasets: None or their native side.
    shuffle_buffer: ImageNet's tf.data shuffle window.
    """

    name: str
    data_dir: Optional[str] = None
    source: str = "auto"
    idx_dir: Optional[str] = None
    augment: str = "none"
    normalization: str = "channel"
    channel_stats: str = "dataset"
    train_subset: Optional[int] = None
    subset_seed: Optional[int] = None
    image_size: Optional[int] = None
    crop_padding: int = 4
    shuffle_buffer: int = 10_000

    def __post_init__(self):
        for field, value in _validated_fields(self).items():
            object.__setattr__(self, field, value)

    @classmethod
    def from_config(cls, config: Any) -> DataSpec:
        """A spec from a mapping or ConfigDict with DataSpec's field names.

        Missing optional fields take their defaults; unknown fields raise, naming them.
        """
        keys = list(config.keys())
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(k for k in keys if k not in allowed)
        if unknown:
            raise ValueError(
                f"Unknown dataset field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}."
            )
        if "name" not in keys:
            raise ValueError("The dataset config needs a 'name'.")
        return cls(**{k: config[k] for k in keys})

    @property
    def streaming(self) -> bool:
        """True for datasets streamed with tf.data (ImageNet), False for in-memory ones."""
        return self.name in choices.STREAMING_DATASETS

    @property
    def download(self) -> bool:
        """Whether TFDS may download and prepare the data (only with source='tfds')."""
        return self.source == "tfds"

    @property
    def image_shape(self) -> tuple:
        """(H, W, C) of the images the model sees."""
        if self.streaming:
            size = IMAGENET_IMAGE_SIZE if self.image_size is None else self.image_size
            return (size, size, 3)
        return NATIVE_SHAPE[self.name]


def _validated_fields(spec: DataSpec) -> dict:
    """The fields of ``spec`` that validation normalizes (ints, paths, augment), checked."""
    _check_choice("dataset", spec.name, choices.DATASETS)
    streaming = spec.name in choices.STREAMING_DATASETS
    _check_choice("source", spec.source, choices.SOURCES)
    if spec.source == "idx" and spec.name not in IDX_DATASETS:
        raise ValueError(f'source="idx" supports only {sorted(IDX_DATASETS)}, not {spec.name!r}.')
    augment = "none" if spec.augment is None else spec.augment
    _check_choice("augment", augment, choices.AUGMENTS)
    if streaming and augment not in ("imagenet", "none"):
        raise ValueError(
            f"augment={augment!r} is not available for {spec.name}; use 'imagenet' or 'none'."
        )
    if not streaming and augment == "imagenet":
        raise ValueError(
            f"augment='imagenet' is only for imagenet2012, not {spec.name}; use "
            "'cifar_crop_flip', 'crop' or 'none'."
        )
    _check_choice("normalization", spec.normalization, choices.NORMALIZATIONS)
    if streaming and spec.normalization == "pixel":
        raise ValueError(
            "normalization='pixel' needs the training set in memory; not available for "
            f"{spec.name}. Use 'channel' or 'none'."
        )
    _check_choice("channel_stats", spec.channel_stats, choices.CHANNEL_STATS)
    return dict(
        augment=augment,
        data_dir=_optional_path(spec.data_dir, "data_dir"),
        idx_dir=_optional_path(spec.idx_dir, "idx_dir"),
        crop_padding=check_int(spec.crop_padding, "crop_padding", 0),
        shuffle_buffer=check_int(spec.shuffle_buffer, "shuffle_buffer", 1),
        image_size=_checked_image_size(spec.name, spec.image_size),
        **_checked_subset(spec.name, spec.train_subset, spec.subset_seed),
    )


def _checked_image_size(name: str, image_size: Any) -> Optional[int]:
    if name in choices.STREAMING_DATASETS:
        return _optional_int(image_size, "image_size", _MIN_IMAGENET_SIZE)
    native = NATIVE_SHAPE[name]
    if image_size is not None and image_size != native[0]:
        raise ValueError(
            f"image_size={image_size} is not supported for {name} (native "
            f"{native[0]}x{native[1]}); use None."
        )
    return None if image_size is None else int(image_size)


def _checked_subset(name: str, train_subset: Any, subset_seed: Any) -> dict:
    if name in choices.STREAMING_DATASETS and (train_subset is not None or subset_seed is not None):
        raise ValueError(f"train_subset/subset_seed are not supported for streamed {name}.")
    if train_subset is None and subset_seed is not None:
        raise ValueError("subset_seed is set but train_subset is None; set both or neither.")
    return dict(
        train_subset=_optional_int(train_subset, "train_subset", 1),
        subset_seed=_optional_int(subset_seed, "subset_seed", 0),
    )
