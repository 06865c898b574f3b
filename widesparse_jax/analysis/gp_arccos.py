r"""Closed-form arc-cosine kernels of a one-hidden-layer ReLU net (Cho & Saul), no biases.

K1(x, y) = E_w[relu(w.x) relu(w.y)]       = |x||y| J1(theta) / (2 pi),   w ~ N(0, I_d)
K2(x, y) = E_w[relu(w.x)^2 relu(w.y)^2]   = |x|^2 |y|^2 J2(theta) / (2 pi)

``arccos_kernel`` returns the dense infinite-width GP kernel ``Theta_inf = K1 / d`` of
f(x) = (n d)^(-1/2) v^T relu(u x); ``dense_pair_variance`` its exact width-n variance at p = 1.
Also: the finite-width kernel of a sampled first layer and the Taylor series of
kappa(rho) = J1(arccos rho) / (2 pi) used by the Gaussian-input closed form (gp_gaussian).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

ONE_MINUS_INV_PI2 = 1.0 - 1.0 / math.pi**2


# --------------------------------------------------------------------------- validation
def _check_dims(n: float | None = None, p: float | None = None, d: int | None = None) -> None:
    if d is not None and (int(d) != d or d < 1):
        raise ValueError(f"input dimension d={d!r} must be a positive integer")
    if p is not None and not (0.0 < float(p) <= 1.0):
        raise ValueError(f"density p={p!r} must satisfy 0 < p <= 1")
    if n is not None and np.any(np.asarray(n, dtype=float) <= 0):
        raise ValueError(f"width n={n!r} must be > 0")


# --------------------------------------------------------------------------- arc-cosine functions
def j1(theta):
    """J1(theta) = sin(theta) + (pi - theta) cos(theta); any array shape (numpy or jax)."""
    xp = jnp if isinstance(theta, jax.Array) else np
    return xp.sin(theta) + (xp.pi - theta) * xp.cos(theta)


def j2(theta):
    """J2(theta) = 3 sin(theta) cos(theta) + (pi - theta)(1 + 2 cos^2(theta)); any shape."""
    xp = jnp if isinstance(theta, jax.Array) else np
    c = xp.cos(theta)
    return 3.0 * xp.sin(theta) * c + (xp.pi - theta) * (1.0 + 2.0 * c * c)


def arccos_kernel(x: jax.Array, xp_: jax.Array) -> jax.Array:
    """Infinite-width dense GP kernel K(x, x') = |x||x'| J1(theta) / (2 pi d).

    Args:
      x, xp_: [..., d] inputs (paired along the leading axes).
    Returns:
      [...] kernel values.
    """
    x = jnp.asarray(x)
    xp_ = jnp.asarray(xp_)
    if x.shape != xp_.shape:
        raise ValueError(f"x shape {x.shape} and x' shape {xp_.shape} must match")
    d = x.shape[-1]
    nx = jnp.linalg.norm(x, axis=-1)
    nxp = jnp.linalg.norm(xp_, axis=-1)
    denom = jnp.maximum(nx * nxp, jnp.finfo(x.dtype).tiny)
    cos = jnp.clip(jnp.sum(x * xp_, axis=-1) / denom, -1.0, 1.0)
    return nx * nxp * j1(jnp.arccos(cos)) / (2.0 * jnp.pi * d)


# --------------------------------------------------------------------------- finite kernel
def sample_sparse_first_layer(
    key: jax.Array, n: int, d: int, p: float, dtype=jnp.float32
) -> jax.Array:
    """Effective first-layer matrix U = (M * W) / sqrt(d p), shape [n, d].

    M ~ Bernoulli(p) per entry, W ~ N(0, 1).  p = 1 gives a dense layer.
    """
    _check_dims(n=n, p=p, d=d)
    km, kw = jax.random.split(key)
    mask = jax.random.bernoulli(km, p, (n, d))
    w = jax.random.normal(kw, (n, d), dtype)
    return jnp.where(mask, w, 0.0) / jnp.sqrt(jnp.asarray(d * p, dtype))


def finite_gp_kernel(u: jax.Array, x: jax.Array, xp_: jax.Array) -> jax.Array:
    """Finite-width GP kernel Theta(x, x') = grad_V f(x) . grad_V f(x').

    Args:
      u: [n, d] effective first layer (``sample_sparse_first_layer``).
      x, xp_: [P, d] paired inputs.
    Returns:
      [P] values (1/n) sum_i relu(u_i.x) relu(u_i.x').
    """
    if u.ndim != 2 or x.shape[-1] != u.shape[1] or x.shape != xp_.shape:
        raise ValueError(f"shapes u {u.shape}, x {x.shape}, x' {xp_.shape} are incompatible")
    h = jax.nn.relu(x @ u.T)
    hp = jax.nn.relu(xp_ @ u.T)
    return jnp.mean(h * hp, axis=-1)


# --------------------------------------------------------------------------- series coefficients
@functools.lru_cache(maxsize=8)
def relu_kernel_taylor(num: int) -> np.ndarray:
    """Taylor coefficients a_0..a_{num-1} of kappa(rho) = J1(arccos rho) / (2 pi)."""
    a = np.zeros(num)
    a[0] = 1.0 / (2 * np.pi)
    if num > 1:
        a[1] = 0.25
    if num > 2:
        a[2] = 1.0 / (4 * np.pi)
    for k in range(2, num - 2, 2):
        a[k + 2] = a[k] * (k - 1) ** 2 / ((k + 1) * (k + 2))
    return a


@functools.lru_cache(maxsize=8)
def kappa_sq_even_coeffs(m_max: int) -> np.ndarray:
    """e_{2m}, m = 0..m_max: even Taylor coefficients of kappa(rho)^2 (all >= 0)."""
    a = relu_kernel_taylor(2 * m_max + 1)
    sq = np.convolve(a, a)[: 2 * m_max + 1]
    return sq[0::2].copy()


def dense_pair_variance(x: np.ndarray, xp_: np.ndarray, n) -> np.ndarray:
    """E_W[(Theta - K)^2] for a *fixed* pair at p = 1 (exact, via J1 and J2).

    = (1/n) [ |x|^2 |x'|^2 J2(theta) / (2 pi d^2) - K(x, x')^2 ];  x, x': [..., d].
    """
    x = np.asarray(x, float)
    xp_ = np.asarray(xp_, float)
    d = x.shape[-1]
    nx2 = np.sum(x * x, -1)
    nxp2 = np.sum(xp_ * xp_, -1)
    cos = np.clip(np.sum(x * xp_, -1) / np.sqrt(nx2 * nxp2), -1.0, 1.0)
    th = np.arccos(cos)
    k = np.sqrt(nx2 * nxp2) * j1(th) / (2 * np.pi * d)
    fourth = nx2 * nxp2 * j2(th) / (2 * np.pi * d * d)
    return (fourth - k * k) / np.asarray(n, float)
