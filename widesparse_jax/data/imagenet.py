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
Both follow torchvision (the baseline): its crop sampler (:func:`sample_crop`), its output-size
and offset rounding, libjpeg's accurate IDCT (PIL's) and Pillow's own antialiased bilinear
resize, bit for bit (:mod:`widesparse_jax.data.pil_resize`, a compiled TF op): the eval
transform's output equals torchvision's uint8 image exactly; the remaining differences are
in docs/baseline_comparison.md.

The streams here yield uint8 images: 4x fewer bytes to batch, prefetch and copy than float32,
and ~14 % more train images per CPU second (docs/performance.md). The normalization runs on
the accelerator (:mod:`widesparse_jax.data.device`), applied by
``data.create_train_iterator`` / ``data.create_eval_iterator``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import math
import threading
from typing import Iterator

import numpy as np

from widesparse_jax.data import pil_resize, sources
from widesparse_jax.data.hashing import hash_ints
from widesparse_jax.data.layout import BatchLayout
from widesparse_jax.data.spec import DataSpec

CROP_FRACTION = 0.875  # eval: resize shorter side to size / 0.875 (256 for 224), center crop.
CROP_SCALE = (0.2, 1.0)  # RandomResizedCrop area range (the baseline's scale=(0.2, 1))
CROP_RATIO = (3 / 4, 4 / 3)  # its aspect-ratio (w / h) range, sampled log-uniformly
CROP_TRIES = 10  # torchvision's attempts before its center-crop fallback
DCT_METHOD = "INTEGER_ACCURATE"  # libjpeg's ISLOW IDCT, as PIL decodes (TF's default: IFAST)

# ----------------------------------------------------------------------------- image transforms


def _decode_full(tf, image_bytes):
    """uint8 [H, W, 3] of a JPEG (PIL's IDCT), PNG, GIF or BMP."""
    return tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method=DCT_METHOD),
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
    )


def _round_int(tf, x):
    """Round half to even (Python's ``round``) and cast to int32."""
    return tf.cast(tf.round(x), tf.int32)


def sample_crop(tf, seed_pair, height, width, scale=CROP_SCALE, ratio=CROP_RATIO):
    """torchvision's ``RandomResizedCrop.get_params`` on stateless TF randoms.

    seed_pair: int [2]; height, width: int32 scalars. Returns int32 scalars (top, left, h, w).
    Up to 10 tries of area ~ U(scale) * H * W and log(w / h) ~ U(log ratio), w and h rounded;
    the first try that fits is used, at a uniform integer offset. Else the fallback: the
    whole image, clamped to the ratio range, centered (offsets floored).
    """
    s_area, s_ratio, s_top, s_left = tf.unstack(
        tf.random.experimental.stateless_split(seed_pair, num=4)
    )
    hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = hf * wf * tf.random.stateless_uniform([CROP_TRIES], s_area, scale[0], scale[1])
    log_r = tf.random.stateless_uniform(
        [CROP_TRIES], s_ratio, math.log(ratio[0]), math.log(ratio[1])
    )
    w = _round_int(tf, tf.sqrt(area * tf.exp(log_r)))
    h = _round_int(tf, tf.sqrt(area / tf.exp(log_r)))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    in_ratio = wf / hf
    fb_w = tf.where(in_ratio > ratio[1], _round_int(tf, hf * ratio[1]), width)
    fb_h = tf.where(in_ratio < ratio[0], _round_int(tf, wf / ratio[0]), height)
    found = tf.reduce_any(fits)
    ch, cw = tf.where(found, h[first], fb_h), tf.where(found, w[first], fb_w)

    def offset(seed, room):  # uniform on 0..room if found, else room // 2
        u = tf.random.stateless_uniform([], seed, 0, room + 1, dtype=tf.int32)
        return tf.where(found, u, room // 2)

    return offset(s_top, height - ch), offset(s_left, width - cw), ch, cw


def _decode_and_crop_jpeg(tf, image_bytes, box):
    """uint8 [h, w, 3]: the box (top, left, h, w) of a JPEG, decoding only around it.

    Equal to cropping the full decode: libjpeg upsamples the chroma at the edges of its
    decoding window as at an image border, so the window is one column wider on each side
    than the box (where the image allows) and that column is cut off afterwards.
    """
    oy, ox, h, w = box
    width = tf.image.extract_jpeg_shape(image_bytes)[1]
    x0, x1 = tf.maximum(ox - 1, 0), tf.minimum(ox + w + 1, width)
    window = tf.io.decode_and_crop_jpeg(
        image_bytes, tf.stack([oy, x0, h, x1 - x0]), channels=3, dct_method=DCT_METHOD
    )
    return window[:, ox - x0 : ox - x0 + w]


def crop_and_resize(tf, image_bytes, box, size: int):
    """Crop box (top, left, h, w) and resize to uint8 [size, size, 3] (Pillow's bilinear).

    JPEGs are decoded only around the box (fused decode-and-crop), with the same pixels as
    the full decode.
    """
    oy, ox, h, w = box
    image = tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: _decode_and_crop_jpeg(tf, image_bytes, box),
        lambda: tf.image.crop_to_bounding_box(_decode_full(tf, image_bytes), oy, ox, h, w),
    )
    return pil_resize.resize(tf, image, [size, size])


