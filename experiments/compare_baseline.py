"""Side-by-side comparison of PyTorch-baseline runs and runs of this project.

    python -m experiments.compare_baseline --baseline RUN_DIR [RUN_DIR ...] \\
        --ours WORKDIR [WORKDIR ...] [--out curves.png] [--json report.json] [--k 2] \\
        [--default-std 0.5]

Each side may list several seeds of the same configuration; how each is read:
:mod:`experiments.baseline_runs`.

Noise rule (documented in docs/baseline_comparison.md): for a scalar such as the best
test accuracy, the two sides differ beyond seed noise when

    |mean_ours - mean_baseline| > k * s,   k = 2 by default,

where s is the pooled seed standard deviation of the sides that have >= 2 seeds
(sqrt of the (n-1)-weighted mean of their sample variances), and ``--default-std`` (0.5
accuracy points, the order of the seed spread of CIFAR-10 ResNet-18 best accuracies) when
neither side has two seeds. Losses use the same rule with the default s scaled to
``default_std / 100`` (nats). The config check lists every field that differs between the
two sides (width, base width, dataset, model, lr, momentum, weight decay, epochs, batch,
schedule); seeds are reported, never flagged.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from experiments.baseline_runs import (  # noqa: F401  (re-exported: the public names)
    BASELINE_MODEL_FILES,
    CONFIG_FIELDS,
    CURVES,
    Run,
    baseline_config,
    load_baseline_run,
    load_our_run,
    our_config,
)

DEFAULT_K = 2.0
DEFAULT_STD = 0.5  # accuracy points (percent), used when no side has >= 2 seeds

# ----------------------------------------------------------------------------- comparing


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def config_differences(baseline_cfg: Mapping[str, Any], ours_cfg: Mapping[str, Any]) -> list[str]:
    """Human-readable lines, one per CONFIG_FIELDS entry that differs (unknown on a side = note)."""
    out = []
    for k in CONFIG_FIELDS:
        a, b = baseline_cfg.get(k), ours_cfg.get(k)
        if a is None or b is None:
            if a is not None or b is not None:
                out.append(f"{k}: baseline={a!r} ours={b!r} (unknown on one side)")
            continue
        if not _same(a, b):
            out.append(f"{k}: baseline={a!r} ours={b!r}")
    return out


def pooled_std(groups: Sequence[Sequence[float]]) -> Optional[float]:
    """Pooled sample std over the groups with >= 2 finite values; None if there is none."""
    num, den = 0.0, 0
    for g in groups:
        v = np.asarray([x for x in g if math.isfinite(x)], np.float64)
        if v.size >= 2:
            num += float(np.var(v, ddof=1)) * (v.size - 1)
            den += v.size - 1
    return math.sqrt(num / den) if den else None


def noise_flag(
    baseline_vals: Sequence[float],
    ours_vals: Sequence[float],
    *,
    k: float = DEFAULT_K,
    default_std: float = DEFAULT_STD,
) -> dict:
    """The documented noise rule for one scalar. Returns a dict with the means, difference,
    the std used and its source, the threshold k*s and ``flag`` (True = beyond seed noise)."""
    if k <= 0 or default_std <= 0:
        raise ValueError(f"k={k} and default_std={default_std} must both be > 0")
    mb = float(np.nanmean(baseline_vals)) if len(baseline_vals) else float("nan")
    mo = float(np.nanmean(ours_vals)) if len(ours_vals) else float("nan")
    s = pooled_std([baseline_vals, ours_vals])
    source = "pooled seed std"
    if s is None or s == 0.0:
        s, source = (
            default_std,
            "default (fewer than 2 seeds per side)" if s is None else "default (seed std is 0)",
        )
    diff = mo - mb
    return {
        "baseline_mean": mb,
        "ours_mean": mo,
        "diff": diff,
        "std": s,
        "std_source": source,
        "threshold": k * s,
        "flag": bool(math.isfinite(diff) and abs(diff) > k * s),
        "n_baseline": len(baseline_vals),
        "n_ours": len(ours_vals),
    }


def _final(run: Run, key: str) -> float:
    v = run.curves[key]
    fin = v[np.isfinite(v)]
    return float(fin[-1]) if fin.size else float("nan")


def compare(
    baseline_runs: Sequence[Run],
    our_runs: Sequence[Run],
    *,
    k: float = DEFAULT_K,
    default_std: float = DEFAULT_STD,
) -> dict:
    """Full report: config differences, and for best/final accuracies and final losses the
    noise rule of :func:`noise_flag`; plus per-curve max |difference| over common epochs."""
    if not baseline_runs or not our_runs:
        raise ValueError(
            f"need at least one run per side, got {len(baseline_runs)} baseline and "
            f"{len(our_runs)} of ours"
        )
    cfg_diffs = config_differences(baseline_runs[0].config, our_runs[0].config)
    within = {}
    for _side, runs in (("baseline", baseline_runs), ("ours", our_runs)):
        for r in runs[1:]:
            d = config_differences(runs[0].config, r.config)  # same-side runs must agree too
            if d:
                within[r.name] = d
    scalars = {}
    loss_std = default_std / 100.0
    scalars["best_test_accuracy"] = noise_flag(
        [r.best_test_accuracy for r in baseline_runs],
        [r.best_test_accuracy for r in our_runs],
        k=k,
        default_std=default_std,
    )
    for key in CURVES:
        ds = loss_std if key.endswith("loss") else default_std
        scalars[f"final_{key}"] = noise_flag(
            [_final(r, key) for r in baseline_runs],
            [_final(r, key) for r in our_runs],
            k=k,
            default_std=ds,
        )
    curve_diff = {}
    b0, o0 = baseline_runs[0], our_runs[0]
    common = np.intersect1d(np.round(b0.epochs, 6), np.round(o0.epochs, 6))
    for key in CURVES:
        bi = {round(e, 6): v for e, v in zip(b0.epochs, b0.curves[key])}
        oi = {round(e, 6): v for e, v in zip(o0.epochs, o0.curves[key])}
        d = [abs(oi[e] - bi[e]) for e in common if math.isfinite(oi[e]) and math.isfinite(bi[e])]
        curve_diff[key] = max(d) if d else None
    return {
        "config_differences": cfg_diffs,
        "same_side_config_differences": within,
        "seeds": {
            "baseline": [r.config.get("seed") for r in baseline_runs],
            "ours": [r.config.get("seed") for r in our_runs],
        },
        "scalars": scalars,
        "common_epochs": [float(e) for e in common],
        "max_curve_difference_common_epochs": curve_diff,
        "k": k,
        "default_std": default_std,
        "flagged": sorted(n for n, s in scalars.items() if s["flag"]),
    }


def format_report(report: dict, baseline_runs: Sequence[Run], our_runs: Sequence[Run]) -> str:
    """The printed table: per-run best/final numbers, then the noise-rule verdicts."""
    lines = [
        "run                                       side       epochs  best test  final test  "
        "final train loss"
    ]
    for r in list(baseline_runs) + list(our_runs):
        lines.append(
            f"{r.name[-40:]:<41} {r.side:<9} {r.epochs[-1]:>7.2f} {r.best_test_accuracy:>10.2f} "
            f"{_final(r, 'test_accuracy'):>11.2f} {_final(r, 'train_loss'):>17.4f}"
        )
    lines.append("")
    lines.append(f"noise rule: |mean ours - mean baseline| > k*s, k={report['k']}")
    lines.append(
        "quantity                      baseline      ours      diff   k*s   (s from)         flag"
    )
    for n, s in report["scalars"].items():
        lines.append(
            f"{n:<28} {s['baseline_mean']:>9.4f} {s['ours_mean']:>9.4f} {s['diff']:>9.4f} "
            f"{s['threshold']:>6.3f}  {s['std_source'][:16]:<16} {'DIFFERENT' if s['flag'] else 'ok'}"
        )
    lines.append("")
    if report["config_differences"]:
        lines.append("config differences (baseline vs ours):")
        lines += ["  " + d for d in report["config_differences"]]
    else:
        lines.append("configs agree on " + ", ".join(CONFIG_FIELDS))
    for name, d in report["same_side_config_differences"].items():
        lines.append(f"WARNING: {name} differs from the first run of its side: " + "; ".join(d))
    lines.append(f"seeds: baseline {report['seeds']['baseline']} ours {report['seeds']['ours']}")
    return "\n".join(lines)


def plot(baseline_runs: Sequence[Run], our_runs: Sequence[Run], report: dict, out: str) -> str:
    """2x2 figure (loss / accuracy x train / test vs epoch, every run) + best-accuracy title."""
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    styles = {"baseline": dict(color="tab:blue", ls="-"), "ours": dict(color="tab:orange", ls="--")}
    for ax, key in zip(
        axes.ravel(), ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
    ):
        for side, runs in (("baseline", baseline_runs), ("ours", our_runs)):
            for i, r in enumerate(runs):
                ax.plot(
                    r.epochs,
                    r.curves[key],
                    marker="o",
                    ms=3,
                    alpha=0.8,
                    label=f"{side} ({len(runs)} run{'s' * (len(runs) > 1)})" if i == 0 else None,
                    **styles[side],
                )
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("epoch (completed)")
        ax.set_ylabel("accuracy (%)" if "accuracy" in key else "cross-entropy")
        ax.grid(alpha=0.3)
        ax.legend()
    s = report["scalars"]["best_test_accuracy"]
    fig.suptitle(
        f"best test accuracy: baseline {s['baseline_mean']:.2f}%  ours {s['ours_mean']:.2f}%  "
        f"diff {s['diff']:+.2f} (k*s={s['threshold']:.2f}: "
        f"{'DIFFERENT' if s['flag'] else 'within seed noise'})"
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--baseline",
        nargs="+",
        required=True,
        help="baseline run directories (or stats.pt files), one per seed",
    )
    ap.add_argument("--ours", nargs="+", required=True, help="our workdirs, one per seed")
    ap.add_argument("--out", default=None, help="figure path (PNG); default: no figure")
    ap.add_argument("--json", default=None, help="write the report as JSON here")
    ap.add_argument("--k", type=float, default=DEFAULT_K)
    ap.add_argument("--default-std", type=float, default=DEFAULT_STD)
    args = ap.parse_args(argv)
    b = [load_baseline_run(p) for p in args.baseline]
    o = [load_our_run(p) for p in args.ours]
    report = compare(b, o, k=args.k, default_std=args.default_std)
    print(format_report(report, b, o))
    if args.out:
        report["figure"] = plot(b, o, report, args.out)
        print(f"figure: {report['figure']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
    return report


if __name__ == "__main__":
    main()
