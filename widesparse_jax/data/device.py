"""The device stage of the streaming (ImageNet) path: uint8 host batches -> normalized float32.

The tf.data host pipeline ships uint8 images (rounded as torchvision's are; 4x fewer bytes to
batch, prefetch and copy than float32). ``(x - mean*255) / (std*255)`` with the spec's
normalizer then runs on the accelerator, as ``(x - mean*255) * (1 / (std*255))`` with the
reciprocal taken once in float32 on the host (XLA turns a division by a broadcast constant
into that product anyway; this way the result does not depend on the compiler), in one
pmapped program over the local devices, compiled once: each device gets its own rows, and the
pmapped train and eval steps receive device arrays of one fixed sharding, so they are not
compiled again. Eval padding rows (mask False) stay zero images. A layout of more (or fewer)
local devices than JAX has (tests simulating a layout) runs the same arithmetic jitted on
the default device.
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np

from widesparse_jax.data.layout import BatchLayout
from widesparse_jax.data.normalize import make_normalizer
from widesparse_jax.data.spec import DataSpec


def mean_std_255(spec: DataSpec) -> tuple:
    """(mean, std) float32 on the 0..255 scale, broadcastable to [..., C], of spec's normalizer."""
    normalizer = make_normalizer(spec)
    mean = np.asarray(normalizer.mean * np.float32(255.0), np.float32)
    return mean, np.asarray(normalizer.std * np.float32(255.0), np.float32)


def _normalize_fn(spec: DataSpec, layout: BatchLayout):
    """image uint8 [D, B, H, W, C] (and mask bool [D, B]) -> float32, placed per device."""
    import jax  # Lazy: the rest of the data package does not need jax.

    mean, std = mean_std_255(spec)
    inv_std = np.float32(1.0) / std
    per_device = layout.local_devices == jax.local_device_count()
    return _compiled(tuple(mean.ravel().tolist()), tuple(inv_std.ravel().tolist()), per_device)


@functools.lru_cache(maxsize=None)
def _compiled(mean: tuple, inv_std: tuple, per_device: bool):
    """One jitted function per constants: each new eval pass reuses its program."""
    import jax
    import jax.numpy as jnp

    mean_c, inv_c = np.asarray(mean, np.float32), np.asarray(inv_std, np.float32)

    def normalize(image, mask):
        x = (image.astype(jnp.float32) - mean_c) * inv_c
        if mask is not None:  # padding rows: zero images, as the in-memory datasets give
            x = jnp.where(mask[..., None, None, None], x, jnp.float32(0.0))
        return x

    return jax.pmap(normalize) if per_device else jax.jit(normalize)


def normalized(batches: Iterator[dict], spec: DataSpec, layout: BatchLayout) -> Iterator[dict]:
    """``batches`` with 'image' (uint8 numpy) replaced by the normalized float32 device array;
    'label' and 'mask' stay numpy. Closing this stream closes ``batches``."""
    fn = _normalize_fn(spec, layout)
    try:
        for batch in batches:
            yield dict(batch, image=fn(batch["image"], batch.get("mask")))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
