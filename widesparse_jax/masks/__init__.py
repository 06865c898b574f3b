"""Static random sparsity masks for wide sparse networks: the public face of the library.

Pure functions over **any** params pytree ``jax.tree`` handles (Flax Linen dicts,
``FrozenDict``, Flax NNX ``nnx.split`` state, Haiku dicts, Equinox modules, dataclasses,
plain dicts with PyTorch names), with arrays, ``jax.ShapeDtypeStruct`` or anything with a
``.shape`` as leaves. Imports jax and numpy only (no Flax, TensorFlow or torch); the code
lives in ``widesparse_jax.sparsity`` (one concern per module), the walker in
``widesparse_jax.tree``. See ``docs/masks.md`` for one example per library.

Vocabulary
----------
* A **layer** is identified by its *path*: the tuple of keys down to a weight leaf (dict
  keys, attribute names, sequence indices), e.g. ``('layer1_0', 'conv1', 'kernel')``; its
  *name* is ``'/'.join(path)`` (``'layer1_0/conv1/kernel'``, ``'mlp/~/linear_0/w'``,
  ``'layers/0/weight'``). Functions that take layers accept paths or names.
* **Counted** layers (the "weights" that may be sparsified): by default floating leaves
  with ``ndim >= 2`` whose last key is ``kernel`` (Flax), ``w`` (Haiku) or ``weight``
  (Equinox / PyTorch names). Biases and BatchNorm parameters are never counted. The
  predicate is a parameter of every function that counts, plans, draws or reports; a tree
  where nothing is counted is a ValueError listing the leaf names seen.
* A **mask pytree** has the structure of the params pytree: a counted leaf is a bool array
  of the weight's shape (``True`` = KEEP) or ``None`` for a layer left dense; every
  uncounted leaf is ``None``. It works with ``jax.tree.map``.
* A **plan** (:class:`MaskPlan`) says how many weights each layer keeps.

Distributions (``'paper'``, ``'uniform'``, ``'erk'``, ``'explicit'``): see
``widesparse_jax.sparsity.distributions``. Granularity (``'weight'`` or whole-kernel
``'kernel'``): see ``widesparse_jax.sparsity.plan``. Each layer's mask is drawn from
``fold_in(key, crc32(name))``, so it depends only on the seed and the layer's own name,
shape and kept count (``widesparse_jax.sparsity.draw``).

CLI: ``python -m widesparse_jax.masks --model resnet18 --width 64 --base-width 18 ...``
prints a plan as JSON (``widesparse_jax/masks/__main__.py``; it builds model shapes through
the run factory, so it is the one part of the mask library that imports Flax).
"""

from __future__ import annotations

from widesparse_jax.choices import GRANULARITIES, PLAN_METHODS
from widesparse_jax.sparsity.counted import WEIGHT_NAMES, counted_paths, is_counted
from widesparse_jax.sparsity.distributions import (
    baseline_mlp_removals,
    erk_distribution,
    paper_distribution,
    uniform_distribution,
)
from widesparse_jax.sparsity.draw import draw_layer_mask, draw_masks, layer_key
from widesparse_jax.sparsity.order import forward_order
from widesparse_jax.sparsity.plan import LayerPlan, MaskPlan, make_plan
from widesparse_jax.sparsity.report import (
    check_masks,
    count_kept,
    count_weights,
    density_report,
    format_density_report,
    rescale_for_density,
)
from widesparse_jax.tree import apply_masks, path_name

METHODS = PLAN_METHODS

__all__ = [
    "LayerPlan",
    "MaskPlan",
    "METHODS",
    "GRANULARITIES",
    "WEIGHT_NAMES",
    "is_counted",
    "path_name",
    "counted_paths",
    "forward_order",
    "paper_distribution",
    "uniform_distribution",
    "erk_distribution",
    "baseline_mlp_removals",
    "make_plan",
    "draw_masks",
    "draw_layer_mask",
    "layer_key",
    "apply_masks",
    "count_weights",
    "count_kept",
    "density_report",
    "format_density_report",
    "check_masks",
    "rescale_for_density",
]
