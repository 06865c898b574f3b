"""SGD with momentum + coupled weight decay, and masked updates, as optax transformations.

Everything here is an ordinary optax transformation, so it composes with other optax code.

* :func:`sgd` - PyTorch ``torch.optim.SGD(lr, momentum, weight_decay, nesterov)`` semantics:
  ``g <- g + wd * w`` (coupled weight decay), ``buf <- m * buf + g`` (first step ``buf = g``),
  ``w <- w - lr * buf`` (or ``w - lr * (g + m * buf)`` with Nesterov), built from
  ``optax.add_decayed_weights``, ``optax.trace`` and ``optax.scale_by_learning_rate``.
* :func:`masked` - wraps any transformation; ``update(grads, state, params, masks=masks)``
  takes the mask pytree as an EXTRA ARGUMENT (never closed over: masks can be hundreds of
  millions of bools and would become compiled constants). Masked gradients are zeroed before
  weight decay and momentum, the params seen by the inner transformation are masked, and the
  final updates are masked, so masked weights (0 at init) and their momentum stay exactly 0.0.
* :func:`zero_masked` - a standalone transformation to chain after any optax optimizer,
  ``optax.chain(optax.adamw(1e-3), zero_masked(masks))``: masked entries get exactly 0
  update, so weights that start at 0 stay 0 (the masks are closed over here).
* :func:`scale_by_lr_multipliers` - per-leaf learning-rate multipliers (for muP).
* :func:`make_optimizer` - ``masked(sgd(lr) [+ multipliers])``; :func:`from_config` builds it
  and its schedule from a run config (the one place that reads ``config.optimizer``).
* Schedules live in ``widesparse_jax.schedules`` (re-exported here).

Mask pytree: the params' structure; each leaf a bool array of the param's shape (True =
keep) or None (dense / uncounted leaf). Paths are ``widesparse_jax.tree`` paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from widesparse_jax import tree
from widesparse_jax.schedules import (
    PAPER_CIFAR_BOUNDARIES,
    SCHEDULES,
    check_nonneg,
    check_number,
    make_schedule,
)

Path = tuple
PyTree = Any

__all__ = [
    "SCHEDULES",
    "PAPER_CIFAR_BOUNDARIES",
    "make_schedule",
    "sgd",
    "masked",
    "zero_masked",
    "scale_by_lr_multipliers",
    "make_optimizer",
    "from_config",
    "masked_entries_are_zero",
]


def _check_momentum(momentum: Any) -> float:
    momentum = check_number("momentum", momentum)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return momentum


# ----------------------------------------------------------------------------- SGD


def sgd(
    learning_rate: float | optax.Schedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """``torch.optim.SGD`` as an optax chain (coupled weight decay, dampening 0).

    ``add_decayed_weights(wd) -> trace(momentum, nesterov) -> scale_by_learning_rate(lr)``.
    ``learning_rate`` is a float or a schedule ``step -> lr``. The state holds the momentum
    buffer (a params-shaped tree, ``TraceState.trace``) and the schedule's step count.
    """
    if not callable(learning_rate):
        learning_rate = check_nonneg("learning_rate", learning_rate)
    momentum = _check_momentum(momentum)
    weight_decay = check_nonneg("weight_decay", weight_decay)
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum, nesterov=bool(nesterov)),
        optax.scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------- structure checks


def _fitted(target: PyTree, other: PyTree, what: str, same_shape: bool) -> dict:
    """``{path: leaf}`` of ``other`` after checking it mirrors ``target`` (trace-time).

    Raises ValueError naming the missing / unexpected paths, or (``same_shape``) a leaf
    whose shape differs from the target's.
    """
    want = tree.leaves_by_path(target)
    have = tree.leaves_by_path(other)
    missing = [tree.path_name(p) for p in want if p not in have]
    extra = [tree.path_name(p) for p in have if p not in want]
    if missing or extra:
        msg = f"{what} tree does not match the params tree:"
        if missing:
            msg += f" missing leaves {missing[:5]}" + (" ..." if len(missing) > 5 else "")
        if extra:
            msg += f" unexpected leaves {extra[:5]}" + (" ..." if len(extra) > 5 else "")
        raise ValueError(msg)
    if same_shape:
        for p, m in have.items():
            if m is not None and tree.shape_of(m) != tuple(jnp.shape(want[p])):
                raise ValueError(
                    f"mask for {tree.path_name(p)} has shape {tree.shape_of(m)}, "
                    f"expected the param's shape {tuple(jnp.shape(want[p]))}"
                )
    return have


# ----------------------------------------------------------------------------- masked wrapper


def masked(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Keep masked weights and their optimizer state exactly at zero.

    ``update(grads, state, params=None, masks=None, **extra)``: ``masks`` is a mask pytree
    (True = keep, None leaf = dense) or None (= dense). Gradients and the params passed to
    ``inner`` are zeroed at masked entries (so coupled weight decay and momentum never see
    them) and the final updates are zeroed there too. The state is ``inner``'s state unchanged.
    Other extra args are forwarded to ``inner``.

    Precondition: masked params are 0 at init; this transform keeps them there.
    """
    inner = optax.with_extra_args_support(inner)

    def update_fn(updates, state, params=None, *, masks=None, **extra):
        if masks is None:
            return inner.update(updates, state, params, **extra)
        _fitted(updates, masks, "masks", same_shape=True)
        updates = tree.apply_masks(updates, masks)
        if params is not None:
            params = tree.apply_masks(params, masks)
        updates, state = inner.update(updates, state, params, **extra)
        return tree.apply_masks(updates, masks), state

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def zero_masked(masks: PyTree | None) -> optax.GradientTransformation:
    """Zero the updates of masked entries: ``where(mask, update, 0)`` (stateless).

    Chain it LAST, after any optimizer: ``optax.chain(optax.adam(1e-3), zero_masked(masks))``.
    Whatever the inner state holds (momentum, Adam moments, decoupled or coupled weight
    decay), a masked weight that starts at 0 gets update 0 and stays exactly 0. ``masks``
    mirrors the params (bool = keep, None leaf = dense; None = no masking) and is closed
    over (a compiled constant under jit: use :func:`masked` with ``masks=`` as an extra
    argument for very large masks). Unlike :func:`masked`, the inner state still sees the
    masked gradients; only the applied updates are zeroed.
    """

    def update_fn(updates, state, params=None):
        del params
        if masks is None:
            return updates, state
        _fitted(updates, masks, "masks", same_shape=True)
        return tree.apply_masks(updates, masks), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


