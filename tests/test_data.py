"""Tests for widesparse_jax.data without TFDS: the spec, layouts, IDX sources, small datasets.

IDX data: tiny files written by the tests (exact contents known) and, when installed, the real
Fashion-MNIST files of the Debian package ``dataset-fashion-mnist``.
"""

import dataclasses
import gc
import gzip
import threading
import time

import ml_collections
import numpy as np
import pytest

from configs import default as default_config
from tests.batches import assert_batches_equal, take
from tests.markers import FMNIST_DIR, needs_fmnist
from widesparse_jax import choices, data
from widesparse_jax.data import normalize, prefetch, small, sources

ONE = data.DeviceLayout(1, 0, 1)


def _write_idx(path, array, magic, compress=True):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(raw)


def _tiny_idx_dir(tmp_path, n_train=20, n_test=7):
    """IDX files where image i is filled with the value i (train) or 100 + i (test)."""
    for split, n, base in (("train", n_train, 0), ("test", n_test, 100)):
        img_stem, lbl_stem = sources.IDX_FILES[split]
        images = np.broadcast_to((base + np.arange(n))[:, None, None], (n, 28, 28))
        _write_idx(tmp_path / (img_stem + ".gz"), images, 2051)
        _write_idx(tmp_path / (lbl_stem + ".gz"), np.arange(n) % 10, 2049)
    return str(tmp_path)


# ----------------------------------------------------------------------------- DataSpec


def test_spec_defaults_and_normalized_fields():
    spec = data.DataSpec("cifar10")
    assert (spec.source, spec.augment, spec.normalization, spec.channel_stats) == (
        "auto",
        "none",
        "channel",
        "dataset",
    )
    assert (spec.crop_padding, spec.shuffle_buffer, spec.image_shape) == (4, 10_000, (32, 32, 3))
    assert data.DataSpec("cifar10", augment=None) == spec  # None is an alias of 'none'
    s = data.DataSpec("mnist", train_subset=np.int64(5), subset_seed=np.int32(2))
    assert type(s.train_subset) is int and type(s.subset_seed) is int
    assert data.DataSpec("imagenet2012").image_shape == (224, 224, 3)
    assert data.DataSpec("imagenet2012", image_size=64).image_shape == (64, 64, 3)
    assert data.DataSpec("mnist", image_size=28).image_shape == (28, 28, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.augment = "crop"
    assert set(data.CHANNEL_STATS) == set(choices.DATASETS)


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(name="cifar11"), "'cifar11'"),
        (dict(name="cifar10", augment="flipx"), "'flipx'"),
        (dict(name="cifar10", augment="imagenet"), "imagenet2012"),
        (dict(name="imagenet2012", augment="crop"), "'crop' is not available"),
        (dict(name="cifar10", normalization="zca"), "'zca'"),
        (dict(name="imagenet2012", normalization="pixel"), "'pixel'"),
        (dict(name="cifar10", channel_stats="torch"), "'torch'"),
        (dict(name="mnist", source="gcs"), "'gcs'"),
        (dict(name="cifar10", source="idx"), 'source="idx" supports only'),
        (dict(name="cifar10", image_size=64), "image_size=64"),
        (dict(name="imagenet2012", image_size=4), "image_size must be an integer >= 8"),
        (dict(name="mnist", subset_seed=1), "subset_seed is set but train_subset"),
        (dict(name="mnist", train_subset=0), "train_subset must be an integer >= 1"),
        (dict(name="mnist", train_subset=True), "train_subset"),
        (dict(name="imagenet2012", train_subset=10), "not supported for streamed"),
        (dict(name="mnist", crop_padding=-1), "crop_padding"),
        (dict(name="mnist", shuffle_buffer=0), "shuffle_buffer"),
        (dict(name="mnist", data_dir=3), "data_dir must be a path"),
    ],
)
def test_spec_rejects_bad_values_naming_them(fields, match):
    with pytest.raises(ValueError, match=match):
        data.DataSpec(**fields)


