"""Per-layer crossover densities: sparse formulation vs dense masking, one layer at a time.

  python -m benchmarks.sparse_compute --crossover [--cross-widths 256,1024,4096]
  python -m benchmarks.sparse_compute --conv [--conv-widths 64,128] [--conv-batch 8]

* MLP layer: ``x [B, 784] @ W [784, width]``, batch 100, forward + gradient of the kernel
  (what the MLP's ``fc`` layer costs in a step): dense masking ``x @ where(m, W, 0)`` vs
  the sparse path's fan-in-bucketed gathers (``sparse.mlp.sparse_matmul_t``) on the kept
  entries.
* Conv layer (kernel granularity, ResNet-18 CIFAR stem 32x32, NHWC): forward + gradients of
  kernel and input; dense masking ``conv(x, where(m, W, 0))`` vs ``sparse.conv.sparse_conv``.

For each layer a density grid (stopping two points after sparse stops winning) and the
crossover: the density where sparse and dense take equal time (log-interpolated).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from widesparse_jax.sparse import conv as sconv
from widesparse_jax.sparse.format import layout_of
from widesparse_jax.sparse.mlp import fan_in_buckets, sparse_matmul_t

GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5)
DN = ("NHWC", "HWIO", "NHWC")


def time_fn(fn, *args, reps: int = 5) -> float:
    """Median ms per call of the compiled ``fn(*args)`` (``reps`` windows of >= 0.2 s)."""
    import time

    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    n = max(1, min(50, int(0.2 / max(time.perf_counter() - t0, 1e-6))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            out = compiled(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / n * 1e3)
    return float(np.median(times))


def crossover(rows: list) -> float | None:
    """Density where sparse/dense time == 1, log-interpolated between grid points; None if
    sparse never wins; the last density if it always wins."""
    prev = None
    for d, dense_ms, sparse_ms in rows:
        r = sparse_ms / dense_ms
        if r >= 1:
            if prev is None:
                return None
            (d0, r0) = prev
            t = np.log(r0) / (np.log(r0) - np.log(r))  # log-ratio zero crossing
            return float(np.exp(np.log(d0) + t * (np.log(d) - np.log(d0))))
        prev = (d, r)
    return float(rows[-1][0]) if rows else None


def scan(measure, grid=GRID, label: str = "") -> list:
    """[(density, dense ms, sparse ms)] over ``grid``, printed, stopping two points after
    sparse stops winning."""
    rows, losing = [], 0
    for d in grid:
        dense_ms, sparse_ms = measure(d)
        rows.append((d, dense_ms, sparse_ms))
        print(
            f"  {label} density {d:6.3f}: dense-masked {dense_ms:9.3f} ms  sparse {sparse_ms:9.3f} ms"
            f"  ({sparse_ms / dense_ms:6.2f}x)",
            flush=True,
        )
        losing = losing + 1 if sparse_ms >= dense_ms else 0
        if losing >= 2:
            break
    return rows


def mlp_layer(width: int, density: float, batch: int = 100, fan_in: int = 784, reps: int = 5):
    """(dense-masked ms, sparse ms) of one MLP layer's forward + kernel gradient."""
    rng = np.random.RandomState(0)
    mask = rng.rand(fan_in, width) < density
    lay = layout_of(mask)
    x = jnp.asarray(rng.randn(batch, fan_in).astype(np.float32))
    w = jnp.asarray(rng.randn(fan_in, width).astype(np.float32))
    m = jnp.asarray(mask)
    vals = w[lay.rows, lay.cols]
    units = np.argsort(mask.sum(0), kind="stable")  # fan-in order (outputs permuted)
    buckets = fan_in_buckets(lay, units)

    def dense(w, x):
        return jax.grad(lambda w: jnp.sum(jnp.tanh(x @ jnp.where(m, w, 0.0))))(w)

    def sparse(v, x):
        return jax.grad(lambda v: jnp.sum(jnp.tanh(sparse_matmul_t(x.T, v, buckets))))(v)

    return time_fn(dense, w, x, reps=reps), time_fn(sparse, vals, x, reps=reps)


