"""Coordinate check (μP literature): size of activations and of their updates vs width.

For each parametrization and width, the same Fashion-MNIST batches are fed to a one-hidden-layer
MLP (784 -> n -> 10) for ``steps`` SGD steps; on a fixed probe batch we record the RMS of the
hidden pre-activation h, of the logits f, and of their changes since init (Δh = h_t - h_0,
Δf = f_t - f_0). Under μP every Δ curve is flat in width; under SP Δf grows ~ width and Δh
shrinks ~ width^-1/2; under NTK Δf is flat and Δh shrinks (lazy/kernel regime).

Run (writes results/toolkit/coord_check_*.{csv,png}):
    python experiments/coord_check.py --out results/toolkit
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolkit_common as tc  # noqa: E402

QUANTITIES = ("h", "logits", "delta_h", "delta_logits")
PARAMS = ("standard", "ntk", "mup", "mup_nominal")


def _probe(net: tc.Net, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(hidden pre-activation [N, n], logits [N, 10]) of ``net`` on ``x``."""
    logits, inter = net.model.apply({"params": net.params}, x, train=False,
                                    capture_intermediates=lambda mdl, _: mdl.name == "fc")
    h = inter["intermediates"]["fc"]["__call__"][0]
    if net.parametrization == "ntk":
        h = h / math.sqrt(tc.INPUT_DIM)
    return h, logits


def _rms(a: Any) -> float:
    return float(jnp.sqrt(jnp.mean(jnp.square(a))))


def coord_check(widths: Sequence[int], *, params: Sequence[str] = ("standard", "ntk", "mup"),
                steps: int = 3, lr: float = 0.1, ntk_lr: Optional[float] = None,
                momentum: float = 0.0, batch_size: int = 64, seeds: Sequence[int] = (0, 1),
                base_width: int = 64, sparse: bool = False,
                data: Optional[tuple[np.ndarray, np.ndarray]] = None) -> list[dict]:
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
    if data is None:
        data = tc.load_fashion_mnist("train", batch_size * (steps + 1))
    x, y = data
    need = batch_size * (steps + 1)
    if len(y) < need:
        raise ValueError(f"need {need} examples for {steps} steps of batch {batch_size}, got {len(y)}")
    probe = jnp.asarray(x[steps * batch_size: need])
    ntk_lr = lr * base_width if ntk_lr is None else ntk_lr
    out = []
    for param in params:
        if param not in PARAMS:
            raise ValueError(f"param {param!r} unknown; allowed: {PARAMS}")
        native = "mup" if param == "mup_nominal" else param
        mode = "nominal" if param == "mup_nominal" else "effective"
        for width in widths:
            for seed in seeds:
                net = tc.make_mlp(width, base_width=base_width, sparse=sparse, param=native,
                                  key=jax.random.key(seed), mask_seed=seed, fan_in_mode=mode)
                tx = tc.make_tx(net, momentum)
                state = tx.init(net.params)
                h0, f0 = _probe(net, probe)
                step_lr = ntk_lr if param == "ntk" else lr
                for t in range(steps + 1):
                    if t > 0:
                        xb = jnp.asarray(x[(t - 1) * batch_size: t * batch_size])
                        yb = jnp.asarray(y[(t - 1) * batch_size: t * batch_size])
                        net.params, state, _ = _step(net.model, tx, net.params, state, net.masks,
                                                     step_lr, xb, yb)
                    h, f = _probe(net, probe)
                    vals = {"h": _rms(h), "logits": _rms(f), "delta_h": _rms(h - h0),
                            "delta_logits": _rms(f - f0)}
                    for q, v in vals.items():
                        out.append(dict(param=param, sparse=sparse, width=width, seed=seed,
                                        step=t, quantity=q, rms=v))
    return out


_step = jax.jit(tc.sgd_step, static_argnums=(0, 1))


def mean_curves(records: Sequence[dict]) -> dict[tuple, dict[int, float]]:
    """{(param, quantity, step): {width: rms averaged over seeds}}."""
    acc: dict[tuple, dict[int, list[float]]] = {}
    for r in records:
        acc.setdefault((r["param"], r["quantity"], r["step"]), {}).setdefault(
            r["width"], []).append(r["rms"])
    return {k: {w: float(np.mean(v)) for w, v in sorted(d.items())} for k, d in acc.items()}


def log_slopes(records: Sequence[dict], quantity: str, step: int) -> dict[str, float]:
    """{param: slope of log(rms) vs log(width)} (least squares) at ``step``."""
    out = {}
    for (param, q, t), d in mean_curves(records).items():
        if q == quantity and t == step:
            w = np.log(np.array(list(d.keys()), float))
            v = np.log(np.maximum(np.array(list(d.values()), float), 1e-30))
            out[param] = float(np.polyfit(w, v, 1)[0])
    return out


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
                    ax.plot(list(d), list(d.values()), marker="o", ms=3, color=f"C{t}", label=f"t={t}")
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
        return [dict(r, sparse=r["sparse"] == "True", width=int(r["width"]), seed=int(r["seed"]),
                     step=int(r["step"]), rms=float(r["rms"])) for r in csv.DictReader(f)]


def write_csv(records: Sequence[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/toolkit")
    ap.add_argument("--widths", default="64,128,256,512,1024,2048")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--base-width", type=int, default=64)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    widths = [int(w) for w in a.widths.split(",")]
    seeds = tuple(range(a.seeds))
    lines = []
    for sparse, params in ((False, ("standard", "ntk", "mup")),
                           (True, ("standard", "mup", "mup_nominal"))):
        ws = [w for w in widths if not sparse or w > a.base_width]
        rec = coord_check(ws, params=params, steps=a.steps, lr=a.lr, seeds=seeds,
                          base_width=a.base_width, sparse=sparse)
        tag = "sparse" if sparse else "dense"
        write_csv(rec, os.path.join(a.out, f"coord_check_mlp_{tag}.csv"))
        plot(rec, os.path.join(a.out, f"coord_check_mlp_{tag}.png"),
             title=f"MLP coord check ({tag}{', count of width %d' % a.base_width if sparse else ''}),"
                   f" lr={a.lr}, base width {a.base_width}")
        for q in QUANTITIES:
            for t in (1, a.steps):
                s = log_slopes(rec, q, t)
                lines.append(f"{tag:6s} {q:13s} step {t}: " +
                             "  ".join(f"{p}={v:+.3f}" for p, v in s.items()))
    text = "log-log slope of RMS vs width\n" + "\n".join(lines)
    print(text)
    with open(os.path.join(a.out, "coord_check_slopes.txt"), "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
