"""The report of a width sweep: ``runs.csv``, ``table.md`` (mean ± std over seeds) and
``width_sweep.png`` built from the finished run workdirs under ``OUT/runs``.

Layout of a sweep directory (written by ``experiments/width_sweep.py``)::

  OUT/sweep.json                        the sweep's arguments and command line
  OUT/runs/<family>_w<width>_s<seed>/   one training workdir per run (summary.json when done,
                                        failed.json when it diverged)
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional, Sequence

from experiments.csv_rows import write_csv

FAMILIES = ("dense", "sparse", "bottleneck-linear", "bottleneck-nonlinear")
RUNS_DIR = "runs"
SUMMARY_FILE = "summary.json"
FAILED_FILE = "failed.json"  # written by run_sweep when a run diverges


def is_finished(workdir: str) -> bool:
    return os.path.isfile(os.path.join(workdir, SUMMARY_FILE))


CSV_FIELDS = (
    "family",
    "width",
    "base_width",
    "seed",
    "kept_weights",
    "total_weights",
    "density",
    "best_test_accuracy",
    "final_test_accuracy",
    "final_train_accuracy",
    "steps",
    "wall_time_s",
    "workdir",
)
FAMILY_STYLE = {  # colour, marker, label
    "dense": ("tab:blue", "o", "dense (weights grow with width)"),
    "sparse": ("tab:red", "s", "sparse (fixed weight count)"),
    "bottleneck-linear": ("tab:green", "^", "linear bottleneck (fixed count)"),
    "bottleneck-nonlinear": ("tab:purple", "v", "non-linear bottleneck (fixed count)"),
}


def _name_key(name: str) -> tuple:
    """Sort key of a workdir name ``<family>_w<width>_s<seed>``: family order, width, seed."""
    family, _, rest = name.partition("_w")
    width, _, seed = rest.partition("_s")
    rank = FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)
    try:
        return (rank, int(width), int(seed), name)
    except ValueError:
        return (rank, 0, 0, name)


def collect_failures(out_dir: str) -> dict[str, str]:
    """``{run name: error message}`` of runs that failed (``failed.json``) and never finished."""
    runs = os.path.join(out_dir, RUNS_DIR)
    out = {}
    for name in sorted(os.listdir(runs) if os.path.isdir(runs) else [], key=_name_key):
        path = os.path.join(runs, name, FAILED_FILE)
        if os.path.isfile(path) and not is_finished(os.path.join(runs, name)):
            with open(path) as f:
                d = json.load(f)
            out[name] = f"{d['error']}: {d['message']}"
    return out


def collect_rows(out_dir: str) -> list[dict]:
    """One row per finished run under ``OUT/runs`` (fields :data:`CSV_FIELDS`)."""
    rows = []
    runs = os.path.join(out_dir, RUNS_DIR)
    if not os.path.isdir(runs):
        return rows
    for name in sorted(os.listdir(runs)):
        workdir = os.path.join(runs, name)
        if not is_finished(workdir):
            continue
        with open(os.path.join(workdir, SUMMARY_FILE)) as f:
            s = json.load(f)
        with open(os.path.join(workdir, "config.json")) as f:
            c = json.load(f)
        m = c["model"]
        if m["base_width"] is None or m["base_width"] == m["width"]:
            family = "dense"
        elif m["name"].endswith("_bottleneck"):
            family = f"bottleneck-{m['bottleneck']}"
        else:
            family = "sparse"
        kept, total = s.get("kept_weights"), s.get("total_weights")
        rows.append(
            {
                "family": family,
                "width": m["width"],
                "base_width": m["base_width"] if m["base_width"] is not None else m["width"],
                "seed": c["train"]["seed"],
                "kept_weights": kept,
                "total_weights": total,
                "density": (kept / total) if kept and total else None,
                "best_test_accuracy": s.get("best_test_accuracy"),
                "final_test_accuracy": s.get("final_test_accuracy"),
                "final_train_accuracy": s.get("final_train_accuracy"),
                "steps": s.get("step"),
                "wall_time_s": s.get("wall_time_s"),
                "workdir": os.path.relpath(workdir, out_dir),
            }
        )
    rows.sort(
        key=lambda r: (
            FAMILIES.index(r["family"]) if r["family"] in FAMILIES else 99,
            r["width"],
            r["seed"],
        )
    )
    return rows


def _mean_std(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float], int]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
    return mean, math.sqrt(var), len(vals)


def aggregate(rows: Sequence[dict]) -> list[dict]:
    """Mean and sample std over seeds per (family, width); dense base width joins every family."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["width"]), []).append(r)
    out = []
    for (family, width), rs in groups.items():
        agg = {
            "family": family,
            "width": width,
            "base_width": rs[0]["base_width"],
            "n": len(rs),
            "kept_weights": rs[0]["kept_weights"],
            "density": rs[0]["density"],
            "seeds": sorted(r["seed"] for r in rs),
        }
        for key in (
            "best_test_accuracy",
            "final_train_accuracy",
            "final_test_accuracy",
            "wall_time_s",
        ):
            agg[key], agg[key + "_std"], _ = _mean_std([r[key] for r in rs])
        out.append(agg)
    out.sort(
        key=lambda a: (FAMILIES.index(a["family"]) if a["family"] in FAMILIES else 99, a["width"])
    )
    return out


def fmt(v: Optional[float], std: Optional[float] = None, n: int = 1, digits: int = 2) -> str:
    if v is None:
        return "–"
    if std is not None and n > 1:
        return f"{v:.{digits}f} ± {std:.{digits}f}"
    return f"{v:.{digits}f}"


