"""Benchmark: one full CIFAR ResNet-18 train step, this project (JAX) vs the PyTorch twin.

The step timed on both sides is the baseline's: train-mode forward, mean cross-entropy,
backward, masked SGD-momentum 0.9 with coupled weight decay 5e-4 (lr 0.1), batch 128 of
32x32x3 inputs, 10 classes. JAX: ``widesparse_jax.train.train_step`` (axis_name=None)
under ``jax.jit`` with the state donated. PyTorch: ``torch_reference.masked_sgd_step``
(the baseline's gradient-mask loop + ``torch.optim.SGD``), NCHW as in the baseline, plus
a channels_last variant for information. Widths 8, 16, 64; sparse from base width 18
(``--base-width``); a width not above it (8 and 16 <= 18) cannot be sparse from it and is
run sparse from ``--small-base-width`` (default 4) instead (0 = run those dense). Masks come from the project's own plan (``setup.build_run``)
and the same masks are handed to PyTorch (``baseline.masks_to_smask``).

Measurement: all variants are compiled / warmed up, then run interleaved
(A B C A B C ...) ``--repeats`` times; the table reports medians. A short pause between
calls (``--pause``) lets each framework's worker threads go idle so that one does not
spin-wait on the cores while the other runs. PyTorch uses ``torch.set_num_threads
(--threads)``; XLA CPU uses its own pool (all cores of the machine).

XLA flags are read once when JAX starts, so they are chosen per run with ``--xla``:

* ``default``: XLA as shipped.
* ``fast`` (default): ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``,
  i.e. the convolutions go to XLA's own (Eigen) kernels instead of YNNPACK. Same
  numerics within float32 round-off (checked by ``--check``), about 1.5-2x faster train
  step on this 2-core CPU (see docs/performance.md).
* ``none``: leave ``XLA_FLAGS`` exactly as in the environment.

PyTorch threads and a shared machine: with the default OpenMP wait policy (worker threads
spin at every barrier) and other processes on the cores, PyTorch's 2-thread step was
measured 5-10x slower than with ``OMP_WAIT_POLICY=PASSIVE`` (or 1 thread) on this 2-core
machine. ``--omp-wait-policy passive`` (the default) sets it before torch is imported so
the reference is not handicapped; ``--omp-wait-policy default`` leaves OpenMP as shipped
(the right choice on a quiet, dedicated machine).

``--profile`` prints where the JAX step's time goes (jax.profiler trace, summed by XLA
op kind). ``--device gpu`` runs both frameworks on the accelerator (``cuda`` for torch).

    python -m benchmarks.step_vs_torch                       # widths 8 16 64, --xla fast
    python -m benchmarks.step_vs_torch --xla default --widths 16 --repeats 5
    python -m benchmarks.step_vs_torch --widths 16 --profile
    python -m benchmarks.step_vs_torch --device gpu
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from typing import Callable, Optional

from benchmarks.step_builders import (  # noqa: F401  (re-exported)
    BATCH,
    IMAGE_SHAPE,
    NUM_CLASSES,
    TORCH_VARIANTS,
    JaxRunner,
    build_jax_step,
    build_torch_step,
    make_config,
)

XLA_PRESETS = {
    "default": "",
    "fast": (
        "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
        " --xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"
    ),
}
JAX_VARIANTS = ("f32", "bf16")


def set_xla_flags(preset: str) -> str:
    """Puts the preset's flags into ``XLA_FLAGS`` (must run before jax is imported)."""
    if preset not in XLA_PRESETS and preset != "none":
        raise ValueError(f"--xla={preset!r}; allowed: {sorted(XLA_PRESETS) + ['none']}")
    if "jax" in sys.modules and preset != "none":
        raise RuntimeError("set_xla_flags must be called before jax is imported")
    if preset != "none":
        extra = XLA_PRESETS[preset]
        # Drop any flag of the same name already in the environment, then add ours.
        keep = [
            f
            for f in os.environ.get("XLA_FLAGS", "").split()
            if f.split("=")[0] not in {e.split("=")[0] for e in extra.split()}
        ]
        os.environ["XLA_FLAGS"] = " ".join(keep + extra.split())
    return os.environ.get("XLA_FLAGS", "")