def test_spec_from_config():
    config = default_config.get_config().dataset
    spec = data.DataSpec.from_config(config)
    assert spec == data.DataSpec(
        name=config.name, augment=config.augment, channel_stats=config.channel_stats
    )
    cfg = ml_collections.ConfigDict(dict(name="mnist", augment="crop", train_subset=50))
    assert data.DataSpec.from_config(cfg) == data.DataSpec("mnist", augment="crop", train_subset=50)
    assert data.DataSpec.from_config({"name": "svhn_cropped"}) == data.DataSpec("svhn_cropped")
    with pytest.raises(ValueError, match="crop_pad, shufle"):
        data.DataSpec.from_config({"name": "mnist", "shufle": 1, "crop_pad": 2})
    with pytest.raises(ValueError, match="'name'"):
        data.DataSpec.from_config({"augment": "none"})
    with pytest.raises(ValueError, match="'flipx'"):
        data.DataSpec.from_config({"name": "mnist", "augment": "flipx"})


def test_static_info_reads_no_data(tmp_path):
    empty = str(tmp_path)
    spec = data.DataSpec("fashion_mnist", data_dir=empty, idx_dir=empty, train_subset=300)
    assert data.static_info(spec) == data.DatasetInfo("fashion_mnist", 10, (28, 28, 1), 300, None)
    big = data.DataSpec("imagenet2012", data_dir=empty, image_size=96)
    assert data.static_info(big) == data.DatasetInfo("imagenet2012", 1000, (96, 96, 3), None, None)
    with pytest.raises(ValueError, match="'fashion_mnist' is not available"):
        data.dataset_info(spec)  # dataset_info does read the data


# ----------------------------------------------------------------------------- layouts


def test_device_layout_and_batch_split():
    import jax

    assert data.DeviceLayout.current() == data.DeviceLayout(
        jax.local_device_count(), jax.process_index(), jax.process_count()
    )
    assert data.DeviceLayout() == ONE
    with pytest.raises(ValueError, match="process_index=2"):
        data.DeviceLayout(1, 2, 2)
    with pytest.raises(ValueError, match="num_local_devices"):
        data.DeviceLayout(0, 0, 1)
    with pytest.raises(ValueError, match=r"batch size 100 .*device count 24"):
        data.split_batch(100, data.DeviceLayout(8, 0, 3))
    layout = data.split_batch(24, data.DeviceLayout(2, 1, 3))
    assert (layout.local_batch, layout.per_device) == (8, 4)
    assert layout.to_device_shape(np.zeros((8, 5))).shape == (2, 4, 5)
    with pytest.raises(ValueError, match="DeviceLayout"):
        data.split_batch(8, (1, 0, 1))


def test_steps_per_epoch():
    assert data.steps_per_epoch(60000, 128) == 468
    assert data.steps_per_epoch(2048, 256) == 8
    assert data.steps_per_epoch(100, 100) == 1
    with pytest.raises(ValueError, match="exceeds"):
        data.steps_per_epoch(100, 101)
    with pytest.raises(ValueError, match="global_batch_size"):
        data.steps_per_epoch(100, 0)


def test_iterator_arguments_are_checked(tmp_path):
    spec = data.DataSpec("fashion_mnist", source="idx", idx_dir=_tiny_idx_dir(tmp_path))
    with pytest.raises(ValueError, match=r"100 .*device count 3"):
        data.create_train_iterator(spec, 100, 0, devices=data.DeviceLayout(3, 0, 1))
    with pytest.raises(ValueError, match="seed"):
        data.create_train_iterator(spec, 4, -1, devices=ONE)
    with pytest.raises(ValueError, match="start_step"):
        data.create_train_iterator(spec, 4, 0, start_step=-2, devices=ONE)
    with pytest.raises(ValueError, match="prefetch"):
        data.create_eval_iterator(spec, 4, devices=ONE, prefetch=-1)
    with pytest.raises(ValueError, match="exceeds the number of training examples 20"):
        data.create_train_iterator(spec, 24, 0, devices=ONE)
    with pytest.raises(ValueError, match="DataSpec"):
        data.create_train_iterator("fashion_mnist", 4, 0, devices=ONE)


