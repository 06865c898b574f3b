"""Why the width benefit ends: hidden-unit diagnostics and compute cost of an MLP width sweep.

Works on a sweep directory written by ``experiments.width_sweep`` (MLP runs, one hidden
layer). Three steps, each resumable:

  # per finished run with a checkpoint: unit_stats.json (fan-in/out, dead units on the full
  # training set, from the final params and masks); then delete its checkpoints
  python -m experiments.unit_stats_sweep stats --out results/mlp_50k_wide --prune-checkpoints
  # time the dense-masked step (and the sparse step) at each sparse width, same config/batch
  python -m experiments.unit_stats_sweep cost --out results/mlp_50k_wide --widths 128,...,65536
  # units.md (accuracy + unit diagnostics + wall time vs dense-masking estimate), units.png
  python -m experiments.unit_stats_sweep report --out results/mlp_50k_wide

Dense-masking cost is an *estimate*: (median dense-masked step time) x (the run's steps),
measured with the run's config at apply='update' on a random batch of the same size; it
leaves out evaluation, compilation and checkpoints, which the measured wall time includes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
from typing import Optional, Sequence

import numpy as np

from experiments.sweep_report import RUNS_DIR, aggregate, collect_rows, fmt
from widesparse_jax.analysis import unit_stats as us

STATS_FILE = "unit_stats.json"
COST_FILE = "dense_cost.json"


# ----------------------------------------------------------------------------- unit stats


def normalized_train_images(config) -> np.ndarray:
    """The run's training images after its input normalization: float32 [N, H, W, C]."""
    from widesparse_jax import data
    from widesparse_jax.data import normalize, small

    spec = data.DataSpec.from_config(config.dataset)
    images, _ = small.train_arrays(spec)
    return normalize.make_normalizer(spec, images)(images)


def stats_of_run(workdir: str, images: Optional[np.ndarray] = None) -> dict:
    """Unit diagnostics of a run's newest checkpoint (see ``analysis.unit_stats``)."""
    from widesparse_jax import restore

    variables, masks, config = restore.load_variables(workdir)
    p = variables["params"]
    fc, cl = p["fc"], p["cl"]
    if images is None:
        images = normalized_train_images(config)
    max_pre = us.max_preactivation(images, np.asarray(fc["kernel"]), fc.get("bias"))
    shapes = (np.shape(fc["kernel"]), np.shape(cl["kernel"]))
    fc_mask, cl_mask = masks["fc"]["kernel"], masks["cl"]["kernel"]
    out = us.unit_stats(
        None if fc_mask is None else np.asarray(fc_mask),
        None if cl_mask is None else np.asarray(cl_mask),
        max_pre,
        shapes,
    )
    out["examples"] = int(images.shape[0])
    return out


def backfill_connected(workdir: str, stats: dict) -> dict:
    """Adds ``frac_connected`` / ``frac_dead_connected`` to stats written before they existed,
    from the run's masks redrawn through ``setup`` (masks are a function of config and seed).
    ``frac_dead_connected`` = 1 - useful / connected (useful units are connected)."""
    from widesparse_jax import checkpoint, data, setup, train
    from widesparse_jax import config as config_lib

    config = config_lib.resolve_config(checkpoint.read_config(workdir))
    run = setup.build_run(config, data.static_info(train.data_spec(config)), axis_name=None)
    fc, cl = run.masks["fc"]["kernel"], run.masks["cl"]["kernel"]
    shapes = run.param_shapes
    fi = us.fan_in(np.ones(shapes["fc"]["kernel"].shape, bool) if fc is None else np.asarray(fc))
    fo = us.fan_out(np.ones(shapes["cl"]["kernel"].shape, bool) if cl is None else np.asarray(cl))
    if int(fi.sum()) != stats["kept_fc"] or int(fo.sum()) != stats["kept_cl"]:
        raise ValueError(f"{workdir}: redrawn masks do not match the recorded kept counts")
    connected = float(np.mean((fi > 0) & (fo > 0)))
    dead = 1.0 - stats["frac_useful"] / connected if connected else 0.0
    return {**stats, "frac_connected": connected, "frac_dead_connected": dead}


