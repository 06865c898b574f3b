"""experiments/unit_stats_sweep.py: unit stats of real tiny runs, report merge and estimate."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from experiments import unit_stats_sweep as uss
from experiments import width_sweep as ws
from tests.markers import needs_fmnist

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "mnist_mlp.py")
TINY = [
    "dataset.name=fashion_mnist",
    "dataset.train_subset=300",
    "train.batch_size=100",
    "train.num_train_steps=6",
    "train.log_every_steps=3",
    "train.checkpoint_every_steps=6",
    "sparsity.apply=sparse",
]


def _fake_run(out, family, width, seed, steps, wall, stats=None):
    d = os.path.join(out, "runs", f"{family}_w{width}_s{seed}")
    os.makedirs(d)
    base = None if family == "dense" else 4
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"model": {"name": "mlp", "width": width, "base_width": base},
                   "train": {"seed": seed}}, f)  # fmt: skip
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"step": steps, "best_test_accuracy": 80.0 + seed, "kept_weights": 3176,
                   "total_weights": 794 * width, "final_train_accuracy": 81.0,
                   "wall_time_s": wall}, f)  # fmt: skip
    if stats:
        with open(os.path.join(d, uss.STATS_FILE), "w") as f:
            json.dump(stats, f)


def test_report_merges_unit_stats_and_dense_masked_estimate(tmp_path):
    out = str(tmp_path)
    _fake_run(out, "dense", 4, 0, 600, 5.0)
    _fake_run(out, "sparse", 64, 0, 600, 30.0, {"frac_useful": 0.5, "inputs_per_unit": 2.0})
    _fake_run(out, "sparse", 64, 1, 600, 34.0, {"frac_useful": 0.7, "inputs_per_unit": 2.0})
    with open(os.path.join(out, uss.COST_FILE), "w") as f:
        json.dump({"64": {"width": 64, "dense_masked_ms": 20.0, "sparse_ms": 5.0}}, f)
    agg = uss.write_units_report(out, "t")
    sparse = [a for a in agg if a["family"] == "sparse"][0]
    assert sparse["frac_useful"] == pytest.approx(0.6) and sparse["unit_stats_n"] == 2
    assert sparse["dense_masked_est_s"] == pytest.approx(20.0 * 600 / 1e3)
    assert sparse["sparse_steps_s"] == pytest.approx(5.0 * 600 / 1e3)
    dense = [a for a in agg if a["family"] == "dense"][0]
    assert dense["dense_masked_est_s"] is None and dense["frac_useful"] is None
    table = open(os.path.join(out, "units.md")).read()
    assert "| sparse | 64 | 2.00 |" in table and "| 12 |" in table
    assert os.path.getsize(os.path.join(out, "units.png")) > 0


def test_report_without_runs_errors(tmp_path):
    assert uss.main(["report", "--out", str(tmp_path)]) == 2


@needs_fmnist
@pytest.mark.slow
def test_stats_of_real_runs_match_dense_recomputation(tmp_path):
    """Tiny real sweep (dense 5, sparse 40 computed sparse): the unit stats equal a plain dense
    numpy recomputation from the restored params; pruning removes the checkpoints."""
    from widesparse_jax import restore

    out = str(tmp_path)
    ws.run_sweep(CONFIG, out, 5, [40], [0], TINY, dense_widths=[5], log=lambda *_: None)
    workdir = os.path.join(out, "runs", "sparse_w40_s0")
    variables, masks, config = restore.load_variables(workdir)
    images = uss.normalized_train_images(config)
    assert images.shape == (300, 28, 28, 1)
    fc = variables["params"]["fc"]
    h = images.reshape(300, -1) @ np.asarray(fc["kernel"]) + np.asarray(fc["bias"])
    dead = h.max(axis=0) <= 0
    fc_mask = np.asarray(masks["fc"]["kernel"])
    cl = masks["cl"]["kernel"]  # None: the classifier was left dense
    cl_mask = np.ones((40, 10), bool) if cl is None else np.asarray(cl)
    useful = fc_mask.any(0) & cl_mask.any(1) & ~dead
    assert uss.stats_all(out, prune_checkpoints=True) == 2
    with open(os.path.join(workdir, uss.STATS_FILE)) as f:
        s = json.load(f)
    assert s["kept_fc"] == int(fc_mask.sum()) and s["examples"] == 300
    assert s["frac_dead"] == pytest.approx(dead.mean())
    assert s["frac_useful"] == pytest.approx(useful.mean())
    assert s["frac_no_inputs"] == pytest.approx((~fc_mask.any(0)).mean())
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))
    dense = json.load(open(os.path.join(out, "runs", "dense_w5_s0", uss.STATS_FILE)))
    assert dense["frac_no_inputs"] == 0.0 and dense["inputs_per_unit"] == 784.0
    assert s["frac_connected"] == pytest.approx((fc_mask.any(0) & cl_mask.any(1)).mean())
    assert uss.stats_all(out) == 0  # already done
    # stats written before frac_connected existed are backfilled from redrawn masks
    old = {k: v for k, v in s.items() if k not in ("frac_connected", "frac_dead_connected")}
    with open(os.path.join(workdir, uss.STATS_FILE), "w") as f:
        json.dump(old, f)
    uss.stats_all(out)
    with open(os.path.join(workdir, uss.STATS_FILE)) as f:
        assert json.load(f)["frac_connected"] == pytest.approx(s["frac_connected"])


def test_time_width_times_both_steps():
    """The cost step runs (it had lost its dense-step builder to a refactor unnoticed)."""
    from configs import mnist_mlp
    from widesparse_jax import config as config_lib

    c = mnist_mlp.get_config()
    c.dataset.name, c.sparsity.apply = "fashion_mnist", "sparse"
    c.model.width, c.model.base_width = 256, 8
    row = uss.time_width(config_lib.resolve_config(c), 256, reps=1)
    assert row["width"] == 256 and row["dense_masked_ms"] > 0 and row["sparse_ms"] > 0
