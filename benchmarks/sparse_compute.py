"""Sparse execution vs dense masking: MLP train step at 3970 kept weights, batch 100.

  python -m benchmarks.sparse_compute [--widths 640,4096,32768] [--dense-max 32768] [--reps 5]
  python -m benchmarks.sparse_compute --crossover   # per-layer MLP crossover densities
  python -m benchmarks.sparse_compute --conv        # per-layer ResNet conv crossovers
  python -m benchmarks.sparse_compute --conv-net    # ResNet convs at their planned densities
  python -m benchmarks.sparse_compute --per-weight  # per-weight sparse conv vs dense masking

One run, side by side: the dense-masked step (``train.train_step``), the sparse step
(``sparse.step.sparse_train_step``, kept weights only) and the dense base-width (5) step, as
ratios to the dense base-width step of the same run; compile time of each step and the
XLA temp + argument bytes (``memory_analysis``). Random Fashion-MNIST-shaped batches.
Last line: ``mlp sparse step vs dense base: width 4096 R1x, width 32768 R2x``.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import step_builders
from configs import fashion_mnist_mlp
from widesparse_jax import setup, sparse
from widesparse_jax.sparse import step as sstep

BASE_WIDTH = 5  # 784*5 + 5*10 = 3970 counted weights


def build(width: int, base_width: int | None):
    c = fashion_mnist_mlp.get_config()
    c.model.width, c.model.base_width = width, base_width
    c.optimizer.weight_decay = 5e-4
    c.dataset.train_subset = 1000
    return step_builders.single_device_run(c)


def _batch(batch: int):
    rng = np.random.RandomState(0)
    return {
        "image": jnp.asarray(rng.randn(batch, 28, 28, 1).astype(np.float32)),
        "label": jnp.asarray(rng.randint(0, 10, batch).astype(np.int32)),
    }


def time_step(fn, state, batch, reps: int) -> dict:
    """Compile ``fn`` (timed), then the median of ``reps`` timed windows of steps (ms/step)."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    mem_mb = (mem.temp_size_in_bytes + mem.argument_size_in_bytes) / 2**20 if mem else float("nan")
    state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    n = max(1, min(50, int(0.2 / max(time.perf_counter() - t0, 1e-6))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            state, _ = compiled(state, batch)
        jax.block_until_ready(state)
        times.append((time.perf_counter() - t0) / n * 1e3)
    return {"ms": float(np.median(times)), "compile_s": compile_s, "mem_mb": mem_mb}


def measure_width(width: int, batch, reps: int, dense: bool) -> dict:
    run = build(width, BASE_WIDTH)
    layout = sparse.mlp_layout(run.masks, run.param_shapes)
    state = setup.init_state(run)
    kw = dict(layout=layout, tx=run.tx, schedule=run.schedule, axis_name=None)
    sp_state = sstep.to_sparse_state(state, layout)
    out = {
        "sparse": time_step(functools.partial(sstep.sparse_train_step, **kw), sp_state, batch, reps)
    }
    out["active"] = int(layout.active.size)
    if dense:
        out["dense"] = time_step(step_builders.train_step_fn(run), state, batch, reps)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--widths", default="640,1024,4096,16384,32768,65536")
    p.add_argument("--dense-max", type=int, default=32768, help="widest dense-masked step")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--crossover", action="store_true", help="per-layer MLP crossover only")
    p.add_argument("--cross-widths", default="256,1024,4096")
    p.add_argument("--conv", action="store_true", help="per-layer ResNet conv crossover only")
    p.add_argument("--conv-widths", default="64,128")
    p.add_argument("--conv-batch", type=int, default=8)
    p.add_argument("--per-weight", action="store_true", help="per-weight sparse conv layer")
    p.add_argument("--conv-net", action="store_true", help="ResNet convs at planned densities")
    a = p.parse_args(argv)
    if a.crossover or a.conv or a.per_weight or a.conv_net:
        from benchmarks import sparse_crossover as sc

        if a.crossover:
            sc.run_mlp([int(s) for s in a.cross_widths.split(",")], reps=a.reps)
        if a.conv:
            sc.run_conv([int(s) for s in a.conv_widths.split(",")], batch=a.conv_batch)
        if a.conv_net:
            sc.run_conv_net([int(s) for s in a.conv_widths.split(",")], batch=a.conv_batch)
        if a.per_weight:
            sc.run_per_weight(batch=a.conv_batch)
        return
    batch = _batch(a.batch)
    base_run = build(BASE_WIDTH, None)
    base = time_step(
        step_builders.train_step_fn(base_run), setup.init_state(base_run), batch, a.reps
    )
    print(
        f"dense base width {BASE_WIDTH}: {base['ms']:.3f} ms/step (compile {base['compile_s']:.2f} s)"
    )
    head = "width  active  dense-masked ms (x base)  sparse ms (x base)  compile s d/s  MiB d/s"
    print(head)
    ratios = {}
    for w in [int(s) for s in a.widths.split(",")]:
        r = measure_width(w, batch, a.reps, dense=w <= a.dense_max)
        s, d = r["sparse"], r.get("dense")
        ratios[w] = s["ms"] / base["ms"]
        dtxt = f"{d['ms']:9.2f} ({d['ms'] / base['ms']:7.1f}x)" if d else "      n/a            "
        ctxt = f"{d['compile_s']:.2f}/{s['compile_s']:.2f}" if d else f"-/{s['compile_s']:.2f}"
        mtxt = f"{d['mem_mb']:.1f}/{s['mem_mb']:.2f}" if d else f"-/{s['mem_mb']:.2f}"
        print(
            f"{w:6d} {r['active']:6d}  {dtxt}      {s['ms']:7.3f} ({ratios[w]:5.1f}x)"
            f"   {ctxt}  {mtxt}",
            flush=True,
        )
    r1, r2 = ratios.get(4096, float("nan")), ratios.get(32768, float("nan"))
    print(f"mlp sparse step vs dense base: width 4096 {r1:.1f}x, width 32768 {r2:.1f}x")


if __name__ == "__main__":
    main()
