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
import time
from collections.abc import Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from experiments import toolkit_common as tc
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


def _rms(a: Any) -> float:
    return float(jnp.sqrt(jnp.mean(jnp.square(a))))


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
    if data is None:
        data = tc.load_fashion_mnist("train", batch_size * (steps + 1))
    x, y = data
    need = batch_size * (steps + 1)
    if len(y) < need:
        raise ValueError(
            f"need {need} examples for {steps} steps of batch {batch_size}, got {len(y)}"
        )
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
                tx = tc.make_tx(net, momentum)
                state = tx.init(net.params)
                h0, f0 = _probe(net, probe)
                step_lr = ntk_lr if param == "ntk" else lr
                for t in range(steps + 1):
                    if t > 0:
                        xb = jnp.asarray(x[(t - 1) * batch_size : t * batch_size])
                        yb = jnp.asarray(y[(t - 1) * batch_size : t * batch_size])
                        net.params, state, _ = _step(
                            net.model, tx, net.params, state, net.masks, step_lr, xb, yb
                        )
                    h, f = _probe(net, probe)
                    vals = {
                        "h": _rms(h),
                        "logits": _rms(f),
                        "delta_h": _rms(h - h0),
                        "delta_logits": _rms(f - f0),
                    }
                    for q, v in vals.items():
                        out.append(
                            dict(
                                param=param,
                                sparse=sparse,
                                width=width,
                                seed=seed,
                                step=t,
                                quantity=q,
                                rms=v,
                            )
                        )
    return out


_step = jax.jit(tc.sgd_step, static_argnums=(0, 1))


def mean_curves(records: Sequence[dict]) -> dict[tuple, dict[int, float]]:
    """{(param, quantity, step): {width: rms averaged over seeds}}."""
    acc: dict[tuple, dict[int, list[float]]] = {}
    for r in records:
        acc.setdefault((r["param"], r["quantity"], r["step"]), {}).setdefault(
            r["width"], []
        ).append(r["rms"])
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


# --------------------------------------------------------------------------------------
# ResNet-18 (CIFAR stem) coordinate check
# --------------------------------------------------------------------------------------

RESNET_LAYERS = ("stem_conv", "stem", "layer1", "layer2", "layer3", "layer4", "logits")


def _resnet_probe_fn(model):
    """Jitted probe of ``model``: {layer: activation} on a batch, BN in train mode (the probe
    batch's own statistics; running statistics are not touched). Layers: ``stem_conv`` = stem
    conv output before BN, ``stem`` = relu(bn1(conv1 x)), ``layer{s}`` = output of stage s
    (block ``layer{s}_1``), ``logits``."""
    top = {"conv1", "bn1", "layer1_1", "layer2_1", "layer3_1", "layer4_1"}

    @jax.jit
    def probe(params, batch_stats, x):
        (logits, state) = model.apply(
            {"params": params, "batch_stats": batch_stats},
            x,
            train=True,
            mutable=["batch_stats"],
            capture_intermediates=lambda mdl, _: len(mdl.path) == 1 and mdl.path[0] in top,
        )
        it = state["intermediates"]
        get = lambda n: it[n]["__call__"][0]  # noqa: E731
        return {
            "stem_conv": get("conv1"),
            "stem": jax.nn.relu(get("bn1")),
            **{f"layer{s}": get(f"layer{s}_1") for s in range(1, 5)},
            "logits": logits,
            "penultimate": jnp.mean(get("layer4_1"), axis=(1, 2)),
        }

    return probe


def coord_check_resnet(
    widths: Sequence[int],
    *,
    params: Sequence[str] = ("standard", "mup"),
    steps: int = 3,
    lr: float = 0.05,
    batch_size: int = 64,
    seeds: Sequence[int] = (0, 1),
    base_width: int = 4,
    data: Optional[tuple[np.ndarray, np.ndarray]] = None,
    log: Any = None,
) -> list[dict]:
    """ResNet-18 coordinate check. Records {param, sparse=False, width, seed, step, quantity,
    rms} with quantity ``<layer>`` (RMS of the activation) or ``delta_<layer>`` (RMS of its
    change since init) for every layer of :data:`RESNET_LAYERS`, on a fixed probe batch, plus
    the split of the logit change Δf = ``delta_logits_dW`` ((W_t - W_0) h_t + Δb, the
    output layer's own update) + ``delta_logits_W0dh`` (W_0 (h_t - h_0), the feature change
    seen through the initial readout), h = penultimate (pooled) features.

    Plain SGD (no momentum, no weight decay) at base lr ``lr`` with the parametrization's
    per-leaf multipliers; step t uses training batch t (same for every width, param and
    seed); BN uses batch statistics in the steps and in the probe. One jitted step and
    probe per width (hyper-parameters and multipliers are traced).

    Args:
      widths: ResNet widths (stage channels w..8w). params: among 'standard', 'mup'.
      base_width: μP base width (μP == SP there). data: (x [N, 784], y [N]) or Fashion-MNIST.
    """
    if data is None:
        data = tc.load_fashion_mnist("train", batch_size * (steps + 1))
    x, y = data
    need = batch_size * (steps + 1)
    if len(y) < need:
        raise ValueError(
            f"need {need} examples for {steps} steps of batch {batch_size}, got {len(y)}"
        )
    x = tc.to_images(x)
    probe_x = jnp.asarray(x[steps * batch_size : need])
    for p in params:
        if p not in tc.RESNET_PARAMS:
            raise ValueError(f"param {p!r} unknown for the ResNet; allowed: {tc.RESNET_PARAMS}")
    out = []
    for width in widths:
        probe_fn = None
        for param in params:
            for seed in seeds:
                t0 = time.time()
                net = tc.make_resnet(
                    width, base_width=base_width, param=param, key=jax.random.key(seed)
                )
                probe_fn = probe_fn or _resnet_probe_fn(net.model)
                p, bs = net.params, net.batch_stats
                tx = tc.make_tx(net, 0.0)
                state = tx.init(p)
                a0 = probe_fn(p, bs, probe_x)
                for t in range(steps + 1):
                    if t > 0:
                        sl = slice((t - 1) * batch_size, t * batch_size)
                        p, bs, state, _ = tc.resnet_step(
                            net.model,
                            tx,
                            p,
                            bs,
                            state,
                            jnp.float32(lr),
                            jnp.asarray(x[sl]),
                            jnp.asarray(y[sl]),
                        )
                    a = probe_fn(p, bs, probe_x) if t > 0 else a0
                    # Δf = (W_t - W_0) h_t + (b_t - b_0)  [output-layer update, 'dW' term]
                    #    +  W_0 (h_t - h_0)                 [feature change, 'W0dh' term]
                    lin, lin0 = p["linear"], net.params["linear"]
                    d_w = a["penultimate"] @ (lin["kernel"] - lin0["kernel"]) + (
                        lin["bias"] - lin0["bias"]
                    )
                    d_h = (a["penultimate"] - a0["penultimate"]) @ lin0["kernel"]
                    vals = [(q, _rms(a[layer])) for layer in RESNET_LAYERS for q in (layer,)]
                    vals += [
                        (f"delta_{layer}", _rms(a[layer] - a0[layer])) for layer in RESNET_LAYERS
                    ]
                    vals += [("delta_logits_dW", _rms(d_w)), ("delta_logits_W0dh", _rms(d_h))]
                    for q, v in vals:
                        out.append(
                            dict(
                                param=param,
                                sparse=False,
                                width=width,
                                seed=seed,
                                step=t,
                                quantity=q,
                                rms=v,
                            )
                        )
                if log:
                    log(f"resnet {param:8s} width {width:3d} seed {seed}: {time.time() - t0:.1f}s")
    return out


