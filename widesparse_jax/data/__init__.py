"""Input pipeline: TFDS or local IDX files -> deterministic per-device batches.

    spec = data.DataSpec(name="fashion_mnist", augment="none", ...)   # or DataSpec.from_config
    info = data.dataset_info(spec)        # counts read from the data; static_info: none read
    it = data.create_train_iterator(spec, global_batch_size=128, seed=0, start_step=0)
    ev = data.create_eval_iterator(spec, global_batch_size=1000)

Batches are dicts of arrays shaped for ``jax.pmap`` over the local devices:

* ``'image'``: float32 ``[D, B, H, W, C]``, normalized, D local devices, B = global batch /
  (P * D); a numpy array, except on the streaming (ImageNet) path: a device array, placed per
  device (the host ships uint8, normalized on the accelerator by ``device``);
* ``'label'``: int32 ``[D, B]`` (numpy);
* ``'mask'`` (eval only): bool ``[D, B]`` (numpy), False for padding.

Modules: ``spec`` (DataSpec, its one validator), ``sources`` (TFDS / IDX discovery and
reading), ``layout`` (batch split over processes and devices), ``normalize``, ``small``
(in-memory datasets, numpy augmentation), ``imagenet`` (tf.data streaming, uint8),
``device`` (its normalization on the accelerator), ``prefetch``.
"""

from __future__ import annotations

from typing import Iterator, Optional

from widesparse_jax.data import device, imagenet, small
from widesparse_jax.data.info import DatasetInfo, dataset_info, static_info
from widesparse_jax.data.layout import DeviceLayout, split_batch, steps_per_epoch
from widesparse_jax.data.normalize import CHANNEL_STATS
from widesparse_jax.data.prefetch import maybe_prefetch
from widesparse_jax.data.sources import find_idx_dir
from widesparse_jax.data.spec import DataSpec, check_int

__all__ = [
    "CHANNEL_STATS",
    "DataSpec",
    "DatasetInfo",
    "DeviceLayout",
    "create_eval_iterator",
    "create_train_iterator",
    "dataset_info",
    "find_idx_dir",
    "static_info",
    "steps_per_epoch",
]


def _checked_spec(spec: DataSpec) -> DataSpec:
    if not isinstance(spec, DataSpec):
        raise ValueError(f"expected a data.DataSpec, got {type(spec).__name__}.")
    return spec


def create_train_iterator(
    spec: DataSpec,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    devices: Optional[DeviceLayout] = None,
    prefetch: int = 2,
) -> Iterator[dict]:
    """Infinite, deterministic training stream of this process's share of each global batch.

    Yields {'image': float32 [D, B, H, W, C] (streaming: a device array), 'label': int32
    [D, B]}. Batch k (counting from 0 over the whole run) is a function of (spec, seed, k)
    only, whatever the device layout; ``start_step=k`` starts at batch k without generating
    the earlier ones. devices: None means ``DeviceLayout.current()``. prefetch: batches
    prepared ahead in a thread (0: none); on the streaming path that thread also normalizes
    them on the devices (``device``).
    """
    spec = _checked_spec(spec)
    seed = check_int(seed, "seed", 0)
    start_step = check_int(start_step, "start_step", 0)
    layout = split_batch(global_batch_size, devices)
    if spec.streaming:
        host = imagenet.train_iterator(spec, layout, seed, start_step)
        return maybe_prefetch(device.normalized(host, spec, layout), prefetch)
    return maybe_prefetch(small.train_iterator(spec, layout, seed, start_step), prefetch)


def create_eval_iterator(
    spec: DataSpec,
    global_batch_size: int,
    split: str = "test",
    devices: Optional[DeviceLayout] = None,
    prefetch: int = 2,
) -> Iterator[dict]:
    """Finite pass over ``split`` ('test'; ImageNet: its 'validation'), each example once.

    Yields {'image': float32 [D, B, H, W, C], 'label': int32 [D, B], 'mask': bool [D, B]}.
    Small datasets: global batch k covers examples [k*G, (k+1)*G) (process p its rows
    [p*G/P, (p+1)*G/P)). The last batch is padded with zero images, label 0, mask False, and
    every process yields the same number of batches. Never augmented; normalization='pixel'
    uses the statistics of the training (sub)set. ImageNet: resize to image_size / 0.875 and
    center crop, uint8 on the host, normalized on the devices.
    """
    spec = _checked_spec(spec)
    layout = split_batch(global_batch_size, devices)
    if spec.streaming:
        host = imagenet.eval_iterator(spec, layout, split)
        return maybe_prefetch(device.normalized(host, spec, layout), prefetch)
    return maybe_prefetch(small.eval_iterator(spec, layout, split), prefetch)
