r"""Exact D(n, p, d) for standard Gaussian inputs, averaged over pairs (derivation: gp_kernel).

D(n, p, d) = E_{x, y ~ N(0, I_d)} E_{mask, W}[(Theta(x, y) - Theta_inf(x, y))^2]
           = (A - B) / n + (B - KK),
plus its large-d expansion, the numerical argmin over p at fixed N = n p d, and a Monte Carlo
of the actual network on fresh Gaussian pairs.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize, stats

from widesparse_jax.analysis.gp_arccos import (
    ONE_MINUS_INV_PI2,
    _check_dims,
    arccos_kernel,
    kappa_sq_even_coeffs,
)


# --------------------------------------------------------------------------- exact distance
class GPDistance(NamedTuple):
    """D = variance / n + bias, with the pieces of the closed form."""

    total: np.ndarray  # D(n, p, d), same shape as n
    variance: float  # A - B  (multiplies 1/n)
    bias: float  # B - KK (n-independent)
    a: float  # E[phi^2]
    b: float  # E[phi_1 phi_2] (two independent sparse rows)
    kk: float  # E[K^2] (= C)
    series_error: float  # bound on the truncation error of B and KK


def _kk_term(d: int, e: np.ndarray) -> tuple[float, float]:
    i = np.arange(len(e) - 1)
    ratios = np.concatenate([[1.0], np.cumprod((0.5 + i) / (d / 2.0 + i))])
    s = float(np.sum(e * ratios))
    tail = (0.125 - float(np.sum(e))) * ratios[-1]
    return s + 0.5 * tail, 0.5 * abs(tail)


@functools.lru_cache(maxsize=4096)
def _variance_bias(p: float, d: int, m_max: int, tol: float) -> tuple[float, ...]:
    e = kappa_sq_even_coeffs(m_max)
    a_term = 0.25 + (3.0 - p) / (4.0 * d * p)
    kk, kk_err = _kk_term(d, e)
    if p == 1.0:  # every row is dense: B = KK exactly
        return a_term - kk, 0.0, a_term, kk, kk, kk_err
    # k1 ~ Bin(d, p), truncated to its numerically non-zero support, k1 >= 1.
    k1_all = np.arange(d + 1)
    pk1_all = stats.binom.pmf(k1_all, d, p)
    keep = (pk1_all > 1e-18 * pk1_all.max()) & (k1_all >= 1)
    k1 = k1_all[keep].astype(float)
    pk1 = pk1_all[keep]
    jmax = int(k1.max())
    jj = np.arange(jmax + 1, dtype=float)
    pj = stats.binom.pmf(jj[None, :], k1[:, None], p)  # [r, jmax+1]
    bb = np.arange(d + 1, dtype=float)
    pb = stats.binom.pmf(bb[None, :], (d - k1)[:, None], p)  # [r, d+1]
    length = jmax + d + 1
    nfft = 1 << int(np.ceil(np.log2(length)))
    fb = np.fft.rfft(pb, nfft, axis=1)
    k2 = np.arange(length, dtype=float)
    g = np.ones_like(pj)  # prod_{i<m} (j/2+i)/(k1/2+i)
    h = np.where(k2 > 0, 1.0, 0.0)  # prod_{i<m} (1/2+i)/(k2/2+i); k2 = 0 never counts
    w_k1 = pk1 * k1 / (d * p) ** 2
    total = 0.0
    last = 0.0
    m_used = m_max
    for m in range(m_max + 1):
        conv = np.fft.irfft(np.fft.rfft(pj * g, nfft, axis=1) * fb, nfft, axis=1)[:, :length]
        t_m = float(np.sum(w_k1 * np.sum(conv * (k2 * h)[None, :], axis=1)))
        total += e[m] * t_m
        last = t_m
        if m >= 4 and e[m] * t_m < tol * total:
            m_used = m
            break
        g = g * (jj[None, :] / 2.0 + m) / (k1[:, None] / 2.0 + m)
        h = h * np.where(k2 > 0, (0.5 + m) / (k2 / 2.0 + m + (k2 == 0)), 0.0)
    tail = (0.125 - float(np.sum(e[: m_used + 1]))) * last  # T_m is non-increasing in m
    b_term = total + 0.5 * tail
    err = 0.5 * abs(tail) + kk_err + tol * abs(total)
    return a_term - b_term, b_term - kk, a_term, b_term, kk, err


def gp_distance_exact(n, p: float, d: int, m_max: int = 3000, tol: float = 1e-13) -> GPDistance:
    """Exact D(n, p, d) (module docstring).  ``n`` scalar or array (real values allowed)."""
    _check_dims(n=n, p=p, d=d)
    var, bias, a_term, b_term, kk, err = _variance_bias(float(p), int(d), int(m_max), float(tol))
    n_arr = np.asarray(n, dtype=float)
    return GPDistance(var / n_arr + bias, var, bias, a_term, b_term, kk, err)


def gp_distance_asymptotic(n, p: float, d: int):
    """Large-d expansion of the exact D (module docstring), to compare with the paper's."""
    _check_dims(n=n, p=p, d=d)
    n = np.asarray(n, dtype=float)
    var = 0.25 * ONE_MINUS_INV_PI2 + ((3.0 / p - 1.0) / 4.0 - 1.0 / 16.0 - 0.25 / np.pi**2) / d
    return var / n + (1.0 / p**2 - 1.0) / (4.0 * np.pi**2 * d**3)