def plot_resnet(records: Sequence[dict], path: str, title: str = "") -> None:
    """Rows: RMS of the activations, RMS of their changes; columns: parametrizations; one
    line per layer (solid: last step; dashed: step 1 for the changes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = mean_curves(records)
    params = list(dict.fromkeys(r["param"] for r in records))
    last = max(r["step"] for r in records)
    fig = Figure(figsize=(4.2 * len(params), 7.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(params), squeeze=False)
    for j, p in enumerate(params):
        for i, prefix in enumerate(("", "delta_")):
            ax = axes[i][j]
            for k, layer in enumerate(RESNET_LAYERS):
                d = curves.get((p, prefix + layer, last))
                if d:
                    ax.plot(list(d), list(d.values()), marker="o", ms=3, color=f"C{k}", label=layer)
                if prefix and last > 1:
                    d1 = curves.get((p, prefix + layer, 1))
                    if d1:
                        ax.plot(list(d1), list(d1.values()), ls="--", lw=0.8, color=f"C{k}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            if i == 0:
                ax.set_title({"standard": "SP", "mup": "μP"}.get(p, p))
            if j == 0:
                ax.set_ylabel(
                    f"RMS activation (t={last})"
                    if not prefix
                    else f"RMS change since init (t={last}; dashed t=1)"
                )
            if i == 1:
                ax.set_xlabel("width")
    axes[0][-1].legend(fontsize="x-small")
    if title:
        fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def resnet_slope_lines(records: Sequence[dict], steps: int) -> list[str]:
    lines = []
    for layer in RESNET_LAYERS:
        for q in (layer, f"delta_{layer}"):
            for t in sorted({0, steps} if q == layer else {1, steps}):
                s = log_slopes(records, q, t)
                lines.append(
                    f"resnet {q:17s} step {t}: " + "  ".join(f"{p}={v:+.3f}" for p, v in s.items())
                )
    for q in ("delta_logits_dW", "delta_logits_W0dh"):
        for t in sorted({1, steps}):
            s = log_slopes(records, q, t)
            lines.append(
                f"resnet {q:17s} step {t}: " + "  ".join(f"{p}={v:+.3f}" for p, v in s.items())
            )
    return lines


def main_resnet(a) -> int:
    os.makedirs(a.out, exist_ok=True)
    widths = [int(w) for w in a.widths.split(",")]
    t0 = time.time()
    logf = open(os.path.join(a.out, "coord_check_resnet.log"), "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    rec = coord_check_resnet(
        widths,
        steps=a.steps,
        lr=a.lr,
        batch_size=a.batch_size,
        seeds=tuple(range(a.seeds)),
        base_width=a.base_width,
        log=log,
    )
    write_csv(rec, os.path.join(a.out, "coord_check_resnet.csv"))
    plot_resnet(
        rec,
        os.path.join(a.out, "coord_check_resnet.png"),
        title=f"ResNet-18 (CIFAR stem) on Fashion-MNIST: plain SGD lr={a.lr}, batch "
        f"{a.batch_size}, {a.steps} steps, {a.seeds} seeds, μP base width "
        f"{a.base_width}; BN in train mode",
    )
    text = (
        "log-log slope of RMS vs width (ResNet-18, widths "
        + a.widths
        + ")\n"
        + "\n".join(resnet_slope_lines(rec, a.steps))
    )
    log(text)
    log(f"wall {time.time() - t0:.0f}s")
    with open(os.path.join(a.out, "coord_check_resnet_slopes.txt"), "w") as f:
        f.write(text + "\n")
    logf.close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
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
    a = ap.parse_args(argv)
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
