"""Learning-rate schedules ``step -> lr`` as the PyTorch baseline steps them (once per epoch).

* ``'constant'``;
* ``'multistep'``: ``base_lr * gamma**k``, ``k`` = milestones (epochs) reached: it changes at
  exactly the first step of a milestone epoch (= ``torch MultiStepLR`` stepped per epoch);
* ``'cosine'``: ``base_lr * (1 + cos(pi * e / num_epochs)) / 2`` for epoch ``e``, constant
  within an epoch (= ``torch CosineAnnealingLR(T_max=num_epochs)`` stepped per epoch), 0
  past ``num_epochs``; ``per_step=True`` anneals smoothly per step instead;
* an optional linear warmup of ``warmup_epochs`` epochs in front of any of them.

Also the small number checks shared with ``optim``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from widesparse_jax.choices import SCHEDULES

PAPER_CIFAR_BOUNDARIES = (50, 120, 200)

__all__ = ["SCHEDULES", "PAPER_CIFAR_BOUNDARIES", "make_schedule"]


# ----------------------------------------------------------------------------- checks


def check_number(name: str, value: Any) -> float:
    """``value`` as a finite float, else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_nonneg(name: str, value: Any) -> float:
    value = check_number(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def check_pos_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_warmup(warmup_epochs: Any) -> int:
    if (
        isinstance(warmup_epochs, bool)
        or not isinstance(warmup_epochs, (int, np.integer))
        or warmup_epochs < 0
    ):
        raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
    return int(warmup_epochs)


def _check_boundaries(boundaries: Any, warmup_epochs: int) -> tuple:
    try:
        bounds = tuple(boundaries)
    except TypeError:
        raise ValueError(f"boundaries must be a sequence of epochs, got {boundaries!r}") from None
    for b in bounds:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise ValueError(f"boundaries must be positive integer epochs, got {bounds!r}")
    if any(b1 >= b2 for b1, b2 in zip(bounds, bounds[1:])):
        raise ValueError(f"boundaries must be strictly increasing, got {bounds!r}")
    if bounds and bounds[0] < warmup_epochs:
        raise ValueError(
            f"boundaries {bounds!r} start before the end of warmup (warmup_epochs={warmup_epochs})"
        )
    return bounds


# ----------------------------------------------------------------------------- shapes


def _constant(base_lr: float) -> optax.Schedule:
    def schedule(step):
        return jnp.full((), base_lr, jnp.float32)

    return schedule


def _multistep(base_lr: float, spe: int, bounds: tuple, gamma: float) -> optax.Schedule:
    # lr values computed in float64 like torch's python-float lr, then rounded once.
    values = np.array([base_lr * gamma**k for k in range(len(bounds) + 1)], np.float32)
    bound_steps = np.array([b * spe for b in bounds], np.int32)

    def schedule(step):
        k = jnp.sum(jnp.asarray(step)[..., None] >= bound_steps, axis=-1) if len(bounds) else 0
        return jnp.asarray(values)[k]

    return schedule


def _cosine(base_lr: float, spe: int, t_max: int, start: int, per_step: bool) -> optax.Schedule:
    if per_step:
        total = t_max * spe

        def smooth(step):
            t = jnp.clip(jnp.asarray(step) - start, 0, total).astype(jnp.float32)
            return (0.5 * base_lr * (1.0 + jnp.cos(jnp.pi * t / total))).astype(jnp.float32)

        return smooth
    table = np.array(
        [0.5 * base_lr * (1.0 + math.cos(math.pi * e / t_max)) for e in range(t_max + 1)],
        np.float32,
    )

    def per_epoch(step):
        e = jnp.clip((jnp.asarray(step) - start) // spe, 0, t_max)
        return jnp.asarray(table)[e]

    return per_epoch


def _with_warmup(main: optax.Schedule, base_lr: float, warm: int) -> optax.Schedule:
    def schedule(step):
        step = jnp.asarray(step)
        ramp = (base_lr * (step + 1).astype(jnp.float32) / warm).astype(jnp.float32)
        return jnp.where(step < warm, ramp, main(step))

    return schedule


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
      boundaries: ``'multistep'`` epoch milestones, strictly increasing positive ints
        (default: the paper's CIFAR setting (50, 120, 200)); must be >= ``warmup_epochs``.
      gamma: ``'multistep'`` decay factor (> 0).
      warmup_epochs: linear warmup length (epochs, int >= 0): for ``s < W = warmup_epochs *
        steps_per_epoch``, ``lr = base_lr * (s + 1) / W``; then the main schedule continues
        (``'multistep'`` at its absolute epochs, ``'cosine'`` over the remaining
        ``num_epochs - warmup_epochs`` epochs).
      per_step: ``'cosine'`` only: anneal per step instead of per epoch.

    Returns:
      A function of an int scalar (traceable) returning a float32 scalar.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")
    base_lr = check_nonneg("base_lr (learning rate)", base_lr)
    warmup_epochs = _check_warmup(warmup_epochs)
    if per_step and name != "cosine":
        raise ValueError(
            f"per_step=True applies only to the 'cosine' schedule, got schedule {name!r}"
        )
    if name != "constant" or warmup_epochs > 0:
        steps_per_epoch = check_pos_int("steps_per_epoch", steps_per_epoch)
    if name == "constant":
        main = _constant(base_lr)
    elif name == "multistep":
        gamma = check_number("gamma", gamma)
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        bounds = _check_boundaries(boundaries, warmup_epochs)
        main = _multistep(base_lr, steps_per_epoch, bounds, gamma)
    else:
        num_epochs = check_pos_int("num_epochs", num_epochs)
        if warmup_epochs >= num_epochs:
            raise ValueError(
                f"warmup_epochs ({warmup_epochs}) must be < num_epochs ({num_epochs}) for cosine"
            )
        start = warmup_epochs * steps_per_epoch
        main = _cosine(base_lr, steps_per_epoch, num_epochs - warmup_epochs, start, per_step)
    if warmup_epochs == 0:
        return main
    return _with_warmup(main, base_lr, warmup_epochs * steps_per_epoch)
