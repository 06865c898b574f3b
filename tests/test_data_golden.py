"""Pinned batches: the data package yields, bit for bit, what the pre-package pipeline yielded.

Each case's batches (train: the first few steps; eval: every batch, padding included) were
hashed with ``batch_digest`` from the old ``widesparse_jax/input_pipeline.py`` (commit cbc9ead)
on the real Fashion-MNIST IDX files and on ``tfds.testing.mock_data``. A change to ordering,
augmentation, normalization, sharding or eval padding changes a digest.
"""

import contextlib
import hashlib

import numpy as np
import pytest

from widesparse_jax import data

tfds = pytest.importorskip("tensorflow_datasets")

HAVE_FMNIST = data.find_idx_dir("fashion_mnist") is not None

FM = dict(name="fashion_mnist", source="idx")
C10 = dict(name="cifar10", source="tfds")
IN = dict(name="imagenet2012", source="tfds", image_size=32, shuffle_buffer=64)

# (case id, mock examples or None for the real IDX files, spec fields, kind, iterator
# arguments, (local devices, process index, process count), batches taken (None: all)).
CASES = [
    ("fm_train_plain", None, FM, "train", dict(global_batch_size=64, seed=0), (1, 0, 1), 3),
    (
        "fm_train_aug_subset",
        None,
        dict(FM, augment="cifar_crop_flip", train_subset=1000, subset_seed=3),
        "train",
        dict(global_batch_size=32, seed=5, prefetch=0),
        (2, 0, 1),
        4,
    ),
    (
        "fm_train_pixel_resume",
        None,
        dict(FM, augment="crop", normalization="pixel", train_subset=2048, subset_seed=1),
        "train",
        dict(global_batch_size=64, seed=2, start_step=70),
        (1, 0, 1),
        3,
    ),
    (
        "fm_train_first_subset_pad2",
        None,
        dict(FM, augment="cifar_crop_flip", train_subset=500, crop_padding=2),
        "train",
        dict(global_batch_size=50, seed=9, start_step=9),
        (1, 0, 1),
        3,
    ),
    *[
        (
            f"fm_train_2proc_p{p}",
            None,
            dict(FM, augment="cifar_crop_flip"),
            "train",
            dict(global_batch_size=16, seed=4, start_step=5),
            (2, p, 2),
            3,
        )
        for p in range(2)
    ],
    ("fm_eval", None, FM, "eval", dict(global_batch_size=3000), (2, 0, 1), None),
    (
        "fm_eval_none_stats",
        None,
        dict(FM, normalization="none", channel_stats="imagenet"),
        "eval",
        dict(global_batch_size=4000),
        (1, 0, 1),
        None,
    ),
    *[
        (
            f"fm_eval_pixel_2proc_p{p}",
            None,
            dict(FM, normalization="pixel", train_subset=2048, subset_seed=3),
            "eval",
            dict(global_batch_size=4000),
            (1, p, 2),
            None,
        )
        for p in range(2)
    ],
    (
        "c10_train_aug",
        40,
        dict(C10, augment="cifar_crop_flip"),
        "train",
        dict(global_batch_size=8, seed=1, prefetch=0),
        (2, 0, 1),
        6,
    ),
    *[
        (
            f"c10_train_imagenet_stats_2proc_p{p}",
            40,
            dict(C10, augment="cifar_crop_flip", channel_stats="imagenet"),
            "train",
            dict(global_batch_size=8, seed=3, start_step=3, prefetch=0),
            (1, p, 2),
            4,
        )
        for p in range(2)
    ],
    (
        "c10_train_pixel_subset",
        40,
        dict(C10, normalization="pixel", train_subset=20, subset_seed=2),
        "train",
        dict(global_batch_size=10, seed=0, prefetch=0),
        (1, 0, 1),
        3,
    ),
    ("c10_eval", 40, C10, "eval", dict(global_batch_size=16, prefetch=0), (2, 0, 1), None),
    (
        "c10_eval_pixel_subset",
        40,
        dict(C10, normalization="pixel", train_subset=20, subset_seed=2),
        "eval",
        dict(global_batch_size=16, prefetch=0),
        (1, 0, 1),
        None,
    ),
    (
        "svhn_train_crop",
        24,
        dict(name="svhn_cropped", source="tfds", augment="crop"),
        "train",
        dict(global_batch_size=8, seed=6, prefetch=0),
        (1, 0, 1),
        3,
    ),
    (
        "in_train_aug",
        24,
        dict(IN, augment="imagenet"),
        "train",
        dict(global_batch_size=8, seed=7, prefetch=0),
        (2, 0, 1),
        4,
    ),
    (
        "in_train_aug_resume",
        24,
        dict(IN, augment="imagenet"),
        "train",
        dict(global_batch_size=8, seed=7, start_step=4, prefetch=0),
        (2, 0, 1),
        2,
    ),
    (
        "in_train_noaug_2proc_p1",
        24,
        IN,
        "train",
        dict(global_batch_size=8, seed=1, start_step=1, prefetch=0),
        (1, 1, 2),
        2,
    ),
    ("in_eval", 13, IN, "eval", dict(global_batch_size=6, prefetch=0), (2, 0, 1), None),
    (
        "in_eval_none_2proc_p1",
        13,
        dict(IN, normalization="none"),
        "eval",
        dict(global_batch_size=4, prefetch=0),
        (1, 1, 2),
        None,
    ),
]


