"""Width-sweep driver: a tiny real sweep (Fashion-MNIST MLP), resume/skip, jobs file, bad input."""

import csv
import json
import os
import shlex
from pathlib import Path

import pytest

from experiments import sweep_report
from experiments import width_sweep as ws
from tests.markers import needs_fmnist

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "mnist_mlp.py")

TINY = [
    "dataset.name=fashion_mnist",
    "dataset.train_subset=400",
    "train.batch_size=100",
    "train.num_train_steps=8",
    "train.eval_batch_size=1000",
    "train.log_every_steps=4",
    "train.checkpoint_every_steps=4",
]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """Dense 5, dense 10, sparse 10 (at the 3970 weights of width 5); 8 steps each."""
    out = str(tmp_path_factory.mktemp("sweep"))
    logs = []
    rows = ws.run_sweep(
        CONFIG,
        out,
        base_width=5,
        widths=[10, 5],
        seeds=[0],
        overrides=TINY,
        title="tiny",
        log=logs.append,
    )
    return out, rows, logs


def test_plan_runs_members_and_names():
    specs = ws.plan_runs(5, [20, 5, 10], seeds=[0, 1], bottlenecks=["linear"])
    names = [s.name for s in specs]
    assert names[:6] == [
        "dense_w5_s0",
        "dense_w5_s1",
        "dense_w10_s0",
        "dense_w10_s1",
        "dense_w20_s0",
        "dense_w20_s1",
    ]
    assert "sparse_w5_s0" not in names and "bottleneck-linear_w5_s0" not in names
    assert names.count("sparse_w20_s1") == 1 and "bottleneck-linear_w10_s0" in names
    assert len(specs) == 6 + 4 + 4


def test_plan_runs_dense_widths_differ_from_sparse_widths():
    specs = ws.plan_runs(64, [128, 65536, 1024], seeds=[0], dense_widths=[256, 64])
    names = [s.name for s in specs]
    assert names == [
        "dense_w64_s0",
        "dense_w256_s0",
        "sparse_w128_s0",
        "sparse_w1024_s0",
        "sparse_w65536_s0",
    ]
    with pytest.raises(ValueError, match=r"dense widths \[32\] are below the base width 64"):
        ws.plan_runs(64, [128], dense_widths=[32, 64])


def test_cli_dense_widths_in_jobs_file(capsys):
    argv = ["sweep", "--config", "configs/mnist_mlp.py", "--out", "/tmp/unused_ws_dense"]
    argv += ["--base-width", "5", "--widths", "10,640", "--dense-widths", "5,10"]
    assert ws.main(argv + ["--jobs-file", "-"]) == 0
    text = capsys.readouterr().out
    assert "--family dense --width 10 " in text and "--family sparse --width 640 " in text
    assert "--family dense --width 640 " not in text


@pytest.mark.parametrize(
    "base, widths, seeds, match",
    [
        (8, [4, 16], [0], r"widths \[4\] are below the base width 8"),
        (8, [], [0], "widths is empty"),
        (8, [8, 8], [0], "duplicates"),
        (0, [8], [0], "base width 0"),
        (8, [8], [-1], "seeds"),
    ],
)
def test_plan_runs_bad_input(base, widths, seeds, match):
    with pytest.raises(ValueError, match=match):
        ws.plan_runs(base, widths, seeds)


def test_cli_bad_width_exits_with_clear_error(capsys):
    rc = ws.main(
        [
            "sweep",
            "--config",
            CONFIG,
            "--out",
            "/nonexistent/x",
            "--base-width",
            "8",
            "--widths",
            "4,16",
            "--jobs-file",
            "-",
        ]
    )
    assert rc == 2
    assert "below the base width 8" in capsys.readouterr().err
    rc = ws.main(
        [
            "sweep",
            "--config",
            CONFIG,
            "--out",
            "/nonexistent/x",
            "--base-width",
            "8",
            "--widths",
            "8,x",
        ]
    )
    assert rc == 2 and "'x' is not an integer" in capsys.readouterr().err


