"""Tests for widesparse_jax.data on TFDS: ``tfds.testing.mock_data`` and real prepared datasets.

Mock data ignores split slicing and has no split metadata, so the multi-process ImageNet
slices are checked on small datasets written in TFDS's own file format (``_write_tfds``),
which TFDS then reads as prepared data.
"""

import collections
import dataclasses
import os

import numpy as np
import pytest

from tests.batches import assert_batches_equal, take
from widesparse_jax import choices, data
from widesparse_jax.data import imagenet
from widesparse_jax.data import spec as spec_lib

tfds = pytest.importorskip("tensorflow_datasets")
tf = pytest.importorskip("tensorflow")

SMALL_IMAGENET = 32  # image_size used for ImageNet to keep the tests fast.


def _tfds_labels(name, split, n):
    ds = tfds.load(name, split=split, as_supervised=True)
    labels = [int(y) for _, y in tfds.as_numpy(ds)]
    assert len(labels) == n
    return labels


def mock(n):
    return tfds.testing.mock_data(num_examples=n)


def _layouts(procs, devices):
    return [data.DeviceLayout(devices, p, procs) for p in range(procs)]


# ----------------------------------------------------------------------------- mock TFDS data


@pytest.mark.parametrize("name", choices.DATASETS)
def test_every_dataset_shapes_dtypes_and_eval_coverage(name):
    n = 13
    streaming = name in choices.STREAMING_DATASETS
    spec = data.DataSpec(
        name,
        source="tfds",
        image_size=SMALL_IMAGENET if streaming else None,
        augment="imagenet" if streaming else "cifar_crop_flip",
    )
    two = data.DeviceLayout(2, 0, 1)
    with mock(n):
        info = data.dataset_info(spec)
        assert (info.num_train, info.num_test) == (n, n)
        assert info.num_classes == spec_lib.NUM_CLASSES[name]
        assert info == dataclasses.replace(data.static_info(spec), num_train=n, num_test=n)
        h, w, c = info.image_shape
        batch = next(data.create_train_iterator(spec, 8, 1, devices=two, prefetch=0))
        assert batch.keys() == {"image", "label"}
        assert batch["image"].shape == (2, 4, h, w, c) and batch["image"].dtype == np.float32
        assert batch["label"].shape == (2, 4) and batch["label"].dtype == np.int32
        assert np.all((batch["label"] >= 0) & (batch["label"] < info.num_classes))
        assert np.all(np.isfinite(batch["image"]))
        expected = _tfds_labels(name, "validation" if streaming else "test", n)
        ev = list(data.create_eval_iterator(spec, 6, devices=two, prefetch=0))
    assert len(ev) == 3  # ceil(13 / 6)
    for b in ev:
        assert b["image"].shape == (2, 3, h, w, c) and b["mask"].dtype == np.bool_
    masks = np.concatenate([b["mask"].reshape(-1) for b in ev])
    labels = np.concatenate([b["label"].reshape(-1) for b in ev])
    assert masks.sum() == n and not masks[n:].any()
    assert collections.Counter(labels[masks].tolist()) == collections.Counter(expected)
    pads = np.concatenate([b["image"].reshape(-1, h, w, c) for b in ev])[~masks]
    assert np.all(pads == 0)


def test_channel_normalization_matches_constants():
    spec = data.DataSpec("cifar10", source="tfds")
    one = data.DeviceLayout()

    def first(**fields):
        s = dataclasses.replace(spec, **fields)
        return next(data.create_train_iterator(s, 16, 3, devices=one, prefetch=0))["image"]

    with mock(16):
        raw = first(normalization="none")
        norm = first(normalization="channel")
        base = first(normalization="channel", channel_stats="imagenet")
    assert raw.min() >= 0 and raw.max() <= 1 and raw.max() > 0.9
    mean, std = data.CHANNEL_STATS["cifar10"]
    np.testing.assert_allclose(norm, (raw - np.array(mean)) / np.array(std), atol=1e-5)
    mean, std = data.CHANNEL_STATS["imagenet2012"]
    np.testing.assert_allclose(base, (raw - np.array(mean)) / np.array(std), atol=1e-5)


