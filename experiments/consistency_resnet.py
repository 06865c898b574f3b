"""Consistency across widths for ResNet-18 (CIFAR stem) on Fashion-MNIST, SP vs μP, dense.

    python -m experiments.consistency_study --model resnet --widths 4,8,16 --base-width 4 \
        --n-train 5000 --epochs 1 --out results/toolkit

Each width of one parametrization trains from the same init seed on the same example order;
metrics (loss-curve gap, test prediction disagreement, linear CKA of the penultimate
features) are taken against the widest net of the same parametrization.
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
from experiments.consistency_report import plot_resnet
from experiments.csv_rows import write_csv
from widesparse_jax.analysis import consistency as cons
from widesparse_jax.analysis import noise_scale as ns


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


def _resnet_row(param: str, w: int, run: dict, ref_run: dict, gap: dict) -> dict:
    """The summary row of one (parametrization, width) against the widest net."""
    dg = cons.prediction_disagreement(run["test_logits"], ref_run["test_logits"])
    g = np.abs(np.asarray(gap["gap"]))
    return dict(
        param=param,
        width=w,
        test_acc=run["test_acc"],
        test_acc_running_bn=run["test_acc_running_bn"],
        final_train_loss=float(run["losses"][-20:].mean()),
        mean_abs_loss_gap=gap["mean_abs_gap"],
        loss_gap_last20=float(g[-20:].mean()),
        prob_msd=dg["prob_msd"],
        argmax_dis=dg["argmax_disagreement"],
        cka_penultimate=cons.linear_cka(run["features"], ref_run["features"]),
    )


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
        rows += [_resnet_row(param, w, runs[w], runs[ref], gaps[w]) for w in widths]
    return {"rows": rows, "curves": curves}


def load_resnet_data(n_train: int = 5000, n_test: int = 2000) -> dict:
    """First ``n_train`` training / ``n_test`` test images of Fashion-MNIST, [N, 28, 28, 1]."""
    x, y = tc.load_fashion_mnist("train", n_train)
    xt, yt = tc.load_fashion_mnist("test", n_test)
    return {"x": tc.to_images(x), "y": y, "x_test": tc.to_images(xt), "y_test": yt}


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
    write_csv(rows, os.path.join(a.out, "consistency_resnet.csv"))
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