def test_overrides_and_run_config():
    base = ws.apply_overrides(
        ws.load_config_file(CONFIG),
        [
            "dataset.name=fashion_mnist",
            "optimizer.milestones=(2, 4)",
            "dataset.train_subset=None",
            "model.activation=linear",
        ],
    )
    assert base.dataset.name == "fashion_mnist" and tuple(base.optimizer.milestones) == (2, 4)
    assert base.dataset.train_subset is None and base.model.activation == "linear"
    with pytest.raises(ValueError, match="no field 'model.nope'"):
        ws.apply_overrides(base, ["model.nope=1"])
    with pytest.raises(ValueError, match="key=value"):
        ws.apply_overrides(base, ["model.width"])
    dense = ws.run_config(base, ws.RunSpec("dense", 40, 5, 3))
    sparse = ws.run_config(base, ws.RunSpec("sparse", 40, 5, 3))
    bott = ws.run_config(base, ws.RunSpec("bottleneck-nonlinear", 40, 5, 3))
    assert (dense.model.width, dense.model.base_width, dense.train.seed) == (40, None, 3)
    assert (sparse.model.name, sparse.model.base_width) == ("mlp", 5)
    assert (bott.model.name, bott.model.base_width, bott.model.bottleneck) == (
        "mlp_bottleneck",
        5,
        "nonlinear",
    )
    ws.validate_all(base, [ws.RunSpec("bottleneck-linear", 40, 5, 0)])  # a valid member
    base.train.batch_size = 0
    with pytest.raises(ValueError, match=r"(?s)dense_w40_s0.*train.batch_size=0"):
        ws.validate_all(base, [ws.RunSpec("dense", 40, 5, 0)])


def test_aggregate_mean_std_over_seeds():
    rows = [
        {
            "family": "sparse",
            "width": 10,
            "base_width": 5,
            "seed": s,
            "kept_weights": 3970,
            "density": 0.5,
            "best_test_accuracy": a,
            "final_train_accuracy": 90.0,
            "final_test_accuracy": a,
            "wall_time_s": 1.0,
        }
        for s, a in ((0, 80.0), (1, 84.0))
    ]
    (agg,) = sweep_report.aggregate(rows)
    assert agg["n"] == 2 and agg["best_test_accuracy"] == pytest.approx(82.0)
    assert agg["best_test_accuracy_std"] == pytest.approx(2**0.5 * 2)  # sample std
    assert "82.00 ± 2.83" in sweep_report.markdown_table([agg])


