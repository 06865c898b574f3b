r"""Theorem 1 of the paper, pointwise: a fixed input pair (x, y), expectation over parameters.

Model: f(x) = (n d)^(-1/2) v^T relu(u x), no biases, u: [n, d]; each parameter is N(0, sigma^2)
with probability p and 0 otherwise, sigma^2 = 1/p.  Theta_GP = grad_v f(x) . grad_v f(y)
= (1/(n d)) sum_i relu(u_i.x) relu(u_i.y);  Theta_inf = K1(x, y) / d.

A unit that sees the input subset s contributes phi_s = sigma^2 K1(x_s, y_s) on average and
sigma^4 K2(x_s, y_s) in square, so with K~_l,p = sigma^(2l) sum_s p^|s| (1-p)^(d-|s|) K_l(x_s, y_s)::

    E[(Theta_GP - Theta_inf)^2] = (1/d^2) [K~1,p - K1]^2  +  (1/(d^2 n)) [K~2,p - K~1,p^2]
                                  `---- bias term ----'      `------ variance term ------'

K~ is computed exactly by enumerating the 2^d subsets (``masked_kernels_exact``, d <= 20) or by
sampling masks (``masked_kernels_sampled``: mean and standard error).  With sampled masks the
squared bias uses the unbiased estimate (K~1_hat - K1)^2 - se^2 and K~1^2 likewise, so a term
can come out slightly negative within its standard error.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from widesparse_jax.analysis.gp_arccos import j1, j2

__all__ = [
    "PointwiseTheorem1",
    "arccos_k1_k2",
    "masked_kernels_exact",
    "masked_kernels_sampled",
    "masked_terms_batch",
    "theorem1_pointwise",
]

MAX_EXACT_D = 20


class PointwiseTheorem1(NamedTuple):
    """Theorem 1 for one pair; ``total``, ``variance_term`` have the shape of ``n``."""

    k1: float  # K1(x, y) (dense)
    k1_tilde: float  # K~1,p
    k2_tilde: float  # K~2,p
    bias_term: float  # (1/d^2) (K~1,p - K1)^2
    variance_term: np.ndarray  # (1/(d^2 n)) (K~2,p - K~1,p^2)
    total: np.ndarray  # bias_term + variance_term
    bias_se: float  # standard error of bias_term (0 when exact)
    variance_se: np.ndarray  # standard error of variance_term (0 when exact)


def _check(x: np.ndarray, y: np.ndarray, p: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(
            f"x shape {x.shape} and y shape {y.shape} must match, [..., d] with d >= 1"
        )
    if not 0.0 < float(p) <= 1.0:
        raise ValueError(f"density p={p!r} must satisfy 0 < p <= 1")
    return x, y


def arccos_k1_k2(nx2, ny2, xy) -> tuple[np.ndarray, np.ndarray]:
    """K1, K2 from |x|^2, |y|^2 and x.y (any broadcastable shapes); 0 where a norm is 0."""
    nx2, ny2, xy = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (nx2, ny2, xy)))
    prod = nx2 * ny2
    ok = prod > 0
    root = np.sqrt(np.where(ok, prod, 1.0))
    theta = np.arccos(np.clip(np.where(ok, xy / root, 0.0), -1.0, 1.0))
    k1 = np.where(ok, root * j1(theta) / (2.0 * np.pi), 0.0)
    k2 = np.where(ok, prod * j2(theta) / (2.0 * np.pi), 0.0)
    return k1, k2


def _masked_stats(masks: np.ndarray, x: np.ndarray, y: np.ndarray, p: float):
    """Per-mask sigma^2 K1(x_s, y_s), sigma^4 K2(x_s, y_s); masks [M, d], x, y [P, d] -> [M, P]."""
    m = masks.astype(float)
    k1, k2 = arccos_k1_k2(m @ (x * x).T, m @ (y * y).T, m @ (x * y).T)
    return k1 / p, k2 / (p * p)


def masked_kernels_exact(x, y, p: float) -> tuple[float, float, float]:
    """(K1, K~1,p, K~2,p) for one pair x, y: [d], by enumerating all 2^d subsets (d <= 20)."""
    x, y = _check(x, y, p)
    d = x.shape[-1]
    if x.ndim != 1 or d > MAX_EXACT_D:
        raise ValueError(f"exact enumeration needs one pair with d <= {MAX_EXACT_D}, got {x.shape}")
    codes = np.arange(2**d)[:, None]
    masks = ((codes >> np.arange(d)[None, :]) & 1).astype(bool)  # [2^d, d]
    size = masks.sum(axis=1)
    weight = p**size * (1.0 - p) ** (d - size)
    phi1, phi2 = _masked_stats(masks, x[None], y[None], p)
    k1, _ = arccos_k1_k2(x @ x, y @ y, x @ y)
    return float(k1), float(weight @ phi1[:, 0]), float(weight @ phi2[:, 0])


def masked_terms_batch(x, y, p: float, uniforms: np.ndarray) -> dict[str, np.ndarray]:
    """Sampled Theorem-1 numerators for P pairs; masks s = uniforms < p (common random numbers).

    Args:
      x, y: [P, d] pairs.  uniforms: [M, d] in [0, 1) (M >= 2 masks).
    Returns dict of [P] arrays: k1, k1_tilde, k2_tilde, bias_num = (K~1 - K1)^2 (unbiased),
      var_num = K~2 - K~1^2 (unbiased), bias_num_se, var_num_se (delta method over masks).
    """
    x, y = _check(x, y, p)
    if x.ndim != 2 or uniforms.ndim != 2 or uniforms.shape[1] != x.shape[1] or len(uniforms) < 2:
        raise ValueError(
            f"need x, y [P, d] and uniforms [M >= 2, d]; got {x.shape}, {uniforms.shape}"
        )
    num = len(uniforms)
    phi1, phi2 = _masked_stats(uniforms < p, x, y, p)
    k1, _ = arccos_k1_k2(np.sum(x * x, -1), np.sum(y * y, -1), np.sum(x * y, -1))
    m1, m2 = phi1.mean(0), phi2.mean(0)
    se1_sq = phi1.var(0, ddof=1) / num
    diff = m1 - k1
    g = phi2 - 2.0 * m1 * phi1  # influence function of K~2 - K~1^2
    return {
        "k1": k1,
        "k1_tilde": m1,
        "k2_tilde": m2,
        "bias_num": diff * diff - se1_sq,
        "var_num": m2 - m1 * m1 + se1_sq,
        "bias_num_se": 2.0 * np.abs(diff) * np.sqrt(se1_sq),
        "var_num_se": g.std(0, ddof=1) / np.sqrt(num),
    }


def masked_kernels_sampled(x, y, p: float, rng: np.random.Generator, num_masks: int = 4096):
    """Sampled Theorem-1 numerators for one pair x, y: [d] (``masked_terms_batch``, P = 1)."""
    x, y = _check(x, y, p)
    if x.ndim != 1:
        raise ValueError(f"one pair expected, got x shape {x.shape}")
    out = masked_terms_batch(x[None], y[None], p, rng.random((int(num_masks), x.shape[0])))
    return {k: float(v[0]) for k, v in out.items()}


def theorem1_pointwise(x, y, p: float, n, rng=None, num_masks: int = 4096) -> PointwiseTheorem1:
    """Theorem 1 at one pair x, y: [d]; exact for d <= 20 unless ``rng`` is given (then sampled)."""
    x, y = _check(x, y, p)
    d = x.shape[-1]
    n = np.asarray(n, dtype=float)
    if np.any(n <= 0):
        raise ValueError(f"width n={n!r} must be > 0")
    if rng is None:
        k1, t1, t2 = masked_kernels_exact(x, y, p)
        bias, var, bias_se, var_se = (t1 - k1) ** 2, t2 - t1 * t1, 0.0, 0.0
    else:
        s = masked_kernels_sampled(x, y, p, rng, num_masks)
        k1, t1, t2 = s["k1"], s["k1_tilde"], s["k2_tilde"]
        bias, var, bias_se, var_se = s["bias_num"], s["var_num"], s["bias_num_se"], s["var_num_se"]
    bias_term = bias / d**2
    var_term = var / (d**2 * n)
    return PointwiseTheorem1(
        k1, t1, t2, bias_term, var_term, bias_term + var_term, bias_se / d**2, var_se / (d**2 * n)
    )
