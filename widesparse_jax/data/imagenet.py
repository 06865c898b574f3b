"""ImageNet (``imagenet2012``): streamed with tf.data, never held in memory.

Process p reads the contiguous slice ``train[p*n_p:(p+1)*n_p]`` with ``n_p = n // process_count``
(the even, drop-remainder split of ``tfds.split_for_jax_process``). Epoch e shuffles files and a
``shuffle_buffer``-sized window with seeds derived from (seed, e); augmentation uses stateless TF
random ops keyed by (seed, epoch, process_index, position in the epoch stream). Resume is exact:
an epoch's stream is deterministic, so ``start_step`` builds the epoch's dataset and ``skip``s
the consumed records *before* decoding (they are still read and pass through the shuffle
buffer, but are neither decoded nor augmented). Exactness relies on tf.data determinism
(``deterministic=True``) and on identical files/TFDS versions between the runs.

Train: RandomResizedCrop(size, scale=(0.2, 1)) + flip ('imagenet') or the eval transform
('none'). Eval: resize the shorter side to round(size / 0.875), center crop size x size.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator

import numpy as np

from widesparse_jax.data import sources
from widesparse_jax.data.hashing import hash_ints
from widesparse_jax.data.layout import BatchLayout
from widesparse_jax.data.normalize import make_normalizer
from widesparse_jax.data.spec import DataSpec

CROP_FRACTION = 0.875  # eval: resize shorter side to size / 0.875 (256 for 224), center crop.

# ----------------------------------------------------------------------------- image transforms


def _decode_full(tf, image_bytes):
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)


def train_image(tf, image_bytes, seed_pair, size: int):
    """RandomResizedCrop(size, scale=(0.2, 1), ratio=(3/4, 4/3)) + flip; float32 [size, size, 3].

    seed_pair: int64 [2] stateless seed. If no valid window is found in 10 attempts the whole
    image is used (torchvision falls back to a center crop instead). Values stay on 0..255.
    """
    seeds = tf.random.experimental.stateless_split(seed_pair, num=2)
    is_jpeg = tf.io.is_jpeg(image_bytes)
    shape = tf.cond(
        is_jpeg,
        lambda: tf.image.extract_jpeg_shape(image_bytes),
        lambda: tf.shape(_decode_full(tf, image_bytes), out_type=tf.int32),
    )
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        tf.zeros([1, 0, 4], tf.float32),
        seed=seeds[0],
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.2, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    oy, ox, _ = tf.unstack(begin)
    h, w, _ = tf.unstack(crop_size)
    image = tf.cond(
        is_jpeg,
        lambda: tf.io.decode_and_crop_jpeg(image_bytes, tf.stack([oy, ox, h, w]), channels=3),
        lambda: tf.image.crop_to_bounding_box(_decode_full(tf, image_bytes), oy, ox, h, w),
    )
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=False)
    return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def eval_image(tf, image_bytes, size: int):
    """Resize the shorter side to round(size / 0.875), center crop; float32 [size, size, 3]."""
    image = _decode_full(tf, image_bytes)
    resize = int(round(size / CROP_FRACTION))
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize / tf.reduce_min(shape)
    new_hw = tf.cast(tf.round(shape * scale), tf.int32)
    new_hw = tf.maximum(new_hw, resize)
    image = tf.image.resize(image, new_hw, method="bilinear", antialias=True)
    oy = (new_hw[0] - size) // 2
    ox = (new_hw[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, oy, ox, size, size)  # float32, 0..255


# ----------------------------------------------------------------------------- sharding, seeds


def tf_seed(seed: int, epoch: int, stream: int) -> int:
    """A deterministic int31 seed derived from (seed, epoch, stream)."""
    return int(hash_ints(seed, epoch, np.array([stream]), 7, 2**31 - 1)[0])


def _tf_options(tf):
    options = tf.data.Options()
    options.deterministic = True
    return options


def process_slice(n: int, layout: BatchLayout, drop_remainder: bool) -> tuple:
    """[start, end) of this process's contiguous slice of n examples."""
    p, pc = layout.process_index, layout.process_count
    if drop_remainder:
        k = n // pc
        return p * k, (p + 1) * k
    return (p * n) // pc, ((p + 1) * n) // pc


def _mean_std_255(tf, spec: DataSpec) -> tuple:
    """Normalization constants on the 0..255 scale, as TF constants."""
    normalizer = make_normalizer(spec)
    return tf.constant(normalizer.mean * 255.0), tf.constant(normalizer.std * 255.0)


# ----------------------------------------------------------------------------- train


@dataclasses.dataclass(frozen=True)
class _TrainStream:
    """Everything an epoch's dataset depends on, besides the epoch itself."""

    spec: DataSpec
    layout: BatchLayout
    seed: int
    split: str  # this process's slice, e.g. 'train[0:640583]'
    steps_per_epoch: int
    mean: Any  # tf float32 constants, 0..255 scale
    std: Any