# ----------------------------------------------------------------------------- IDX sources


def test_find_idx_dir(tmp_path):
    assert data.find_idx_dir("cifar10") is None  # no IDX files exist for it
    assert data.find_idx_dir("mnist", str(tmp_path)) is None
    names = ["train-images.idx3-ubyte", "train-labels-idx1-ubyte.gz"]
    names += ["t10k-images-idx3-ubyte", "t10k-labels.idx1-ubyte.gz"]
    for n in names[:3]:
        (tmp_path / n).write_bytes(b"")
    assert data.find_idx_dir("mnist", str(tmp_path)) is None  # one file missing
    (tmp_path / names[3]).write_bytes(b"")
    assert data.find_idx_dir("mnist", str(tmp_path)) == str(tmp_path)
    if FMNIST_DIR is not None:
        assert FMNIST_DIR in sources.DEFAULT_IDX_DIRS["fashion_mnist"]


def test_missing_data_errors_explain_how_to_get_it(tmp_path):
    with pytest.raises(ValueError, match=r"'cifar100' is not available.*source=\"tfds\""):
        data.dataset_info(data.DataSpec("cifar100", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"not available.*dataset-fashion-mnist"):
        data.dataset_info(
            data.DataSpec("fashion_mnist", data_dir=str(tmp_path), idx_dir=str(tmp_path))
        )
    with pytest.raises(ValueError, match="No IDX files"):
        data.dataset_info(data.DataSpec("fashion_mnist", source="idx", idx_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="ILSVRC2012"):
        data.create_eval_iterator(
            data.DataSpec("imagenet2012", data_dir=str(tmp_path)), 8, devices=ONE
        )


def test_corrupt_idx_files_are_reported(tmp_path):
    d = _tiny_idx_dir(tmp_path)
    path = tmp_path / (sources.IDX_FILES["train"][0] + ".gz")
    _write_idx(path, np.zeros((20, 28, 28)), 2049)  # labels' magic on an image file
    spec = data.DataSpec("mnist", source="idx", idx_dir=d)
    with pytest.raises(ValueError, match="IDX magic 2049 != expected 2051"):
        next(data.create_train_iterator(spec, 4, 0, devices=ONE, prefetch=0))
    with gzip.open(path, "wb") as f:  # header promises 20 images, payload holds 19
        f.write((2051).to_bytes(4, "big") + b"".join(k.to_bytes(4, "big") for k in (20, 28, 28)))
        f.write(bytes(19 * 28 * 28))
    with pytest.raises(ValueError, match="truncated"):
        data.create_eval_iterator(data.DataSpec("mnist", idx_dir=d, normalization="pixel"), 4)


def test_tiny_idx_dataset_end_to_end(tmp_path):
    spec = data.DataSpec("mnist", source="auto", idx_dir=_tiny_idx_dir(tmp_path))
    assert data.dataset_info(spec) == data.DatasetInfo("mnist", 10, (28, 28, 1), 20, 7)
    with pytest.raises(ValueError, match="train_subset=21 exceeds the 20"):
        data.dataset_info(dataclasses.replace(spec, train_subset=21))
    two = [data.DeviceLayout(2, p, 2) for p in range(2)]
    plain = dataclasses.replace(spec, normalization="none")
    evals = [list(data.create_eval_iterator(plain, 4, devices=d, prefetch=0)) for d in two]
    assert len(evals[0]) == len(evals[1]) == 2  # ceil(7 / 4) on both processes
    # Global batch k = examples [4k, 4k + 4): process 0 rows 0-1, process 1 rows 2-3.
    values = np.stack([[e[k]["image"][:, 0, 0, 0, 0] * 255 for e in evals] for k in range(2)])
    masks = np.stack([[e[k]["mask"][:, 0] for e in evals] for k in range(2)])
    np.testing.assert_allclose(values.reshape(-1), [100, 101, 102, 103, 104, 105, 106, 0], 1e-4)
    assert masks.reshape(-1).tolist() == [True] * 7 + [False]
    # One epoch (5 steps of 4) visits every training example once; labels stay with images.
    stream = take(data.create_train_iterator(plain, 4, 3, devices=ONE, prefetch=0), 5)
    ids = np.rint(np.concatenate([b["image"][0, :, 0, 0, 0] for b in stream]) * 255)
    assert sorted(ids.tolist()) == list(range(20))
    labels = np.concatenate([b["label"][0] for b in stream])
    np.testing.assert_array_equal(labels, ids.astype(int) % 10)


# ----------------------------------------------------------------------------- small helpers


def test_random_crop_flip_is_keyed_by_seed_epoch_index():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 8, 8, 1), dtype=np.uint8)
    idx = np.arange(6)
    a = small.random_crop_flip(images, 5, 2, idx, pad=2, flip=True)
    np.testing.assert_array_equal(a, small.random_crop_flip(images, 5, 2, idx, pad=2, flip=True))
    # Same example id in a different batch position: same augmentation.
    perm = np.array([3, 1, 5, 0, 2, 4])
    np.testing.assert_array_equal(
        small.random_crop_flip(images[perm], 5, 2, idx[perm], pad=2, flip=True), a[perm]
    )
    assert not np.array_equal(a, small.random_crop_flip(images, 5, 3, idx, pad=2, flip=True))
    assert not np.array_equal(a, small.random_crop_flip(images, 6, 2, idx, pad=2, flip=True))


