"""Process-level XLA settings, applied by the entry points (main.py, demo.py, sweeps).

They must run before JAX creates its CPU backend (before the first computation), and they
only touch the CPU backend.
"""

import os
from importlib import metadata

# Convolutions on XLA's own CPU kernels instead of YNNPACK: 1.1-1.4x faster ResNet-18 train
# steps on CPU with unchanged numerics (docs/performance.md). The flag exists in jaxlib 0.10;
# unknown XLA flags abort, so it is only set for that series.
FAST_CPU_CONV_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
_FLAG_SERIES = ('0.10.',)


def enable_fast_cpu_convolutions() -> bool:
  """Adds FAST_CPU_CONV_FLAG to XLA_FLAGS unless the user set that flag; True if added."""
  flags = os.environ.get('XLA_FLAGS', '')
  if 'xla_cpu_experimental_ynn_fusion_type' in flags:
    return False
  try:
    version = metadata.version('jaxlib')
  except metadata.PackageNotFoundError:
    return False
  if not version.startswith(_FLAG_SERIES):
    return False
  os.environ['XLA_FLAGS'] = f'{flags} {FAST_CPU_CONV_FLAG}'.strip()
  return True