def conv_layer(cin: int, cout: int, hw: int, stride: int, density: float, batch: int, reps=3):
    """(dense-masked ms, sparse ms) of one 3x3 conv's forward + kernel and input grads."""
    rng = np.random.RandomState(0)
    conn = rng.rand(cin, cout) < density
    lay = sconv.conv_layout(np.broadcast_to(conn, (3, 3, cin, cout)))
    x = jnp.asarray(rng.randn(batch, hw, hw, cin).astype(np.float32))
    w = jnp.asarray(rng.randn(3, 3, cin, cout).astype(np.float32))
    m = jnp.asarray(np.broadcast_to(conn, (3, 3, cin, cout)))
    pad, strides = ((1, 1), (1, 1)), (stride, stride)

    def dense(w, x):
        def f(w, x):
            y = jax.lax.conv_general_dilated(x, jnp.where(m, w, 0.0), strides, pad, None, None, DN)
            return jnp.sum(jnp.tanh(y))

        return jax.grad(f, (0, 1))(w, x)

    def sparse(v, x):
        def f(v, x):
            return jnp.sum(jnp.tanh(sconv.sparse_conv(x, v, lay, strides, pad)))

        return jax.grad(f, (0, 1))(v, x)

    vals = sconv.kernel_values(w, lay)
    return time_fn(dense, w, x, reps=reps), time_fn(sparse, vals, x, reps=reps)


def run_mlp(widths, reps: int = 5) -> dict:
    print("MLP layer 784 -> width, batch 100, forward + kernel gradient")
    out = {}
    for width in widths:
        rows = scan(lambda d, w=width: mlp_layer(w, d, reps=reps), label=f"width {width:6d}")
        out[width] = crossover(rows)
        print(f"mlp layer width {width}: crossover density {_fmt(out[width])}", flush=True)
    return out


def resnet_convs(width: int, hw: int = 32):
    """(name, Cin, Cout, input size, stride) of the distinct 3x3 conv shapes of ResNet-18."""
    out, size = [], hw
    for s, mult in enumerate((1, 2, 4, 8), start=1):
        cin = width * max(1, mult // 2)
        stride = 2 if s > 1 else 1
        out.append((f"layer{s}_0/conv1", cin, width * mult, size, stride))
        size //= stride
        out.append((f"layer{s}_x/conv2", width * mult, width * mult, size, 1))
    return out


CONV_GRID = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35)


def run_conv(widths, batch: int = 8, grid=CONV_GRID, reps: int = 3) -> dict:
    print(f"ResNet-18 CIFAR 3x3 convs, batch {batch}, 32x32, forward + kernel and input grads")
    out = {}
    for width in widths:
        for name, cin, cout, hw, stride in resnet_convs(width):
            label = f"w{width} {name} {cin}->{cout} @{hw}/{stride}"
            shape = (cin, cout, hw, stride)
            rows = scan(lambda d, s=shape: conv_layer(*s, d, batch, reps), grid, label)
            out[(width, name)] = crossover(rows)
            print(f"conv {label}: crossover density {_fmt(out[(width, name)])}", flush=True)
    return out


def _fmt(d) -> str:
    return "none (dense always faster)" if d is None else f"{d:.3f}"


def per_weight_conv(x, values, taps, pad=((1, 1), (1, 1))):
    """3x3 stride-1 conv from per-weight kept entries (benchmark only: it loses to dense
    masking, see docs/performance.md). taps: 9 x (rows, cols) int32 sorted by col; values:
    9 x [nnz_t]. x [N, H, W, Cin] -> [N, H, W, Cout]."""
    n, h, w, _ = x.shape
    xt = jnp.pad(jnp.transpose(x, (3, 0, 1, 2)), ((0, 0), (0, 0), *pad))
    y = 0
    for t, ((rows, cols, cout), v) in enumerate(zip(taps, values)):
        a, b = divmod(t, 3)
        z = xt[rows, :, a : a + h, b : b + w] * v[:, None, None, None]
        y = y + jax.ops.segment_sum(z, cols, cout, indices_are_sorted=True)
    return jnp.transpose(y, (1, 2, 3, 0))