def test_select_subset():
    assert small.select_subset(10, None, None) is None
    np.testing.assert_array_equal(small.select_subset(10, 4, None), np.arange(4))
    a = small.select_subset(1000, 50, 7)
    assert len(set(a.tolist())) == 50 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, small.select_subset(1000, 50, 7))
    assert not np.array_equal(a, small.select_subset(1000, 50, 8))
    with pytest.raises(ValueError, match="train_subset=11 exceeds the 10"):
        small.select_subset(10, 11, None)


def test_prefetch_preserves_order_reraises_and_stops():
    def failing():
        yield from range(5)
        raise RuntimeError("boom")

    assert list(prefetch.maybe_prefetch(iter(range(7)), 3)) == list(range(7))
    got = []
    with pytest.raises(RuntimeError, match="boom"):
        for x in prefetch.maybe_prefetch(failing(), 2):
            got.append(x)
    assert got == list(range(5))
    before = threading.active_count()
    it = prefetch.maybe_prefetch(iter(range(10**9)), 2)
    next(it)
    del it
    gc.collect()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before  # abandoned iterator's worker exited


# ----------------------------------------------------------------------------- real IDX data


@needs_fmnist
def test_real_fashion_mnist_idx():
    import jax

    spec = data.DataSpec("fashion_mnist", source="idx")
    assert data.dataset_info(spec) == data.DatasetInfo(
        "fashion_mnist", 10, (28, 28, 1), 60000, 10000
    )
    auto = data.DataSpec("fashion_mnist")
    assert data.dataset_info(auto).num_train == 60000  # 'auto' falls back to IDX
    b = next(data.create_train_iterator(auto, jax.device_count() * 4, 0, prefetch=0))
    assert b["image"].shape == (jax.local_device_count(), 4, 28, 28, 1)  # layout from jax
    images, labels = sources.load_idx("fashion_mnist", "train", None)
    assert images.shape == (60000, 28, 28, 1) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10
    x = images / 255.0
    mean, std = data.CHANNEL_STATS["fashion_mnist"]
    assert abs(x.mean() - mean[0]) < 2e-3 and abs(x.std() - std[0]) < 2e-3
    # Channel-normalized test set: mean ~0, std ~1; all 10000 examples, labels 0..9.
    ev = list(data.create_eval_iterator(spec, 3000, devices=data.DeviceLayout(2, 0, 1)))
    m = np.concatenate([b["mask"].reshape(-1) for b in ev])
    xs = np.concatenate([b["image"].reshape(-1, 28, 28, 1) for b in ev])[m]
    ys = np.concatenate([b["label"].reshape(-1) for b in ev])[m]
    assert m.sum() == 10000 and np.bincount(ys).tolist() == [1000] * 10
    assert abs(xs.mean()) < 0.05 and abs(xs.std() - 1) < 0.05