def test_crop_flip_content_through_pipeline():
    """Every augmented image is a zero-padded crop (flipped or not) of some original image."""
    n, pad = 16, 4
    spec = data.DataSpec("svhn_cropped", source="tfds", normalization="none")
    with mock(n):
        ds = tfds.load("svhn_cropped", split="train", as_supervised=True)
        originals = np.stack([x for x, _ in tfds.as_numpy(ds)])

        def stream(augment):
            s = dataclasses.replace(spec, augment=augment)
            return take(data.create_train_iterator(s, 16, 0, devices=data.DeviceLayout()), 4)

        crop, flip = stream("crop"), stream("cifar_crop_flip")
    padded = np.pad(originals, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def match(img):
        """(flipped, offset) of a matching crop, or None."""
        for o in range(n):
            for dy in range(2 * pad + 1):
                for dx in range(2 * pad + 1):
                    win = padded[o, dy : dy + 32, dx : dx + 32]
                    if np.array_equal(win, img):
                        return False, (dy, dx)
                    if np.array_equal(win[:, ::-1], img):
                        return True, (dy, dx)
        return None

    def results(batches):
        out = []
        for b in batches:
            for img in np.rint(b["image"].reshape(-1, 32, 32, 3) * 255).astype(np.uint8):
                m = match(img)
                assert m is not None, "augmented image is not a padded crop of any original"
                out.append(m)
        return out

    crops = results(crop)
    offsets = {off for _, off in crops}
    assert len(offsets) > 20  # offsets vary over the 81 possibilities
    assert any(off != (pad, pad) for _, off in crops)
    flips = [f for f, _ in results(flip)]
    assert 0.25 < np.mean(flips) < 0.75  # about half flipped
    assert not any(f for f, _ in crops)  # unflipped crops are matched first: 'crop' never flips


def test_multiprocess_train_shards_compose_the_global_batch():
    spec = data.DataSpec("cifar100", source="tfds", augment="cifar_crop_flip")
    with mock(40):

        def stream(devices):
            return take(data.create_train_iterator(spec, 8, 11, devices=devices, prefetch=0), 6)

        single = stream(data.DeviceLayout())
        shards = [stream(d) for d in _layouts(2, 2)]
    for step in range(6):
        for key in ("image", "label"):
            parts = [s[step][key] for s in shards]
            assert parts[0].shape[:2] == (2, 2)
            glued = np.concatenate([x.reshape((-1,) + x.shape[2:]) for x in parts])
            np.testing.assert_array_equal(glued, single[step][key].reshape(glued.shape))


@pytest.mark.parametrize("procs,devices,batch", [(1, 1, 7), (2, 2, 8), (3, 2, 12), (4, 1, 4)])
def test_eval_every_example_once_across_processes(procs, devices, batch):
    n = 23
    spec = data.DataSpec("mnist", source="tfds")
    with mock(n):
        expected = _tfds_labels("mnist", "test", n)
        runs = [
            list(data.create_eval_iterator(spec, batch, devices=d, prefetch=0))
            for d in _layouts(procs, devices)
        ]
    assert len({len(r) for r in runs}) == 1  # same number of batches on every process
    labels, count = [], 0
    for r in runs:
        for b in r:
            assert b["mask"].shape == (devices, batch // procs // devices)
            count += int(b["mask"].sum())
            labels += b["label"][b["mask"]].tolist()
    assert count == n
    assert collections.Counter(labels) == collections.Counter(expected)


def test_imagenet_determinism_and_exact_resume():
    spec = data.DataSpec(
        "imagenet2012",
        source="tfds",
        augment="imagenet",
        image_size=SMALL_IMAGENET,
        shuffle_buffer=64,
    )
    two = data.DeviceLayout(2, 0, 1)

    def stream(seed, n, start=0):
        return take(data.create_train_iterator(spec, 8, seed, start, two, prefetch=0), n)

    with mock(24):  # 3 steps per epoch
        full, again, resumed, other = stream(7, 7), stream(7, 7), stream(7, 3, 4), stream(8, 1)
    assert_batches_equal(full, again)
    assert_batches_equal(full[4:], resumed)
    assert not np.array_equal(full[0]["image"], other[0]["image"])
    # Each epoch visits each example once (drop remainder: 24 = 3 * 8), reshuffled per epoch.
    epoch0 = np.concatenate([b["label"].reshape(-1) for b in full[:3]])
    epoch1 = np.concatenate([b["label"].reshape(-1) for b in full[3:6]])
    assert sorted(epoch0.tolist()) == sorted(epoch1.tolist())
    assert not np.array_equal(epoch0, epoch1)


def test_imagenet_host_stream_is_uint8_normalized_on_the_device():
    """tf.data ships uint8 images; the iterators' float32 images are (x - 255 mean) times
    1 / (255 std) of them, device arrays (pmapped over the real devices, jitted for a
    simulated layout); eval padding rows stay zero images; normalization 'none' is x / 255."""
    import jax

    spec = data.DataSpec(
        "imagenet2012", source="tfds", augment="imagenet", image_size=16, shuffle_buffer=64
    )
    none = dataclasses.replace(spec, normalization="none")
    one, two = data.DeviceLayout(), data.DeviceLayout(2, 0, 1)
    with mock(24):
        host = take(imagenet.train_iterator(spec, data.layout.split_batch(8, one), 3, 2), 2)
        got = take(data.create_train_iterator(spec, 8, 3, 2, devices=one, prefetch=0), 2)
        host_ev = list(imagenet.eval_iterator(none, data.layout.split_batch(10, two), "test"))
        got_ev = list(data.create_eval_iterator(none, 10, devices=two))
    mean, std = (np.float32(255) * np.array(v, np.float32) for v in data.CHANNEL_STATS[spec.name])
    for h, g in zip(host, got, strict=True):
        assert h["image"].dtype == np.uint8 and isinstance(g["image"], jax.Array)
        want = (h["image"].astype(np.float32) - mean) * (np.float32(1) / std)
        np.testing.assert_array_equal(np.asarray(g["image"]), want)
        np.testing.assert_allclose(np.asarray(g["image"]), (h["image"] - mean) / std, rtol=3e-7)
        np.testing.assert_array_equal(g["label"], h["label"])
    assert len(got_ev) == len(host_ev) == 3 and not host_ev[-1]["mask"].all()
    for h, g in zip(host_ev, got_ev, strict=True):
        assert h["image"].dtype == np.uint8 and g["image"].dtype == np.float32
        want = np.where(h["mask"][..., None, None, None], h["image"] * (np.float32(1) / 255), 0)
        np.testing.assert_array_equal(np.asarray(g["image"]), want)
        np.testing.assert_array_equal(g["mask"], h["mask"])


def test_imagenet_device_stage_compiles_once():
    """The normalized batches keep one sharding: a pmapped consumer (as the train and eval
    steps) compiles for the first batch only, across an epoch boundary, and a second eval
    pass reuses every program of the first."""
    import jax

    from widesparse_jax import compile_cache

    spec = data.DataSpec("imagenet2012", source="tfds", augment="imagenet", image_size=16)
    consume = jax.pmap(lambda b: b["image"].sum() + b["label"].sum())
    stats = compile_cache.track()
    with mock(12):  # 3 steps per epoch
        train = data.create_train_iterator(spec, 4, 0, devices=data.DeviceLayout())
        jax.block_until_ready(consume(next(train)))
        warm = stats.compilations
        jax.block_until_ready([consume(next(train)) for _ in range(4)])
        assert stats.compilations == warm

        def eval_pass():
            ev = data.create_eval_iterator(spec, 5, devices=data.DeviceLayout())
            jax.block_until_ready([consume(b) for b in ev])

        eval_pass()
        warm = stats.compilations
        eval_pass()
        assert stats.compilations == warm


def test_imagenet_eval_resize_center_crop():
    # 300 x 400 image whose column index is encoded in the red channel.
    cols = np.tile(np.linspace(0, 255, 400).astype(np.uint8)[None, :], (300, 1))
    img = np.stack([cols, np.zeros_like(cols), np.zeros_like(cols)], -1)
    png = tf.io.encode_png(img)
    out = imagenet.eval_image(tf, png, 224).numpy()
    assert out.shape == (224, 224, 3)
    # Shorter side -> 256 (scale 256/300), so the 400 wide image becomes ~341 wide; the crop
    # keeps its central 224 columns: red ranges over the middle ~65.6% of 0..255.
    lo, hi = out[:, 0, 0].mean(), out[:, -1, 0].mean()
    assert abs(lo - 255 * (341 - 224) / 2 / 341) < 3 and abs(hi - 255 * (1 - 58.5 / 341)) < 3
    key = tf.constant([1, 2], tf.int64)
    train = imagenet.train_image(tf, png, key, 64).numpy()
    assert train.shape == (64, 64, 3)
    np.testing.assert_array_equal(train, imagenet.train_image(tf, png, key, 64).numpy())


# ----------------------------------------------------------------------------- prepared TFDS data


def _write_tfds(root, name, splits):
    """Writes ``splits`` ({split: [example dict]}) as prepared TFDS data of ``name`` in root."""
    builder = tfds.builder(name, data_dir=root)
    os.makedirs(builder.data_dir, exist_ok=True)
    features, infos = builder.info.features, []
    template = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
    for split, examples in splits.items():
        path = os.path.join(builder.data_dir, f"{name}-{split}.tfrecord-00000-of-00001")
        with tf.io.TFRecordWriter(path) as writer:
            for ex in examples:
                writer.write(features.serialize_example(ex))
        size = os.path.getsize(path)
        infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[len(examples)], num_bytes=size))
    tfds.folder_dataset.write_metadata(
        data_dir=builder.data_dir, features=features, split_infos=infos, filename_template=template
    )