def image_shape(tf, image_bytes):
    """int32 [3] (H, W, C) of an encoded image; JPEGs read from the header only."""
    return tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.image.extract_jpeg_shape(image_bytes),
        lambda: tf.shape(_decode_full(tf, image_bytes), out_type=tf.int32),
    )


def train_image(tf, image_bytes, seed_pair, size: int):
    """RandomResizedCrop(size, scale=(0.2, 1)) + flip, as torchvision; uint8 [size, size, 3].

    seed_pair: int64 [2] stateless seed.
    """
    seeds = tf.random.experimental.stateless_split(seed_pair, num=2)
    shape = image_shape(tf, image_bytes)
    box = sample_crop(tf, seeds[0], shape[0], shape[1])
    image = crop_and_resize(tf, image_bytes, box, size)
    return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def resized_shape(tf, hw, resize: int):
    """torchvision ``Resize(resize)`` output (h, w): shorter side = resize, longer floored.

    hw: int32 [2]. The longer side is ``int(resize * long / short)`` (exact integer division).
    """
    short, long = tf.reduce_min(hw), tf.reduce_max(hw)
    new_long = (resize * long) // short
    return tf.where(hw[0] <= hw[1], tf.stack([resize, new_long]), tf.stack([new_long, resize]))


def eval_image(tf, image_bytes, size: int):
    """torchvision Resize(round(size / 0.875)) + CenterCrop(size); uint8 [size, size, 3].

    Pillow's bilinear resize of the whole image (:mod:`pil_resize`); crop offsets
    ``round((new - size) / 2)`` (half to even).
    """
    image = _decode_full(tf, image_bytes)
    resize = int(round(size / CROP_FRACTION))
    new_hw = resized_shape(tf, tf.shape(image, out_type=tf.int32)[:2], resize)
    image = pil_resize.resize(tf, image, new_hw)
    oy = _round_int(tf, tf.cast(new_hw[0] - size, tf.float32) / 2.0)
    ox = _round_int(tf, tf.cast(new_hw[1] - size, tf.float32) / 2.0)
    return tf.image.crop_to_bounding_box(image, oy, ox, size, size)


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


# ----------------------------------------------------------------------------- train


@dataclasses.dataclass(frozen=True)
class _TrainStream:
    """Everything an epoch's dataset depends on, besides the epoch itself."""

    spec: DataSpec
    layout: BatchLayout
    seed: int
    split: str  # this process's slice, e.g. 'train[0:640583]'
    steps_per_epoch: int


def _epoch_dataset(tf, tfds, stream: _TrainStream, epoch: int, offset: int):
    """The batched tf.data stream of ``epoch`` from in-epoch step ``offset`` on."""
    spec, l = stream.spec, stream.layout.local_batch
    read_config = tfds.ReadConfig(
        shuffle_seed=tf_seed(stream.seed, epoch, 0), options=_tf_options(tf)
    )
    with sources.TFDS_LOCK:
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
        return {"image": image, "label": tf.cast(ex["label"], tf.int32)}

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(l, drop_remainder=True).prefetch(1)


