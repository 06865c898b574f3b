"""Smoke tests of the width-toolkit experiment functions (tiny settings, real Fashion-MNIST)."""

import jax
import numpy as np
import pytest

from experiments import consistency_study as cs
from experiments import noise_scale_sweep as nss
from experiments import toolkit_common as tc


@pytest.fixture(scope="module")
def data():
    x, y = tc.load_fashion_mnist("train", 512)
    xt, yt = tc.load_fashion_mnist("test", 256)
    return {"x": x, "y": y, "x_test": xt, "y_test": yt}


def test_load_and_stream(data):
    assert data["x"].shape == (512, 784) and data["x"].dtype == np.float32
    assert set(np.unique(data["y"])) <= set(range(10))
    a = tc.epoch_batches(data["x"], data["y"], 100, seed=3, epoch=1)
    b = tc.epoch_batches(data["x"], data["y"], 100, seed=3, epoch=1)
    c = tc.epoch_batches(data["x"], data["y"], 100, seed=3, epoch=2)
    assert a[0].shape == (5, 100, 784)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_sparse_net_keeps_base_count():
    net = tc.make_mlp(64, base_width=16, sparse=True, param="mup", key=jax.random.key(0))
    kept = int(np.sum(np.asarray(net.masks["fc"]["kernel"]))) + 64 * 10
    assert kept == 784 * 16 + 16 * 10
    assert net.lr_mult["cl"]["kernel"] == 0.25


def test_noise_scale_sweep_smoke(data, tmp_path):
    rec = nss.sweep(
        [8, 16],
        [64],
        [0.5, 5.0],
        param="ntk",
        sparse_base=8,
        epochs=1,
        data=data,
        log=lambda *_: None,
    )
    assert len(rec) == 3 * 2  # dense 8, dense 16, sparse 16
    for r in rec:
        assert r["noise_scale"] == pytest.approx(r["lr"] / (64 * 0.1 * 1.0))
        assert 0.0 <= r["best_test_acc"] <= 1.0
    assert max(r["best_test_acc"] for r in rec) > 0.4  # it learns something
    text = nss.analyze(rec, str(tmp_path), "tiny")
    assert "exponent" in text
    assert (tmp_path / "tiny_acc_vs_g.png").exists() and (tmp_path / "tiny.md").exists()


@pytest.mark.slow  # ~1 min on 2 busy cores (one compile per width and setting)
def test_consistency_study_smoke(data):
    res = cs.study(
        [8, 16],
        base_width=8,
        settings=(("standard", False), ("mup", False)),
        epochs=1,
        ensemble_k=2,
        data=data,
        n_probe=128,
        log=lambda *_: None,
    )
    rows = {(r["param"], r["width"]): r for r in res["rows"]}
    for param in ("standard", "mup"):
        widest = rows[(param, 16)]
        assert widest["prob_msd"] == 0.0 and widest["mean_abs_loss_gap"] == 0.0
        assert widest["cka_vs_widest"] == pytest.approx(1.0)
        assert widest["sharpness"] > 0
    # At the base width μP is SP: identical loss curves.
    np.testing.assert_array_equal(
        res["curves"][("standard", False)][8], res["curves"][("mup", False)][8]
    )
    assert not np.array_equal(
        res["curves"][("standard", False)][16], res["curves"][("mup", False)][16]
    )
    e = res["ensemble"][("mup", False)]
    assert set(e["ensemble_acc"]) == {1, 2}
