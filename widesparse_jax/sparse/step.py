"""The sparse train / eval steps and the dense <-> sparse TrainState conversions.

A sparse state holds the compact params and optimizer state (``format`` order) and masks
``None`` (every compact entry is kept), so the optimizer touches kept weights only.
Checkpoints keep the dense masked form: ``to_dense_state`` before saving, ``to_sparse_state``
after restoring, so a run can switch between dense masking and sparse execution on resume.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from widesparse_jax.setup import AXIS, TrainState
from widesparse_jax.sparse.format import compact_tree, dense_tree
from widesparse_jax.sparse.mlp import MLPLayout, mlp_apply


def to_sparse_state(state: TrainState, layout: MLPLayout) -> TrainState:
    """Dense masked state -> compact state (params, opt_state compact; masks None)."""
    lay = layout.layouts
    return state.replace(
        params=compact_tree(state.params, lay),
        opt_state=compact_tree(state.opt_state, lay),
        masks=None,
    )


def to_dense_state(state: TrainState, layout: MLPLayout, masks) -> TrainState:
    """Compact state -> the dense masked state (as dense masking would hold it)."""
    lay = layout.layouts
    return state.replace(
        params=dense_tree(state.params, lay),
        opt_state=dense_tree(state.opt_state, lay),
        masks=jax.tree.map(jnp.asarray, masks),
    )


def _loss(params, batch, layout, activation):
    logits = mlp_apply(params, batch["image"], layout, activation)
    labels = batch["label"]
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return loss, logits


def sparse_train_step(
    state: TrainState,
    batch: dict,
    *,
    layout: MLPLayout,
    tx,
    schedule,
    activation: str = "relu",
    axis_name: str | None = AXIS,
) -> tuple[TrainState, dict]:
    """``train.train_step`` on a compact MLP state: same loss, optimizer and metrics."""
    grad_fn = jax.value_and_grad(_loss, has_aux=True)
    (loss, logits), grads = grad_fn(state.params, batch, layout, activation)
    accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        loss = jax.lax.pmean(loss, axis_name)
        accuracy = jax.lax.pmean(accuracy, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, masks=None)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "accuracy": accuracy, "lr": schedule(state.step)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def sparse_eval_step(
    state: TrainState,
    batch: dict,
    *,
    layout: MLPLayout,
    activation: str = "relu",
    axis_name: str | None = AXIS,
) -> dict:
    """``train.eval_step`` on a compact state: {'loss_sum', 'correct', 'count'}."""
    logits = mlp_apply(state.params, batch["image"], layout, activation)
    w = batch["mask"].astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    out = {
        "loss_sum": jnp.sum(ce * w),
        "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * w),
        "count": jnp.sum(w),
    }
    if axis_name is not None:
        out = jax.lax.psum(out, axis_name)
    return out