def stats_all(out_dir: str, prune_checkpoints: bool = False, log=print) -> int:
    """Writes ``unit_stats.json`` for each finished run that lacks it. Returns the count."""
    from experiments.sweep_report import is_finished

    runs = os.path.join(out_dir, RUNS_DIR)
    images, done = None, 0
    for name in sorted(os.listdir(runs)):
        workdir = os.path.join(runs, name)
        path = os.path.join(workdir, STATS_FILE)
        ckpt_dir = os.path.join(workdir, "checkpoints")
        if not is_finished(workdir):
            continue
        if not os.path.isfile(path):
            if not os.path.isdir(ckpt_dir):
                log(f"{name}: no checkpoint left, cannot compute unit stats")
                continue
            if images is None:
                from widesparse_jax import restore

                images = normalized_train_images(restore.load_variables(workdir)[2])
            stats = stats_of_run(workdir, images)
            with open(path, "w") as f:
                json.dump(stats, f, indent=2)
            done += 1
            log(f"{name}: useful {stats['frac_useful']:.3f} dead {stats['frac_dead']:.3f}")
        elif "frac_connected" not in json.load(open(path)):
            stats = backfill_connected(workdir, json.load(open(path)))
            with open(path, "w") as f:
                json.dump(stats, f, indent=2)
            log(f"{name}: connected {stats['frac_connected']:.3f} (backfilled)")
        if prune_checkpoints and os.path.isfile(path):
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    return done


# ----------------------------------------------------------------------------- cost


def _sparse_config(out_dir: str):
    """The config of one sparse run of the sweep (any width): the template for timing."""
    from widesparse_jax import checkpoint
    from widesparse_jax import config as config_lib

    for r in collect_rows(out_dir):
        if r["family"] == "sparse":
            return config_lib.resolve_config(
                checkpoint.read_config(os.path.join(out_dir, r["workdir"]))
            )
    raise ValueError(f"{out_dir} has no finished sparse run to take the config from")


def time_width(config, width: int, reps: int) -> dict:
    """Median ms per train step at ``width``: dense-masked (apply='update') and sparse."""
    from benchmarks.sparse_compute import time_step
    from benchmarks.step_builders import train_step_fn
    from widesparse_jax import data, setup, sparse, train
    from widesparse_jax.sparse import step as sstep

    config = config.copy_and_resolve_references()
    config.model.width = width
    run = setup.build_run(config, data.static_info(train.data_spec(config)), axis_name=None)
    rng = np.random.RandomState(0)
    b = config.train.batch_size
    batch = {
        "image": rng.randn(b, 28, 28, 1).astype(np.float32),
        "label": rng.randint(0, 10, b).astype(np.int32),
    }
    state = setup.init_state(run)
    layout = sparse.mlp_layout(run.masks, run.param_shapes)
    kw = dict(layout=layout, tx=run.tx, schedule=run.schedule, axis_name=None)
    sp = time_step(
        functools.partial(sstep.sparse_train_step, **kw),
        sstep.to_sparse_state(state, layout),
        batch,
        reps,
    )
    dense = time_step(train_step_fn(run), state, batch, reps)
    return {"width": width, "dense_masked_ms": dense["ms"], "sparse_ms": sp["ms"]}


def cost_all(out_dir: str, widths: Sequence[int], reps: int = 3, log=print) -> dict:
    """Times each width (skipping ones already in ``dense_cost.json``) and saves the file."""
    path = os.path.join(out_dir, COST_FILE)
    table = {}
    if os.path.isfile(path):
        with open(path) as f:
            table = json.load(f)
    config = _sparse_config(out_dir)
    for w in widths:
        if str(w) in table:
            continue
        table[str(w)] = time_width(config, w, reps)
        log(json.dumps(table[str(w)]))
        with open(path, "w") as f:
            json.dump(table, f, indent=2)
    return table


