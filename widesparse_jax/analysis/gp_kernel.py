r"""GP-kernel theory of a sparse, wide, one-hidden-layer ReLU network.

Model (no biases), input dimension ``d``, width ``n``, first-layer density ``p``::

    f(x) = (1/sqrt(n)) * sum_i V_i relu(z_i(x)),    z_i(x) = sum_j M_ij W_ij x_j / sqrt(d p)

with ``W_ij ~ N(0, 1)``, ``V_i ~ N(0, 1)`` and a static random mask ``M_ij ~ Bernoulli(p)``
drawn independently for every entry (so a hidden unit has ``k_i ~ Binomial(d, p)`` inputs and
the expected number of first-layer weights is ``N = n p d``).  The ``1/sqrt(d p)`` factor is
the paper's sparse-aware init (pre-activation variance of a dense layer).

Kernels
-------
* finite-width sparse GP kernel (last layer only)::

      Theta(x, x') = grad_V f(x) . grad_V f(x') = (1/n) sum_i relu(z_i(x)) relu(z_i(x'))

* infinite-width *dense* kernel (arc-cosine kernel of degree 1, Cho & Saul)::

      K(x, x') = E_w[relu(w.x) relu(w.x')] / d = |x| |x'| J1(theta) / (2 pi d),
      J1(theta) = sin(theta) + (pi - theta) cos(theta),   cos(theta) = x.x' / (|x||x'|)

  With the same normalisation ``E[relu(u)^2 relu(v)^2] = s_u^2 s_v^2 J2(theta) / (2 pi)``,
  ``J2(theta) = 3 sin(theta) cos(theta) + (pi - theta)(1 + 2 cos^2(theta))``.

Distance (our definition; it is the paper's Theorem-1 quantity as described in PAPERS.md:
the expected squared difference between the finite sparse kernel and the infinite-width dense
kernel, averaged over masks, weights and input pairs)::

    D(n, p, d) = E_{x, x'} E_{M, W} [ (Theta(x, x') - K(x, x'))^2 ],   x, x' ~ N(0, I_d) iid.

Inputs are standard Gaussian (|x|^2 ~ d, i.e. "radius sqrt(d)" on average): with Gaussian
inputs the input average can be done *first*, which makes D exactly computable.

Derivation of the exact closed form
-----------------------------------
Let ``u_i = (M_i * W_i) / sqrt(d p)`` (row i) and ``phi_i = relu(u_i.x) relu(u_i.x')``.
The ``phi_i`` are i.i.d. over i given (x, x'), hence

    E[Theta^2] = A / n + (1 - 1/n) B,   A = E[phi_1^2],   B = E[phi_1 phi_2],
    D = E[Theta^2] - 2 C + KK,          C = E[phi_1 K],    KK = E[K^2].

1. ``A`` (uses J2).  Given the mask row with k active inputs, ``E_w[phi^2 | x, x']`` is
   ``a b J2(theta_m) / (2 pi)`` with ``a = |m*x|^2/(dp)`` etc. -- the fourth moment of ReLU
   features.  Averaging over Gaussian inputs instead *first* (given u, ``u.x`` and ``u.x'`` are
   independent ``N(0, |u|^2)``, ``E relu(s)^2 = |u|^2/2``) gives ``E|u|^4 / 4`` and
   ``|u|^2 ~ chi2_k / (dp)``, so (both routes agree; the test checks
   ``E_theta J2 = pi (k+2) / (2k)`` for the angle of two Gaussian vectors in R^k)::

       A = E_k[k (k + 2)] / (4 d^2 p^2) = 1/4 + (3 - p) / (4 d p).

   The mask enters through ``Var(k) = d p (1 - p)``: the ``(1/p - 1)`` terms
   (``(3-p)/(dp) = 2/d + 3 (1/p - 1)/d``).
2. ``B, C, KK``.  Averaging over x, x' given two rows ``u1, u2``:
   ``E[relu(u1.x) relu(u2.x)] = |u1||u2| kappa(rho)`` with ``rho = cos angle(u1, u2)`` and
   ``kappa(rho) = J1(arccos rho) / (2 pi) = sum_k a_k rho^k`` (``a_0 = 1/2pi``, ``a_1 = 1/4``,
   ``a_{k+2} = a_k (k-1)^2 / ((k+1)(k+2))`` for even ``k >= 2``, ``a_2 = 1/4pi``; odd ``k >= 3``: 0).
   So every one of B, C, KK is ``E[|u1|^2 |u2|^2 kappa(rho)^2]`` for a pair of independent
   random vectors: (sparse, sparse), (sparse, dense), (dense, dense).  Write
   ``kappa^2 = sum_m e_{2m} rho^{2m} + odd terms`` (odd terms average to zero).
   For two masked Gaussian rows with k1, k2 active inputs and j common ones,
   ``rho = cos(phi_j) sqrt(beta1 beta2)`` with ``phi_j`` the angle of two Gaussian vectors in
   R^j and ``beta1 ~ Beta(j/2, (k1-j)/2)``, ``beta2 ~ Beta(j/2, (k2-j)/2)``, all independent of
   the norms (``|u1|^2 ~ chi2_k1/(dp)``).  Their moments are products, giving::

       B  = sum_m e_{2m} E[ k1 k2 prod_{i<m} (1/2+i)(j/2+i) / ((k1/2+i)(k2/2+i)) ] / (d p)^2,
       KK = C = sum_m e_{2m} prod_{i<m} (1/2+i) / (d/2+i),

   with ``k1 ~ Bin(d, p)``, ``j | k1 ~ Bin(k1, p)``, ``k2 = j + b``, ``b | k1 ~ Bin(d-k1, p)``
   (``C = KK`` exactly: the sparse row's moments do not depend on k1).  The binomial sums
   are done exactly (batched convolution); the m-series is summed to ``m_max`` with the
   remainder bounded using ``sum_m e_{2m} = (kappa(1)^2 + kappa(-1)^2)/2 = 1/8``.
3. Hence, exactly::

       D(n, p, d) = (A - B) / n  +  (B - KK)
                    `-- variance --'  `- bias (n-independent, >= 0, = 0 at p = 1) -'

Large-d expansion (``e_0 = 1/4pi^2``, ``e_2 = 1/16 + 1/4pi^2``, ``e_4 = 1/12pi^2``)::

    A - B = (1/4)(1 - 1/pi^2) + [ (3/p - 1)/4 - 1/16 - 1/(4 pi^2) ] / d + O(1/d^2)
    B - KK = (1/p^2 - 1) / (4 pi^2 d^3) + O(1/(p^3 d^4))
    D ~ (1/(4n)) [ (1 - 1/pi^2) + (3/p - 5/4 - 1/pi^2) / d ] + (1/p^2 - 1) / (4 pi^2 d^3)

Comparison with the paper's approximation (see ``gp_distance_paper``)::

    D_paper = (1/(4d)) [ (1/4)(1/sqrt(p) - 1)^2 + (d/n)(1 - 1/pi^2) ]

* The width term ``(1 - 1/pi^2)/(4n)`` is exactly our leading variance term
  (``Var[relu(u) relu(v)]`` at ``theta = pi/2``: ``J2/2pi - J1^2/4pi^2 = (1 - 1/pi^2)/4``).
* The mask term does NOT follow from this model: here the mask adds
  ``3 (1/p - 1)/(4 n d)`` to the variance (it averages out over the n independent mask rows)
  and an n-independent bias of order ``(1/p^2 - 1)/(4 pi^2 d^3)``, while the paper has an
  n-independent ``(1/sqrt(p) - 1)^2 / (16 d)``.  Consequently at fixed ``N = n p d`` the exact
  optimum is at much lower density (of order one to a few inputs per unit) than the paper's
  ``p* ~ sqrt(N / (4 d^2 (1 - 1/pi^2)))``.  Both are reported side by side by the experiment.

All ``n`` may be real-valued in the closed forms (D is affine in 1/n).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize, stats

__all__ = [
    "j1",
    "j2",
    "arccos_kernel",
    "sample_sparse_first_layer",
    "finite_gp_kernel",
    "relu_kernel_taylor",
    "kappa_sq_even_coeffs",
    "GPDistance",
    "gp_distance_exact",
    "gp_distance_asymptotic",
    "gp_distance_paper",
    "dense_pair_variance",
    "optimal_density_paper",
    "optimal_density_paper_asymptotic",
    "optimal_density_exact",
    "monte_carlo_distance",
]

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


def gp_distance_paper(n, p, d: int):
    """Paper's approximation D ~ (1/4d)[ (1/4)(1/sqrt(p) - 1)^2 + (d/n)(1 - 1/pi^2) ]."""
    _check_dims(n=n, d=d)
    p = np.asarray(p, dtype=float)
    if np.any((p <= 0) | (p > 1)):
        raise ValueError(f"density p={p!r} must satisfy 0 < p <= 1")
    n = np.asarray(n, dtype=float)
    return (0.25 * (1.0 / np.sqrt(p) - 1.0) ** 2 + (d / n) * ONE_MINUS_INV_PI2) / (4.0 * d)


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


# --------------------------------------------------------------------------- optimal density
def optimal_density_paper_asymptotic(num_weights: float, d: int) -> float:
    """Small-p optimum of the paper's approximation: p* = sqrt(N / (4 d^2 (1 - 1/pi^2)))."""
    _check_dims(d=d)
    if num_weights <= 0:
        raise ValueError(f"weight count N={num_weights!r} must be > 0")
    return math.sqrt(num_weights / (4.0 * d * d * ONE_MINUS_INV_PI2))


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


def optimal_density_paper(num_weights: float, d: int, p_min: float | None = None) -> float:
    """argmin_p of the paper's approximation at fixed N = n p d (numerical)."""
    _check_dims(d=d)
    if num_weights <= 0:
        raise ValueError(f"weight count N={num_weights!r} must be > 0")
    p_lo = p_min if p_min is not None else 1e-6
    return _minimize_log_p(
        lambda p: float(gp_distance_paper(num_weights / (p * d), p, d)), p_lo, 1.0
    )


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