def _epoch_dataset(tf, tfds, stream: _TrainStream, epoch: int, offset: int):
    """The batched tf.data stream of ``epoch`` from in-epoch step ``offset`` on."""
    spec, l = stream.spec, stream.layout.local_batch
    read_config = tfds.ReadConfig(
        shuffle_seed=tf_seed(stream.seed, epoch, 0), options=_tf_options(tf)
    )
    ds = tfds.load(
        spec.name,
        split=stream.split,
        data_dir=spec.data_dir,
        shuffle_files=True,
        download=spec.download,
        read_config=read_config,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    ds = ds.shuffle(
        spec.shuffle_buffer, seed=tf_seed(stream.seed, epoch, 1), reshuffle_each_iteration=False
    )
    ds = ds.take(stream.steps_per_epoch * l).enumerate()
    if offset:
        ds = ds.skip(offset * l)
    base = tf.constant([stream.seed, epoch], tf.int64)
    base = tf.random.experimental.stateless_fold_in(base, stream.layout.process_index)
    size = spec.image_shape[0]

    def prep(i, ex):
        if spec.augment == "imagenet":
            key = tf.random.experimental.stateless_fold_in(base, i)
            image = train_image(tf, ex["image"], key, size)
        else:
            image = eval_image(tf, ex["image"], size)
        image = (image - stream.mean) / stream.std
        return {"image": image, "label": tf.cast(ex["label"], tf.int32)}

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(l, drop_remainder=True).prefetch(1)


def _train_batches(tf, tfds, stream: _TrainStream, start_step: int) -> Iterator[dict]:
    layout = stream.layout
    epoch, offset = divmod(start_step, stream.steps_per_epoch)
    while True:
        for batch in tfds.as_numpy(_epoch_dataset(tf, tfds, stream, epoch, offset)):
            yield {
                "image": layout.to_device_shape(batch["image"]),
                "label": layout.to_device_shape(batch["label"]),
            }
        epoch, offset = epoch + 1, 0


def train_iterator(spec: DataSpec, layout: BatchLayout, seed: int, start_step: int) -> Iterator:
    """Counts and checks eagerly (errors surface here), then returns the lazy batch stream.

    Yields {'image': float32 [D, B, size, size, 3], 'label': int32 [D, B]}.
    """
    sources.resolve_source(spec)  # before importing TF: missing data fails fast
    tf, tfds = sources.import_tf()
    mean, std = _mean_std_255(tf, spec)
    n = sources.tfds_count(spec.name, "train", spec.data_dir, spec.download)
    start, end = process_slice(n, layout, drop_remainder=True)
    l = layout.local_batch
    spe = (end - start) // l
    if spe == 0:
        raise ValueError(
            f"local batch {l} exceeds the {end - start} training examples of process "
            f"{layout.process_index}."
        )
    stream = _TrainStream(spec, layout, seed, f"train[{start}:{end}]", spe, mean, std)
    return _train_batches(tf, tfds, stream, start_step)


# ----------------------------------------------------------------------------- eval


def eval_iterator(spec: DataSpec, layout: BatchLayout, split: str) -> Iterator:
    """This process's slice of ``split``, each example once, padded to the same batch count.

    Yields {'image': float32 [D, B, size, size, 3], 'label': int32 [D, B], 'mask': bool [D, B]};
    padding rows are zero images with label 0 and mask False.
    """
    sources.resolve_source(spec)  # before importing TF: missing data fails fast
    tf, tfds = sources.import_tf()
    split = sources.tfds_split_name(spec.name, split)
    mean, std = _mean_std_255(tf, spec)
    n = sources.tfds_count(spec.name, split, spec.data_dir, spec.download)
    start, end = process_slice(n, layout, drop_remainder=False)
    pc, l, size = layout.process_count, layout.local_batch, spec.image_shape[0]
    max_local = max(((q + 1) * n) // pc - (q * n) // pc for q in range(pc))
    num_batches = max(1, math.ceil(max_local / l))
    ds = tfds.load(
        spec.name,
        split=f"{split}[{start}:{end}]",
        data_dir=spec.data_dir,
        shuffle_files=False,
        download=spec.download,
        read_config=tfds.ReadConfig(options=_tf_options(tf)),
        decoders={"image": tfds.decode.SkipDecoding()},
    )

    def prep(ex):
        image = (eval_image(tf, ex["image"], size) - mean) / std
        return {"image": image, "label": tf.cast(ex["label"], tf.int32), "mask": tf.constant(True)}

    ds = ds.take(end - start).map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pad = {
        "image": tf.zeros([size, size, 3], tf.float32),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(False),
    }
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
    ds = ds.take(num_batches * l).batch(l).prefetch(1)
    return ({k: layout.to_device_shape(v) for k, v in batch.items()} for batch in tfds.as_numpy(ds))
