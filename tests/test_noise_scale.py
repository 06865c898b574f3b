"""Tests for widesparse_jax.analysis.noise_scale (Park et al. 2019 noise scale, sweeps)."""

import math

import ml_collections
import numpy as np
import pytest
import scipy.stats
import torch

from widesparse_jax.analysis import noise_scale as ns

# ----------------------------------------------------------------------------- formula


@pytest.mark.parametrize(
    "lr,b,m,s2,expected",
    [
        (1.0, 100, 0.0, 1.0, 0.01),
        (0.1, 128, 0.9, 1.0 / 3.0, 0.1 / (128 * 0.1 * (1.0 / 3.0))),  # = 0.0234375
        (5.0, 256, 0.0, 1.0, 5.0 / 256),
        (0.5, 50, 0.5, 2.0, 0.5 / (50 * 0.5 * 2.0)),  # = 0.01
    ],
)
def test_noise_scale_hand_cases(lr, b, m, s2, expected):
    assert ns.noise_scale(lr, b, m, s2) == pytest.approx(expected, rel=1e-12)


def test_noise_scale_hand_value_paper_cifar():
    # CIFAR setup: lr 0.1, batch 128, momentum 0.9, PyTorch uniform init sigma_w^2 = 1/3.
    assert ns.noise_scale(0.1, 128, 0.9, 1 / 3) == pytest.approx(0.0234375, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=0.0, batch_size=1, momentum=0.0, init_variance=1.0), "lr"),
        (dict(lr=-1.0, batch_size=1, momentum=0.0, init_variance=1.0), "lr"),
        (dict(lr=0.1, batch_size=0, momentum=0.0, init_variance=1.0), "batch_size"),
        (dict(lr=0.1, batch_size=8, momentum=1.0, init_variance=1.0), "momentum"),
        (dict(lr=0.1, batch_size=8, momentum=-0.1, init_variance=1.0), "momentum"),
        (dict(lr=0.1, batch_size=8, momentum=0.9, init_variance=0.0), "init_variance"),
        (dict(lr=float("nan"), batch_size=8, momentum=0.9, init_variance=1.0), "lr"),
        (dict(lr="fast", batch_size=8, momentum=0.9, init_variance=1.0), "lr"),
    ],
)
def test_noise_scale_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ns.noise_scale(**kwargs)


def test_init_variance_defaults():
    assert ns.init_variance_scale("standard") == pytest.approx(1 / 3)
    assert ns.init_variance_scale("SP") == pytest.approx(1 / 3)
    assert ns.init_variance_scale("ntk") == 1.0
    assert ns.init_variance_scale("mup") == 1.0
    assert ns.init_variance_scale("ntk", sigma_w2=2.0) == 2.0
    with pytest.raises(ValueError, match="unknown parametrization 'lecun'"):
        ns.init_variance_scale("lecun")
    with pytest.raises(ValueError, match="sigma_w2"):
        ns.init_variance_scale("ntk", sigma_w2=-1.0)


def test_standard_default_matches_pytorch_init():
    # The real PyTorch default init of nn.Linear: Var(W) * fan_in should be 1/3 at any width.
    torch.manual_seed(0)
    for fan_in in (64, 784):
        w = torch.nn.Linear(fan_in, 512).weight.detach().numpy().astype(np.float64)
        measured = ns.init_variance_scale("standard", weight_variance=w.var(), fan_in=fan_in)
        assert measured == pytest.approx(ns.PYTORCH_UNIFORM_SIGMA_W2, rel=0.02)


def test_init_variance_from_weight_variance_sparse():
    # Sparse-aware init U(+-1/sqrt(fan_in * p)): Var = 1/(3 fan_in p) -> sigma_w^2 = 1/3.
    fan_in, p = 784, 0.25
    var = 1.0 / (3 * fan_in * p)
    assert ns.init_variance_scale(
        "standard", weight_variance=var, fan_in=fan_in, density=p
    ) == pytest.approx(1 / 3)
    assert ns.init_variance_scale("ntk", weight_variance=1.0) == 1.0
    with pytest.raises(ValueError, match="fan_in"):
        ns.init_variance_scale("standard", weight_variance=var)
    with pytest.raises(ValueError, match="density"):
        ns.init_variance_scale("standard", weight_variance=var, fan_in=fan_in, density=0.0)


