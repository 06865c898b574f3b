r"""GP-kernel theory of a sparse, wide, one-hidden-layer ReLU network (paper Sec. 3, App. F).

Verified model (paper, Sec. 3): f(x) = (n d)^(-1/2) v^T relu(u x), no biases; every parameter
is N(0, sigma^2) with probability p and 0 otherwise, sigma^2 = 1/p; Theta_GP = grad_v f(x) .
grad_v f(y).  Theorem 1 is stated for a FIXED pair (x, y), expectation over parameters only::

    E[(Theta_GP - Theta_inf)^2] = (1/d^2)[K~1,p - K1]^2 + (1/(d^2 n))[K~2,p - K~1,p^2]

(``theorem1_pointwise`` / ``masked_terms_batch`` in gp_theorem; checked against a Monte Carlo
of the network in tests/test_gp_theorem.py).  The module split: gp_arccos (K1, K2, the
finite kernel), gp_gaussian (exact D averaged over Gaussian pairs, below), gp_theorem (the
pointwise evaluator); this module keeps eq. (4), "the paper's approximation", and re-exports.

Where the paper's non-vanishing mask term comes from (App. F.1).  The approximation assumes
Gaussian inputs and d p >> 1 and replaces the mask sum by ONE typical mask with |s| ~ p d,
taking the masked overlap x_s.y_s ~ xi sqrt(d p) with the SAME sign xi as the dense overlap
x.y ~ xi sqrt(d).  That step makes K~1,p - K1 proportional to (1/sqrt(p) - 1) for every pair,
hence the n-independent (1/sqrt(p) - 1)^2 / (16 d) of eq. (4).  But averaged over masks
E_s[x_s.y_s] = p x.y exactly (each coordinate is kept with probability p), so the linear
(sign-carrying) term of K~1,p - K1 cancels; the mask-to-mask fluctuation of x_s.y_s is
independent across hidden units and lands in K~2,p - K~1,p^2, i.e. in the 1/n term.  For
Gaussian inputs the exact D below shows this: the bias is O((1/p^2 - 1)/d^3), not O(1/d).
On real images (Fashion-MNIST, per-pixel standardized) the bias is not zero pair by pair
(the norms and overlaps of x_s, y_s are not those of Gaussian vectors) and a shallow interior
optimum appears: results/gp_kernel/README.md.

The rest of this docstring is the Gaussian-input derivation (gp_gaussian), with the older
"our definition" of D averaged over pairs.

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

import math

import numpy as np

from widesparse_jax.analysis.gp_arccos import (
    ONE_MINUS_INV_PI2,
    _check_dims,
    arccos_kernel,
    dense_pair_variance,
    finite_gp_kernel,
    j1,
    j2,
    kappa_sq_even_coeffs,
    relu_kernel_taylor,
    sample_sparse_first_layer,
)
from widesparse_jax.analysis.gp_gaussian import (
    GPDistance,
    _minimize_log_p,
    gp_distance_asymptotic,
    gp_distance_exact,
    monte_carlo_distance,
    optimal_density_exact,
)
from widesparse_jax.analysis.gp_theorem import (
    PointwiseTheorem1,
    arccos_k1_k2,
    masked_kernels_exact,
    masked_kernels_sampled,
    masked_terms_batch,
    theorem1_pointwise,
)

__all__ = [
    "ONE_MINUS_INV_PI2",
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
    "PointwiseTheorem1",
    "masked_kernels_exact",
    "masked_kernels_sampled",
    "masked_terms_batch",
    "arccos_k1_k2",
    "theorem1_pointwise",
]


# ------------------------------------------------------------ the paper's approximation, eq. (4)
def gp_distance_paper(n, p, d: int):
    """The paper's approximation, eq. (4): D ~ (1/4d)[ (1/4)(1/sqrt(p) - 1)^2 + (d/n)(1 - 1/pi^2) ]."""
    _check_dims(n=n, d=d)
    p = np.asarray(p, dtype=float)
    if np.any((p <= 0) | (p > 1)):
        raise ValueError(f"density p={p!r} must satisfy 0 < p <= 1")
    n = np.asarray(n, dtype=float)
    return (0.25 * (1.0 / np.sqrt(p) - 1.0) ** 2 + (d / n) * ONE_MINUS_INV_PI2) / (4.0 * d)


def optimal_density_paper_asymptotic(num_weights: float, d: int) -> float:
    """Small-p optimum of the paper's approximation: p* = sqrt(N / (4 d^2 (1 - 1/pi^2)))."""
    _check_dims(d=d)
    if num_weights <= 0:
        raise ValueError(f"weight count N={num_weights!r} must be > 0")
    return math.sqrt(num_weights / (4.0 * d * d * ONE_MINUS_INV_PI2))


def optimal_density_paper(num_weights: float, d: int, p_min: float | None = None) -> float:
    """argmin_p of the paper's approximation at fixed N = n p d (numerical)."""
    _check_dims(d=d)
    if num_weights <= 0:
        raise ValueError(f"weight count N={num_weights!r} must be > 0")
    p_lo = p_min if p_min is not None else 1e-6
    return _minimize_log_p(
        lambda p: float(gp_distance_paper(num_weights / (p * d), p, d)), p_lo, 1.0
    )
