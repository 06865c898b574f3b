"""The mask library, one concern per module (the public face is ``widesparse_jax.masks``).

* ``counted``: which leaves are weights (the default predicate), their paths and names.
* ``distributions``: how many weights each layer loses (paper / uniform / ERK / baseline MLP).
* ``plan``: ``LayerPlan``, ``MaskPlan``, ``make_plan`` (kept count per layer).
* ``order``: ``forward_order`` (layers by first use, traced with ``jax.make_jaxpr``).
* ``draw``: ``layer_key``, ``draw_layer_mask``, ``draw_masks`` (seeded per layer name).
* ``report``: counts, density report, mask checks, density-aware rescaling.

Pure: jax and numpy only (no Flax, TensorFlow or torch); works on any pytree via
``widesparse_jax.tree``.
"""