def _config():
    c = ml_collections.ConfigDict()
    c.optimizer = ml_collections.ConfigDict(dict(lr=0.1, momentum=0.9))
    c.train = ml_collections.ConfigDict(dict(batch_size=128))
    c.model = ml_collections.ConfigDict(dict(parametrization="standard"))
    return c


def test_noise_scale_from_config_configdict_and_dict():
    c = _config()
    assert ns.noise_scale_from_config(c) == pytest.approx(0.0234375)
    as_dict = c.to_dict()
    assert ns.noise_scale_from_config(as_dict) == pytest.approx(0.0234375)
    c.model.sigma_w2 = 2.0
    assert ns.noise_scale_from_config(c) == pytest.approx(0.1 / (128 * 0.1 * 2.0))
    assert ns.noise_scale_from_config(c, init_variance=1.0) == pytest.approx(0.1 / 12.8)


def test_noise_scale_from_config_custom_fields_and_missing():
    c = ml_collections.ConfigDict()
    c.opt = ml_collections.ConfigDict(dict(learning_rate=5.0, beta=0.0))
    c.data = ml_collections.ConfigDict(dict(batch_size=256))
    c.parametrization = "ntk"
    fields = {
        "lr": "opt.learning_rate",
        "momentum": "opt.beta",
        "batch_size": "data.batch_size",
        "parametrization": "parametrization",
    }
    assert ns.noise_scale_from_config(c, fields=fields) == pytest.approx(5.0 / 256)
    with pytest.raises(ValueError, match="'optimizer.lr'"):
        ns.noise_scale_from_config(c)
    with pytest.raises(ValueError, match="unknown field names"):
        ns.noise_scale_from_config(c, fields={"learning_rate": "opt.learning_rate"})


# ----------------------------------------------------------------------------- power law


def test_fit_power_law_exact():
    w = np.array([8, 32, 128, 512.0])
    fit = ns.fit_power_law(w, 3.0 * w**1.5)
    assert fit.exponent == pytest.approx(1.5, abs=1e-12)
    assert fit.prefactor == pytest.approx(3.0, rel=1e-10)
    assert fit.exponent_stderr == pytest.approx(0.0, abs=1e-10)
    assert fit.r2 == pytest.approx(1.0)
    np.testing.assert_allclose(fit.predict([2.0]), 3.0 * 2.0**1.5)


def test_fit_power_law_noisy_matches_scipy_linregress():
    rng = np.random.default_rng(0)
    w = np.geomspace(5, 640, 12)
    y = 0.02 * w**1.0 * np.exp(rng.normal(0, 0.1, w.size))
    fit = ns.fit_power_law(w, y)
    ref = scipy.stats.linregress(np.log(w), np.log(y))
    assert fit.exponent == pytest.approx(ref.slope, rel=1e-10)
    assert fit.exponent_stderr == pytest.approx(ref.stderr, rel=1e-10)
    assert fit.log_prefactor_stderr == pytest.approx(ref.intercept_stderr, rel=1e-10)
    assert fit.prefactor == pytest.approx(math.exp(ref.intercept), rel=1e-10)
    assert abs(fit.exponent - 1.0) < 3 * fit.exponent_stderr + 1e-3


def test_fit_power_law_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        ns.fit_power_law([1.0], [1.0])
    with pytest.raises(ValueError, match="values must be finite and > 0"):
        ns.fit_power_law([1.0, 2.0], [1.0, -1.0])
    with pytest.raises(ValueError, match="distinct"):
        ns.fit_power_law([2.0, 2.0], [1.0, 3.0])
    with pytest.raises(ValueError, match="same length"):
        ns.fit_power_law([1.0, 2.0, 3.0], [1.0, 3.0])
    two = ns.fit_power_law([1.0, 2.0], [1.0, 4.0])
    assert two.exponent == pytest.approx(2.0) and math.isnan(two.exponent_stderr)


