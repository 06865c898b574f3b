"""Tests of experiments/compare_baseline.py on the shared baseline fixture and a real short run."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from experiments import compare_baseline as cb

ROOT = Path(__file__).resolve().parents[1]
from golden_paths import INTEROP_DIR as INTEROP  # noqa: E402
from markers import FMNIST_DIR  # noqa: E402

needs_fixture = pytest.mark.skipif(
    not (INTEROP / "stats.pt").exists(),
    reason="shared baseline fixture ../shared/golden/interop missing",
)


@pytest.fixture(scope="module")
def our_workdir(tmp_path_factory):
    """A real, short training run of this project (Fashion-MNIST MLP, 2 epochs of 10 steps)."""
    if FMNIST_DIR is None:
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    from configs import fashion_mnist_mlp
    from widesparse_jax import train

    c = fashion_mnist_mlp.get_config()
    c.model.width = 32
    c.model.base_width = 8
    c.dataset.train_subset = 500
    c.train.batch_size = 50
    c.train.eval_batch_size = 1000
    c.train.num_epochs = 2
    c.train.log_every_steps = 10
    c.train.checkpoint_every_steps = 1000
    c.optimizer.lr = 0.1
    wd = tmp_path_factory.mktemp("ours")
    train.train_and_evaluate(c, str(wd))
    return str(wd)


@needs_fixture
def test_baseline_fixture_loads_with_config_and_one_based_epochs():
    r = cb.load_baseline_run(str(INTEROP))
    assert r.side == "baseline"
    np.testing.assert_array_equal(r.epochs, [1.0])  # stats epoch 0 = after the first epoch
    assert r.curves["train_loss"][0] == pytest.approx(2.247942328453064)
    assert r.curves["test_accuracy"][0] == pytest.approx(12.5)
    assert r.best_test_accuracy == pytest.approx(12.5)  # model_final.pt best_acc
    assert r.config["width"] == 6 and r.config["base_width"] == 3
    assert r.config["dataset"] == "cifar10" and r.config["batch_size"] == 8
    assert r.config["lr"] == 0.1 and r.config["weight_decay"] == 5e-4
    # The stats.pt file alone also loads (no args -> unknown config fields).
    r2 = cb.load_baseline_run(str(INTEROP / "stats.pt"))
    assert r2.curves["test_loss"][0] == pytest.approx(2.29895281791687)


def test_our_run_loads_curves_and_config(our_workdir):
    r = cb.load_our_run(our_workdir)
    np.testing.assert_allclose(r.epochs, [1.0, 2.0])
    for k in cb.CURVES:
        assert r.curves[k].shape == (2,) and np.all(np.isfinite(r.curves[k]))
    with open(os.path.join(our_workdir, "summary.json")) as f:
        assert r.best_test_accuracy == pytest.approx(json.load(f)["best_test_accuracy"])
    assert r.best_test_accuracy == pytest.approx(np.max(r.curves["test_accuracy"]))
    assert r.config["dataset"] == "fashion_mnist" and r.config["width"] == 32
    assert r.config["base_width"] == 8 and r.config["batch_size"] == 50


@needs_fixture
def test_compare_fixture_vs_real_run_lists_config_differences_and_plots(
    our_workdir, tmp_path, capsys
):
    out = tmp_path / "cmp.png"
    js = tmp_path / "report.json"
    report = cb.main(
        ["--baseline", str(INTEROP), "--ours", our_workdir, "--out", str(out), "--json", str(js)]
    )
    diffs = " ".join(report["config_differences"])
    for field in (
        "dataset",
        "width",
        "base_width",
        "num_epochs",
        "batch_size",
        "weight_decay",
        "schedule",
        "model",
    ):
        assert f"{field}:" in diffs, field
    assert "momentum" not in diffs and "lr:" not in diffs  # 0.9 and 0.1 on both sides
    assert report["common_epochs"] == [1.0]
    s = report["scalars"]["best_test_accuracy"]
    assert s["std_source"].startswith("default") and s["threshold"] == pytest.approx(2 * 0.5)
    # An untrained CIFAR baseline (12.5%) vs a trained Fashion-MNIST MLP: clearly different.
    assert s["flag"] and "best_test_accuracy" in report["flagged"]
    assert out.stat().st_size > 10_000
    assert json.loads(js.read_text())["scalars"]["best_test_accuracy"]["flag"] is True
    printed = capsys.readouterr().out
    assert "DIFFERENT" in printed and "config differences" in printed


def test_noise_rule_uses_pooled_seed_std():
    # Two seeds per side: pooled std from both sample variances.
    b, o = [90.0, 91.0], [91.0, 92.0]
    f = cb.noise_flag(b, o, k=2.0)
    assert f["std_source"] == "pooled seed std"
    assert f["std"] == pytest.approx(math.sqrt(0.5))  # var 0.5 on each side, 1 dof each
    assert f["diff"] == pytest.approx(1.0) and not f["flag"]  # 1.0 < 2 * 0.707
    f = cb.noise_flag([90.0, 90.2], [92.0, 92.2], k=2.0)
    assert f["flag"]  # 2.0 > 2 * 0.141
    # One seed per side: the default std is used.
    f = cb.noise_flag([90.0], [90.9], default_std=0.5)
    assert f["std_source"].startswith("default") and not f["flag"]
    assert cb.noise_flag([90.0], [91.1], default_std=0.5)["flag"]
    # Only one side with seeds: its std is used.
    assert cb.noise_flag([90.0, 94.0], [93.0], k=2.0)["std"] == pytest.approx(math.sqrt(8.0))
    with pytest.raises(ValueError, match="k=0"):
        cb.noise_flag([1.0], [1.0], k=0)


def test_identical_configs_have_no_differences_and_seeds_are_not_flagged():
    base = cb.baseline_config(
        {
            "dataset": "cifar10",
            "model_name": "resnet18",
            "width": 64,
            "base_width": 18,
            "lr": 0.1,
            "momentum": 0.9,
            "wd": 5e-4,
            "num_epochs": 300,
            "mbs": 128,
            "scheduler": "multistep",
            "seed": 1,
        }
    )
    ours = cb.our_config(
        {
            "dataset": {"name": "cifar10"},
            "model": {"name": "resnet18", "width": 64, "base_width": 18},
            "optimizer": {
                "lr": 0.1,
                "momentum": 0.9,
                "weight_decay": 0.0005,
                "schedule": "multistep",
            },
            "train": {"num_epochs": 300, "batch_size": 128, "seed": 7},
        }
    )
    assert cb.config_differences(base, ours) == []
    # Dense: the baseline writes base_width == width, we write None; both mean dense.
    assert (
        cb.config_differences(
            cb.baseline_config({"width": 8, "base_width": 8}),
            cb.our_config({"model": {"width": 8, "base_width": None}}),
        )
        == []
    )
    ours["lr"] = 0.05
    assert cb.config_differences(base, ours) == ["lr: baseline=0.1 ours=0.05"]


def test_missing_files_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no stats.pt"):
        cb.load_baseline_run(str(tmp_path))
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        cb.load_our_run(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1}) + "\n")
    with pytest.raises(ValueError, match="no 'epoch' records"):
        cb.load_our_run(str(tmp_path))
