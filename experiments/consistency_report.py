"""Figures and tables of the consistency study (:mod:`experiments.consistency_study`): loss
curves, their gap to the widest net, the cross-width metrics vs width (MLP and ResNet-18), the
MLP's markdown table and loss-curve JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from widesparse_jax.analysis import noise_scale as ns


def _smooth(a: np.ndarray, k: int = 25) -> np.ndarray:
    if len(a) < k:
        return a
    return np.convolve(a, np.ones(k) / k, mode="valid")


def plot(res: dict, out_dir: str, widths: Sequence[int]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = list(res["curves"])
    fig = Figure(figsize=(4 * len(keys), 7))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(keys), squeeze=False)
    for j, key in enumerate(keys):
        name = f"{'μP' if key[0] == 'mup' else 'SP'}, {'sparse' if key[1] else 'dense'}"
        for w in widths:
            c = res["curves"][key][w]
            axes[0][j].plot(_smooth(c), label=f"w={w}", lw=1)
            ref = res["curves"][key][max(widths)]
            axes[1][j].plot(_smooth(np.abs(c - ref)), label=f"w={w}", lw=1)
        axes[0][j].set_title(name)
        axes[0][j].set_yscale("log")
        axes[1][j].set_yscale("log")
        axes[1][j].set_xlabel("step")
    axes[0][0].set_ylabel("train loss (smoothed)")
    axes[1][0].set_ylabel("|loss - loss(widest)| (smoothed)")
    axes[0][-1].legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "consistency_loss_curves.png"), dpi=110)

    rows = res["rows"]
    fig = Figure(figsize=(14, 3.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    for key in keys:
        rr = [r for r in rows if (r["param"], r["sparse"]) == key and r["width"] != max(widths)]
        name = f"{'μP' if key[0] == 'mup' else 'SP'} {'sparse' if key[1] else 'dense'}"
        ls = "--" if key[1] else "-"
        for ax, col in zip(axes, ("prob_msd", "argmax_dis", "cka_vs_widest", "eos_ratio")):
            ax.plot([r["width"] for r in rr], [r[col] for r in rr], ls, marker="o", label=name)
    for ax, t in zip(
        axes,
        (
            "prob. MSD vs widest",
            "argmax disagreement vs widest",
            "linear CKA vs widest (hidden)",
            "sharpness / (2(1+m)/lr)",
        ),
    ):
        ax.set_xscale("log", base=2)
        ax.set_title(t, fontsize="small")
        ax.set_xlabel("width")
        ax.grid(True, alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "consistency_metrics.png"), dpi=110)


def plot_resnet(res: dict, path: str, widths: Sequence[int]) -> None:
    """Loss curves and |gap to widest| per parametrization + metrics vs width."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    params = list(res["curves"])
    fig = Figure(figsize=(4 * (len(params) + 1), 7))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(params) + 1, squeeze=False)
    ref = max(widths)
    for j, p in enumerate(params):
        for w in widths:
            c = res["curves"][p][w]
            axes[0][j].plot(_smooth(c, 5), label=f"w={w}", lw=1)
            if w != ref:
                axes[1][j].plot(_smooth(np.abs(c - res["curves"][p][ref]), 5), label=f"w={w}", lw=1)
        axes[0][j].set_title(f"ResNet-18, {'μP' if p == 'mup' else 'SP'}")
        axes[0][j].set_yscale("log")
        axes[1][j].set_yscale("log")
        axes[1][j].set_xlabel("step")
    axes[0][0].set_ylabel("train loss (smoothed, 5)")
    axes[1][0].set_ylabel(f"|loss - loss(w={ref})| (smoothed)")
    axes[0][0].legend(fontsize="x-small")
    rows = res["rows"]
    for p in params:
        rr = [r for r in rows if r["param"] == p and r["width"] != ref]
        lab = "μP" if p == "mup" else "SP"
        axes[0][-1].plot(
            [r["width"] for r in rr], [r["prob_msd"] for r in rr], "-o", label=f"{lab} prob MSD"
        )
        axes[0][-1].plot(
            [r["width"] for r in rr],
            [r["argmax_dis"] for r in rr],
            "--s",
            label=f"{lab} argmax dis.",
        )
        axes[1][-1].plot(
            [r["width"] for r in rr], [r["cka_penultimate"] for r in rr], "-o", label=lab
        )
    axes[0][-1].set_title(f"disagreement vs w={ref} (test)", fontsize="small")
    axes[1][-1].set_title(f"linear CKA of penultimate features vs w={ref}", fontsize="small")
    for ax in (axes[0][-1], axes[1][-1]):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


MLP_COLUMNS = (
    "param",
    "sparse",
    "width",
    "test_acc",
    "mean_abs_loss_gap",
    "loss_gap_epoch1",
    "prob_msd_epoch1",
    "argmax_dis_epoch1",
    "prob_msd",
    "argmax_dis",
    "cka_vs_widest",
    "preact_std",
    "preact_kurtosis",
    "sharpness",
    "eos_ratio",
)


def _write_curves(curves: dict, path: str) -> None:
    """{'<param>_<dense|sparse>': {'<width>': per-step losses (5 decimals)}} as JSON."""
    with open(path, "w") as f:
        json.dump(
            {
                f"{k[0]}_{'sparse' if k[1] else 'dense'}": {
                    str(w): [round(float(v), 5) for v in c] for w, c in d.items()
                }
                for k, d in curves.items()
            },
            f,
        )


def _ensemble_rows(ensemble: dict) -> list[dict]:
    return [
        dict(
            param=k[0],
            sparse=k[1],
            **{f"ens_k{kk}": v for kk, v in e["ensemble_acc"].items()},
            member_mean=e["member_mean_acc"],
            widest=e["single_acc"],
            gap=e["gap"],
        )
        for k, e in ensemble.items()
    ]


def _mlp_markdown(a, res: dict, widths: Sequence[int], wall: float) -> str:
    return "\n".join(
        [
            "### Consistency across widths (MLP, Fashion-MNIST)",
            "",
            ns.markdown_table(res["rows"], list(MLP_COLUMNS), float_fmt=".4g"),
            f"Ensemble of {a.ensemble_k} width-{a.base_width} nets vs the widest ({max(widths)}):",
            "",
            ns.markdown_table(_ensemble_rows(res["ensemble"]), float_fmt=".4g"),
            f"Setting: first {a.n_train} training examples, {a.epochs} epochs, batch "
            f"{a.batch_size}, lr {a.lr} (base), momentum 0.9, no weight decay, seed 0; μP base "
            f"width {a.base_width}; sparse = weight count of the dense width-{a.base_width} net; "
            f"wall {wall:.0f}s.",
            "",
        ]
    )
