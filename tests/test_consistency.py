"""Tests for widesparse_jax.analysis.consistency (Vyas et al. 2023 width-consistency metrics)."""

import itertools
import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from widesparse_jax.analysis import consistency as cs

# ----------------------------------------------------------------------------- CKA


def _hsic_biased_gram(x, y):
    """Independent reference: tr(K H L H) / (n-1)^2 on Gram matrices."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(x @ x.T @ h @ y @ y.T @ h) / (n - 1) ** 2


def _cka_gram(x, y):
    return _hsic_biased_gram(x, y) / math.sqrt(_hsic_biased_gram(x, x) * _hsic_biased_gram(y, y))


def test_linear_cka_identical_and_invariances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20)) @ rng.normal(size=(20, 20))  # anisotropic features
    assert cs.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    y = rng.normal(size=(200, 7)) + x[:, :7]
    base = cs.linear_cka(x, y)
    assert cs.linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert cs.linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, rel=1e-10)
    assert cs.linear_cka(x + 5.0, y) == pytest.approx(base, rel=1e-10)  # centering
    assert cs.linear_cka(x @ q, 2.0 * x) == pytest.approx(1.0, abs=1e-10)
    assert base == pytest.approx(_cka_gram(x, y), rel=1e-10)
    # Not invariant to a general (non-orthogonal) linear map.
    a = np.diag(np.linspace(0.1, 10.0, 20))
    assert abs(cs.linear_cka(x @ a, y) - base) > 1e-3
    # Unbiased variant shares the invariances and is 1 on identical features.
    ub = cs.linear_cka(x, y, unbiased=True)
    assert cs.linear_cka(x, x, unbiased=True) == pytest.approx(1.0, abs=1e-12)
    assert cs.linear_cka(x @ q * 2.0, y, unbiased=True) == pytest.approx(ub, rel=1e-10)


def test_linear_cka_unrelated_features_near_zero():
    rng = np.random.default_rng(1)
    small = cs.linear_cka(rng.normal(size=(50, 10)), rng.normal(size=(50, 10)))
    big = cs.linear_cka(rng.normal(size=(20000, 10)), rng.normal(size=(20000, 10)))
    assert 0.0 < small < 0.6
    assert big < 0.01 and big < small
    # The debiased estimator is ~0 already at moderate N.
    ub = cs.linear_cka(rng.normal(size=(400, 50)), rng.normal(size=(400, 50)), unbiased=True)
    assert abs(ub) < 0.03


def _hsic_u_statistic(K, L):
    """Song et al. 2012 HSIC_1 as the literal U-statistic over distinct quadruples."""
    n = K.shape[0]
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def test_unbiased_hsic_matches_u_statistic_and_minibatch():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 4))
    K, L = x @ x.T, y @ y.T
    assert cs.unbiased_hsic(K, L) == pytest.approx(_hsic_u_statistic(K, L), rel=1e-10)
    # One minibatch = the unbiased CKA of the whole set.
    x, y = rng.normal(size=(64, 5)), rng.normal(size=(64, 6))
    assert cs.minibatch_cka([(x, y)]) == pytest.approx(
        cs.linear_cka(x, y, unbiased=True), rel=1e-12
    )
    batches = [
        (x[i : i + 16], x[i : i + 16] @ np.diag([1.0, 2, 3, 4, 5])) for i in range(0, 64, 16)
    ]
    mb = cs.minibatch_cka(batches)
    assert 0.5 < mb < 1.0
    assert cs.minibatch_cka(
        [(x[i : i + 16], -2 * x[i : i + 16]) for i in range(0, 64, 16)]
    ) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n >= 4"):
        cs.unbiased_hsic(np.eye(3), np.eye(3))
    with pytest.raises(ValueError, match="same number of examples"):
        cs.linear_cka(x, y[:10])


# ----------------------------------------------------------------------------- predictions


def test_disagreement_zero_for_identical():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(100, 10))
    d = cs.prediction_disagreement(z, z)
    assert d == {
        "prob_msd": 0.0,
        "prob_mse": 0.0,
        "argmax_disagreement": 0.0,
        "tv_distance": 0.0,
        "logit_msd": 0.0,
    }
    # Softmax-invariant: a per-row constant shift changes nothing.
    d2 = cs.prediction_disagreement(z + rng.normal(size=(100, 1)), z)
    assert d2["prob_msd"] == pytest.approx(0.0, abs=1e-20) and d2["logit_msd"] == pytest.approx(
        0.0, abs=1e-20
    )


def test_disagreement_hand_example():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    q = np.array([[0.0, 1.0], [0.5, 0.5], [0.4, 0.6]])
    d = cs.prediction_disagreement(p, q, from_logits=False)
    # squared L2 per example: 2, 0, 0.08 -> mean 0.69333; per class: / 2.
    assert d["prob_msd"] == pytest.approx(2.08 / 3)
    assert d["prob_mse"] == pytest.approx(2.08 / 6)
    assert d["argmax_disagreement"] == pytest.approx(1 / 3)  # only the first row differs
    assert d["tv_distance"] == pytest.approx((1.0 + 0.0 + 0.2) / 3)
    assert "logit_msd" not in d
    # Logits: [0, log 3] -> [1/4, 3/4]; [0, 0] -> [1/2, 1/2].
    l = math.log(3.0)
    d = cs.prediction_disagreement(np.array([[0.0, l]]), np.array([[0.0, 0.0]]))
    assert d["prob_msd"] == pytest.approx(2 * 0.25**2)
    assert d["logit_msd"] == pytest.approx(l**2 / 2)
    assert d["argmax_disagreement"] == 1.0
    with pytest.raises(ValueError, match="probabilities"):
        cs.prediction_disagreement(p * 2, q, from_logits=False)
    with pytest.raises(ValueError, match="differ in shape"):
        cs.prediction_disagreement(p, q[:2], from_logits=False)


def test_disagreement_vs_reference_uses_widest():
    rng = np.random.default_rng(4)
    outs = {
        8: rng.normal(size=(20, 5)),
        64: rng.normal(size=(20, 5)),
        512: rng.normal(size=(20, 5)),
    }
    d = cs.disagreement_vs_reference(outs)
    assert d[512]["prob_msd"] == 0.0
    assert d[8] == cs.prediction_disagreement(outs[8], outs[512])


def test_ensemble_identical_equals_single_and_hand_example():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(300, 10))
    y = rng.integers(0, 10, 300)
    single = cs.accuracy(z, y)
    assert cs.ensemble_accuracy([z, z, z], y) == pytest.approx(single)
    # Two members each right on a different example with low confidence when wrong:
    m1 = np.array([[0.9, 0.1], [0.45, 0.55], [0.4, 0.6]])
    m2 = np.array([[0.45, 0.55], [0.9, 0.1], [0.4, 0.6]])
    labels = np.array([0, 0, 0])
    assert cs.accuracy(m1, labels) == pytest.approx(1 / 3)
    assert cs.ensemble_accuracy([m1, m2], labels, from_logits=False) == pytest.approx(2 / 3)
    one_hot = np.eye(2)[labels]
    assert cs.ensemble_accuracy([m1, m2], one_hot, from_logits=False) == pytest.approx(2 / 3)
    wide = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    r = cs.ensemble_vs_single([m1, m2], wide, labels, from_logits=False)
    assert r["ensemble_acc"] == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
    assert r["single_acc"] == 1.0 and r["gap"] == pytest.approx(1 / 3)
    assert r["member_mean_acc"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="ensemble size"):
        cs.ensemble_vs_single([m1], wide, labels, ks=[2], from_logits=False)


def test_loss_curve_gaps():
    curves = {8: [3.0, 2.0, 1.5], 64: [2.5, 1.5, 1.0, 0.9], 16: [2.8, 1.8, 1.2]}
    g = cs.loss_curve_gaps(curves)
    np.testing.assert_allclose(g[64]["gap"], 0.0)
    np.testing.assert_allclose(g[8]["gap"], [0.5, 0.5, 0.5])
    assert g[8]["length"] == 3 and g[64]["length"] == 4
    assert g[16]["mean_abs_gap"] == pytest.approx((0.3 + 0.3 + 0.2) / 3)
    assert g[16]["max_abs_gap"] == pytest.approx(0.3)
    assert g[16]["final_gap"] == pytest.approx(0.2)
    assert g[8]["relative_mean_abs_gap"] == pytest.approx(0.5 / (5.0 / 3))
    assert cs.loss_curve_gaps(curves, reference=8)[64]["final_gap"] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="reference 32"):
        cs.loss_curve_gaps(curves, reference=32)


# ----------------------------------------------------------------------------- pre-activations


def test_preactivation_stats():
    s = cs.preactivation_stats(np.array([1.0, 2.0, 3.0, 4.0, -2.0]))[""]
    assert s["mean"] == pytest.approx(1.6)
    assert s["std"] == pytest.approx(np.std([1.0, 2.0, 3.0, 4.0, -2.0]))
    assert s["frac_positive"] == pytest.approx(0.8)
    assert s["q0.5"] == pytest.approx(2.0) and s["min"] == -2.0 and s["max"] == 4.0
    rng = np.random.default_rng(6)
    inter = {
        "fc": {"__call__": (jnp.asarray(rng.normal(1.0, 2.0, size=(400, 250))),)},
        "cl": {"__call__": (jnp.asarray(rng.laplace(size=(100000,))),)},
    }
    st = cs.preactivation_stats(inter, quantiles=(0.5, 0.975))
    assert set(st) == {"fc/__call__/0", "cl/__call__/0"}
    g = st["fc/__call__/0"]
    assert g["mean"] == pytest.approx(1.0, abs=0.02) and g["std"] == pytest.approx(2.0, rel=0.01)
    assert g["kurtosis"] == pytest.approx(3.0, abs=0.05) and g["excess_kurtosis"] == pytest.approx(
        0.0, abs=0.05
    )
    assert g["q0.975"] == pytest.approx(1.0 + 2.0 * 1.959964, abs=0.05)
    assert g["frac_positive"] == pytest.approx(0.6915, abs=0.005)
    assert st["cl/__call__/0"]["excess_kurtosis"] == pytest.approx(3.0, abs=0.3)  # Laplace
    with pytest.raises(ValueError, match="quantiles"):
        cs.preactivation_stats(np.ones(3), quantiles=(1.5,))


# ----------------------------------------------------------------------------- Hessian


def _mlp_problem():
    rng = np.random.default_rng(0)  # NumPy data: avoids compiling PRNG kernels op by op
    params = {
        "fc": {
            "kernel": jnp.asarray(rng.normal(size=(4, 6)) / 2.0, jnp.float32),
            "bias": jnp.zeros(6),
        },
        "cl": {
            "kernel": jnp.asarray(rng.normal(size=(6, 3)) / math.sqrt(6), jnp.float32),
            "bias": jnp.zeros(3),
        },
    }
    x = jnp.asarray(rng.normal(size=(32, 4)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, size=32))

    def loss_fn(p, batch):
        xb, yb = batch
        h = jnp.tanh(xb @ p["fc"]["kernel"] + p["fc"]["bias"])
        logits = h @ p["cl"]["kernel"] + p["cl"]["bias"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], 1))

    return params, (x, y), loss_fn


def _explicit_eigs(loss_fn, params, batch, mask=None):
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    h = np.asarray(
        jax.jit(jax.hessian(lambda f: loss_fn(unravel(f), batch)))(flat), dtype=np.float64
    )
    if mask is not None:
        keep = np.asarray(jax.flatten_util.ravel_pytree(mask)[0]) > 0
        h = h[np.ix_(keep, keep)]
    return np.linalg.eigvalsh((h + h.T) / 2)


def test_power_iteration_matches_explicit_hessian():
    params, batch, loss_fn = _mlp_problem()
    eigs = _explicit_eigs(loss_fn, params, batch)
    top = eigs[np.argmax(np.abs(eigs))]
    assert top > 0  # cross-entropy at init: PSD-dominant (the top |eigenvalue| is positive)
    res = cs.top_hessian_eigenvalue(
        loss_fn, params, batch, jax.random.PRNGKey(1), num_iters=300, tol=1e-7
    )
    assert res.eigenvalue == pytest.approx(top, rel=1e-3)
    assert res.converged and res.num_iters < 300
    # The iterate is a unit eigenvector: H v = lambda v.
    hv = jax.jit(cs.hessian_vector_product, static_argnums=0)(loss_fn, params, batch, res.vector)
    hv_flat = jax.flatten_util.ravel_pytree(hv)[0]
    v_flat = jax.flatten_util.ravel_pytree(res.vector)[0]
    assert float(jnp.linalg.norm(v_flat)) == pytest.approx(1.0, abs=1e-5)
    assert float(jnp.linalg.norm(hv_flat - res.eigenvalue * v_flat)) < 1e-2 * abs(top)
    eos = cs.edge_of_stability(res.eigenvalue, lr=0.1)
    assert eos["threshold"] == pytest.approx(20.0) and eos["ratio"] == pytest.approx(
        res.eigenvalue / 20.0
    )


def test_power_iteration_with_masks():
    params, batch, loss_fn = _mlp_problem()
    rng = np.random.default_rng(0)
    mask = {
        "fc": {"kernel": rng.random((4, 6)) < 0.5, "bias": None},
        "cl": {"kernel": None, "bias": None},
    }
    ones_mask = {
        "fc": {"kernel": mask["fc"]["kernel"].astype(np.float32), "bias": np.ones(6, np.float32)},
        "cl": {"kernel": np.ones((6, 3), np.float32), "bias": np.ones(3, np.float32)},
    }
    eigs = _explicit_eigs(loss_fn, params, batch, ones_mask)
    top = eigs[np.argmax(np.abs(eigs))]
    res = cs.top_hessian_eigenvalue(
        loss_fn, params, batch, jax.random.PRNGKey(2), num_iters=300, tol=1e-7, masks=mask
    )
    assert res.eigenvalue == pytest.approx(top, rel=1e-3)
    removed = np.asarray(res.vector["fc"]["kernel"])[~mask["fc"]["kernel"]]
    assert np.all(removed == 0.0)
    none_kept = jax.tree.map(lambda x: np.zeros(x.shape, bool), params)
    with pytest.raises(ValueError, match="masks keep no weights"):
        cs.top_hessian_eigenvalue(loss_fn, params, batch, jax.random.PRNGKey(2), masks=none_kept)


def test_power_iteration_returns_largest_magnitude_with_sign():
    a = jnp.diag(jnp.array([-5.0, 2.0, 1.0, 0.5]))
    params = {"w": jnp.ones(2), "u": jnp.ones(2)}

    def loss_fn(p, batch):
        v = jnp.concatenate([p["u"], p["w"]])  # tree leaves sorted: u then w
        return 0.5 * v @ batch @ v

    res = cs.top_hessian_eigenvalue(
        loss_fn, params, a, jax.random.PRNGKey(0), num_iters=200, tol=1e-8
    )
    assert res.eigenvalue == pytest.approx(-5.0, rel=1e-4)
    res1 = cs.top_hessian_eigenvalue(loss_fn, params, a, jax.random.PRNGKey(0), num_iters=1)
    assert res1.num_iters == 1 and not res1.converged
    with pytest.raises(ValueError, match="num_iters"):
        cs.top_hessian_eigenvalue(loss_fn, params, a, jax.random.PRNGKey(0), num_iters=0)


def test_edge_of_stability_momentum_and_validation():
    e = cs.edge_of_stability(38.0, lr=0.1, momentum=0.9)
    assert e["threshold"] == pytest.approx(38.0) and e["ratio"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="lr"):
        cs.edge_of_stability(1.0, lr=0.0)
    with pytest.raises(ValueError, match="momentum"):
        cs.edge_of_stability(1.0, lr=0.1, momentum=1.0)
