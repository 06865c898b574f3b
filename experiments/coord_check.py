"""Coordinate check (μP literature): size of activations and of their updates vs width.

For each parametrization and width, the same Fashion-MNIST batches are fed to a one-hidden-layer
MLP (784 -> n -> 10) for ``steps`` SGD steps; on a fixed probe batch we record the RMS of the
hidden pre-activation h, of the logits f, and of their changes since init (Δh = h_t - h_0,
Δf = f_t - f_0). Under μP every Δ curve is flat in width; under SP Δf grows ~ width and Δh
shrinks ~ width^-1/2; under NTK Δf is flat and Δh shrinks (lazy/kernel regime).

Run (writes results/toolkit/coord_check_*.{csv,png}):
    python -m experiments.coord_check --out results/toolkit

ResNet-18 (CIFAR stem, 28x28x1 inputs) SP vs μP, per-layer RMS (stem, stage outputs, logits):
    python -m experiments.coord_check --model resnet --widths 4,8,16,32 --base-width 4 \
        --steps 3 --lr 0.05 --seeds 2 --out results/toolkit
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from collections.abc import Sequence
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from experiments import toolkit_common as tc
from experiments.coord_check_resnet import (  # noqa: F401  (re-exported)
    RESNET_LAYERS,
    coord_check_resnet,
    main_resnet,
    plot_resnet,
    resnet_slope_lines,
)
from experiments.coord_stats import log_slopes, mean_curves, records, rms, training_data
from experiments.csv_rows import write_csv

QUANTITIES = ("h", "logits", "delta_h", "delta_logits")
PARAMS = ("standard", "ntk", "mup", "mup_nominal")


def _probe(net: tc.Net, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(hidden pre-activation [N, n], logits [N, 10]) of ``net`` on ``x``."""
    logits, inter = net.model.apply(
        {"params": net.params},
        x,
        train=False,
        capture_intermediates=lambda mdl, _: mdl.name == "fc",
    )
    h = inter["intermediates"]["fc"]["__call__"][0]
    if net.parametrization == "ntk":
        h = h / math.sqrt(tc.INPUT_DIM)
    return h, logits


def coord_check(
    widths: Sequence[int],
    *,
    params: Sequence[str] = ("standard", "ntk", "mup"),
    steps: int = 3,
    lr: float = 0.1,
    ntk_lr: Optional[float] = None,
    momentum: float = 0.0,
    batch_size: int = 64,
    seeds: Sequence[int] = (0, 1),
    base_width: int = 64,
    sparse: bool = False,
    data: Optional[tuple[np.ndarray, np.ndarray]] = None,
) -> list[dict]:
    """Records {param, sparse, width, seed, step (0..steps), quantity, rms}.

    Args:
      widths: hidden widths (>= base_width when sparse).
      params: among 'standard', 'ntk', 'mup', 'mup_nominal' (μP with fan_in_mode='nominal').
      steps: SGD steps; step t uses training batch t (same for every width and param).
      lr: base learning rate (SP, μP); ntk_lr: NTK lr (default lr * base_width, which equals
        SP's output-layer step at the base width).
      batch_size: train batch; the probe batch is the next batch_size examples.
      base_width: μP base width and, when ``sparse``, the width whose dense count is kept.
      data: (x [N, 784], y [N]); default: Fashion-MNIST train.
    """
    x, y, need = training_data(data, steps, batch_size)
    probe = jnp.asarray(x[steps * batch_size : need])
    ntk_lr = lr * base_width if ntk_lr is None else ntk_lr
    out = []
    for param in params:
        if param not in PARAMS:
            raise ValueError(f"param {param!r} unknown; allowed: {PARAMS}")
        native = "mup" if param == "mup_nominal" else param
        mode = "nominal" if param == "mup_nominal" else "effective"
        for width in widths:
            for seed in seeds:
                net = tc.make_mlp(
                    width,
                    base_width=base_width,
                    sparse=sparse,
                    param=native,
                    key=jax.random.key(seed),
                    mask_seed=seed,
                    fan_in_mode=mode,
                )
                run = dict(param=param, sparse=sparse, width=width, seed=seed)
                step_lr = ntk_lr if param == "ntk" else lr
                for t, vals in enumerate(
                    _trajectory(net, momentum, step_lr, x, y, probe, steps, batch_size)
                ):
                    out += records(run, t, vals)
    return out