@needs_fmnist
def test_real_idx_exact_resume_epochs_and_reshuffle():
    spec = data.DataSpec(
        "fashion_mnist", source="idx", augment="cifar_crop_flip", train_subset=100, subset_seed=0
    )
    devices = data.DeviceLayout(2, 0, 1)

    def stream(start, n, s=spec, prefetch=2):
        it = data.create_train_iterator(s, 32, 5, start, devices=devices, prefetch=prefetch)
        return take(it, n)

    full = stream(0, 10)  # 3 steps per epoch
    assert_batches_equal(full, stream(0, 10, prefetch=0))
    for start in (1, 3, 5, 9):
        assert_batches_equal(full[start:], stream(start, 10 - start))
    t = time.time()
    far = stream(10**9 + 1, 1)[0]
    assert time.time() - t < 5  # O(1) skip-ahead, not 10^9 batches
    assert far["image"].shape == (2, 16, 28, 28, 1)
    # Each epoch: 96 distinct examples (drop remainder of 100), a different order per epoch.
    plain = dataclasses.replace(spec, augment="none", normalization="none")
    batches = stream(0, 6, s=plain)

    def epoch_keys(bs):
        return [img.tobytes() for b in bs for img in b["image"].reshape(-1, 28, 28, 1)]

    e0, e1 = epoch_keys(batches[:3]), epoch_keys(batches[3:])
    assert len(set(e0)) == 96 and len(set(e1)) == 96 and e0 != e1


@needs_fmnist
def test_real_idx_subsets_and_pixel_normalization():
    spec = data.DataSpec("fashion_mnist", source="idx", train_subset=2048)
    first = small.train_arrays(spec)
    seeded = small.train_arrays(dataclasses.replace(spec, subset_seed=3))
    again = small.train_arrays(dataclasses.replace(spec, subset_seed=3))
    other = small.train_arrays(dataclasses.replace(spec, subset_seed=4))
    images, _ = sources.load_idx("fashion_mnist", "train", None)
    np.testing.assert_array_equal(first[0], images[:2048])
    np.testing.assert_array_equal(seeded[1], again[1])
    assert not np.array_equal(seeded[0], other[0]) and not np.array_equal(seeded[0], first[0])
    with pytest.raises(ValueError, match="train_subset=70000"):
        data.create_train_iterator(dataclasses.replace(spec, train_subset=70000), 8, 0, devices=ONE)
    # One global batch == the whole 2048-example subset: per-pixel mean 0, std 1 (or 0 where
    # the pixel is constant over the subset).
    pixel = dataclasses.replace(spec, subset_seed=3, normalization="pixel")
    b = next(data.create_train_iterator(pixel, 2048, 0, devices=ONE))
    x = b["image"].reshape(2048, -1).astype(np.float64)
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    sd = x.std(0)
    assert np.all((np.abs(sd - 1) < 1e-4) | (sd == 0))
    # Eval uses the same (training-subset) statistics.
    ev = next(data.create_eval_iterator(pixel, 1000, devices=ONE))
    mean, std = normalize.pixel_stats(seeded[0])
    test_images, _ = sources.load_idx("fashion_mnist", "test", None)
    want = np.where(std > 0, (test_images[:1000] / 255.0 - mean) / np.where(std > 0, std, 1), 0)
    np.testing.assert_allclose(ev["image"][0], want, atol=1e-5)
