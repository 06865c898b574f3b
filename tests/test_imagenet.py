"""ImageNet path on real files: the missing-data message, ImageNet-like archives, TFDS prepare."""

import pytest

from widesparse_jax import data
from widesparse_jax.data import imagenet, sources
from widesparse_jax.data.layout import BatchLayout


def test_unprepared_imagenet_is_one_clear_message(tmp_path):
    spec = data.DataSpec("imagenet2012", source="tfds", data_dir=str(tmp_path))
    with pytest.raises(ValueError) as err:
        data.dataset_info(spec)
    msg = str(err.value)
    manual = str(tmp_path / "downloads" / "manual")
    assert "ILSVRC2012_img_train.tar" in msg and "ILSVRC2012_img_val.tar" in msg
    assert f"tfds build imagenet2012 --data_dir={tmp_path} --manual_dir={manual}" in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert sources.MANUAL_DOWNLOAD == ("imagenet2012",)


# ----------------------------------------------------------------------------- real TFDS builder

NUM_VAL, PER_CLASS = 16, 2


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Tiny ImageNet-like archives, prepared by the real TFDS imagenet2012 builder (offline)."""
    from scripts import make_imagenet_like as mk

    root = tmp_path_factory.mktemp("imagenet_like")
    manual, data_dir = str(root / "manual"), str(root / "data")
    made = mk.make(manual, NUM_VAL, PER_CLASS, scale=0.12, seed=0)
    mk.prepare(manual, data_dir)
    return manual, data_dir, made


def test_archives_are_packed_like_the_download(prepared):
    import tarfile

    manual, _, made = prepared
    with tarfile.open(f"{manual}/ILSVRC2012_img_train.tar") as outer:
        members = outer.getnames()
    assert members == [f"{s}.tar" for s in made["classes"]]
    with tarfile.open(f"{manual}/ILSVRC2012_img_val.tar") as val:
        names = val.getnames()
    assert names == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, NUM_VAL + 1)]


def _read(data_dir, split):
    _, tfds = sources.import_tf()
    ds = tfds.load("imagenet2012", split=split, data_dir=data_dir, shuffle_files=False)
    return list(tfds.as_numpy(ds))


def test_prepared_counts_labels_and_oddities(prepared):
    from scripts import make_imagenet_like as mk

    _, data_dir, made = prepared
    spec = data.DataSpec("imagenet2012", data_dir=data_dir, image_size=32)
    info = data.dataset_info(spec)
    assert (info.num_train, info.num_test) == (made["train"], NUM_VAL)
    assert made["train"] == PER_CLASS * len(made["classes"])
    _, tfds = sources.import_tf()
    names = tfds.builder("imagenet2012", data_dir=data_dir).info.features["label"].names
    val = _read(data_dir, "validation")
    want = [names.index(s) for s in mk.validation_labels(NUM_VAL)]
    assert sorted(int(x["label"]) for x in val) == sorted(want)
    train = _read(data_dir, "train")
    files = {x["file_name"].decode(): x for x in train}
    assert mk.CMYK_NAME in files and mk.PNG_NAME in files
    assert all(x["image"].ndim == 3 and x["image"].shape[2] == 3 for x in train + val)


def test_two_processes_read_disjoint_halves_and_eval_is_exact(prepared):
    _, data_dir, made = prepared
    n = made["train"]
    spec = data.DataSpec("imagenet2012", data_dir=data_dir, image_size=16, augment="imagenet")
    halves = []
    for d in [data.DeviceLayout(1, p, 2) for p in range(2)]:
        layout = BatchLayout(4, d)
        start, end = imagenet.process_slice(n, layout, drop_remainder=True)
        halves.append({x["file_name"] for x in _read(data_dir, f"train[{start}:{end}]")})
    assert not halves[0] & halves[1]
    every = {x["file_name"] for x in _read(data_dir, "train")}
    assert halves[0] | halves[1] == every and len(every) == n == 2 * (n // 2)
    evals = [
        list(data.create_eval_iterator(spec, 4, devices=data.DeviceLayout(1, p, 2)))
        for p in range(2)
    ]
    counted = sum(int(b["mask"].sum()) for e in evals for b in e)
    assert counted == NUM_VAL
    labels = sorted(int(v) for e in evals for b in e for v in b["label"][b["mask"]])
    assert labels == sorted(int(x["label"]) for x in _read(data_dir, "validation"))


def test_compile_cache_location_and_switch(tmp_path):
    from widesparse_jax import compile_cache

    home = {"XDG_CACHE_HOME": str(tmp_path)}
    assert compile_cache.cache_dir(home) == str(tmp_path / "widesparse_jax" / "jax_cache")
    assert compile_cache.cache_dir({compile_cache.ENV: "off"}) is None
    assert compile_cache.enable({compile_cache.ENV: "off"}) is None
    custom = str(tmp_path / "c")
    assert compile_cache.cache_dir({compile_cache.ENV: custom, **home}) == custom