def _minimize_log_p(fun, p_lo: float, p_hi: float, grid: int = 200) -> float:
    logs = np.linspace(np.log(p_lo), np.log(p_hi), grid)
    vals = np.array([fun(np.exp(s)) for s in logs])
    i = int(np.argmin(vals))
    if i in (0, grid - 1):
        return float(np.exp(logs[i]))
    res = optimize.minimize_scalar(
        lambda s: fun(np.exp(s)),
        bounds=(logs[i - 1], logs[i + 1]),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))


def optimal_density_exact(
    num_weights: float, d: int, p_min: float | None = None, grid: int = 60
) -> float:
    """argmin_p of the exact D(N/(p d), p, d) for p in [p_min, 1] (default p_min = 1/d)."""
    _check_dims(d=d)
    if num_weights <= 0:
        raise ValueError(f"weight count N={num_weights!r} must be > 0")
    p_lo = p_min if p_min is not None else 1.0 / d

    def fun(p):
        return float(gp_distance_exact(num_weights / (p * d), min(p, 1.0), d).total)

    return _minimize_log_p(fun, p_lo, 1.0, grid=grid)


# --------------------------------------------------------------------------- Monte Carlo
@functools.partial(jax.jit, static_argnames=("n", "d", "num_pairs", "num_inits", "chunk"))
def _mc_per_init(key, p, *, n: int, d: int, num_pairs: int, num_inits: int, chunk: int):
    num_chunks = -(-n // chunk)
    scale = 1.0 / jnp.sqrt(d * p)

    def one_init(k):
        kx, kxp, knet = jax.random.split(k, 3)
        x = jax.random.normal(kx, (num_pairs, d))
        xp_ = jax.random.normal(kxp, (num_pairs, d))

        def body(c, acc):
            kc = jax.random.fold_in(knet, c)
            km, kw = jax.random.split(kc)
            mask = jax.random.bernoulli(km, p, (chunk, d))
            valid = (c * chunk + jnp.arange(chunk)) < n
            u = jnp.where(mask & valid[:, None], jax.random.normal(kw, (chunk, d)), 0.0) * scale
            return acc + jnp.sum(jax.nn.relu(x @ u.T) * jax.nn.relu(xp_ @ u.T), axis=1)

        theta = jax.lax.fori_loop(0, num_chunks, body, jnp.zeros(num_pairs)) / n
        return jnp.mean((theta - arccos_kernel(x, xp_)) ** 2)

    return jax.lax.map(one_init, jax.random.split(key, num_inits))


def monte_carlo_distance(
    key: jax.Array,
    n: int,
    p: float,
    d: int,
    num_pairs: int = 1000,
    num_inits: int = 10,
    chunk: int = 2048,
) -> tuple[float, float]:
    """Monte Carlo D: ``num_inits`` networks (mask + weights), each on ``num_pairs`` fresh pairs.

    Returns (mean, standard error); the SE is over the per-network means, which are i.i.d.
    (``num_inits >= 2`` required).
    """
    _check_dims(n=n, p=p, d=d)
    if int(n) != n:
        raise ValueError(f"Monte Carlo width n={n!r} must be an integer")
    if num_inits < 2 or num_pairs < 1:
        raise ValueError(
            f"need num_inits >= 2 (got {num_inits}) and num_pairs >= 1 (got {num_pairs})"
        )
    per = np.asarray(
        _mc_per_init(
            key,
            jnp.float32(p),
            n=int(n),
            d=int(d),
            num_pairs=int(num_pairs),
            num_inits=int(num_inits),
            chunk=int(min(chunk, n)),
        ),
        dtype=float,
    )
    return float(per.mean()), float(per.std(ddof=1) / np.sqrt(num_inits))
