"""Benchmark: train-step time of config.sparsity.apply='update' vs 'forward'.

Both variants are ``widesparse_jax.train.train_step`` (axis_name=None) under ``jax.jit``
with the state donated, on a sparse CIFAR ResNet-18 built by ``setup.build_run`` (width w,
base width ``--base-width``, paper distribution), random inputs. 'update' masks in the
optimizer only (today's runs); 'forward' also computes with ``where(mask, w, 0)`` weights
in the forward pass. Both are compiled and warmed up, then run interleaved (U F U F ...)
``--repeats`` times; the table reports medians and the ratio forward / update measured in
the same run (goal: <= 1.03).

    python -m benchmarks.forward_masking                      # widths 16 64, batch 32
    python -m benchmarks.forward_masking --widths 16 --batch 128 --repeats 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import step_builders
from configs import default as default_config
from widesparse_jax import setup

MODES = ("update", "forward")


def _step_fn(width: int, base_width: int, batch: int, mode: str):
    c = default_config.get_config()
    c.dataset.name = "cifar10"
    c.model.name, c.model.width, c.model.base_width = "resnet18", width, base_width
    c.optimizer.lr = 0.1
    c.train.batch_size = batch
    c.sparsity.apply = mode
    run = step_builders.single_device_run(c)
    step = step_builders.train_step_fn(run, mask_apply=mode)
    return jax.jit(step, donate_argnums=(0,)), setup.init_state(run)


def bench_width(width: int, base_width: int, batch: int, repeats: int) -> dict:
    """Median seconds per step of each mode, interleaved."""
    rng = np.random.default_rng(0)
    b = {
        "image": jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 10, size=batch), jnp.int32),
    }
    steps, states = {}, {}
    for mode in MODES:
        steps[mode], states[mode] = _step_fn(width, base_width, batch, mode)
        for _ in range(2):  # compile + warm up
            states[mode], m = steps[mode](states[mode], b)
            jax.block_until_ready(m["loss"])
    times = {mode: [] for mode in MODES}
    for _ in range(repeats):
        for mode in MODES:
            t0 = time.perf_counter()
            states[mode], m = steps[mode](states[mode], b)
            jax.block_until_ready(m["loss"])
            times[mode].append(time.perf_counter() - t0)
    return {mode: statistics.median(ts) for mode, ts in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    p.add_argument("--base-width", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args(argv)
    print(
        f"CIFAR ResNet-18, sparse from base width {a.base_width}, batch {a.batch}, "
        f"{a.repeats} interleaved repeats, median ms per step"
    )
    print(f"{'width':>6} {'update':>10} {'forward':>10} {'forward/update':>15}")
    for w in a.widths:
        r = bench_width(w, a.base_width, a.batch, a.repeats)
        ratio = r["forward"] / r["update"]
        print(f"{w:>6} {1e3 * r['update']:>10.1f} {1e3 * r['forward']:>10.1f} {ratio:>15.3f}")


if __name__ == "__main__":
    main()
