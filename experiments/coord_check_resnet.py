"""ResNet-18 (CIFAR stem, 28x28x1 inputs) coordinate check, SP vs μP: per-layer RMS (stem,
stage outputs, logits) and of their changes since init, vs width.

    python -m experiments.coord_check --model resnet --widths 4,8,16,32 --base-width 4 \
        --steps 3 --lr 0.05 --seeds 2 --out results/toolkit
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from experiments import toolkit_common as tc
from experiments.coord_stats import log_slopes, mean_curves, records, rms, training_data
from experiments.csv_rows import write_csv

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
    x, y, need = training_data(data, steps, batch_size)
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
                run = dict(param=param, sparse=False, width=width, seed=seed)
                traj = _resnet_trajectory(net, probe_fn, probe_x, x, y, steps, batch_size, lr)
                for t, vals in enumerate(traj):
                    out += records(run, t, vals)
                if log:
                    log(f"resnet {param:8s} width {width:3d} seed {seed}: {time.time() - t0:.1f}s")
    return out


def _resnet_values(a: dict, a0: dict, lin: dict, lin0: dict) -> list[tuple[str, float]]:
    """(quantity, rms) of every layer, of its change since init, and the two terms of the
    logit change: Δf = (W_t - W_0) h_t + (b_t - b_0)  [output-layer update, 'dW' term]
    + W_0 (h_t - h_0)  [feature change, 'W0dh' term]. ``lin``/``lin0``: readout params now
    and at init."""
    d_w = a["penultimate"] @ (lin["kernel"] - lin0["kernel"]) + (lin["bias"] - lin0["bias"])
    d_h = (a["penultimate"] - a0["penultimate"]) @ lin0["kernel"]
    vals = [(q, rms(a[layer])) for layer in RESNET_LAYERS for q in (layer,)]
    vals += [(f"delta_{layer}", rms(a[layer] - a0[layer])) for layer in RESNET_LAYERS]
    vals += [("delta_logits_dW", rms(d_w)), ("delta_logits_W0dh", rms(d_h))]
    return vals


def _resnet_trajectory(
    net: tc.ResNetNet, probe_fn, probe_x, x, y, steps: int, batch_size: int, lr: float
) -> list:
    """[values at step t for t = 0..steps] (:func:`_resnet_values`): plain SGD steps on the
    batches of x, y (batch t - 1 at step t), BN on batch statistics, probed after each."""
    p, bs = net.params, net.batch_stats
    tx = tc.make_tx(net, 0.0)
    state = tx.init(p)
    a0 = probe_fn(p, bs, probe_x)
    out = []
    for t in range(steps + 1):
        if t > 0:
            sl = slice((t - 1) * batch_size, t * batch_size)
            p, bs, state, _ = tc.resnet_step(
                net.model, tx, p, bs, state, jnp.float32(lr), jnp.asarray(x[sl]), jnp.asarray(y[sl])
            )
        a = probe_fn(p, bs, probe_x) if t > 0 else a0
        out.append(_resnet_values(a, a0, p["linear"], net.params["linear"]))
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