def _trajectory(
    net: tc.Net, momentum: float, lr: float, x, y, probe, steps: int, batch_size: int
) -> list:
    """[(quantity, rms) pairs at step t for t = 0..steps]: ``steps`` SGD steps on the
    batches of x, y (batch t - 1 at step t), probed on ``probe`` after each."""
    tx = tc.make_tx(net, momentum)
    state = tx.init(net.params)
    h0, f0 = _probe(net, probe)
    out = []
    for t in range(steps + 1):
        if t > 0:
            xb = jnp.asarray(x[(t - 1) * batch_size : t * batch_size])
            yb = jnp.asarray(y[(t - 1) * batch_size : t * batch_size])
            net.params, state, _ = _step(net.model, tx, net.params, state, net.masks, lr, xb, yb)
        h, f = _probe(net, probe)
        out.append(
            [
                ("h", rms(h)),
                ("logits", rms(f)),
                ("delta_h", rms(h - h0)),
                ("delta_logits", rms(f - f0)),
            ]
        )
    return out


_step = jax.jit(tc.sgd_step, static_argnums=(0, 1))


def plot(records: Sequence[dict], path: str, title: str = "") -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = mean_curves(records)
    params = list(dict.fromkeys(r["param"] for r in records))
    steps = sorted({r["step"] for r in records})
    fig = Figure(figsize=(3.2 * len(params), 2.6 * len(QUANTITIES)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(QUANTITIES), len(params), squeeze=False)
    for i, q in enumerate(QUANTITIES):
        for j, p in enumerate(params):
            ax = axes[i][j]
            for t in steps:
                if q.startswith("delta") and t == 0:
                    continue
                d = curves.get((p, q, t))
                if d:
                    ax.plot(
                        list(d), list(d.values()), marker="o", ms=3, color=f"C{t}", label=f"t={t}"
                    )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            if i == 0:
                ax.set_title(p)
            if j == 0:
                ax.set_ylabel(f"RMS {q}")
            if i == len(QUANTITIES) - 1:
                ax.set_xlabel("width")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize="x-small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def read_csv(path: str) -> list[dict]:
    """Records written by :func:`write_csv` (types restored)."""
    with open(path) as f:
        return [
            dict(
                r,
                sparse=r["sparse"] == "True",
                width=int(r["width"]),
                seed=int(r["seed"]),
                step=int(r["step"]),
                rms=float(r["rms"]),
            )
            for r in csv.DictReader(f)
        ]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/toolkit")
    ap.add_argument("--widths", default="64,128,256,512,1024,2048")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--base-width",
        type=int,
        default=None,
        help="μP base width (default 64 for the MLP, 4 for the ResNet)",
    )
    ap.add_argument(
        "--model",
        choices=("mlp", "resnet"),
        default="mlp",
        help="mlp: the MLP runs (dense + sparse); resnet: ResNet-18 SP vs μP",
    )
    ap.add_argument("--batch-size", type=int, default=64, help="ResNet only (the MLP uses 64)")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = _parser().parse_args(argv)
    if a.model == "resnet":
        if a.base_width is None:
            a.base_width = 4
        return main_resnet(a)
    if a.base_width is None:
        a.base_width = 64
    os.makedirs(a.out, exist_ok=True)
    widths = [int(w) for w in a.widths.split(",")]
    seeds = tuple(range(a.seeds))
    lines = []
    for sparse, params in (
        (False, ("standard", "ntk", "mup")),
        (True, ("standard", "mup", "mup_nominal")),
    ):
        ws = [w for w in widths if not sparse or w > a.base_width]
        rec = coord_check(
            ws,
            params=params,
            steps=a.steps,
            lr=a.lr,
            seeds=seeds,
            base_width=a.base_width,
            sparse=sparse,
        )
        tag = "sparse" if sparse else "dense"
        write_csv(rec, os.path.join(a.out, f"coord_check_mlp_{tag}.csv"))
        plot(
            rec,
            os.path.join(a.out, f"coord_check_mlp_{tag}.png"),
            title=f"MLP coord check ({tag}{', count of width %d' % a.base_width if sparse else ''}),"
            f" lr={a.lr}, base width {a.base_width}",
        )
        for q in QUANTITIES:
            for t in (1, a.steps):
                s = log_slopes(rec, q, t)
                lines.append(
                    f"{tag:6s} {q:13s} step {t}: "
                    + "  ".join(f"{p}={v:+.3f}" for p, v in s.items())
                )
    text = "log-log slope of RMS vs width\n" + "\n".join(lines)
    print(text)
    with open(os.path.join(a.out, "coord_check_slopes.txt"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
