"""Consistency across widths (Vyas et al. 2023) on Fashion-MNIST MLPs: μP vs SP, dense and
sparse-wide.

A family of widths is trained on the same data stream (same example order, same init seed)
in each setting {SP, μP} x {dense, sparse at the weight count of the base width}. μP is taken
relative to the base width, so at the base width both parametrizations are the same net.
Measured with ``widesparse_jax.analysis.consistency``:

* per-step training-loss curves and their gap to the widest net,
* test prediction disagreement vs the widest net (per epoch),
* ensemble of k base-width nets (init seeds 0..k-1) vs one widest net,
* linear CKA of the hidden representation vs the widest net (test examples),
* hidden pre-activation statistics,
* sharpness at the end of training: top eigenvalue of the lr-preconditioned Hessian
  D H D (D = sqrt of the per-leaf lr multipliers; D = 1 for SP) vs the heavy-ball
  stability threshold 2(1 + m)/lr.

Run (writes results/toolkit/consistency_*.{csv,md,png}):
    python -m experiments.consistency_study --out results/toolkit

ResNet-18 (CIFAR stem), SP vs μP, dense (writes results/toolkit/consistency_resnet.*):
    python -m experiments.consistency_study --model resnet --widths 4,8,16 --base-width 4 \
        --n-train 5000 --epochs 1 --out results/toolkit
"""

from __future__ import annotations

import argparse
import csv
import json
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
from widesparse_jax.analysis import consistency as cons
from widesparse_jax.analysis import noise_scale as ns

SETTINGS = (("standard", False), ("mup", False), ("standard", True), ("mup", True))


def _hidden(net: tc.Net, params, x):
    """(pre-activation [N, n], post-ReLU [N, n]) of the hidden layer."""
    _, inter = net.model.apply(
        {"params": params}, x, train=False, capture_intermediates=lambda mdl, _: mdl.name == "fc"
    )
    h = inter["intermediates"]["fc"]["__call__"][0]
    return h, jax.nn.relu(h)


def preconditioned_sharpness(net: tc.Net, params, x, y, key, num_iters: int = 30) -> float:
    """Top eigenvalue of D H D, D = diag(sqrt(lr multiplier)) per leaf (restricted to kept
    weights), by power iteration (``consistency.top_hessian_eigenvalue``)."""
    d = jax.tree.map(lambda m: math.sqrt(m), net.lr_mult)
    u = jax.tree.map(lambda p, s: p / s, params, d)

    def loss(uu, batch):
        return tc.loss_fn(net.model, jax.tree.map(lambda a, s: a * s, uu, d), *batch)

    res = cons.top_hessian_eigenvalue(
        loss,
        u,
        (jnp.asarray(x), jnp.asarray(y)),
        key,
        num_iters=num_iters,
        tol=1e-3,
        masks=net.masks,
    )
    return res.eigenvalue


def train_run(
    net: tc.Net,
    data: dict,
    *,
    lr: float,
    momentum: float,
    batch_size: int,
    epochs: int,
    seed: int = 0,
) -> dict:
    """Train; return {'losses': [T] per-step train loss, 'params', 'test_logits': [epochs] of
    [N_test, 10], 'test_acc': [epochs]}. The data order depends on ``seed`` only."""
    tx = tc.make_tx(net, momentum)
    state = tx.init(net.params)
    params = net.params
    losses, logits, accs = [], [], []
    xt = jnp.asarray(data["x_test"])
    for e in range(epochs):
        xb, yb = tc.epoch_batches(data["x"], data["y"], batch_size, seed, e)
        params, state, l = tc.train_epoch(
            net.model,
            tx,
            params,
            state,
            net.masks,
            jnp.float32(lr),
            jnp.asarray(xb),
            jnp.asarray(yb),
        )
        losses.append(np.asarray(l))
        z = np.asarray(tc.logits_fn(net.model, params, xt))
        logits.append(z)
        accs.append(float(np.mean(np.argmax(z, -1) == data["y_test"])))
    return {
        "losses": np.concatenate(losses),
        "params": params,
        "test_logits": logits,
        "test_acc": accs,
    }