def test_prepared_tfds_is_found_by_auto_and_read_in_file_order(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
    train = [dict(id=f"t{i}", image=images[i], label=i % 10) for i in range(8)]
    test = [dict(id=f"e{i}", image=images[8 + i], label=(8 + i) % 10) for i in range(3)]
    _write_tfds(str(tmp_path), "cifar10", {"train": train, "test": test})
    spec = data.DataSpec("cifar10", data_dir=str(tmp_path), normalization="none")
    assert data.dataset_info(spec) == data.DatasetInfo("cifar10", 10, (32, 32, 3), 8, 3)
    ev = list(data.create_eval_iterator(spec, 2, devices=data.DeviceLayout()))
    got = np.concatenate([b["image"][0] for b in ev])[:3]
    np.testing.assert_array_equal(got, images[8:].astype(np.float32) * np.float32(1 / 255))
    assert np.concatenate([b["label"][0] for b in ev]).tolist() == [8, 9, 0, 0]
    subset = dataclasses.replace(spec, train_subset=4, subset_seed=1)
    batch = next(data.create_train_iterator(subset, 4, 0, devices=data.DeviceLayout()))
    chosen = sorted(np.rint(batch["image"][0, :, 0, 0, 0] * 255).astype(int).tolist())
    picked = np.sort(np.random.default_rng(1).choice(8, 4, replace=False))
    assert chosen == sorted(images[picked, 0, 0, 0].tolist())


def test_prepared_imagenet_process_slices(tmp_path):
    """Real split slicing: processes read disjoint slices, eval covers every example once."""
    rng = np.random.default_rng(0)

    def examples(prefix, n, first_label):
        shapes = rng.integers(20, 48, (n, 2))
        return [
            dict(
                file_name=f"{prefix}{i}.JPEG",
                image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                label=first_label + i,
            )
            for i, (h, w) in enumerate(shapes)
        ]

    _write_tfds(
        str(tmp_path),
        "imagenet2012",
        {"train": examples("t", 13, 0), "validation": examples("v", 7, 100)},
    )
    spec = data.DataSpec("imagenet2012", data_dir=str(tmp_path), image_size=16, augment="imagenet")
    assert data.dataset_info(spec) == data.DatasetInfo("imagenet2012", 1000, (16, 16, 3), 13, 7)
    evals = [list(data.create_eval_iterator(spec, 4, devices=d)) for d in _layouts(2, 1)]
    assert len(evals[0]) == len(evals[1]) == 2  # ceil(4 / 2): slices of 3 and 4 examples
    labels = [np.concatenate([b["label"][b["mask"]] for b in e]).tolist() for e in evals]
    assert labels == [[100, 101, 102], [103, 104, 105, 106]]
    # Train: process p reads train[6p:6p+6] (13 // 2 = 6 each, drop remainder), 3 steps of 2.
    for p, devices in enumerate(_layouts(2, 1)):
        epochs = take(data.create_train_iterator(spec, 4, 5, devices=devices), 6)
        e0 = sorted(np.concatenate([b["label"][0] for b in epochs[:3]]).tolist())
        e1 = sorted(np.concatenate([b["label"][0] for b in epochs[3:]]).tolist())
        assert e0 == e1 == list(range(6 * p, 6 * p + 6))
