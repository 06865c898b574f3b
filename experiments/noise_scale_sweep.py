"""SGD noise-scale sweep (Park et al. 2019) on Fashion-MNIST MLPs, dense and sparse-wide.

For each width (dense, and sparse at the weight count of the narrowest width) and batch size,
the MLP is trained for a fixed number of epochs at every learning rate of a grid (the lrs are
vmapped: one compiled program per (width, batch size)); the best test accuracy over epochs is
recorded together with g_bar = lr / (B (1 - m) sigma2_init). The analysis (pure functions of
``widesparse_jax.analysis.noise_scale``) gives the best accuracy per g_bar, the optimal g_bar per
width and its power-law fit vs width, and the best batch size per width.

Run (writes results/toolkit/noise_scale_<param>.{csv,md}, *_acc_vs_g.png, *_gopt_vs_width.png):
    python -m experiments.noise_scale_sweep --out results/toolkit --param ntk
"""

from __future__ import annotations

import argparse
import functools
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
from widesparse_jax.analysis import noise_scale as ns

DEFAULT_LRS = {
    "ntk": (3.0, 10.0, 30.0, 100.0, 300.0, 1000.0),
    "standard": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
}


def _scan_epoch(model, tx, params, opt_state, masks, lr, xb, yb):
    def body(carry, batch):
        p, s = carry
        p, s, loss = tc.sgd_step(model, tx, p, s, masks, lr, *batch)
        return (p, s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xb, yb))
    return params, opt_state, losses


