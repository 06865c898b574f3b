"""Process-level XLA settings, applied by the entry points (main.py, demo.py, sweeps).

They must run before JAX creates its CPU backend (before the first computation), and they
only touch the CPU backend.
"""

import os
from importlib import metadata

# Convolutions on XLA's own CPU kernels instead of YNNPACK: 1.1-1.4x faster ResNet-18 train
# steps on CPU with unchanged numerics (docs/performance.md). The flag exists in jaxlib 0.10;
# unknown XLA flags abort, so it is only set for that series.
FAST_CPU_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
# XLA CPU's memory-optimized scheduler: a further ~12 % (width 16) / ~6 % (width 64) on the
# float32 train step, bit-identical results (docs/performance.md, 2026-11-23).
CPU_SCHEDULER_FLAG = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"
_FLAG_SERIES = ("0.10.",)


def enable_fast_cpu_convolutions() -> bool:
    """Adds FAST_CPU_CONV_FLAG and CPU_SCHEDULER_FLAG to XLA_FLAGS, each unless the user set
    that flag; True if anything was added."""
    flags = os.environ.get("XLA_FLAGS", "")
    try:
        version = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return False
    if not version.startswith(_FLAG_SERIES):
        return False
    add = [
        flag
        for flag in (FAST_CPU_CONV_FLAG, CPU_SCHEDULER_FLAG)
        if flag[2:].split("=")[0] not in flags
    ]
    if not add:
        return False
    os.environ["XLA_FLAGS"] = " ".join([flags] + add).strip()
    return True