# ----------------------------------------------------------------------------- timing


def interleaved(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int, pause: float
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Runs every fn ``warmup`` times, then ``repeats`` rounds A B C ...

    Returns (wall seconds per call, process CPU seconds per call (all threads)) by name.
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
            time.sleep(pause)
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            c, t = time.process_time(), time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
            time.sleep(pause)
    return times, cpu


def profile_jax(runner: JaxRunner, steps: int = 3, top: int = 12) -> list[tuple[str, float]]:
    """(XLA op kind, ms per step) of the jitted step, from a jax.profiler trace."""
    import jax  # pylint: disable=g-import-not-at-top

    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d, create_perfetto_trace=True)
        for _ in range(steps):
            runner()
        jax.profiler.stop_trace()
        files = sorted(glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True))
        if not files:
            return []
        with gzip.open(files[-1]) as f:
            trace = json.load(f)
    kinds: collections.Counter = collections.Counter()
    for e in trace.get("traceEvents", []):
        name = e.get("name", "")
        if (
            e.get("ph") != "X"
            or name.startswith("$")
            or "Thunk" in name
            or "::" in name
            or name.startswith("end:")
            or "Pjit" in name
        ):
            continue
        kinds[re.sub(r"\.\d+$", "", name)] += e["dur"]
    return [(k, v / 1e3 / steps) for k, v in kinds.most_common(top)]


def load_note() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def check_same_numerics(torch_fn: Callable, runner: JaxRunner) -> str:
    """First-step loss of JAX vs PyTorch from the same weights/masks/batch (before timing)."""
    runner()
    torch_fn()
    lj, lt = float(runner.last_loss), torch_fn.losses[-1]
    return f"first-step loss jax {lj:.6f} torch {lt:.6f} |diff| {abs(lj - lt):.2e}"


def effective_base(
    width: int, base_width: Optional[int], small_base: Optional[int]
) -> Optional[int]:
    """The base width a width is made sparse from (None = dense), see the module doc."""
    for b in (base_width, small_base):
        if b and b < width:
            return b
    return None


def run_width(
    width: int, base_width: Optional[int], args, device_jax, torch_device: str
) -> list[dict]:
    """Times every variant for one width; returns table rows."""
    base = effective_base(width, base_width, args.small_base_width)
    built = {
        v: build_jax_step(width, base, "float32" if v == "f32" else "bfloat16", device_jax)
        for v in args.jax_variants
    }
    jax_fns = {f"jax_{v}": JaxRunner(b) for v, b in built.items()}
    ref_built = next(iter(built.values()))
    torch_fns = {
        f"torch_{t}": build_torch_step(width, ref_built, t, torch_device)
        for t in args.torch_variants
    }
    if args.check and "jax_f32" in jax_fns and "torch_nchw" in torch_fns:
        print(
            f"  width {width}: " + check_same_numerics(torch_fns["torch_nchw"], jax_fns["jax_f32"]),
            flush=True,
        )
    fns = {**jax_fns, **torch_fns}
    times, cpu = interleaved(fns, args.repeats, args.warmup, args.pause)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    med_cpu = {k: statistics.median(v) * 1e3 for k, v in cpu.items()}
    ref = med.get("torch_nchw", next(iter(med[k] for k in med if k.startswith("torch"))))
    rows = []
    for k in jax_fns:
        rows.append(
            {
                "width": width,
                "base_width": base,
                "jax_variant": k[4:] + f" xla={args.xla}",
                "jax_ms": med[k],
                "torch_ms": ref,
                "torch_cl_ms": med.get("torch_channels_last"),
                "ratio": med[k] / ref,
                "jax_cpu_ms": med_cpu[k],
                "torch_cpu_ms": med_cpu.get("torch_nchw"),
                "jax_all_ms": [round(t * 1e3, 1) for t in times[k]],
                "torch_all_ms": [round(t * 1e3, 1) for t in times.get("torch_nchw", [])],
            }
        )
    if args.profile:
        for k, r in jax_fns.items():
            print(f"  profile width {width} {k} (ms per step by XLA op kind):")
            for name, ms in profile_jax(r):
                print(f"    {ms:8.1f}  {name}")
    return rows