def study(
    widths: Sequence[int],
    *,
    base_width: int,
    settings=SETTINGS,
    lr: float = 0.05,
    momentum: float = 0.9,
    batch_size: int = 128,
    epochs: int = 3,
    ensemble_k: int = 4,
    data: Optional[dict] = None,
    n_probe: int = 2000,
    log: Any = print,
) -> dict:
    """Run every setting; returns {'rows': per (setting, width) summary dicts, 'curves':
    {(param, sparse): {width: losses}}, 'disagreement': {(param, sparse): {width: [per epoch]}},
    'ensemble': {(param, sparse): ensemble_vs_single dict}}."""
    if data is None:
        data = load_data()
    probe = jnp.asarray(data["x_test"][:n_probe])
    sharp_x, sharp_y = data["x"][:1024], data["y"][:1024]
    rows, curves, disagree, ensembles = [], {}, {}, {}
    base_runs: dict[Any, Any] = {}
    for param, sparse in settings:
        key = (param, sparse)
        runs, nets = {}, {}
        for w in widths:
            t0 = time.time()
            if w == base_width and 0 in base_runs:
                runs[w], nets[w] = base_runs[0]["run"], base_runs[0]["net"]
            else:
                nets[w] = tc.make_mlp(
                    w,
                    base_width=base_width,
                    sparse=sparse,
                    param=param,
                    key=jax.random.key(0),
                    mask_seed=0,
                )
                runs[w] = train_run(
                    nets[w], data, lr=lr, momentum=momentum, batch_size=batch_size, epochs=epochs
                )
                if w == base_width:
                    base_runs[0] = {"run": runs[w], "net": nets[w]}
            log(
                f"{param:8s} {'sparse' if sparse else 'dense '} width {w}: test acc "
                f"{runs[w]['test_acc'][-1]:.4f}, final loss {runs[w]['losses'][-50:].mean():.4f} "
                f"({time.time() - t0:.0f}s)"
            )
        ref = max(widths)
        curves[key] = {w: r["losses"] for w, r in runs.items()}
        gaps = cons.loss_curve_gaps(curves[key], reference=ref)
        disagree[key] = {
            w: [
                cons.prediction_disagreement(runs[w]["test_logits"][e], runs[ref]["test_logits"][e])
                for e in range(epochs)
            ]
            for w in widths
        }
        _, ref_feat = _hidden(nets[ref], runs[ref]["params"], probe)
        for w in widths:
            pre, feat = _hidden(nets[w], runs[w]["params"], probe)
            st = cons.preactivation_stats(np.asarray(pre))[""]
            sharp = preconditioned_sharpness(
                nets[w], runs[w]["params"], sharp_x, sharp_y, jax.random.key(1)
            )
            eos = cons.edge_of_stability(sharp, lr, momentum)
            dg = disagree[key][w][-1]
            rows.append(
                dict(
                    param=param,
                    sparse=sparse,
                    width=w,
                    test_acc=runs[w]["test_acc"][-1],
                    final_train_loss=float(runs[w]["losses"][-50:].mean()),
                    mean_abs_loss_gap=gaps[w]["mean_abs_gap"],
                    loss_gap_epoch1=float(
                        np.mean(np.abs(gaps[w]["gap"][: len(gaps[w]["gap"]) // epochs]))
                    ),
                    prob_msd_epoch1=disagree[key][w][0]["prob_msd"],
                    argmax_dis_epoch1=disagree[key][w][0]["argmax_disagreement"],
                    prob_msd=dg["prob_msd"],
                    argmax_dis=dg["argmax_disagreement"],
                    cka_vs_widest=cons.linear_cka(np.asarray(feat), np.asarray(ref_feat)),
                    preact_std=st["std"],
                    preact_kurtosis=st["kurtosis"],
                    sharpness=sharp,
                    eos_ratio=eos["ratio"],
                )
            )
        # Ensemble of k base-width nets (different init seeds, same stream) vs the widest.
        # (At the base width every setting is the same net, so the members are shared.)
        members = base_runs.setdefault("members", [])
        if not members and base_width in runs:
            members.append(runs[base_width]["test_logits"][-1])
        for s in range(len(members), ensemble_k):
            net = tc.make_mlp(
                base_width,
                base_width=base_width,
                sparse=False,
                param="standard",
                key=jax.random.key(100 + s),
                mask_seed=0,
            )
            members.append(
                train_run(
                    net, data, lr=lr, momentum=momentum, batch_size=batch_size, epochs=epochs
                )["test_logits"][-1]
            )
        ensembles[key] = cons.ensemble_vs_single(
            members, runs[ref]["test_logits"][-1], data["y_test"]
        )
        log(
            f"  ensemble of {ensemble_k} width-{base_width}: "
            f"{ensembles[key]['ensemble_acc'][ensemble_k]:.4f} vs widest "
            f"{ensembles[key]['single_acc']:.4f}"
        )
    return {"rows": rows, "curves": curves, "disagreement": disagree, "ensemble": ensembles}


def load_data(n_train: int = 20000) -> dict:
    x, y = tc.load_fashion_mnist("train", n_train)
    xt, yt = tc.load_fashion_mnist("test")
    return {"x": x, "y": y, "x_test": xt, "y_test": yt}


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


# --------------------------------------------------------------------------------------
# ResNet-18 (CIFAR stem) consistency run
# --------------------------------------------------------------------------------------


def train_resnet_run(
    net: tc.ResNetNet,
    data: dict,
    *,
    lr: float,
    momentum: float,
    batch_size: int,
    epochs: int,
    seed: int = 0,
) -> dict:
    """Train a ResNet (BN in train mode, heavy-ball SGD with the net's lr multipliers, no wd);
    data['x'] / data['x_test'] are images [N, 28, 28, 1]. The example order depends on
    ``seed`` and the epoch only. Returns {'losses' [T], 'params', 'batch_stats',
    'test_logits' [N_test, 10], 'features' [N_test, 8w] (penultimate, eval mode), 'test_acc'}."""
    p, bs = net.params, net.batch_stats
    tx = tc.make_tx(net, momentum)
    state = tx.init(p)
    losses = []
    for e in range(epochs):
        xb, yb = tc.epoch_batches(data["x"], data["y"], batch_size, seed, e)
        p, bs, state, l = tc.resnet_train_epoch(
            net.model, tx, p, bs, state, jnp.float32(lr), jnp.asarray(xb), jnp.asarray(yb)
        )
        losses.append(np.asarray(l))
    # Test outputs with BN on batch statistics (chunks of 1000 test images, the same chunks for
    # every width): after one short epoch the running statistics lag the fast-moving weights
    # (eval-mode accuracy is reported too, as 'test_acc_running_bn').
    z, feat = tc.resnet_logits_features(net.model, p, bs, data["x_test"], batch_bn=True)
    z_run, _ = tc.resnet_logits_features(net.model, p, bs, data["x_test"])
    return {
        "losses": np.concatenate(losses),
        "params": p,
        "batch_stats": bs,
        "test_logits": z,
        "features": feat,
        "test_acc": float(np.mean(np.argmax(z, -1) == data["y_test"])),
        "test_acc_running_bn": float(np.mean(np.argmax(z_run, -1) == data["y_test"])),
    }


def study_resnet(
    widths: Sequence[int],
    *,
    base_width: int,
    params=("standard", "mup"),
    lr: float = 0.05,
    momentum: float = 0.9,
    batch_size: int = 128,
    epochs: int = 1,
    data: Optional[dict] = None,
    seed: int = 0,
    log: Any = print,
) -> dict:
    """ResNet-18 family per parametrization, same init seed and data stream for every width;
    metrics vs the widest net of the same parametrization. Returns {'rows', 'curves':
    {param: {width: losses}}}."""
    if data is None:
        data = load_resnet_data()
    rows, curves = [], {}
    base_run = None
    ref = max(widths)
    for param in params:
        runs = {}
        for w in widths:
            t0 = time.time()
            if w == base_width and base_run is not None:  # μP == SP at the base width
                runs[w] = base_run
            else:
                net = tc.make_resnet(
                    w, base_width=base_width, param=param, key=jax.random.key(seed)
                )
                runs[w] = train_resnet_run(
                    net,
                    data,
                    lr=lr,
                    momentum=momentum,
                    batch_size=batch_size,
                    epochs=epochs,
                    seed=seed,
                )
                if w == base_width:
                    base_run = runs[w]
            log(
                f"resnet {param:8s} width {w:3d}: test acc {runs[w]['test_acc']:.4f}, last-20 "
                f"train loss {runs[w]['losses'][-20:].mean():.4f} ({time.time() - t0:.0f}s)"
            )
        curves[param] = {w: r["losses"] for w, r in runs.items()}
        gaps = cons.loss_curve_gaps(curves[param], reference=ref)
        for w in widths:
            dg = cons.prediction_disagreement(runs[w]["test_logits"], runs[ref]["test_logits"])
            g = np.abs(np.asarray(gaps[w]["gap"]))
            rows.append(
                dict(
                    param=param,
                    width=w,
                    test_acc=runs[w]["test_acc"],
                    test_acc_running_bn=runs[w]["test_acc_running_bn"],
                    final_train_loss=float(runs[w]["losses"][-20:].mean()),
                    mean_abs_loss_gap=gaps[w]["mean_abs_gap"],
                    loss_gap_last20=float(g[-20:].mean()),
                    prob_msd=dg["prob_msd"],
                    argmax_dis=dg["argmax_disagreement"],
                    cka_penultimate=cons.linear_cka(runs[w]["features"], runs[ref]["features"]),
                )
            )
    return {"rows": rows, "curves": curves}


def load_resnet_data(n_train: int = 5000, n_test: int = 2000) -> dict:
    """First ``n_train`` training / ``n_test`` test images of Fashion-MNIST, [N, 28, 28, 1]."""
    x, y = tc.load_fashion_mnist("train", n_train)
    xt, yt = tc.load_fashion_mnist("test", n_test)
    return {"x": tc.to_images(x), "y": y, "x_test": tc.to_images(xt), "y_test": yt}


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


def main_resnet(a) -> int:
    os.makedirs(a.out, exist_ok=True)
    widths = [int(w) for w in a.widths.split(",")]
    t0 = time.time()
    res = study_resnet(
        widths,
        base_width=a.base_width,
        lr=a.lr,
        batch_size=a.batch_size,
        epochs=a.epochs,
        data=load_resnet_data(a.n_train, a.n_test),
    )
    rows = res["rows"]
    with open(os.path.join(a.out, "consistency_resnet.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot_resnet(res, os.path.join(a.out, "consistency_resnet.png"), widths)
    text = "\n".join(
        [
            "### Consistency across widths (ResNet-18, CIFAR stem, Fashion-MNIST)",
            "",
            ns.markdown_table(rows, float_fmt=".4g"),
            f"Setting: first {a.n_train} training images, {a.epochs} epoch(s), batch {a.batch_size}, "
            f"lr {a.lr} (base), momentum 0.9, no weight decay; BN on batch statistics in training "
            f"and at test (chunks of 1000 test images; `test_acc_running_bn` uses the running "
            f"statistics); init seed 0 and the same example order for every width; "
            f"μP base width {a.base_width}; metrics vs the widest ({max(widths)}) on the first "
            f"{a.n_test} test images; wall {time.time() - t0:.0f}s.",
            "",
        ]
    )
    with open(os.path.join(a.out, "consistency_resnet.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="results/toolkit")
    ap.add_argument("--widths", default="64,128,256,512,1024,2048")
    ap.add_argument("--base-width", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--ensemble-k", type=int, default=4)
    ap.add_argument(
        "--model",
        choices=("mlp", "resnet"),
        default="mlp",
        help="resnet: ResNet-18 SP vs μP, dense (uses --widths, --base-width, --lr, "
        "--batch-size, --epochs, --n-train, --n-test)",
    )
    ap.add_argument("--n-test", type=int, default=2000, help="ResNet only")
    a = ap.parse_args(argv)
    if a.model == "resnet":
        return main_resnet(a)
    os.makedirs(a.out, exist_ok=True)
    widths = [int(w) for w in a.widths.split(",")]
    t0 = time.time()
    res = study(
        widths,
        base_width=a.base_width,
        lr=a.lr,
        batch_size=a.batch_size,
        epochs=a.epochs,
        ensemble_k=a.ensemble_k,
        data=load_data(a.n_train),
    )
    rows = res["rows"]
    with open(os.path.join(a.out, "consistency_mlp.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(a.out, "consistency_loss_curves.json"), "w") as f:
        json.dump(
            {
                f"{k[0]}_{'sparse' if k[1] else 'dense'}": {
                    str(w): [round(float(v), 5) for v in c] for w, c in d.items()
                }
                for k, d in res["curves"].items()
            },
            f,
        )
    plot(res, a.out, widths)
    ens_rows = [
        dict(
            param=k[0],
            sparse=k[1],
            **{f"ens_k{kk}": v for kk, v in e["ensemble_acc"].items()},
            member_mean=e["member_mean_acc"],
            widest=e["single_acc"],
            gap=e["gap"],
        )
        for k, e in res["ensemble"].items()
    ]
    cols = [
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
    ]
    text = "\n".join(
        [
            "### Consistency across widths (MLP, Fashion-MNIST)",
            "",
            ns.markdown_table(rows, cols, float_fmt=".4g"),
            f"Ensemble of {a.ensemble_k} width-{a.base_width} nets vs the widest ({max(widths)}):",
            "",
            ns.markdown_table(ens_rows, float_fmt=".4g"),
            f"Setting: first {a.n_train} training examples, {a.epochs} epochs, batch "
            f"{a.batch_size}, lr {a.lr} (base), momentum 0.9, no weight decay, seed 0; μP base "
            f"width {a.base_width}; sparse = weight count of the dense width-{a.base_width} net; "
            f"wall {time.time() - t0:.0f}s.",
            "",
        ]
    )
    with open(os.path.join(a.out, "consistency_mlp.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