@needs_fmnist
def test_tiny_sweep_writes_csv_table_figure(tiny_sweep):
    out, rows, logs = tiny_sweep
    assert [(r["family"], r["width"]) for r in rows] == [
        ("dense", 5),
        ("dense", 10),
        ("sparse", 10),
    ]
    by = {(r["family"], r["width"]): r for r in rows}
    assert by[("dense", 5)]["kept_weights"] == 3970 == by[("sparse", 10)]["kept_weights"]
    assert by[("dense", 10)]["kept_weights"] == 7940
    assert by[("sparse", 10)]["density"] == pytest.approx(0.5)
    assert all(r["steps"] == 8 and 0 < r["best_test_accuracy"] <= 100 for r in rows)
    with open(os.path.join(out, "runs.csv")) as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 3 and set(sweep_report.CSV_FIELDS) == set(csv_rows[0])
    assert csv_rows[2]["family"] == "sparse" and float(csv_rows[2]["density"]) == 0.5
    table = Path(out, "table.md").read_text()
    assert "### tiny" in table and "| sparse | 10 | 3970 | 0.5 |" in table
    png = Path(out, "width_sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert json.loads(Path(out, "sweep.json").read_text())["widths"] == [10, 5]
    assert all("FAILED" not in line for line in logs) and len(logs) == 3


@needs_fmnist
def test_second_call_skips_finished_runs(tiny_sweep):
    out, rows, _ = tiny_sweep
    summaries = sorted(Path(out, "runs").glob("*/summary.json"))
    before = {p: (p.stat().st_mtime_ns, p.read_text()) for p in summaries}
    logs = []
    rows2 = ws.run_sweep(
        CONFIG, out, base_width=5, widths=[5, 10], seeds=[0], overrides=TINY, log=logs.append
    )
    assert len(logs) == 3 and all("skipped" in line for line in logs)
    assert {p: (p.stat().st_mtime_ns, p.read_text()) for p in summaries} == before
    assert [r["best_test_accuracy"] for r in rows2] == [r["best_test_accuracy"] for r in rows]
    # the report alone rebuilds the same table
    Path(out, "table.md").unlink()
    assert ws.main(["report", "--out", out]) == 0
    assert "| dense | 10 | 7940 |" in Path(out, "table.md").read_text()


@needs_fmnist
def test_jobs_file_lists_one_command_per_run(tiny_sweep, tmp_path):
    out, _, _ = tiny_sweep
    jobs = tmp_path / "jobs.txt"
    argv = [
        "sweep",
        "--config",
        CONFIG,
        "--out",
        out,
        "--base-width",
        "5",
        "--widths",
        "5,10",
        "--seeds",
        "0,1",
        "--bottleneck",
        "linear",
    ]
    for o in TINY:
        argv += ["--set", o]
    assert ws.main(argv + ["--jobs-file", str(jobs)]) == 0
    lines = jobs.read_text().splitlines()
    assert len(lines) == 2 * 2 + 2 + 2 + 1  # dense x2 widths, sparse w10, bottleneck w10, report
    assert lines[-1] == f"python -m experiments.width_sweep report --out {out}"
    members = []
    for line in lines[:-1]:
        a = shlex.split(line)
        assert a[:4] == ["python", "-m", "experiments.width_sweep", "run-one"]
        assert a.count("--set") == len(TINY)
        members.append(
            (
                a[a.index("--family") + 1],
                int(a[a.index("--width") + 1]),
                int(a[a.index("--seed") + 1]),
            )
        )
    assert members == [
        ("dense", 5, 0),
        ("dense", 5, 1),
        ("dense", 10, 0),
        ("dense", 10, 1),
        ("sparse", 10, 0),
        ("sparse", 10, 1),
        ("bottleneck-linear", 10, 0),
        ("bottleneck-linear", 10, 1),
    ]
    assert not Path(out, "runs", "dense_w5_s1").exists()  # nothing was run
    # a printed command addresses the same workdir as the sweep: finished -> skipped
    sparse_cmd = shlex.split(lines[4])[3:]
    assert ws.main(sparse_cmd) == 0
    assert Path(out, "runs", "sparse_w10_s0", "summary.json").exists()


def test_run_one_rejects_sparse_at_base_width(capsys):
    rc = ws.main(
        [
            "run-one",
            "--config",
            CONFIG,
            "--out",
            "/nonexistent/x",
            "--family",
            "sparse",
            "--width",
            "5",
            "--base-width",
            "5",
        ]
    )
    assert rc == 2 and "needs --width > --base-width" in capsys.readouterr().err


def test_report_without_runs_errors(tmp_path):
    with pytest.raises(ValueError, match="no finished runs"):
        sweep_report.write_report(str(tmp_path))


def test_family_curves_start_at_dense_base_point():
    def pt(family, width, base):
        return {
            "family": family,
            "width": width,
            "base_width": base,
            "n": 1,
            "best_test_accuracy": float(width),
            "final_train_accuracy": 1.0,
        }

    agg = [
        pt("dense", 4, 4),
        pt("dense", 8, 8),
        pt("dense", 16, 16),
        pt("sparse", 16, 8),
        pt("bottleneck-linear", 16, 8),
    ]
    curves = sweep_report.family_curves(agg)
    assert [p["width"] for p in curves["dense"]] == [4, 8, 16]
    assert [p["width"] for p in curves["sparse"]] == [8, 16]  # base 8, not the narrowest 4
    assert curves["sparse"][0]["family"] == "dense"
    assert [p["width"] for p in curves["bottleneck-linear"]] == [8, 16]


def test_report_bad_ylim_errors(capsys, tmp_path):
    assert ws.main(["report", "--out", str(tmp_path), "--test-ylim", "80"]) == 2
    assert "is not LO,HI" in capsys.readouterr().err
    assert ws.main(["report", "--out", str(tmp_path), "--test-ylim", "85,80"]) == 2
    assert "LO must be < HI" in capsys.readouterr().err


def test_infeasible_bottleneck_width_is_refused_before_training(tmp_path):
    # 3970 weights (base width 5): at width 640 the unfactorized output layer alone has 6400.
    with pytest.raises(ValueError, match="bottleneck-linear_w640_s0: bottleneck cannot reach"):
        ws.run_sweep(CONFIG, str(tmp_path / "s"), 5, [10, 640], [0], bottlenecks=["linear"])
    assert not (tmp_path / "s").exists()  # nothing written, nothing trained
    base = ws.load_config_file(CONFIG)
    ok = [s for s in ws.plan_runs(5, [10, 160], [0], ["linear", "nonlinear"], False)]
    ws.validate_all(base, ok)  # feasible widths pass


def test_resnet_bottleneck_family_validates_at_base_width_4():
    base = ws.load_config_file(str(ROOT / "configs" / "fashion_mnist_resnet.py"))
    ws.validate_all(base, ws.plan_runs(4, [8], [0], ["linear", "nonlinear"], True))
    with pytest.raises(ValueError, match="w16_s0: bottleneck cannot reach"):
        ws.validate_all(base, ws.plan_runs(4, [8, 16], [0], ["linear"], False))
