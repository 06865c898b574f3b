"""SGD with momentum + coupled weight decay, learning-rate schedules, and masked updates.

Everything here is an ordinary optax transformation, so it composes with other optax code.

* :func:`sgd` - PyTorch ``torch.optim.SGD(lr, momentum, weight_decay, nesterov)`` semantics:
  ``g <- g + wd * w`` (coupled weight decay), ``buf <- m * buf + g`` (first step ``buf = g``),
  ``w <- w - lr * buf`` (or ``w - lr * (g + m * buf)`` with Nesterov), built from
  ``optax.add_decayed_weights``, ``optax.trace`` and ``optax.scale_by_learning_rate``.
* :func:`make_schedule` - constant / multistep (epoch boundaries) / cosine, optional linear
  warmup; the step count is the optimizer step, ``steps_per_epoch`` maps it to epochs the way
  a PyTorch scheduler stepped once per epoch does.
* :func:`masked` - wraps any transformation; ``update(grads, state, params, masks=masks)``
  takes the mask pytree as an EXTRA ARGUMENT (never closed over: masks can be hundreds of
  millions of bools and would become compiled constants). Masked gradients are zeroed before
  weight decay and momentum, the params seen by the inner transformation are masked, and the
  final updates are masked, so masked weights (0 at init) and their momentum stay exactly 0.0.
* :func:`scale_by_lr_multipliers` - per-leaf learning-rate multipliers (for muP).
* :func:`make_optimizer` - all of the above from a config or explicit keyword arguments.

Mask pytree (docs/contracts.md): the nested-dict structure of params; each leaf a bool array
of the param's shape (True = keep) or None (dense / uncounted leaf).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

Path = tuple[Any, ...]
PyTree = Any

SCHEDULES = ("constant", "multistep", "cosine")
PAPER_CIFAR_BOUNDARIES = (50, 120, 200)

__all__ = [
    "SCHEDULES",
    "PAPER_CIFAR_BOUNDARIES",
    "make_schedule",
    "sgd",
    "masked",
    "scale_by_lr_multipliers",
    "make_optimizer",
    "schedule_from_config",
    "masked_entries_are_zero",
]


# ----------------------------------------------------------------------------- validation


def _check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _check_nonneg(name: str, value: Any) -> float:
    value = _check_number(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def _check_pos_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_momentum(momentum: Any) -> float:
    momentum = _check_number("momentum", momentum)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    return momentum


# ----------------------------------------------------------------------------- schedules


def make_schedule(
    name: str = "constant",
    base_lr: float = 0.1,
    *,
    steps_per_epoch: int | None = None,
    num_epochs: int | None = None,
    boundaries: Sequence[int] = PAPER_CIFAR_BOUNDARIES,
    gamma: float = 0.1,
    warmup_epochs: int = 0,
    per_step: bool = False,
) -> optax.Schedule:
    """Learning-rate schedule ``step -> lr`` (``step`` = optimizer steps taken so far, from 0).

    Args:
      name: ``'constant'``, ``'multistep'`` or ``'cosine'``.
      base_lr: initial learning rate (>= 0).
      steps_per_epoch: optimizer steps per epoch; required unless the schedule is
        ``'constant'`` without warmup. Step ``s`` belongs to epoch ``s // steps_per_epoch``.
      num_epochs: length of the cosine (required for ``'cosine'``).
      boundaries: ``'multistep'`` epoch milestones, strictly increasing positive ints; the lr is
        ``base_lr * gamma**k`` with ``k`` = number of milestones ``<= epoch``, so it changes at
        exactly the first step of a milestone epoch (= ``torch MultiStepLR`` stepped per epoch).
        Default: the paper's CIFAR setting (50, 120, 200).
      gamma: ``'multistep'`` decay factor (> 0).
      warmup_epochs: linear warmup length (epochs, int >= 0). During warmup
        (``s < W = warmup_epochs * steps_per_epoch``) ``lr = base_lr * (s + 1) / W``; after it
        the main schedule continues: ``'multistep'`` at its absolute epochs (milestones must be
        ``>= warmup_epochs``), ``'cosine'`` anneals over the remaining
        ``num_epochs - warmup_epochs`` epochs.
      per_step: for ``'cosine'`` only: anneal smoothly per step instead of per epoch.

    ``'cosine'`` (per epoch) equals ``torch CosineAnnealingLR(T_max=num_epochs, eta_min=0)``
    stepped once per epoch: ``lr = base_lr * (1 + cos(pi * e / num_epochs)) / 2``, constant
    within an epoch; past ``num_epochs`` the lr stays 0 (torch's formula would rise again).

    Returns:
      A function of an int scalar (traceable) returning a float32 scalar.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
    base_lr = _check_nonneg("base_lr (learning rate)", base_lr)
    if (
        isinstance(warmup_epochs, bool)
        or not isinstance(warmup_epochs, (int, np.integer))
        or warmup_epochs < 0
    ):
        raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
    warmup_epochs = int(warmup_epochs)
    if per_step and name != "cosine":
        raise ValueError(
            f"per_step=True applies only to the 'cosine' schedule, got schedule {name!r}"
        )
    if name != "constant" or warmup_epochs > 0:
        steps_per_epoch = _check_pos_int("steps_per_epoch", steps_per_epoch)

    if name == "constant":

        def main(step):
            return jnp.full((), base_lr, jnp.float32)

    elif name == "multistep":
        gamma = _check_number("gamma", gamma)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        try:
            bounds = tuple(boundaries)
        except TypeError:
            raise ValueError(
                f"boundaries must be a sequence of epochs, got {boundaries!r}"
            ) from None
        for b in bounds:
            if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
                raise ValueError(f"boundaries must be positive integer epochs, got {bounds!r}")
        if any(b1 >= b2 for b1, b2 in zip(bounds, bounds[1:])):
            raise ValueError(f"boundaries must be strictly increasing, got {bounds!r}")
        if bounds and bounds[0] < warmup_epochs:
            raise ValueError(
                f"boundaries {bounds!r} start before the end of warmup (warmup_epochs={warmup_epochs})"
            )
        # lr values computed in float64 like torch's python-float lr, then rounded once.
        values = np.array([base_lr * gamma**k for k in range(len(bounds) + 1)], np.float32)
        bound_steps = np.array([b * steps_per_epoch for b in bounds], np.int32)

        def main(step):
            k = jnp.sum(jnp.asarray(step)[..., None] >= bound_steps, axis=-1) if len(bounds) else 0
            return jnp.asarray(values)[k]

    else:  # cosine
        num_epochs = _check_pos_int("num_epochs", num_epochs)
        if warmup_epochs >= num_epochs:
            raise ValueError(
                f"warmup_epochs ({warmup_epochs}) must be < num_epochs ({num_epochs}) for cosine"
            )
        t_max = num_epochs - warmup_epochs
        start = warmup_epochs * steps_per_epoch
        if per_step:
            total = t_max * steps_per_epoch

            def main(step):
                t = jnp.clip(jnp.asarray(step) - start, 0, total).astype(jnp.float32)
                return (0.5 * base_lr * (1.0 + jnp.cos(jnp.pi * t / total))).astype(jnp.float32)
        else:
            table = np.array(
                [0.5 * base_lr * (1.0 + math.cos(math.pi * e / t_max)) for e in range(t_max + 1)],
                np.float32,
            )

            def main(step):
                e = jnp.clip((jnp.asarray(step) - start) // steps_per_epoch, 0, t_max)
                return jnp.asarray(table)[e]

    if warmup_epochs == 0:
        return main
    warm = warmup_epochs * steps_per_epoch

    def schedule(step):
        step = jnp.asarray(step)
        ramp = (base_lr * (step + 1).astype(jnp.float32) / warm).astype(jnp.float32)
        return jnp.where(step < warm, ramp, main(step))

    return schedule


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
        learning_rate = _check_nonneg("learning_rate", learning_rate)
    momentum = _check_momentum(momentum)
    weight_decay = _check_nonneg("weight_decay", weight_decay)
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.trace(decay=momentum, nesterov=bool(nesterov)),
        optax.scale_by_learning_rate(learning_rate),
    )


# ----------------------------------------------------------------------------- pytree paths


def _key_name(k: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return str(k)


def _path(keypath: Sequence[Any]) -> Path:
    return tuple(_key_name(k) for k in keypath)


def _show(path: Path) -> str:
    return "/".join(str(p) for p in path) or "<root>"


def _leaves_by_path(tree: PyTree, none_is_leaf: bool) -> dict[Path, Any]:
    is_leaf = (lambda x: x is None) if none_is_leaf else None
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return {_path(kp): leaf for kp, leaf in flat}


def _aligned(tree: PyTree, other: PyTree, what: str) -> list[Any]:
    """Leaves of ``other`` (None leaves kept) aligned with the flattened leaves of ``tree``.

    Raises ValueError naming the paths when the structures differ.
    """
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    paths = [_path(kp) for kp, _ in flat]
    by_path = _leaves_by_path(other, none_is_leaf=True)
    path_set = set(paths)
    missing = [p for p in paths if p not in by_path]
    extra = sorted((p for p in by_path if p not in path_set), key=str)
    if missing or extra:
        msg = f"{what} tree does not match the params tree:"
        if missing:
            msg += f" missing leaves {[_show(p) for p in missing[:5]]}" + (
                " ..." if len(missing) > 5 else ""
            )
        if extra:
            msg += f" unexpected leaves {[_show(p) for p in extra[:5]]}" + (
                " ..." if len(extra) > 5 else ""
            )
        raise ValueError(msg)
    return [by_path[p] for p in paths]


def _mask_leaves(tree: PyTree, masks: PyTree) -> list[Any]:
    """Mask leaves aligned with ``tree``'s leaves; checks shapes (trace-time, shapes are static)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    leaves = _aligned(tree, masks, "masks")
    for (kp, x), m in zip(flat, leaves):
        if m is None:
            continue
        if not hasattr(m, "shape") or tuple(m.shape) != tuple(jnp.shape(x)):
            raise ValueError(
                f"mask for {_show(_path(kp))} has shape {getattr(m, 'shape', type(m).__name__)}, "
                f"expected the param's shape {tuple(jnp.shape(x))}"
            )
    return leaves


def _apply(tree: PyTree, mask_leaves: list[Any]) -> PyTree:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = [
        x if m is None else jnp.where(jnp.asarray(m, bool), x, jnp.zeros((), x.dtype))
        for x, m in zip(leaves, mask_leaves)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


# ----------------------------------------------------------------------------- masked wrapper


def masked(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """Keep masked weights and their optimizer state exactly at zero.

    ``update(grads, state, params=None, masks=None, **extra)``: ``masks`` is a mask pytree
    (True = keep, None leaf = dense) or None (= dense). Gradients and the params passed to
    ``inner`` are zeroed at masked entries (so coupled weight decay and momentum never see
    them) and the final updates are zeroed there too. The state is ``inner``'s state unchanged.
    Other extra args are forwarded to ``inner``.

    Precondition: masked params are 0 at init (``masks.apply``); this transform keeps them
    there but never changes a param's value at a masked entry.
    """
    inner = optax.with_extra_args_support(inner)

    def update_fn(updates, state, params=None, *, masks=None, **extra):
        if masks is None:
            return inner.update(updates, state, params, **extra)
        mleaves = _mask_leaves(updates, masks)
        updates = _apply(updates, mleaves)
        if params is not None:
            params = _apply(params, _mask_leaves(params, masks))
        updates, state = inner.update(updates, state, params, **extra)
        return _apply(updates, mleaves), state

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


# ----------------------------------------------------------------------------- lr multipliers


def scale_by_lr_multipliers(
    multipliers: PyTree | Callable[[Path], float],
) -> optax.GradientTransformation:
    """Multiply each update leaf by a constant (per-parameter learning-rate multiplier).

    ``multipliers`` is either a pytree with the params' structure whose leaves are floats (None
    = 1.0), or a function ``path -> float`` where ``path`` is the tuple of dict keys down to the
    leaf, e.g. ``('layer1_0', 'conv1', 'kernel')``. With SGD (momentum and weight decay are
    linear) a final scale ``c`` is exactly a torch param group with ``lr * c``.
    Stateless; the multipliers are resolved at trace time (Python floats).
    """

    def resolve(updates) -> list[float]:
        flat, _ = jax.tree_util.tree_flatten_with_path(updates)
        if callable(multipliers):
            vals = [multipliers(_path(kp)) for kp, _ in flat]
        else:
            vals = [
                1.0 if v is None else v for v in _aligned(updates, multipliers, "lr_multipliers")
            ]
        return [
            _check_nonneg(f"lr multiplier for {_show(_path(kp))}", v)
            for (kp, _), v in zip(flat, vals)
        ]

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        vals = resolve(updates)
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        leaves = [x if v == 1.0 else (x * jnp.asarray(v, x.dtype)) for x, v in zip(leaves, vals)]
        return jax.tree_util.tree_unflatten(treedef, leaves), state

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- from config

# Config field names read by make_optimizer / schedule_from_config (all optional; defaults =
# the paper's CIFAR setting): learning_rate, momentum, weight_decay, nesterov, lr_schedule,
# lr_boundaries (epochs), lr_gamma, num_epochs, warmup_epochs, lr_per_step.
_DEFAULTS: dict[str, Any] = dict(
    learning_rate=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    nesterov=False,
    lr_schedule="constant",
    lr_boundaries=PAPER_CIFAR_BOUNDARIES,
    lr_gamma=0.1,
    num_epochs=None,
    warmup_epochs=0,
    lr_per_step=False,
)


# The project's nested config (configs/default.py): config.optimizer.<field>, config.train.num_epochs.
_PROJECT_FIELDS: dict[str, tuple[str, str]] = dict(
    learning_rate=("optimizer", "lr"),
    momentum=("optimizer", "momentum"),
    weight_decay=("optimizer", "weight_decay"),
    nesterov=("optimizer", "nesterov"),
    lr_schedule=("optimizer", "schedule"),
    lr_boundaries=("optimizer", "milestones"),
    lr_gamma=("optimizer", "gamma"),
    warmup_epochs=("optimizer", "warmup_epochs"),
    lr_per_step=("optimizer", "per_step"),
    num_epochs=("train", "num_epochs"),
)


def _field(obj: Any, name: str) -> tuple[bool, Any]:
    if isinstance(obj, Mapping):
        return (name in obj, obj[name] if name in obj else None)
    if hasattr(obj, name):
        return True, getattr(obj, name)
    return False, None


def _get(config: Any, overrides: Mapping[str, Any], name: str) -> Any:
    """Value of option ``name``: override, else flat config field, else the project's nested
    field (``config.optimizer.lr`` ...), else the default."""
    if name in overrides:
        return overrides[name]
    if config is not None:
        found, value = _field(config, name)
        if found:
            return value
        section, field = _PROJECT_FIELDS[name]
        found, sub = _field(config, section)
        if found and sub is not None:
            found, value = _field(sub, field)
            if found:
                return value
    return _DEFAULTS[name]


def schedule_from_config(
    config: Any = None, *, steps_per_epoch: int | None = None, **overrides: Any
) -> optax.Schedule:
    """:func:`make_schedule` from config fields (see ``_DEFAULTS``); kwargs override fields."""
    unknown = set(overrides) - set(_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown optimizer option(s) {sorted(unknown)}; allowed: {sorted(_DEFAULTS)}"
        )
    g = lambda n: _get(config, overrides, n)  # noqa: E731
    return make_schedule(
        g("lr_schedule"),
        g("learning_rate"),
        steps_per_epoch=steps_per_epoch,
        num_epochs=g("num_epochs"),
        boundaries=g("lr_boundaries"),
        gamma=g("lr_gamma"),
        warmup_epochs=g("warmup_epochs"),
        per_step=bool(g("lr_per_step")),
    )


def make_optimizer(
    config: Any = None,
    *,
    steps_per_epoch: int | None = None,
    lr_multipliers: PyTree | Callable[[Path], float] | None = None,
    **overrides: Any,
) -> optax.GradientTransformationExtraArgs:
    """The training optimizer: ``masked(sgd(schedule, ...) [+ lr multipliers])``.

    Args:
      config: an ml_collections ConfigDict, a mapping, any object with attributes, or None.
        Either the project's nested config (``config.optimizer.{lr, momentum, weight_decay,
        nesterov, schedule, milestones, gamma, warmup_epochs, per_step}`` and
        ``config.train.num_epochs``) or flat fields with the names below. Flat fields (missing
        ones take the paper's CIFAR defaults): ``learning_rate`` (0.1),
        ``momentum`` (0.9), ``weight_decay`` (5e-4), ``nesterov`` (False), ``lr_schedule``
        ('constant' | 'multistep' | 'cosine'), ``lr_boundaries`` ((50, 120, 200) epochs),
        ``lr_gamma`` (0.1), ``num_epochs``, ``warmup_epochs`` (0), ``lr_per_step`` (False).
      steps_per_epoch: optimizer steps per epoch (needed by every schedule but 'constant').
      lr_multipliers: per-parameter lr multipliers, see :func:`scale_by_lr_multipliers`.
      **overrides: any of the field names above; override the config.

    Returns:
      ``tx`` with ``tx.update(grads, opt_state, params, masks=masks)`` (masks may be None).
    """
    unknown = set(overrides) - set(_DEFAULTS)
    if unknown:
        raise ValueError(
            f"unknown optimizer option(s) {sorted(unknown)}; allowed: {sorted(_DEFAULTS)}"
        )
    g = lambda n: _get(config, overrides, n)  # noqa: E731
    schedule = schedule_from_config(config, steps_per_epoch=steps_per_epoch, **overrides)
    inner = sgd(
        schedule,
        momentum=g("momentum"),
        weight_decay=g("weight_decay"),
        nesterov=bool(g("nesterov")),
    )
    if lr_multipliers is not None:
        inner = optax.chain(inner, scale_by_lr_multipliers(lr_multipliers))
    return masked(inner)


# ----------------------------------------------------------------------------- invariant check


def masked_entries_are_zero(params: PyTree, opt_state: PyTree, masks: PyTree | None) -> bool:
    """True iff every masked entry of ``params`` and of every params-shaped leaf of ``opt_state``
    (e.g. the momentum buffer) is exactly 0.0. Host-side check for tests (not jittable).

    An ``opt_state`` leaf is matched to a param by the trailing dict keys of its path and its shape.
    """
    if masks is None:
        return True
    mleaves = _mask_leaves(params, masks)
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    by_path = {
        _path(kp): (np.asarray(x), None if m is None else np.asarray(m, bool))
        for (kp, x), m in zip(flat, mleaves)
    }
    for x, m in by_path.values():
        if m is not None and np.any(x[~m] != 0):
            return False
    for kp, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        path = _path(kp)
        for n in range(len(path), 0, -1):  # longest suffix that names a param
            hit = by_path.get(path[-n:])
            if hit is not None:
                x, m = hit
                if (
                    m is not None
                    and np.shape(leaf) == m.shape
                    and np.any(np.asarray(leaf)[~m] != 0)
                ):
                    return False
                break
    return True
