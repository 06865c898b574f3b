"""Small datasets (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN): numpy arrays in memory.

A split is read into a uint8 array once; shuffling, augmentation and batching happen in numpy,
and every random choice is a pure function of ``(seed, epoch, example index)``:

* epoch ``e`` visits the examples in ``np.random.default_rng([seed, e]).permutation(n)`` order,
  drop-remainder (the last ``n % global_batch`` examples of each epoch are unused);
* crop offsets and flips are counter-based hashes (``hashing.hash_ints``) of
  ``(seed, epoch, example index)``, the index being the example's row in the (subset) array.

Resuming at ``start_step`` is therefore exact and O(1). Every process reads the whole split and
computes the same global permutation; process p takes rows [p*L, (p+1)*L) of each global batch,
so the global stream does not depend on the number of processes or devices. Crop padding is
zero in raw pixel space (as torchvision's ``RandomCrop(padding=4)``).
"""

from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np

from widesparse_jax.data import sources
from widesparse_jax.data.hashing import hash_ints
from widesparse_jax.data.layout import BatchLayout, steps_per_epoch
from widesparse_jax.data.normalize import Normalizer, make_normalizer
from widesparse_jax.data.spec import DataSpec

# ----------------------------------------------------------------------------- arrays


def select_subset(
    n_total: int, train_subset: Optional[int], subset_seed: Optional[int]
) -> Optional[np.ndarray]:
    """Sorted int indices [train_subset] of the training subset, or None for the full set.

    The first ``train_subset`` examples, or (with ``subset_seed``) a uniformly random subset.
    """
    if train_subset is None:
        return None
    if train_subset > n_total:
        raise ValueError(f"train_subset={train_subset} exceeds the {n_total} training examples.")
    if subset_seed is None:
        return np.arange(train_subset)
    rng = np.random.default_rng(subset_seed)
    return np.sort(rng.choice(n_total, size=train_subset, replace=False))


def train_arrays(spec: DataSpec) -> tuple:
    """The examples trained on: (uint8 [N, H, W, C], int32 [N]), N = train_subset or all."""
    images, labels = sources.load_split(spec, "train")
    subset = select_subset(images.shape[0], spec.train_subset, spec.subset_seed)
    if subset is not None:
        images, labels = images[subset], labels[subset]
    return images, labels


# ----------------------------------------------------------------------------- augmentation


def random_crop_flip(
    images: np.ndarray, seed: int, epoch: int, indices: np.ndarray, *, pad: int, flip: bool
) -> np.ndarray:
    """Zero-pad by ``pad``, crop back to H x W at hashed offsets; optionally flip horizontally.

    images: [B, H, W, C] (any dtype); indices: [B] example ids keying the randomness.
    Offsets are uniform in [0, 2*pad] per axis; a flip happens with probability 1/2.
    Returns [B, H, W, C], images' dtype.
    """
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oy = hash_ints(seed, epoch, indices, 0, 2 * pad + 1)
    ox = hash_ints(seed, epoch, indices, 1, 2 * pad + 1)
    rows = oy[:, None] + np.arange(h)[None, :]  # [B, H]
    cols = ox[:, None] + np.arange(w)[None, :]  # [B, W]
    if flip:
        do_flip = hash_ints(seed, epoch, indices, 2, 2).astype(bool)
        cols = np.where(do_flip[:, None], cols[:, ::-1], cols)
    return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _augment(x: np.ndarray, spec: DataSpec, seed: int, epoch: int, idx: np.ndarray) -> np.ndarray:
    """spec.augment applied to uint8 [B, H, W, C] examples with ids idx [B]."""
    if spec.augment == "none":
        return x
    flip = spec.augment == "cifar_crop_flip"
    return random_crop_flip(x, seed, epoch, idx, pad=spec.crop_padding, flip=flip)


# ----------------------------------------------------------------------------- batches


def train_batches(
    images: np.ndarray,
    labels: np.ndarray,
    normalizer: Normalizer,
    spec: DataSpec,
    seed: int,
    start_step: int,
    layout: BatchLayout,
) -> Iterator[dict]:
    """Infinite stream from global batch ``start_step`` on; this process's rows of each.

    Yields {'image': float32 [D, B, H, W, C], 'label': int32 [D, B]}.
    """
    n = images.shape[0]
    spe = steps_per_epoch(n, layout.global_batch)
    g, l, p = layout.global_batch, layout.local_batch, layout.process_index
    step = start_step
    epoch, perm = -1, None
    while True:
        e, offset = divmod(step, spe)
        if e != epoch:
            epoch = e
            perm = np.random.default_rng([seed, epoch]).permutation(n)
        start = offset * g + p * l
        idx = perm[start : start + l]
        x = _augment(images[idx], spec, seed, epoch, idx)
        yield {
            "image": layout.to_device_shape(normalizer(x)),
            "label": layout.to_device_shape(labels[idx].astype(np.int32)),
        }
        step += 1


def num_eval_batches(n: int, layout: BatchLayout) -> int:
    """Number of eval batches: ceil(n / global_batch) (at least 1), the same on every process."""
    return max(1, math.ceil(n / layout.global_batch))


def eval_batches(
    images: np.ndarray, labels: np.ndarray, normalizer: Normalizer, layout: BatchLayout
) -> Iterator[dict]:
    """Each example once, in order; the last global batch padded (zero image, label 0).

    Yields {'image': float32 [D, B, H, W, C], 'label': int32 [D, B], 'mask': bool [D, B]};
    global batch k covers examples [k*G, (k+1)*G), process p its rows [p*L, (p+1)*L).
    """
    n = images.shape[0]
    g, l, p = layout.global_batch, layout.local_batch, layout.process_index
    for b in range(num_eval_batches(n, layout)):
        pos = b * g + p * l + np.arange(l)
        mask = pos < n
        idx = np.where(mask, pos, 0)
        x = normalizer(images[idx])
        x = np.where(mask[:, None, None, None], x, np.float32(0.0)).astype(np.float32)
        y = np.where(mask, labels[idx], 0).astype(np.int32)
        yield {
            "image": layout.to_device_shape(x),
            "label": layout.to_device_shape(y),
            "mask": layout.to_device_shape(mask),
        }


# ----------------------------------------------------------------------------- iterators


def train_iterator(spec: DataSpec, layout: BatchLayout, seed: int, start_step: int) -> Iterator:
    """Reads and checks eagerly (errors surface here), then returns the lazy batch stream."""
    images, labels = train_arrays(spec)
    normalizer = make_normalizer(spec, images)
    steps_per_epoch(images.shape[0], layout.global_batch)  # validates batch <= data
    return train_batches(images, labels, normalizer, spec, seed, start_step, layout)


def eval_iterator(spec: DataSpec, layout: BatchLayout, split: str) -> Iterator:
    """Reads eagerly, returns the lazy pass over ``split`` (see ``eval_batches``)."""
    train_images = train_arrays(spec)[0] if spec.normalization == "pixel" else None
    normalizer = make_normalizer(spec, train_images)
    images, labels = sources.load_split(spec, split)
    return eval_batches(images, labels, normalizer, layout)
