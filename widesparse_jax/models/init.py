"""Initializers matching PyTorch's defaults (and the baseline's variants).

PyTorch initializes ``nn.Conv2d`` and ``nn.Linear`` weights with
``kaiming_uniform_(a=sqrt(5))``, which is ``U(-1/sqrt(fan_in), +1/sqrt(fan_in))``, and their
biases with ``U(-1/sqrt(fan_in), +1/sqrt(fan_in))``. ``fan_in`` = kh*kw*Cin for a conv kernel,
``in_features`` for a dense kernel. In Flax layouts (conv HWIO, dense (in, out)) that is the
product of every kernel dimension but the last.

Sparse-aware scaling (bound / sqrt(density)) is NOT done here; it is
``widesparse_jax.masks.rescale_for_density`` applied after the masks are drawn.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]

DISTRIBUTIONS = ("uniform", "normal")


def kernel_fan_in(shape: Sequence[int]) -> int:
    """fan_in of a Flax kernel: product of all dims but the last (HWIO conv, (in, out) dense)."""
    if len(shape) < 2:
        raise ValueError(f"kernel shape must have ndim >= 2, got {tuple(shape)}")
    return int(math.prod(shape[:-1]))


def _check_distribution(distribution: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"init distribution {distribution!r} unknown; allowed: {DISTRIBUTIONS}")


def scaled_init(scale: float, distribution: str = "uniform") -> Initializer:
    """Initializer with a fixed scale: U(-scale, scale) or N(0, scale^2)."""
    _check_distribution(distribution)

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        if distribution == "uniform":
            return jax.random.uniform(key, shape, dtype, -scale, scale)
        return scale * jax.random.normal(key, shape, dtype)

    return init


def torch_kernel_init(distribution: str = "uniform") -> Initializer:
    """PyTorch default kernel init: U(+-1/sqrt(fan_in)) ('uniform') or N(0, 1/fan_in) ('normal').

    fan_in is read from the kernel shape (all dims but the last).
    """
    _check_distribution(distribution)

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        scale = 1.0 / math.sqrt(kernel_fan_in(shape))
        return scaled_init(scale, distribution)(key, shape, dtype)

    return init


def torch_bias_init(fan_in: int, distribution: str = "uniform") -> Initializer:
    """PyTorch default bias init U(+-1/sqrt(fan_in)) (or N(0, 1/fan_in)); fan_in of the layer."""
    if fan_in < 1:
        raise ValueError(f"fan_in must be >= 1, got {fan_in}")
    return scaled_init(1.0 / math.sqrt(fan_in), distribution)