def print_table(rows: list[dict]) -> None:
    print(
        f"{'width':>5} {'sparse':>8} {'jax ms':>9} {'torch ms':>9} {'jax/torch':>9} "
        f"{'torch_cl ms':>11} {'cpu jax/torch':>13}  jax variant"
    )
    for r in rows:
        sp = f"b{r['base_width']}" if r["base_width"] else "dense"
        cl = f"{r['torch_cl_ms']:.1f}" if r["torch_cl_ms"] is not None else "-"
        cr = f"{r['jax_cpu_ms'] / r['torch_cpu_ms']:.2f}" if r.get("torch_cpu_ms") else "-"
        print(
            f"{r['width']:>5} {sp:>8} {r['jax_ms']:>9.1f} {r['torch_ms']:>9.1f} "
            f"{r['ratio']:>9.2f} {cl:>11} {cr:>13}  {r['jax_variant']}"
        )


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 16, 64])
    ap.add_argument(
        "--base-width",
        type=int,
        default=18,
        help="sparse from this base width (widths <= it run dense); 0 = all dense",
    )
    ap.add_argument(
        "--small-base-width",
        type=int,
        default=4,
        help="base width for widths <= --base-width (0 = run those dense)",
    )
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pause", type=float, default=0.05, help="seconds idle between calls")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--xla", default="fast", help=f"XLA flag preset: {sorted(XLA_PRESETS)} or none")
    ap.add_argument("--jax-variants", nargs="+", default=["f32", "bf16"], choices=JAX_VARIANTS)
    ap.add_argument(
        "--torch-variants", nargs="+", default=["nchw", "channels_last"], choices=TORCH_VARIANTS
    )
    ap.add_argument(
        "--omp-wait-policy",
        default="passive",
        choices=["passive", "default"],
        help="OMP_WAIT_POLICY for PyTorch (set before torch is imported)",
    )
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--profile", action="store_true", help="print the JAX step time by XLA op")
    ap.add_argument(
        "--no-check", dest="check", action="store_false", help="skip the first-step loss comparison"
    )
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    for w in args.widths:
        if w < 1:
            raise SystemExit(f"--widths: {w} is not allowed; widths must be >= 1")
    if args.repeats < 1:
        raise SystemExit(f"--repeats={args.repeats}; must be >= 1")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    flags = set_xla_flags(args.xla)
    if args.omp_wait_policy == "passive":
        if "torch" in sys.modules:
            raise RuntimeError("--omp-wait-policy passive must be set before torch is imported")
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import jax  # pylint: disable=g-import-not-at-top
    import torch

    torch.set_num_threads(args.threads)
    if args.device == "gpu":
        device_jax = jax.devices("gpu")[0]
        torch_device = "cuda"
        if not torch.cuda.is_available():
            raise SystemExit("--device gpu: torch sees no CUDA device")
    else:
        device_jax = jax.devices("cpu")[0]
        torch_device = "cpu"
    print(
        f"device: jax {device_jax.device_kind} / torch {torch_device}; torch threads "
        f"{torch.get_num_threads()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
        f"XLA_FLAGS={flags!r}; {load_note()}",
        flush=True,
    )
    base = args.base_width or None
    rows = []
    for w in args.widths:
        rows += run_width(w, base, args, device_jax, torch_device)
    print(
        f"(medians of {args.repeats} interleaved calls after {args.warmup} warm-up rounds; "
        f"ratio = jax / torch NCHW (the baseline); {load_note()})"
    )
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "xla_flags": flags,
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                    "rows": rows,
                    "load": load_note(),
                },
                f,
                indent=1,
            )
    return rows


if __name__ == "__main__":
    main()
