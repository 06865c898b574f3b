"""Whole ResNet-18 train step, kernel granularity: sparse convs vs dense masking.

  python -m benchmarks.sparse_resnet_step [--widths 64,128] [--batch 8] [--reps 3]

ResNet-18 with the CIFAR stem (32x32x3 inputs, 10 classes) at ``width``, sparse at the
weight count of width 18 with ``sparsity.granularity='kernel'`` (the baseline's io_only).
One run, side by side, each built by ``setup.build_run`` from the same config:

* dense-masked step: ``train.train_step`` (``apply='update'``; every masked weight multiplied);
* sparse step: the step ``apply='sparse'`` runs in training (``sparse.loop.ConvSparseMode``:
  the convs below ``sparsity.sparse_conv_below_density`` compute with their kept kernels only).

Both start from the same state and batch; the benchmark checks that one step gives the same
loss (the paths are exact, up to float round-off), then reports ms/step (median of ``reps``
timed windows), compile time and XLA temp + argument memory. Last line:
``resnet sparse step vs dense-masked: width 64 R1x, width 128 R2x``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import step_builders
from benchmarks.sparse_compute import time_step
from configs import cifar10
from widesparse_jax import setup
from widesparse_jax.sparse import loop as sparse_loop

BASE_WIDTH = 18


def build(width: int, apply: str, batch: int, threshold: float = 0.03):
    """The run of ResNet-18 (CIFAR stem) at ``width``, kernel-sparse at the weight count of
    width 18, with ``sparsity.apply=apply`` (the optimizer and masks do not depend on it)."""
    c = cifar10.get_config()
    c.model.width, c.model.base_width = width, BASE_WIDTH
    c.sparsity.granularity, c.sparsity.apply = "kernel", apply
    c.train.batch_size = batch
    c.sparsity.sparse_conv_below_density = threshold
    return step_builders.single_device_run(c)


def make_batch(batch: int) -> dict:
    """Random CIFAR-shaped batch: image [batch, 32, 32, 3] float32, label [batch] int32."""
    rng = np.random.RandomState(0)
    return {
        "image": jnp.asarray(rng.randn(batch, 32, 32, 3).astype(np.float32)),
        "label": jnp.asarray(rng.randint(0, 10, batch).astype(np.int32)),
    }


def measure(width: int, batch: dict, reps: int, threshold: float = 0.03) -> dict:
    """{'dense': timing, 'sparse': timing, 'convs': sparse conv count, 'loss_diff': |Δloss|}."""
    # One run (one mask draw): its dense-masked step is train_step on run.model, its sparse
    # step the same train_step on ConvSparseMode's model (the state stays dense-masked).
    run = build(width, "sparse", len(batch["label"]), threshold)
    mode = sparse_loop.make_mode(run)
    if not isinstance(mode, sparse_loop.ConvSparseMode):
        raise SystemExit(f"width {width}: no conv runs sparse at this density (mode={mode!r})")
    state = setup.init_state(run)
    dense, sparse = (
        step_builders.train_step_fn(run, m, mask_apply="update") for m in (run.model, mode.model)
    )
    out = {"dense": time_step(dense, state, batch, reps)}  # timed first: compile is cold
    out["sparse"] = time_step(sparse, state, batch, reps)
    loss_d = float(jax.jit(dense)(state, batch)[1]["loss"])
    loss_s = float(jax.jit(sparse)(state, batch)[1]["loss"])
    out.update(convs=len(mode.layouts), loss_diff=abs(loss_d - loss_s))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--widths", default="64,128")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument(
        "--threshold", type=float, default=0.03, help="sparsity.sparse_conv_below_density"
    )
    a = p.parse_args(argv)
    batch = make_batch(a.batch)
    print(
        f"ResNet-18 CIFAR stem, kernel granularity, base width {BASE_WIDTH}, batch {a.batch}, "
        f"sparse convs below channel density {a.threshold}"
    )
    print("width  sparse convs  dense-masked ms  sparse ms  ratio  compile s d/s  MiB d/s  |dloss|")
    ratios = {}
    for w in [int(s) for s in a.widths.split(",")]:
        r = measure(w, batch, a.reps, a.threshold)
        d, s = r["dense"], r["sparse"]
        ratios[w] = s["ms"] / d["ms"]
        print(
            f"{w:5d}  {r['convs']:12d}  {d['ms']:15.1f}  {s['ms']:9.1f}  {ratios[w]:5.2f}"
            f"  {d['compile_s']:6.1f}/{s['compile_s']:.1f}  {d['mem_mb']:.0f}/{s['mem_mb']:.0f}"
            f"  {r['loss_diff']:.2e}",
            flush=True,
        )
    body = ", ".join(f"width {w} {r:.2f}x" for w, r in ratios.items())
    print(f"resnet sparse step vs dense-masked: {body}")


if __name__ == "__main__":
    main()