# ----------------------------------------------------------------------------- report

UNIT_KEYS = (
    "inputs_per_unit",
    "frac_connected",
    "frac_dead_connected",
    "frac_no_inputs",
    "frac_no_outputs",
    "frac_dead",
    "frac_dead_with_inputs",
    "frac_useful",
    "useful_units",
    "inputs_per_useful_unit",
    "useful_weight_fraction",
)


def _mean(values):
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def merged_rows(out_dir: str) -> list[dict]:
    """:func:`aggregate` rows with the mean unit stats over seeds and the cost estimate."""
    rows = collect_rows(out_dir)
    for r in rows:
        path = os.path.join(out_dir, r["workdir"], STATS_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                r.update({k: v for k, v in json.load(f).items() if k in UNIT_KEYS})
    cost = {}
    if os.path.isfile(os.path.join(out_dir, COST_FILE)):
        with open(os.path.join(out_dir, COST_FILE)) as f:
            cost = json.load(f)
    agg = aggregate(rows)
    for a in agg:
        rs = [r for r in rows if r["family"] == a["family"] and r["width"] == a["width"]]
        for k in UNIT_KEYS:
            a[k] = _mean(r.get(k) for r in rs)
        a["unit_stats_n"] = sum(1 for r in rs if r.get("frac_useful") is not None)
        a["steps"] = rs[0]["steps"]
        c = cost.get(str(a["width"])) if a["family"] == "sparse" else None
        a["dense_masked_est_s"] = c["dense_masked_ms"] * a["steps"] / 1e3 if c else None
        a["sparse_steps_s"] = c["sparse_ms"] * a["steps"] / 1e3 if c else None
    return agg


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def units_table(agg: Sequence[dict]) -> str:
    """Markdown: accuracy, unit diagnostics (% of units) and time per (family, width)."""
    lines = [
        "| family | width | inputs / unit | no inputs % | no outputs % | connected % "
        "| dead among connected % | useful units | inputs / useful unit "
        "| kept weights on useful units % "
        "| best test acc (%) | final train acc (%) | wall / run (s) "
        "| sparse steps (s) | dense-masked steps, est. (s) | seeds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in agg:
        n = a["n"]
        useful = "–" if a["useful_units"] is None else f"{a['useful_units']:.0f}"
        ipu = "–" if a["inputs_per_unit"] is None else f"{a['inputs_per_unit']:.2f}"
        ipuu = "–" if a["inputs_per_useful_unit"] is None else f"{a['inputs_per_useful_unit']:.2f}"
        lines.append(
            f"| {a['family']} | {a['width']} | {ipu} | {_pct(a['frac_no_inputs'])} "
            f"| {_pct(a['frac_no_outputs'])} | {_pct(a['frac_connected'])} "
            f"| {_pct(a['frac_dead_connected'])} "
            f"| {useful} | {ipuu} | {_pct(a['useful_weight_fraction'])} "
            f"| {fmt(a['best_test_accuracy'], a['best_test_accuracy_std'], n)} "
            f"| {fmt(a['final_train_accuracy'], a['final_train_accuracy_std'], n)} "
            f"| {fmt(a['wall_time_s'], None, 1, 0)} | {fmt(a['sparse_steps_s'], None, 1, 0)} "
            f"| {fmt(a['dense_masked_est_s'], None, 1, 0)} | {n} |"
        )
    return "\n".join(lines) + "\n"


def plot_units(agg: Sequence[dict], path: str, title: Optional[str] = None) -> None:
    """Three panels vs width (log-x): accuracy, unit fractions (sparse), time per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    dense = [a for a in agg if a["family"] == "dense"]
    sparse_only = [a for a in agg if a["family"] == "sparse"]
    bases = {a["base_width"] for a in sparse_only}
    sparse_pts = [a for a in dense if a["width"] in bases] + sparse_only  # from the base point
    ax = axes[0]
    for pts, colour, label in ((dense, "tab:blue", "dense"), (sparse_pts, "tab:red", "sparse")):
        w = [a["width"] for a in pts]
        for key, style, what in (
            ("best_test_accuracy", "-o", "best test"),
            ("final_train_accuracy", "--s", "final train"),
        ):
            err = [a[key + "_std"] or 0 for a in pts]
            ax.errorbar(w, [a[key] for a in pts], err, fmt=style, color=colour, ms=4, capsize=2,
                        label=f"{label}: {what}")  # fmt: skip
    ax.set(xscale="log", xlabel="width", ylabel="accuracy (%)", title="accuracy")
    ax.legend(fontsize=7)
    ax = axes[1]
    sp = [a for a in sparse_pts if a["frac_useful"] is not None]
    w = [a["width"] for a in sp]
    for key, label in (
        ("frac_no_inputs", "no inputs"),
        ("frac_no_outputs", "no outgoing weight"),
        ("frac_connected", "connected (in and out)"),
        ("frac_dead_connected", "dead among connected"),
        ("frac_useful", "useful (connected, alive)"),
    ):
        ax.plot(w, [100 * (np.nan if a[key] is None else a[key]) for a in sp], "-o", ms=4,
                label=label)  # fmt: skip
    ax.set(xscale="log", xlabel="width", ylabel="% of hidden units", title="hidden units")
    ax2 = ax.twinx()
    ax2.plot(w, [a["inputs_per_unit"] for a in sp], "k:", label="inputs / unit")
    ax2.set(yscale="log", ylabel="kept inputs per unit (dotted)")
    ax.legend(fontsize=7)
    ax = axes[2]
    for pts, colour, label in ((dense, "tab:blue", "dense"), (sparse_pts, "tab:red", "sparse")):
        ax.plot([a["width"] for a in pts], [a["wall_time_s"] for a in pts], "-o", color=colour,
                ms=4, label=f"{label}: measured wall / run")  # fmt: skip
    est = [a for a in agg if a["dense_masked_est_s"] is not None]
    ax.plot([a["width"] for a in est], [a["dense_masked_est_s"] for a in est], "--^",
            color="tab:gray", label="sparse family, dense masking (est.)")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="width", ylabel="seconds", title="time per run")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_units_report(out_dir: str, title: Optional[str] = None) -> list[dict]:
    """units.md + units.png in ``out_dir``; returns the merged rows."""
    agg = merged_rows(out_dir)
    if not agg:
        raise ValueError(f"no finished runs under {os.path.join(out_dir, RUNS_DIR)}")
    with open(os.path.join(out_dir, "units.md"), "w") as f:
        f.write((f"### {title}\n\n" if title else "") + units_table(agg))
    plot_units(agg, os.path.join(out_dir, "units.png"), title)
    return agg


# ----------------------------------------------------------------------------- CLI


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.unit_stats_sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stats", help="unit_stats.json for every finished run")
    s.add_argument("--out", required=True)
    s.add_argument("--prune-checkpoints", action="store_true")
    c = sub.add_parser("cost", help="time dense-masked and sparse steps per width")
    c.add_argument("--out", required=True)
    c.add_argument("--widths", required=True, help="comma-separated widths")
    c.add_argument("--reps", type=int, default=3)
    r = sub.add_parser("report", help="units.md and units.png")
    r.add_argument("--out", required=True)
    r.add_argument("--title", default=None)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "stats":
            print(f"{stats_all(args.out, args.prune_checkpoints)} runs -> {STATS_FILE}")
        elif args.cmd == "cost":
            from experiments.width_sweep import parse_int_list

            cost_all(args.out, parse_int_list(args.widths, "--widths"), args.reps)
        else:
            write_units_report(args.out, args.title)
            print(f"-> {args.out}/units.md, units.png")
        return 0
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
