"""ImageNet path on real files: the missing-data message, ImageNet-like archives, TFDS prepare."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from widesparse_jax import data
from widesparse_jax.data import imagenet, sources
from widesparse_jax.data.layout import BatchLayout
from widesparse_jax.metrics import read_metrics


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


def test_train_stream_opens_epochs_ahead_in_the_same_order(prepared):
    """Epochs opened in the background give exactly the batches of opening each epoch when
    it is reached (real shards, file shuffle, 2.5 epochs), and a resumed stream is a suffix."""
    import itertools

    _, data_dir, made = prepared
    spec = data.DataSpec("imagenet2012", data_dir=data_dir, image_size=16, augment="imagenet")
    layout = BatchLayout(4, data.DeviceLayout())
    spe = made["train"] // 4
    tf, tfds = sources.import_tf()
    stream = imagenet._TrainStream(spec, layout, 3, f"train[0:{made['train']}]", spe)
    want = [
        b for e in range(3) for b in tfds.as_numpy(imagenet._epoch_dataset(tf, tfds, stream, e, 0))
    ][: 2 * spe + spe // 2]
    got = list(itertools.islice(imagenet.train_iterator(spec, layout, 3, 0), len(want)))
    resumed = list(itertools.islice(imagenet.train_iterator(spec, layout, 3, spe + 1), 4))
    for g, w in zip(got + resumed, want + want[spe + 1 : spe + 5], strict=True):
        np.testing.assert_array_equal(g["image"][0], w["image"])
        np.testing.assert_array_equal(g["label"][0], w["label"])


def test_compile_cache_location_and_switch(tmp_path):
    from widesparse_jax import compile_cache

    home = {"XDG_CACHE_HOME": str(tmp_path)}
    assert compile_cache.cache_dir(home) == str(tmp_path / "widesparse_jax" / "jax_cache")
    assert compile_cache.cache_dir({compile_cache.ENV: "off"}) is None
    assert compile_cache.enable({compile_cache.ENV: "off"}) is None
    custom = str(tmp_path / "c")
    assert compile_cache.cache_dir({compile_cache.ENV: custom, **home}) == custom


# ----------------------------------------------------------------------------- main.py, kill -9


def _kill_after_checkpoint(workdir, flags, min_step, timeout=600):
    """Start main.py, SIGKILL it once a checkpoint >= min_step exists; returns that step."""
    from tests.test_train import ROOT

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), f"--workdir={workdir}", *flags],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline, killed_at, ck = time.time() + timeout, None, workdir / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        steps = [int(d) for d in os.listdir(ck) if d.isdigit()] if ck.exists() else []
        if steps and max(steps) >= min_step:
            proc.send_signal(signal.SIGKILL)
            killed_at = max(steps)
            break
        time.sleep(0.02)
    proc.wait()
    return killed_at


@pytest.mark.slow
def test_main_trains_evaluates_exactly_and_resumes_after_kill(prepared, tmp_path):
    """configs/imagenet.py on the TFDS-prepared JPEGs: 100 steps over ~12 epochs, every eval
    counts each validation image once, and a run killed with SIGKILL then restarted ends with
    the uninterrupted run's params and metric records, bit for bit."""
    from tests.test_train import _final_params, _metric_records, run_main

    _, data_dir, _ = prepared
    flags = [
        "--config=configs/imagenet.py",
        f"--config.dataset.data_dir={data_dir}",
        "--config.dataset.image_size=32",
        "--config.model.width=4",
        "--config.model.base_width=2",
        "--config.train.batch_size=4",
        "--config.train.eval_batch_size=5",  # 16 = 3 x 5 + 1: the last batch is padded
        "--config.train.num_train_steps=100",
        "--config.train.checkpoint_every_steps=10",
        "--config.train.log_every_steps=10",
        "--config.train.eval_every_epochs=3",
    ]
    ref, run = tmp_path / "ref", tmp_path / "run"
    run_main(ref, *flags, timeout=900)
    killed_at = _kill_after_checkpoint(run, flags, min_step=30)
    assert killed_at is not None and killed_at < 100, "killed too late; make the run longer"
    p = run_main(run, *flags, timeout=900)
    summary = json.loads(p.stdout[p.stdout.index("{") :])
    assert summary["step"] == 100 and 100 - killed_at <= summary["steps_this_session"] < 100
    evals = [r for r in read_metrics(str(ref)) if r["kind"] == "epoch"]
    assert len(evals) >= 4 and all(r["test_count"] == NUM_VAL for r in evals)
    for x, y in zip(jax.tree.leaves(_final_params(ref)), jax.tree.leaves(_final_params(run))):
        np.testing.assert_array_equal(x, y)
    assert _metric_records(ref) == _metric_records(run)