# ----------------------------------------------------------------------------- lr multipliers


def scale_by_lr_multipliers(
    multipliers: PyTree | Callable[[Path], float],
) -> optax.GradientTransformation:
    """Multiply each update leaf by a constant (per-parameter learning-rate multiplier).

    ``multipliers`` is either a pytree with the params' structure whose leaves are floats (None
    = 1.0), or a function ``path -> float`` where ``path`` is the leaf's ``tree`` path, e.g.
    ``('layer1_0', 'conv1', 'kernel')``. With SGD (momentum and weight decay are linear) a
    final scale ``c`` is exactly a torch param group with ``lr * c``.
    Stateless; the multipliers are resolved at trace time (Python floats).
    """

    def update_fn(updates, state, params=None):
        del params
        if callable(multipliers):
            lookup = None
        else:
            lookup = _fitted(updates, multipliers, "lr_multipliers", same_shape=False)

        def scale(path, x):
            v = multipliers(path) if lookup is None else lookup[path]
            v = check_nonneg(f"lr multiplier for {tree.path_name(path)}", 1.0 if v is None else v)
            return x if v == 1.0 else x * jnp.asarray(v, x.dtype)

        return tree.map_with_path(scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


# ----------------------------------------------------------------------------- the optimizer


def make_optimizer(
    learning_rate: float | optax.Schedule = 0.1,
    *,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = False,
    lr_multipliers: PyTree | Callable[[Path], float] | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The training optimizer: ``masked(sgd(learning_rate, ...) [+ lr multipliers])``.

    Args:
      learning_rate: a float or a schedule (``widesparse_jax.schedules.make_schedule``).
      momentum, weight_decay, nesterov: ``torch.optim.SGD`` semantics (coupled decay).
        Defaults: the paper's CIFAR setting.
      lr_multipliers: per-parameter lr multipliers, see :func:`scale_by_lr_multipliers`.

    Returns:
      ``tx`` with ``tx.update(grads, opt_state, params, masks=masks)`` (masks may be None).
    """
    inner = sgd(learning_rate, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if lr_multipliers is not None:
        inner = optax.chain(inner, scale_by_lr_multipliers(lr_multipliers))
    return masked(inner)


def from_config(
    config: Any, *, steps_per_epoch: int, lr_multipliers: PyTree | None = None
) -> tuple[optax.GradientTransformationExtraArgs, optax.Schedule]:
    """``(tx, schedule)`` of a run config: ``config.optimizer.{lr, momentum, weight_decay,
    nesterov, schedule, milestones, gamma, warmup_epochs}`` and ``config.train.num_epochs``."""
    o = config.optimizer
    schedule = make_schedule(
        o.schedule,
        o.lr,
        steps_per_epoch=steps_per_epoch,
        num_epochs=config.train.num_epochs,
        boundaries=tuple(o.milestones),
        gamma=o.gamma,
        warmup_epochs=o.warmup_epochs,
    )
    tx = make_optimizer(
        schedule,
        momentum=o.momentum,
        weight_decay=o.weight_decay,
        nesterov=o.nesterov,
        lr_multipliers=lr_multipliers,
    )
    return tx, schedule


# ----------------------------------------------------------------------------- invariant check


def _jax_path(keypath) -> Path:
    return tuple(tree.key_name(k) for k in keypath)


def masked_entries_are_zero(params: PyTree, opt_state: PyTree, masks: PyTree | None) -> bool:
    """True iff every masked entry of ``params`` and of every params-shaped leaf of ``opt_state``
    (e.g. the momentum buffer) is exactly 0.0. Host-side check for tests (not jittable).

    An ``opt_state`` leaf is matched to a param by the trailing keys of its path and its shape.
    """
    if masks is None:
        return True
    lookup = _fitted(params, masks, "masks", same_shape=True)
    by_path = {}
    for p, x in tree.walk(params):
        m = lookup.get(p)
        by_path[p] = (np.asarray(x), None if m is None else np.asarray(m, bool))
    for x, m in by_path.values():
        if m is not None and np.any(x[~m] != 0):
            return False
    for kp, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        path = _jax_path(kp)
        for n in range(len(path), 0, -1):  # longest suffix that names a param
            hit = by_path.get(path[-n:])
            if hit is not None:
                _, m = hit
                if m is not None and np.shape(leaf) == m.shape and np.any(np.asarray(leaf)[~m]):
                    return False
                break
    return True