def per_weight_layer(cin: int, cout: int, hw: int, density: float, batch: int, reps=3):
    """(dense-masked ms, per-weight sparse ms) of one 3x3 stride-1 conv, forward + grads."""
    rng = np.random.RandomState(0)
    mask = rng.rand(3, 3, cin, cout) < density
    x = jnp.asarray(rng.randn(batch, hw, hw, cin).astype(np.float32))
    w = jnp.asarray(rng.randn(3, 3, cin, cout).astype(np.float32))
    taps, vals = [], []
    for t in range(9):
        lay = layout_of(mask[t // 3, t % 3])
        taps.append((jnp.asarray(lay.rows), jnp.asarray(lay.cols), cout))
        vals.append(w[t // 3, t % 3][lay.rows, lay.cols])
    m, pad = jnp.asarray(mask), ((1, 1), (1, 1))

    def dense(w, x):
        def f(w, x):
            y = jax.lax.conv_general_dilated(x, jnp.where(m, w, 0.0), (1, 1), pad, None, None, DN)
            return jnp.sum(jnp.tanh(y))

        return jax.grad(f, (0, 1))(w, x)

    def sparse(v, x):
        return jax.grad(lambda v, x: jnp.sum(jnp.tanh(per_weight_conv(x, v, taps))), (0, 1))(v, x)

    return time_fn(dense, w, x, reps=reps), time_fn(sparse, vals, x, reps=reps)


def run_per_weight(width: int = 128, batch: int = 8, grid=(0.02, 0.05, 0.1, 0.2, 0.5)) -> None:
    """Per-weight (granularity='weight') sparse conv vs dense masking: layer3 conv2 shape."""
    c = 4 * width
    print(f"per-weight 3x3 conv {c}->{c} @8, batch {batch}, forward + kernel and input grads")
    rows = scan(lambda d: per_weight_layer(c, c, 8, d, batch), grid, f"w{width} per-weight")
    print(f"per-weight conv w{width} {c}->{c} @8: crossover density {_fmt(crossover(rows))}")


def plan_densities(width: int, base_width: int = 18) -> dict:
    """{conv name: channel density} of ResNet-18 (CIFAR stem) at ``width`` with the
    'paper' kernel-granularity plan at the weight count of ``base_width``."""
    from widesparse_jax.masks import count_weights, make_plan
    from widesparse_jax.masks.__main__ import _model_shapes

    params, order = _model_shapes("resnet18", width, 10, "cifar", 3)
    base, _ = _model_shapes("resnet18", base_width, 10, "cifar", 3)
    plan = make_plan(params, list(order), base_total=count_weights(base), granularity="kernel")
    return {"/".join(lay.path[:-1]): lay.keep / lay.size for lay in plan.layers}


def run_conv_net(widths, batch: int = 8, threshold: float = 0.03) -> None:
    """Each distinct 3x3 conv of ResNet-18 at its planned density (one timing each), and the
    sum over the network's 16 block convs: dense masking vs sparse below ``threshold``."""
    for width in widths:
        dens = plan_densities(width)
        total = {"dense": 0.0, "mixed": 0.0}
        print(f"width {width} (base 18), batch {batch}: per-layer ms at the planned density")
        for name, cin, cout, hw, stride in resnet_convs(width):
            d = dens[name.replace("_x/", "_1/")]
            copies = 1 if name.endswith("0/conv1") and not name.startswith("layer1") else 3
            copies = 4 if name.startswith("layer1") and name.endswith("x/conv2") else copies
            copies = 0 if name == "layer1_0/conv1" else copies  # counted in layer1_x (same shape)
            dense_ms, sparse_ms = conv_layer(cin, cout, hw, stride, d, batch, reps=1)
            use = sparse_ms if d < threshold else dense_ms
            total["dense"] += copies * dense_ms
            total["mixed"] += copies * use
            print(
                f"  {name} {cin}->{cout} @{hw}/{stride} x{copies} density {d:.4f}: dense-masked "
                f"{dense_ms:8.1f} ms  sparse {sparse_ms:8.1f} ms ({sparse_ms / dense_ms:5.2f}x)",
                flush=True,
            )
        r = total["mixed"] / total["dense"]
        print(
            f"conv width {width}: 16 block convs dense-masked {total['dense']:.0f} ms, sparse "
            f"below {threshold} {total['mixed']:.0f} ms ({r:.2f}x)",
            flush=True,
        )