def train_lr_grid(
    net: tc.Net,
    lrs: Sequence[float],
    data: dict,
    *,
    batch_size: int,
    epochs: int,
    momentum: float,
    seed: int = 0,
) -> list[dict]:
    """Train ``net`` at every lr of ``lrs`` (vmapped) on the same data stream.

    data: {'x', 'y', 'x_test', 'y_test'} numpy arrays. Returns one dict per lr:
    {lr, best_test_acc, final_test_acc, final_train_loss, diverged}.
    """
    tx = tc.make_tx(net, momentum)
    n = len(lrs)
    params = jax.tree.map(lambda p: jnp.broadcast_to(p, (n,) + p.shape), net.params)
    state = jax.vmap(tx.init)(params)
    run = jax.jit(
        jax.vmap(functools.partial(_scan_epoch, net.model, tx), in_axes=(0, 0, None, 0, None, None))
    )
    logits = jax.jit(
        jax.vmap(lambda p, x: net.model.apply({"params": p}, x, train=False), in_axes=(0, None))
    )
    lr_arr = jnp.asarray(lrs, jnp.float32)
    xt, yt = jnp.asarray(data["x_test"]), data["y_test"]
    best = np.zeros(n)
    acc = np.zeros(n)
    loss = np.full(n, np.nan)
    for e in range(epochs):
        xb, yb = tc.epoch_batches(data["x"], data["y"], batch_size, seed, e)
        params, state, losses = run(
            params, state, net.masks, lr_arr, jnp.asarray(xb), jnp.asarray(yb)
        )
        pred = np.argmax(np.asarray(logits(params, xt)), -1)
        acc = np.mean(pred == yt[None, :], axis=1)
        losses = np.asarray(losses)
        loss = losses[:, -max(1, losses.shape[1] // 10) :].mean(1)  # last 10% of the epoch
        acc = np.where(np.isfinite(loss), acc, 0.1)
        best = np.maximum(best, acc)
    return [
        dict(
            lr=float(lr),
            best_test_acc=float(b),
            final_test_acc=float(a),
            final_train_loss=float(l),
            diverged=bool(not np.isfinite(l)),
        )
        for lr, b, a, l in zip(lrs, best, acc, loss)
    ]


def sweep(
    widths: Sequence[int],
    batch_sizes: Sequence[int],
    lrs: Sequence[float],
    *,
    param: str = "ntk",
    sparse_base: Optional[int] = None,
    epochs: int = 4,
    momentum: float = 0.9,
    data: Optional[dict] = None,
    seed: int = 0,
    log: Any = print,
) -> list[dict]:
    """Records for :mod:`widesparse_jax.analysis.noise_scale`: {width, sparse, lr, batch_size,
    momentum, init_variance, noise_scale, best_test_acc, ...}. Sparse nets: every width >
    ``sparse_base`` at the dense ``sparse_base`` count (None: dense only)."""
    if data is None:
        data = load_data()
    sigma2 = ns.init_variance_scale(param)
    runs = [(w, False) for w in widths]
    if sparse_base is not None:
        runs += [(w, True) for w in widths if w > sparse_base]
    out = []
    for width, sparse in runs:
        for b in batch_sizes:
            t0 = time.time()
            net = tc.make_mlp(
                width,
                base_width=sparse_base or width,
                sparse=sparse,
                param=param,
                key=jax.random.key(seed),
                mask_seed=seed,
            )
            for r in train_lr_grid(
                net, lrs, data, batch_size=b, epochs=epochs, momentum=momentum, seed=seed
            ):
                r.update(
                    width=width,
                    sparse=sparse,
                    batch_size=b,
                    momentum=momentum,
                    init_variance=sigma2,
                    param=param,
                    noise_scale=ns.noise_scale(r["lr"], b, momentum, sigma2),
                )
                out.append(r)
            log(
                f"width {width} {'sparse' if sparse else 'dense '} B={b}: "
                + " ".join(f"{r['best_test_acc']:.3f}" for r in out[-len(lrs) :])
                + f"  ({time.time() - t0:.0f}s)"
            )
    return out


def load_data(n_train: int = 10000) -> dict:
    x, y = tc.load_fashion_mnist("train", n_train)
    xt, yt = tc.load_fashion_mnist("test")
    return {"x": x, "y": y, "x_test": xt, "y_test": yt}


def analyze(records: Sequence[dict], out_dir: str, tag: str) -> str:
    """Tables and plots of a sweep; returns the markdown text (also written to <tag>.md)."""
    optima = ns.optimal_noise_scale_per_width(records, refine=True)
    best_b = ns.best_batch_size_per_width(records)
    ns.plot_acc_vs_noise_scale(
        records, optima=optima, title=tag, path=os.path.join(out_dir, f"{tag}_acc_vs_g.png")
    )
    fits = {}
    fit_rows = []
    for sparse in (False, True):
        pts = sorted((k[0], o) for k, o in optima.items() if k[1] == sparse)
        if sparse:  # the sparse family starts at the dense base width
            base = [(k[0], o) for k, o in optima.items() if not k[1]]
            if base:
                pts = sorted([min(base, key=lambda t: t[0])] + pts)
        if len(pts) >= 2:
            f = ns.fit_power_law([w for w, _ in pts], [o.refined_noise_scale for _, o in pts])
            fits[(sparse,)] = f
            fit_rows.append(
                dict(
                    family="sparse" if sparse else "dense",
                    widths=",".join(str(w) for w, _ in pts),
                    exponent=f.exponent,
                    exponent_stderr=f.exponent_stderr,
                    prefactor=f.prefactor,
                    r2=f.r2,
                )
            )
    ns.plot_optimal_noise_scale_vs_width(
        optima, fits=fits, title=tag, path=os.path.join(out_dir, f"{tag}_gopt_vs_width.png")
    )
    bb_rows = [
        dict(
            width=k[0],
            sparse=k[1],
            best_batch_size=v.batch_size,
            best_test_acc=v.best_test_acc,
            at_edge=v.at_edge,
            **{f"acc_B{b}": a for b, a in v.acc_per_batch_size.items()},
        )
        for k, v in best_b.items()
    ]
    md = [
        f"### {tag}",
        "",
        "Optimal noise scale per width (refined = parabola vertex in log g):",
        "",
        ns.optimal_noise_scale_table(optima),
        "Power-law fit of the optimal g_bar vs width (Park et al. predict exponent 1):",
        "",
        ns.markdown_table(fit_rows) if fit_rows else "(not enough widths)\n",
        "Best batch size per width (lr tuned per B):",
        "",
        ns.markdown_table(bb_rows),
    ]
    text = "\n".join(md)
    with open(os.path.join(out_dir, f"{tag}.md"), "w") as f:
        f.write(text)
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/toolkit")
    ap.add_argument("--param", default="ntk", choices=("ntk", "standard"))
    ap.add_argument("--widths", default="32,128,512")
    ap.add_argument("--batch-sizes", default="16,64,256")
    ap.add_argument("--lrs", default=None, help="comma-separated; default per parametrization")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--momentum", type=float, default=0.9)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    widths = [int(w) for w in a.widths.split(",")]
    lrs = [float(v) for v in a.lrs.split(",")] if a.lrs else list(DEFAULT_LRS[a.param])
    t0 = time.time()
    records = sweep(
        widths,
        [int(b) for b in a.batch_sizes.split(",")],
        lrs,
        param=a.param,
        sparse_base=min(widths),
        epochs=a.epochs,
        momentum=a.momentum,
        data=load_data(a.n_train),
    )
    tag = f"noise_scale_{a.param}"
    write_csv(records, os.path.join(a.out, f"{tag}.csv"))
    text = analyze(records, a.out, tag)
    text += (
        f"\nSetting: Fashion-MNIST, first {a.n_train} training examples, full test set, "
        f"{a.epochs} epochs, momentum {a.momentum}, lrs {lrs}, seed 0; "
        f"wall {time.time() - t0:.0f}s.\n"
    )
    with open(os.path.join(a.out, f"{tag}.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