# ----------------------------------------------------------------------------- sweeps


def _synthetic_sweep(widths=(8, 32, 128, 512), c=1e-3, sparse=False):
    """acc = 0.9 + 0.01 log w - 0.02 (log g - log g*(w))^2 with g*(w) = c * w (Park et al.)."""
    records = []
    for w in widths:
        g_star = c * w
        for lr in np.geomspace(0.01, 10.0, 13):
            for b in (32, 128, 512):
                g = ns.noise_scale(lr, b, 0.9, 1.0)
                acc = 0.9 + 0.01 * math.log(w) - 0.02 * (math.log(g) - math.log(g_star)) ** 2
                records.append(
                    dict(
                        width=w,
                        sparse=sparse,
                        lr=float(lr),
                        batch_size=b,
                        momentum=0.9,
                        init_variance=1.0,
                        best_test_acc=acc,
                    )
                )
    return records


def test_best_per_noise_scale_merges_equal_noise_scales():
    base = dict(width=16, momentum=0.0, init_variance=1.0)
    recs = [
        dict(base, lr=0.1, batch_size=100, best_test_acc=0.5),
        dict(base, lr=0.2, batch_size=200, best_test_acc=0.7),  # same g = 1e-3
        dict(base, lr=0.4, batch_size=100, best_test_acc=0.6),  # g = 4e-3
        dict(base, lr=0.1, batch_size=100, best_test_acc=0.4, sparse=True),
    ]
    curves = ns.best_per_noise_scale(recs)
    assert set(curves) == {(16, False), (16, True)}
    dense = curves[(16, False)]
    np.testing.assert_allclose(dense.noise_scale, [1e-3, 4e-3])
    np.testing.assert_allclose(dense.acc, [0.7, 0.6])
    np.testing.assert_array_equal(dense.count, [2, 1])
    assert dense.records[0]["lr"] == 0.2
    mean = ns.best_per_noise_scale(recs, reduce="mean")[(16, False)]
    np.testing.assert_allclose(mean.acc, [0.6, 0.6])
    # An explicit 'noise_scale' in a record wins over the formula.
    rec = dict(base, lr=0.1, batch_size=100, best_test_acc=0.1, noise_scale=0.5)
    assert ns.record_noise_scale(rec) == 0.5
    with pytest.raises(ValueError, match="lacks"):
        ns.best_per_noise_scale([dict(width=8, lr=0.1, best_test_acc=0.3)])
    with pytest.raises(ValueError, match="empty"):
        ns.best_per_noise_scale([])


def test_optimal_noise_scale_grid_and_refined():
    recs = _synthetic_sweep()
    opt = ns.optimal_noise_scale_per_width(recs, refine=True)
    assert sorted(opt) == [(8, False), (32, False), (128, False), (512, False)]
    curves = ns.best_per_noise_scale(recs)
    for (w, _), o in opt.items():
        g_star = 1e-3 * w
        grid = curves[(w, False)].noise_scale
        # Grid argmax = grid point closest to g* in log space.
        assert o.noise_scale == pytest.approx(grid[np.argmin(np.abs(np.log(grid / g_star)))])
        assert not o.at_edge
        # Acc is an exact parabola in log g -> the 3-point fit recovers g* exactly.
        assert o.refined_noise_scale == pytest.approx(g_star, rel=1e-6)
        assert o.refined_acc == pytest.approx(0.9 + 0.01 * math.log(w), abs=1e-9)
        assert o.record["best_test_acc"] == pytest.approx(o.best_test_acc)
    ws = [k[0] for k in opt]
    fit = ns.fit_power_law(ws, [opt[k].refined_noise_scale for k in opt])
    assert fit.exponent == pytest.approx(1.0, abs=1e-6)
    assert fit.prefactor == pytest.approx(1e-3, rel=1e-5)
    # Without refinement: only grid values.
    plain = ns.optimal_noise_scale_per_width(recs)
    assert all(o.refined_noise_scale == o.noise_scale for o in plain.values())


