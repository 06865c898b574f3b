"""Sparse execution: compute with the kept weights only (``config.sparsity.apply='sparse'``).

* :mod:`format`: dense masked kernel <-> compact kept-weights form (values + indices, column
  major order, exact round trip), for params and optimizer state.
* :mod:`mlp`: the one-hidden-layer MLP computed from its kept weights; hidden units that feed
  nothing (no kept classifier weight) are not computed at all (their gradients are exactly 0
  under dense masking too), so compute and activation memory grow with kept weights.
* :mod:`conv`: kernel-granularity convs (``granularity='kernel'``) from their kept
  (input, output) channel connections; ResNet-18 runs them inside the dense step through an
  ``nn.Conv`` interceptor (params and checkpoints stay dense-masked).
* :mod:`step`: the sparse train step (same optimizer, masks passed as None: every compact
  entry is kept).
"""

from widesparse_jax.sparse.format import (
    Compact,
    compact_tree,
    dense_tree,
    from_dense,
    to_dense,
)
from widesparse_jax.sparse.mlp import MLPLayout, mlp_apply, mlp_layout

__all__ = [
    "Compact",
    "from_dense",
    "to_dense",
    "compact_tree",
    "dense_tree",
    "MLPLayout",
    "mlp_layout",
    "mlp_apply",
]
