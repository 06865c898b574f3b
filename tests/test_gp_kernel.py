"""Tests for widesparse_jax.analysis.gp_kernel (closed forms vs integration and Monte Carlo)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from widesparse_jax.analysis import gp_kernel as gk


# ----------------------------------------------------------------------------- J1, J2
def _relu_moment(theta: float, power: int) -> float:
    """E[relu(u)^power relu(v)^power], u, v unit Gaussians with correlation cos(theta), by 1-D quad."""
    c, s = math.cos(theta), math.sin(theta)

    def inner(u):  # E_w[relu(c u + s w)^power]
        mu = c * u
        if s < 1e-12:
            return max(mu, 0.0) ** power
        z = mu / s
        if power == 1:
            return mu * stats.norm.cdf(z) + s * stats.norm.pdf(z)
        return (mu * mu + s * s) * stats.norm.cdf(z) + mu * s * stats.norm.pdf(z)

    val, _ = integrate.quad(lambda u: u**power * stats.norm.pdf(u) * inner(u), 0, 12, epsabs=1e-12)
    return val


@pytest.mark.parametrize("theta", [0.0, 0.3, 1.0, math.pi / 2, 2.2, 3.0, math.pi])
def test_j1_j2_against_integration(theta):
    assert gk.j1(theta) / (2 * math.pi) == pytest.approx(_relu_moment(theta, 1), abs=1e-8)
    assert gk.j2(theta) / (2 * math.pi) == pytest.approx(_relu_moment(theta, 2), abs=1e-8)


@pytest.mark.parametrize("k", [2, 3, 5, 20])
def test_mean_j2_over_random_angle(k):
    # Route 1 of A in the docstring: E_theta J2 over the angle of two Gaussian vectors in R^k.
    def dens(t):
        return np.sin(t) ** (k - 2)

    num, _ = integrate.quad(lambda t: gk.j2(t) * dens(t), 0, math.pi)
    den, _ = integrate.quad(dens, 0, math.pi)
    assert num / den == pytest.approx(math.pi * (k + 2) / (2 * k), rel=1e-8)


def test_taylor_series_of_relu_kernel():
    a = gk.relu_kernel_taylor(4000)
    for rho in (-0.9, -0.2, 0.0, 0.4, 0.8):
        series = np.polyval(a[::-1], rho)
        assert series == pytest.approx(gk.j1(np.arccos(rho)) / (2 * np.pi), abs=1e-7)
    e = gk.kappa_sq_even_coeffs(3000)
    assert np.all(e >= 0) and e.sum() == pytest.approx(0.125, abs=1e-6)
    assert e[0] == pytest.approx(1 / (4 * np.pi**2)) and e[2] == pytest.approx(1 / (12 * np.pi**2))


# ----------------------------------------------------------------------------- finite kernel
def test_finite_kernel_is_last_layer_gradient_inner_product():
    d, n = 7, 13
    u = gk.sample_sparse_first_layer(jax.random.PRNGKey(0), n, d, 0.4, dtype=jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, d), jnp.float32)
    xp = jax.random.normal(jax.random.PRNGKey(2), (3, d), jnp.float32)

    def f(v, z):
        return jnp.dot(v, jax.nn.relu(u @ z)) / jnp.sqrt(n)

    v0 = jnp.ones(n, jnp.float32)
    for i in range(3):
        want = jnp.dot(jax.grad(f)(v0, x[i]), jax.grad(f)(v0, xp[i]))
        assert float(gk.finite_gp_kernel(u, x, xp)[i]) == pytest.approx(float(want), rel=1e-5)


def test_mask_density_and_scale():
    u = gk.sample_sparse_first_layer(jax.random.PRNGKey(3), 400, 50, 0.2)
    nz = np.asarray(u != 0)
    assert nz.mean() == pytest.approx(0.2, abs=0.01)
    # E|u_i|^2 = 1 (pre-activation variance of a dense layer)
    assert float(jnp.mean(jnp.sum(u**2, axis=1))) == pytest.approx(1.0, rel=0.05)


def test_dense_finite_kernel_converges_as_one_over_n():
    d, pairs = 10, 4
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (pairs, d)))
    xp = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (pairs, d)))
    k = np.asarray(gk.arccos_kernel(jnp.asarray(x), jnp.asarray(xp)))
    sampler = jax.jit(
        jax.vmap(
            lambda key, n: gk.finite_gp_kernel(
                gk.sample_sparse_first_layer(key, n, d, 1.0), jnp.asarray(x), jnp.asarray(xp)
            ),
            in_axes=(0, None),
        ),
        static_argnums=1,
    )
    scaled = []
    for n in (4, 16, 64):
        theta = np.asarray(sampler(jax.random.split(jax.random.PRNGKey(n), 4000), n))
        err = ((theta - k) ** 2).mean(0)  # [pairs]
        se = ((theta - k) ** 2).std(0) / np.sqrt(theta.shape[0])
        want = gk.dense_pair_variance(x, xp, n)
        assert np.all(np.abs(err - want) < 4 * se + 1e-7), (n, err, want, se)
        scaled.append(n * err)
    # error proportional to 1/n: n * error constant within MC noise
    np.testing.assert_allclose(scaled[0], scaled[2], rtol=0.15)


# ----------------------------------------------------------------------------- exact distance
def test_dense_limit_mask_terms_vanish():
    for d in (3, 50, 784):
        r = gk.gp_distance_exact(10, 1.0, d)
        assert r.bias == 0.0
        assert r.a == pytest.approx((1 + 2 / d) / 4)
    # continuity: p -> 1 the bias goes to zero and the variance to the dense one
    r = gk.gp_distance_exact(10, 0.999, 50)
    assert 0 <= r.bias < 1e-9
    assert r.variance == pytest.approx(gk.gp_distance_exact(10, 1.0, 50).variance, rel=1e-3)
    # the sparse net is always farther away at the same width
    assert gk.gp_distance_exact(10, 0.5, 50).total > gk.gp_distance_exact(10, 1.0, 50).total


def test_kk_term_matches_quadrature():
    # E[K^2] = E_theta[J1^2] / (4 pi^2) for theta the angle of two Gaussian vectors in R^d.
    for d in (2, 5, 30):

        def dens(t, d=d):
            return np.sin(t) ** (d - 2)

        num, _ = integrate.quad(lambda t: gk.j1(t) ** 2 * dens(t), 0, math.pi)
        den, _ = integrate.quad(dens, 0, math.pi)
        assert gk.gp_distance_exact(1, 1.0, d).kk == pytest.approx(
            num / den / (4 * np.pi**2), rel=1e-7
        )


def test_asymptotic_expansion_matches_exact_at_large_d():
    for p in (0.05, 0.3, 1.0):
        exact = gk.gp_distance_exact(100, p, 784).total
        assert gk.gp_distance_asymptotic(100, p, 784) == pytest.approx(exact, rel=2e-3)
    # leading width term equals the paper's width term
    assert gk.gp_distance_paper(1000, 1.0, 10**6) == pytest.approx(
        gk.gp_distance_asymptotic(1000, 1.0, 10**6), rel=1e-5
    )


@pytest.mark.parametrize("n,p,d", [(8, 1.0, 12), (8, 0.5, 16), (4, 0.25, 32), (16, 0.1, 40)])
def test_exact_distance_matches_monte_carlo(n, p, d):
    mean, se = gk.monte_carlo_distance(
        jax.random.PRNGKey(11 * n + d), n, p, d, num_pairs=250, num_inits=160
    )
    exact = gk.gp_distance_exact(n, p, d).total
    assert abs(mean - exact) < 3 * se, (mean, se, exact)
    assert se < 0.1 * exact  # the check has teeth


def test_bias_term_against_row_monte_carlo():
    # B - KK (the n-independent mask term) from 2e5 sampled pairs of rows, kappa in closed form.
    rng = np.random.default_rng(0)
    p, d, s = 0.1, 10, 200000

    def pair_term(u1, u2):
        n1, n2 = np.linalg.norm(u1, axis=1), np.linalg.norm(u2, axis=1)
        rho = np.clip(np.sum(u1 * u2, 1) / np.maximum(n1 * n2, 1e-300), -1, 1)
        return (n1 * n2 * gk.j1(np.arccos(rho)) / (2 * np.pi)) ** 2

    def rows():
        return rng.standard_normal((s, d)) * (rng.random((s, d)) < p) / np.sqrt(d * p)

    vals = pair_term(rows(), rows())
    r = gk.gp_distance_exact(1, p, d)
    assert abs(vals.mean() - r.b) < 3.5 * vals.std() / np.sqrt(s)
    assert r.bias > 10 * r.series_error


# ----------------------------------------------------------------------------- optimum
def test_paper_optimum_matches_asymptotic_where_p_small():
    c = 1 - 1 / np.pi**2
    for n_weights, d in [(6352, 784), (800, 100), (50000, 784)]:
        p_num = gk.optimal_density_paper(n_weights, d)
        p0 = gk.optimal_density_paper_asymptotic(n_weights, d)
        # exact stationarity of the approximation: (1 - sqrt p) / p^2 = 1 / p0^2
        assert (1 - np.sqrt(p_num)) / p_num**2 == pytest.approx(1 / p0**2, rel=1e-3)
        # p* ~ sqrt(n p / 4 d) (with the (1 - 1/pi^2) factor), n = N / (p* d)
        n_star = n_weights / (p_num * d)
        assert p_num == pytest.approx(np.sqrt(n_star * p_num / (4 * d * c)), rel=0.3)
    small = gk.optimal_density_paper(1000, 10000)
    assert small == pytest.approx(gk.optimal_density_paper_asymptotic(1000, 10000), rel=0.03)


def test_exact_optimum_is_a_minimum_and_sparser_than_dense():
    n_weights, d = 6400, 100
    p_opt = gk.optimal_density_exact(n_weights, d)

    def dist(p):
        return gk.gp_distance_exact(n_weights / (p * d), p, d).total

    assert 1.0 / d <= p_opt < 0.5
    assert dist(p_opt) < dist(1.0)
    assert dist(p_opt) <= dist(min(1.0, p_opt * 1.3))
    assert p_opt / 1.3 < 1.0 / d or dist(p_opt) <= dist(p_opt / 1.3)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="density"):
        gk.gp_distance_exact(10, 0.0, 5)
    with pytest.raises(ValueError, match="density"):
        gk.gp_distance_paper(10, 1.5, 5)
    with pytest.raises(ValueError, match="input dimension"):
        gk.gp_distance_exact(10, 0.5, 0)
    with pytest.raises(ValueError, match="width"):
        gk.gp_distance_exact(-1, 0.5, 5)
    with pytest.raises(ValueError, match="num_inits"):
        gk.monte_carlo_distance(jax.random.PRNGKey(0), 4, 0.5, 5, num_inits=1)
    with pytest.raises(ValueError, match="must match"):
        gk.arccos_kernel(jnp.ones((2, 3)), jnp.ones((2, 4)))