def test_optimal_noise_scale_flags_grid_edge():
    recs = _synthetic_sweep(widths=(8,), c=10.0)  # g* = 80, far above the largest g tried
    o = ns.optimal_noise_scale_per_width(recs, refine=True)[(8, False)]
    g_max = max(ns.record_noise_scale(r) for r in recs)
    assert o.at_edge and o.noise_scale == pytest.approx(g_max)
    assert o.refined_noise_scale == o.noise_scale  # no extrapolation beyond the grid


def test_best_batch_size_per_width():
    recs = []
    for w in (8, 64):
        for b in (16, 128, 1024):
            for lr in (0.01, 0.1):
                # Best B grows with width: B_opt = 16 w. lr 0.1 always better.
                acc = 0.8 - 0.01 * abs(math.log2(b / (16 * w))) + (0.01 if lr == 0.1 else 0.0)
                recs.append(
                    dict(
                        width=w,
                        lr=lr,
                        batch_size=b,
                        momentum=0.9,
                        init_variance=1.0,
                        best_test_acc=acc,
                    )
                )
    out = ns.best_batch_size_per_width(recs)
    assert out[(8, False)].batch_size == 128 and out[(64, False)].batch_size == 1024
    assert out[(64, False)].at_edge and not out[(8, False)].at_edge
    assert out[(8, False)].record["lr"] == 0.1
    assert out[(8, False)].acc_per_batch_size[128] == pytest.approx(0.81)
    assert out[(8, False)].acc_per_batch_size[16] == pytest.approx(0.78)
    assert list(out[(8, False)].acc_per_batch_size) == [16, 128, 1024]


# ----------------------------------------------------------------------------- plots, tables


def test_plots_write_files(tmp_path):
    recs = _synthetic_sweep(widths=(8, 32)) + _synthetic_sweep(widths=(32,), sparse=True)
    opt = ns.optimal_noise_scale_per_width(recs, refine=True)
    p1 = tmp_path / "acc_vs_g.png"
    fig = ns.plot_acc_vs_noise_scale(recs, optima=opt, path=str(p1))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [l.get_label() for l in ax.get_lines() if not l.get_label().startswith("_")]
    assert labels == ["width=8, dense", "width=32, dense", "width=32, sparse"]
    assert p1.stat().st_size > 1000

    dense = {k: v for k, v in opt.items() if not k[1]}
    fit = ns.fit_power_law([k[0] for k in dense], [v.refined_noise_scale for v in dense.values()])
    p2 = tmp_path / "gopt_vs_w.png"
    fig2 = ns.plot_optimal_noise_scale_vs_width(opt, fits={(False,): fit}, path=str(p2))
    ax2 = fig2.axes[0]
    assert ax2.get_xscale() == "log" and ax2.get_yscale() == "log"
    assert any(l.get_label().startswith("fit: k=1.00") for l in ax2.get_lines())
    assert p2.stat().st_size > 1000


def test_markdown_table():
    md = ns.markdown_table(
        [dict(width=8, acc=0.912345, sparse=True), dict(width=16, acc=0.5)],
        ["width", "acc", "sparse"],
        float_fmt=".3f",
    )
    assert md == (
        "| width | acc | sparse |\n| --- | --- | --- |\n| 8 | 0.912 | True |\n| 16 | 0.500 |  |\n"
    )
    opt = ns.optimal_noise_scale_per_width(_synthetic_sweep(widths=(8,)))
    table = ns.optimal_noise_scale_table(opt)
    assert table.splitlines()[0].startswith("| width | sparse | noise_scale |")
    assert len(table.splitlines()) == 3
