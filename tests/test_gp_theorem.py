"""Theorem 1 pointwise (widesparse_jax.analysis.gp_theorem) against Monte Carlo of the network."""

import numpy as np
import pytest

from widesparse_jax.analysis import gp_kernel as gk


def _network_mc(x, y, p, n, num_nets, rng):
    """Theta_GP - Theta_inf over num_nets sampled nets f = (nd)^-1/2 v^T relu(u x), u masked."""
    d = x.shape[0]
    mask = rng.random((num_nets, n, d)) < p
    u = np.where(mask, rng.standard_normal((num_nets, n, d)), 0.0) / np.sqrt(p)
    theta = np.sum(np.maximum(u @ x, 0) * np.maximum(u @ y, 0), axis=1) / (n * d)
    k1, _ = gk.arccos_k1_k2(x @ x, y @ y, x @ y)
    return theta, float(k1) / d


@pytest.mark.parametrize("seed,p,n", [(0, 0.5, 4), (1, 0.2, 8), (2, 0.8, 2)])
def test_exact_theorem1_matches_network_monte_carlo(seed, p, n):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(6), rng.standard_normal(6)
    th = gk.theorem1_pointwise(x, y, p, n)
    theta, theta_inf = _network_mc(x, y, p, n, 200_000, rng)
    err2 = (theta - theta_inf) ** 2
    se = err2.std() / np.sqrt(len(err2))
    assert float(th.total) == pytest.approx(err2.mean(), abs=4 * se)
    # the two terms separately: the mean of Theta is K~1/d, its variance the 1/n term
    assert th.k1_tilde / 6 == pytest.approx(theta.mean(), abs=4 * theta.std() / np.sqrt(len(theta)))
    assert float(th.variance_term) == pytest.approx(theta.var(), rel=0.03)
    assert th.bias_term > 0  # pair by pair the bias does not vanish at p < 1


def test_sampled_masks_agree_with_enumeration():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal(10), rng.standard_normal(10) + 0.5 * rng.standard_normal(10)
    exact = gk.theorem1_pointwise(x, y, 0.3, 16)
    samp = gk.theorem1_pointwise(x, y, 0.3, 16, rng=rng, num_masks=200_000)
    assert samp.bias_term == pytest.approx(exact.bias_term, abs=4 * samp.bias_se + 1e-12)
    assert float(samp.variance_term) == pytest.approx(
        float(exact.variance_term), abs=4 * float(samp.variance_se)
    )


def test_dense_limit_has_no_bias_and_the_dense_variance():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal(7), rng.standard_normal(7)
    th = gk.theorem1_pointwise(x, y, 1.0, np.array([3.0, 30.0]))
    assert th.bias_term == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(
        th.variance_term, gk.dense_pair_variance(x, y, [3.0, 30.0]), rtol=1e-10
    )


def test_mask_average_of_overlap_is_p_times_dense():
    # E_s[x_s . y_s] = p x.y exactly: the step App. F.1 replaces by a typical mask.
    rng = np.random.default_rng(5)
    x, y, p = rng.standard_normal(8), rng.standard_normal(8), 0.35
    codes = np.arange(2**8)[:, None]
    masks = (codes >> np.arange(8)) & 1
    w = p ** masks.sum(1) * (1 - p) ** (8 - masks.sum(1))
    assert float(w @ (masks @ (x * y))) == pytest.approx(p * float(x @ y), rel=1e-12)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="density p"):
        gk.theorem1_pointwise(np.ones(3), np.ones(3), 0.0, 4)
    with pytest.raises(ValueError, match="must match"):
        gk.theorem1_pointwise(np.ones(3), np.ones(4), 0.5, 4)
    with pytest.raises(ValueError, match="d <= 20"):
        gk.masked_kernels_exact(np.ones(21), np.ones(21), 0.5)