def _open_epoch(tf, tfds, stream: _TrainStream, epoch: int, offset: int) -> Iterator:
    """Epoch ``epoch``'s numpy batch stream from step ``offset``, its first batch already read.

    Reading the first batch does the slow part of an epoch start: ``tfds.load``, the file
    shuffle and the shuffle-buffer fill.
    """
    batches = iter(tfds.as_numpy(_epoch_dataset(tf, tfds, stream, epoch, offset)))
    return itertools.chain([next(batches)], batches)


def _in_background(fn, *args) -> concurrent.futures.Future:
    """``fn(*args)`` started now in a daemon thread; the future holds its result or error."""
    future: concurrent.futures.Future = concurrent.futures.Future()

    def work():
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - re-raised by future.result().
            future.set_exception(e)

    threading.Thread(target=work, daemon=True).start()
    return future


def _train_batches(tf, tfds, stream: _TrainStream, start_step: int) -> Iterator[dict]:
    """Epochs one after another; each next epoch is opened in the background when the current
    one starts, so an epoch boundary costs no wait (and holds two shuffle buffers meanwhile).
    The batches and their order are those of opening each epoch when it is reached. Closing
    (or dropping) the stream waits for a pending open: no TFDS work outlives it."""
    layout = stream.layout
    epoch, offset = divmod(start_step, stream.steps_per_epoch)
    ahead = _in_background(_open_epoch, tf, tfds, stream, epoch, offset)
    try:
        while True:
            batches = ahead.result()
            ahead = _in_background(_open_epoch, tf, tfds, stream, epoch + 1, 0)
            for batch in batches:
                yield {
                    "image": layout.to_device_shape(batch["image"]),
                    "label": layout.to_device_shape(batch["label"]),
                }
            epoch += 1
    finally:
        concurrent.futures.wait([ahead])


def train_iterator(spec: DataSpec, layout: BatchLayout, seed: int, start_step: int) -> Iterator:
    """Counts and checks eagerly (errors surface here), then returns the lazy batch stream.

    Yields numpy {'image': uint8 [D, B, size, size, 3], 'label': int32 [D, B]}.
    """
    sources.resolve_source(spec)  # before importing TF: missing data fails fast
    tf, tfds = sources.import_tf()
    pil_resize.load(tf)  # built on first use; a missing compiler fails here, not in tf.data
    n = sources.tfds_count(spec.name, "train", spec.data_dir, spec.download)
    start, end = process_slice(n, layout, drop_remainder=True)
    l = layout.local_batch
    spe = (end - start) // l
    if spe == 0:
        raise ValueError(
            f"local batch {l} exceeds the {end - start} training examples of process "
            f"{layout.process_index}."
        )
    stream = _TrainStream(spec, layout, seed, f"train[{start}:{end}]", spe)
    return _train_batches(tf, tfds, stream, start_step)


# ----------------------------------------------------------------------------- eval


def eval_iterator(spec: DataSpec, layout: BatchLayout, split: str) -> Iterator:
    """This process's slice of ``split``, each example once, padded to the same batch count.

    Yields numpy {'image': uint8 [D, B, size, size, 3], 'label': int32 [D, B], 'mask': bool
    [D, B]}; padding rows are zero images with label 0 and mask False.
    """
    sources.resolve_source(spec)  # before importing TF: missing data fails fast
    tf, tfds = sources.import_tf()
    pil_resize.load(tf)
    split = sources.tfds_split_name(spec.name, split)
    n = sources.tfds_count(spec.name, split, spec.data_dir, spec.download)
    start, end = process_slice(n, layout, drop_remainder=False)
    pc, l, size = layout.process_count, layout.local_batch, spec.image_shape[0]
    max_local = max(((q + 1) * n) // pc - (q * n) // pc for q in range(pc))
    num_batches = max(1, math.ceil(max_local / l))
    with sources.TFDS_LOCK:
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
        image = eval_image(tf, ex["image"], size)
        return {"image": image, "label": tf.cast(ex["label"], tf.int32), "mask": tf.constant(True)}

    ds = ds.take(end - start).map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pad = {
        "image": tf.zeros([size, size, 3], tf.uint8),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(False),
    }
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
    ds = ds.take(num_batches * l).batch(l).prefetch(1)
    return ({k: layout.to_device_shape(v) for k, v in batch.items()} for batch in tfds.as_numpy(ds))