def markdown_table(agg: Sequence[dict], title: Optional[str] = None) -> str:
    """Markdown table of :func:`aggregate` rows (accuracies in %, mean ± std when n > 1)."""
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += [
        "| family | width | weights kept | density | best test acc (%) | "
        "final train acc (%) | wall (s) | seeds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in agg:
        density = "–" if a["density"] is None else f"{a['density']:.4g}"
        lines.append(
            f"| {a['family']} | {a['width']} | {a['kept_weights']} | {density} | "
            f"{fmt(a['best_test_accuracy'], a['best_test_accuracy_std'], a['n'])} | "
            f"{fmt(a['final_train_accuracy'], a['final_train_accuracy_std'], a['n'])} | "
            f"{fmt(a['wall_time_s'], None, 1, 1)} | {a['n']} |"
        )
    return "\n".join(lines) + "\n"


def family_curves(agg: Sequence[dict]) -> dict[str, list[dict]]:
    """Per family, its points by width; every non-dense family starts at the dense base point."""
    by_family: dict[str, list[dict]] = {}
    for a in agg:
        by_family.setdefault(a["family"], []).append(a)
    dense = {a["width"]: a for a in by_family.get("dense", [])}
    for family, pts in by_family.items():
        if family == "dense" or not pts:
            continue
        # the dense base-width net, whose weight count the family keeps, is its first point
        base = pts[0].get("base_width")
        if base in dense and base < min(p["width"] for p in pts):
            pts.insert(0, dense[base])
    for pts in by_family.values():
        pts.sort(key=lambda a: a["width"])
    return by_family


def _plot_family(ax, family: str, pts: Sequence[dict], key: str, lim) -> None:
    """One family's curve of ``key`` vs width with seed-std bars; with ``lim=(lo, hi)``,
    points below ``lo`` are drawn as a down-pointing marker on the bottom edge, labelled."""
    color, marker, label = FAMILY_STYLE.get(family, ("black", "x", family))
    pts = [p for p in pts if p[key] is not None]
    if not pts:
        return
    xs = [p["width"] for p in pts]
    ys = [p[key] for p in pts]
    es = [p[key + "_std"] if p["n"] > 1 else 0.0 for p in pts]
    shown = [y if lim is None else max(y, lim[0]) for y in ys]
    es = [e if y == v else 0.0 for e, y, v in zip(es, ys, shown)]  # no bars on clipped points
    ax.errorbar(
        xs,
        shown,
        yerr=es,
        color=color,
        marker=marker,
        capsize=3,
        label=label,
        linestyle="-" if family == "dense" else "--",
        markersize=5,
    )
    for x, y in zip(xs, ys):
        if lim is not None and y < lim[0]:
            ax.plot([x], [lim[0]], marker="v", color=color, markersize=9, clip_on=False)
            ax.annotate(
                f"{y:.1f}",
                (x, lim[0]),
                textcoords="offset points",
                xytext=(-4, 8),
                ha="right",
                fontsize=8,
                color=color,
            )


def _width_axis(ax, widths: Sequence[int], ylabel: str) -> None:
    """Log x axis ticked at the sweep's widths, labels, grid and legend."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(widths))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.tick_params(axis="x", labelsize=8, labelrotation=45 if len(widths) > 5 else 0)
    ax.set_xlabel("width")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_sweep(
    agg: Sequence[dict],
    path: str,
    title: Optional[str] = None,
    test_ylim: Optional[tuple[float, float]] = None,
) -> None:
    """Fig.-1-style figure: best test acc (left) and final train acc (right) vs width (log x).

    ``test_ylim=(lo, hi)`` zooms the test panel; points below ``lo`` are drawn as a down-pointing
    marker on the bottom edge, labelled with their value.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = family_curves(agg)
    widths = sorted({a["width"] for a in agg})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        ("best_test_accuracy", "best test accuracy (%)"),
        ("final_train_accuracy", "train accuracy, last epoch (%)"),
    )
    for ax, (key, ylabel) in zip(axes, panels):
        lim = test_ylim if key == "best_test_accuracy" else None
        for family, pts in curves.items():
            _plot_family(ax, family, pts, key, lim)
        if key == "best_test_accuracy" and test_ylim is not None:
            ax.set_ylim(*test_ylim)
        _width_axis(ax, widths, ylabel)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(
    out_dir: str, title: Optional[str] = None, test_ylim: Optional[tuple[float, float]] = None
) -> list[dict]:
    """Writes runs.csv, table.md and width_sweep.png from the finished runs; returns the rows."""
    rows = collect_rows(out_dir)
    if not rows:
        raise ValueError(f"no finished runs (summary.json) under {os.path.join(out_dir, RUNS_DIR)}")
    if title is None:
        info_path = os.path.join(out_dir, "sweep.json")
        if os.path.isfile(info_path):
            with open(info_path) as f:
                title = json.load(f).get("title")
    write_csv(rows, os.path.join(out_dir, "runs.csv"), CSV_FIELDS)
    agg = aggregate(rows)
    text = markdown_table(agg, title)
    failures = collect_failures(out_dir)
    if failures:
        text += "\nRuns that failed (not in the table):\n\n" + "".join(
            f"* `{name}`: {msg.split(';')[0]}\n" for name, msg in failures.items()
        )
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(text)
    plot_sweep(agg, os.path.join(out_dir, "width_sweep.png"), title, test_ylim)
    return rows
