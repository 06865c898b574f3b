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
import functools
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
from experiments.consistency_report import (  # noqa: F401
    MLP_COLUMNS,
    _mlp_markdown,
    _smooth,
    _write_curves,
    plot,
    plot_resnet,
)
from experiments.consistency_resnet import (  # noqa: F401
    load_resnet_data,
    main_resnet,
    study_resnet,
    train_resnet_run,
)
from experiments.csv_rows import write_csv
from widesparse_jax.analysis import consistency as cons

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


def _train_family(
    param: str, sparse: bool, widths: Sequence[int], base_width: int, base_runs: dict, fit, log
) -> tuple[dict, dict]:
    """Train every width of one setting (the base-width run is shared across settings).
    ``fit(net)`` trains one net. Returns ({width: run}, {width: net})."""
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
            runs[w] = fit(nets[w])
            if w == base_width:
                base_runs[0] = {"run": runs[w], "net": nets[w]}
        log(
            f"{param:8s} {'sparse' if sparse else 'dense '} width {w}: test acc "
            f"{runs[w]['test_acc'][-1]:.4f}, final loss {runs[w]['losses'][-50:].mean():.4f} "
            f"({time.time() - t0:.0f}s)"
        )
    return runs, nets


def _width_row(
    param: str,
    sparse: bool,
    w: int,
    run: dict,
    net: tc.Net,
    gap: dict,
    dis: list,
    ref_feat,
    *,
    probe,
    sharp_batch,
    lr: float,
    momentum: float,
    epochs: int,
) -> dict:
    """The summary row of one (setting, width) against the widest net."""
    pre, feat = _hidden(net, run["params"], probe)
    st = cons.preactivation_stats(np.asarray(pre))[""]
    sharp = preconditioned_sharpness(net, run["params"], *sharp_batch, jax.random.key(1))
    eos = cons.edge_of_stability(sharp, lr, momentum)
    return dict(
        param=param,
        sparse=sparse,
        width=w,
        test_acc=run["test_acc"][-1],
        final_train_loss=float(run["losses"][-50:].mean()),
        mean_abs_loss_gap=gap["mean_abs_gap"],
        loss_gap_epoch1=float(np.mean(np.abs(gap["gap"][: len(gap["gap"]) // epochs]))),
        prob_msd_epoch1=dis[0]["prob_msd"],
        argmax_dis_epoch1=dis[0]["argmax_disagreement"],
        prob_msd=dis[-1]["prob_msd"],
        argmax_dis=dis[-1]["argmax_disagreement"],
        cka_vs_widest=cons.linear_cka(np.asarray(feat), np.asarray(ref_feat)),
        preact_std=st["std"],
        preact_kurtosis=st["kurtosis"],
        sharpness=sharp,
        eos_ratio=eos["ratio"],
    )


def _disagreement(runs: dict, widths: Sequence[int], ref: int, epochs: int) -> dict:
    """{width: [prediction_disagreement vs the widest net, per epoch]} on the test set."""
    return {
        w: [
            cons.prediction_disagreement(runs[w]["test_logits"][e], runs[ref]["test_logits"][e])
            for e in range(epochs)
        ]
        for w in widths
    }


def _ensemble_members(base_runs: dict, runs: dict, base_width: int, ensemble_k: int, fit) -> list:
    """Final test logits of k base-width nets (init seeds 100 + s, same stream). At the base
    width every setting is the same net, so the members are shared across settings."""
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
        members.append(fit(net)["test_logits"][-1])
    return members


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
    sharp_batch = (data["x"][:1024], data["y"][:1024])

    def fit(net):
        return train_run(net, data, lr=lr, momentum=momentum, batch_size=batch_size, epochs=epochs)

    row = functools.partial(
        _width_row, probe=probe, sharp_batch=sharp_batch, lr=lr, momentum=momentum, epochs=epochs
    )

    rows, curves, disagree, ensembles = [], {}, {}, {}
    base_runs: dict[Any, Any] = {}
    ref = max(widths)
    for param, sparse in settings:
        key = (param, sparse)
        runs, nets = _train_family(param, sparse, widths, base_width, base_runs, fit, log)
        curves[key] = {w: r["losses"] for w, r in runs.items()}
        gaps = cons.loss_curve_gaps(curves[key], reference=ref)
        disagree[key] = _disagreement(runs, widths, ref, epochs)
        _, ref_feat = _hidden(nets[ref], runs[ref]["params"], probe)
        rows += [
            row(param, sparse, w, runs[w], nets[w], gaps[w], disagree[key][w], ref_feat)
            for w in widths
        ]
        members = _ensemble_members(base_runs, runs, base_width, ensemble_k, fit)
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


def _parser() -> argparse.ArgumentParser:
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
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = _parser().parse_args(argv)
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
    write_csv(res["rows"], os.path.join(a.out, "consistency_mlp.csv"))
    _write_curves(res["curves"], os.path.join(a.out, "consistency_loss_curves.json"))
    plot(res, a.out, widths)
    text = _mlp_markdown(a, res, widths, time.time() - t0)
    with open(os.path.join(a.out, "consistency_mlp.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