def batch_digest(batches) -> str:
    """sha256 (first 20 hex digits) of a list of batches: keys, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for b in batches:
        for k in sorted(b):
            x = np.ascontiguousarray(b[k])
            h.update(f"{k}|{x.dtype.str}|{x.shape}|".encode())
            h.update(x.tobytes())
    return h.hexdigest()[:20]


def take(it, n):
    """The first n items of it (all of them when n is None)."""
    return list(it) if n is None else [next(it) for _ in range(n)]


# Recorded from the pre-package input_pipeline.py (commit cbc9ead): digest, batch count,
# (num_classes, image_shape, num_train, num_test) of dataset_info. The five ImageNet (in_*)
# digests were re-pinned after the deliberate torchvision-fidelity change of issue 13 (accurate
# IDCT decode, torchvision's resize/crop rounding and crop sampler, antialiased train resize);
# their batch counts and dataset_info did not change, and every other case still matches cbc9ead.
# They were re-pinned once more when the ImageNet host stream became uint8 (normalized on the
# device): the new images are the previous ones rounded to 0..255 integers before normalizing
# (checked on in_train_aug: 98,302 of 98,304 values; the other 2 are .5 ties that the float
# round trip moved), labels and masks unchanged. And once more when the resize became Pillow's
# own (data/pil_resize.py, bit-exact) and the fused decode-and-crop equal to the full decode:
# 14-20 % of the values moved, by one uint8 step where only the resize changed (eval, no
# augmentation) and by up to 32 steps at crop edges (the decode fix), labels and masks unchanged.
EXPECTED = {
    "fm_train_plain": ("4614239d9866e8e46af5", 3, (10, (28, 28, 1), 60000, 10000)),
    "fm_train_aug_subset": ("6d299665ac6571f6615a", 4, (10, (28, 28, 1), 1000, 10000)),
    "fm_train_pixel_resume": ("1e299926f5f81582c641", 3, (10, (28, 28, 1), 2048, 10000)),
    "fm_train_first_subset_pad2": ("c4647cd942f5f1c9f8e6", 3, (10, (28, 28, 1), 500, 10000)),
    "fm_train_2proc_p0": ("5f68581fcdc1c4632bf0", 3, (10, (28, 28, 1), 60000, 10000)),
    "fm_train_2proc_p1": ("eed28821e2c3dea76752", 3, (10, (28, 28, 1), 60000, 10000)),
    "fm_eval": ("69ee2bce3a658fbd655d", 4, (10, (28, 28, 1), 60000, 10000)),
    "fm_eval_none_stats": ("bd34c1a777bed4a821ed", 3, (10, (28, 28, 1), 60000, 10000)),
    "fm_eval_pixel_2proc_p0": ("a01ff0eb55fa6e4e46e1", 3, (10, (28, 28, 1), 2048, 10000)),
    "fm_eval_pixel_2proc_p1": ("98a6678e2ed87e0fe12c", 3, (10, (28, 28, 1), 2048, 10000)),
    "c10_train_aug": ("846779a2ed0d845159cf", 6, (10, (32, 32, 3), 40, 40)),
    "c10_train_imagenet_stats_2proc_p0": ("043426c4584be07c4c43", 4, (10, (32, 32, 3), 40, 40)),
    "c10_train_imagenet_stats_2proc_p1": ("a5366404c9d22f3e7c55", 4, (10, (32, 32, 3), 40, 40)),
    "c10_train_pixel_subset": ("802aef8db126d424ef74", 3, (10, (32, 32, 3), 20, 40)),
    "c10_eval": ("f197603e0859e01f0b22", 3, (10, (32, 32, 3), 40, 40)),
    "c10_eval_pixel_subset": ("f69e15f58e549d57a625", 3, (10, (32, 32, 3), 20, 40)),
    "svhn_train_crop": ("48ba0e0cc5b380ec4257", 3, (10, (32, 32, 3), 24, 24)),
    "in_train_aug": ("fb6697d3efbb816d6909", 4, (1000, (32, 32, 3), 24, 24)),
    "in_train_aug_resume": ("ef9041236b1c48ac16bf", 2, (1000, (32, 32, 3), 24, 24)),
    "in_train_noaug_2proc_p1": ("3111b96fbd247bd4e393", 2, (1000, (32, 32, 3), 24, 24)),
    "in_eval": ("a88e402c4dc78a6d5d27", 3, (1000, (32, 32, 3), 13, 13)),
    "in_eval_none_2proc_p1": ("4c503689292d287c240b", 4, (1000, (32, 32, 3), 13, 13)),
}


def _run_case(mock, spec_fields, kind, it_kwargs, devices, n):
    """(digest, batch count, dataset_info fields) of one case through the data package."""
    spec = data.DataSpec(**spec_fields)
    layout = data.DeviceLayout(*devices)
    ctx = tfds.testing.mock_data(num_examples=mock) if mock else contextlib.nullcontext()
    with ctx:
        if kind == "train":
            it = data.create_train_iterator(spec, devices=layout, **it_kwargs)
        else:
            it = data.create_eval_iterator(spec, devices=layout, **it_kwargs)
        batches = take(it, n)
        info = data.dataset_info(spec)
    summary = (info.num_classes, info.image_shape, info.num_train, info.num_test)
    return batch_digest(batches), len(batches), summary


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_batches_match_the_recorded_pipeline(case):
    cid, mock, spec_fields, kind, it_kwargs, devices, n = case
    if mock is None and not HAVE_FMNIST:
        pytest.skip("Fashion-MNIST IDX files not found (apt-get install dataset-fashion-mnist)")
    assert _run_case(mock, spec_fields, kind, it_kwargs, devices, n) == EXPECTED[cid]


def test_every_case_is_pinned():
    assert sorted(EXPECTED) == sorted(c[0] for c in CASES)
