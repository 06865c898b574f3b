"""Tests for widesparse_jax.masks: distributions, plans, mask drawing, helpers."""

import bisect
import itertools
import json
import math
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden_paths import SPARSITY_JSON as GOLDEN  # noqa: E402

from widesparse_jax import masks as M
from widesparse_jax.sparsity.draw import _exact_subset

S = jax.ShapeDtypeStruct
F32 = jnp.float32


# ----------------------------------------------------------------------------------------------
# Local stand-ins (shape trees in the Flax layout of docs/contracts.md, forward order)
# ----------------------------------------------------------------------------------------------


def resnet_shapes(w, num_classes, stem="cifar", cin=3):
    k = 3 if stem == "cifar" else 7
    p = {
        "conv1": {"kernel": S((k, k, cin, w), F32)},
        "bn1": {"scale": S((w,), F32), "bias": S((w,), F32)},
    }
    c_in = w
    for s, mult in enumerate((1, 2, 4, 8)):
        c = w * mult
        for b in range(2):
            blk = {
                "conv1": {"kernel": S((3, 3, c_in, c), F32)},
                "bn1": {"scale": S((c,), F32)},
                "conv2": {"kernel": S((3, 3, c, c), F32)},
                "bn2": {"scale": S((c,), F32)},
            }
            if c_in != c:
                blk["shortcut_0"] = {"kernel": S((1, 1, c_in, c), F32)}
                blk["shortcut_1"] = {"scale": S((c,), F32)}
            p[f"layer{s + 1}_{b}"] = blk
            c_in = c
    p["linear"] = {"kernel": S((8 * w, num_classes), F32), "bias": S((num_classes,), F32)}
    return p


def torch_name(flax_name):
    """'layer2_0/shortcut_0/kernel' -> 'layer2.0.shortcut.0.weight' (contracts.md)."""
    return flax_name[: -len("/kernel")].replace("/", "_").replace("_", ".") + ".weight"


def baseline_transliteration(sizes, n):
    """Straight transliteration of the baseline's get_nwtf arithmetic (numpy, floats and all).

    Returns removals in the order of ``sizes``, or None where the baseline would crash
    (find_ge raising ValueError, or a layer asked to lose more than it has).
    """
    names = [f"l{i}" for i in range(len(sizes))]
    num_w = dict(zip(names, sizes))
    names_sorted = sorted(num_w, key=num_w.get, reverse=True)
    srt = [num_w[k] for k in names_sorted]
    diffs = [abs(d) for d in np.diff(srt)]
    aux = np.arange(1, len(diffs) + 1)
    lims = [np.dot(aux[:k], diffs[:k]) for k in range(1, len(names_sorted))]
    i = bisect.bisect_left(lims, n)
    if i == len(lims):
        return None
    nl = i + 1
    base_fill = [sum(diffs[j:i]) for j in range(i)] + [0]
    rest_tot = n - sum(base_fill)
    rest = int(np.floor(rest_tot / nl))
    nwtf = np.zeros(len(sizes), dtype=int)
    nwtf[:nl] = np.array(base_fill) + rest
    nwtf[0] += rest_tot - rest * nl
    if any(nwtf[j] > srt[j] for j in range(len(srt))):
        return None
    out = dict(zip(names_sorted, nwtf.tolist()))
    return [out[k] for k in names]


def golden_cases():
    return json.loads(GOLDEN.read_text())["cases"]


# ----------------------------------------------------------------------------------------------
# Paper distribution
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: c["case"])
def test_plan_matches_golden_per_layer(case):
    w, b, nc = case["width"], case["base_width"], case["num_classes"]
    params = resnet_shapes(w, nc)
    base_total = M.count_weights(resnet_shapes(b, nc))
    assert base_total == 2724 * b * b + 27 * b + 8 * b * nc == case["target_total"]
    assert (
        M.count_weights(params)
        == 2724 * w * w + 27 * w + 8 * w * nc
        == case["dense_total_at_width"]
    )
    plan = M.make_plan(params, M.counted_paths(params), base_total=base_total)
    assert [torch_name(l.name) for l in plan.layers] == [l["name"] for l in case["layers"]]
    assert [l.keep for l in plan.layers] == [l["kept"] for l in case["layers"]]
    for lp, gl in zip(plan.layers, case["layers"]):
        go = gl["shape"]
        want = (go[2], go[3], go[1], go[0]) if len(go) == 4 else (go[1], go[0])
        assert lp.shape == want and lp.size == gl["total"]
    assert plan.total_keep == case["kept_total"] and plan.difference == 0
    assert sum(not l.dense for l in plan.layers) == case["num_layers_sparsified"]
    # paper_distribution alone, on the sizes in model order
    rem = M.paper_distribution(
        [l["total"] for l in case["layers"]], case["dense_total_at_width"] - case["target_total"]
    )
    assert rem == [l["frozen"] for l in case["layers"]]


def _random_cases(rng, count):
    for _ in range(count):
        L = rng.randint(1, 9)
        pool = [rng.randint(1, 60) for _ in range(3)]  # small pool -> many ties
        sizes = [rng.choice(pool) if rng.random() < 0.5 else rng.randint(1, 400) for _ in range(L)]
        srt = sorted(sizes, reverse=True)
        lims = list(itertools.accumulate((j + 1) * (srt[j] - srt[j + 1]) for j in range(L - 1)))
        total = sum(sizes)
        ns = {0, 1, total, total - 1, rng.randint(0, total)}
        for lim in lims:  # boundary values around every limit
            ns |= {lim - 1, lim, lim + 1}
        for n in sorted(ns):
            if 0 <= n <= total:
                yield sizes, n


def test_paper_distribution_matches_baseline_transliteration():
    rng = random.Random(1234)
    compared = extended = 0
    for sizes, n in _random_cases(rng, 400):
        got = M.paper_distribution(sizes, n)
        assert sum(got) == n
        assert all(0 <= r <= s for r, s in zip(got, sizes))
        ref = baseline_transliteration(sizes, n)
        if ref is None:
            extended += 1
            continue
        assert got == ref, (sizes, n)
        compared += 1
    assert compared > 2000 and extended > 100


def test_paper_distribution_boundary_and_ties():
    # sorted [10, 6, 6, 2]: limits 4, 4, 4 + 3*4 = 16
    sizes = [6, 10, 2, 6]
    assert M.paper_distribution(sizes, 4) == [0, 4, 0, 0]  # N == limit: one layer only
    assert M.paper_distribution(sizes, 5) == [0, 5, 0, 0]  # 3 layers levelled (6, 6 tie)
    r = M.paper_distribution(sizes, 6)  # rest 2 over 3 layers: 0 each, leftover 2 to first
    assert r == [0, 6, 0, 0]
    r = M.paper_distribution(sizes, 7)  # rest 3 over 3 -> 1 each
    assert r == [1, 5, 0, 1]
    assert M.paper_distribution(sizes, 16) == [4, 8, 0, 4]  # N == last limit
    # ties keep forward order: equal sizes, leftover goes to the earliest
    assert M.paper_distribution([5, 5, 5], 4) == [2, 1, 1]


def test_paper_distribution_extension_beyond_baseline():
    sizes = [10, 6, 2]  # limits 4, 12; the baseline crashes for N > 12
    assert M.paper_distribution(sizes, 15) == [9, 5, 1]  # all levelled to 2, rest 3 -> 1 each
    assert M.paper_distribution(sizes, 18) == sizes
    assert M.paper_distribution([7], 3) == [3]  # single layer: baseline find_ge crashes
    r = M.paper_distribution([4, 4, 4], 11)  # leftover too large for the first layer
    assert sum(r) == 11 and all(0 <= x <= 4 for x in r)
    assert M.paper_distribution([], 0) == []


@pytest.mark.parametrize("fn", [M.paper_distribution, M.uniform_distribution])
def test_distribution_errors(fn):
    with pytest.raises(ValueError, match="negative"):
        fn([10, 5], -1)
    with pytest.raises(ValueError, match="larger than possible.*15"):
        fn([10, 5], 16)


# ----------------------------------------------------------------------------------------------
# Uniform and ERK
# ----------------------------------------------------------------------------------------------


def test_uniform_distribution_exact_and_proportional():
    rng = random.Random(7)
    for _ in range(200):
        sizes = [rng.randint(1, 1000) for _ in range(rng.randint(1, 8))]
        n = rng.randint(0, sum(sizes))
        r = M.uniform_distribution(sizes, n)
        assert sum(r) == n
        for ri, s in zip(r, sizes):
            assert abs(ri - n * s / sum(sizes)) < 1 and 0 <= ri <= s
    assert M.uniform_distribution([100, 300], 200) == [50, 150]


def test_erk_distribution():
    shapes = [(3, 3, 3, 16), (3, 3, 16, 32), (3, 3, 32, 64), (64, 10)]
    sizes = [math.prod(s) for s in shapes]
    n = int(sum(sizes) * 0.8)
    r = M.erk_distribution(shapes, n)
    assert sum(r) == n and all(0 <= x <= s for x, s in zip(r, sizes))
    keep = [s - x for s, x in zip(sizes, r)]
    dens = [k / s for k, s in zip(keep, sizes)]
    score = [sum(s) / math.prod(s) for s in shapes]
    # the small stem conv has the largest score: it is capped dense
    assert dens[0] == 1.0
    # uncapped layers: density / score is the same eps (up to rounding of one weight)
    eps = [d / sc for d, sc in zip(dens[1:], score[1:]) if d < 1]
    assert len(eps) >= 2 and max(eps) / min(eps) < 1.01
    assert M.erk_distribution(shapes, 0) == [0, 0, 0, 0]
    assert M.erk_distribution(shapes, sum(sizes)) == sizes


# ----------------------------------------------------------------------------------------------
# Plans
# ----------------------------------------------------------------------------------------------


def test_make_plan_methods_and_totals():
    params = resnet_shapes(16, 10)
    base = M.count_weights(resnet_shapes(8, 10))
    for method in ("paper", "uniform", "erk"):
        plan = M.make_plan(params, base_total=base, method=method)
        assert plan.total_keep == base == plan.total_base and plan.difference == 0
        assert plan.total_width == 2724 * 256 + 27 * 16 + 8 * 16 * 10
        assert sum(l.keep for l in plan.layers) == base
    d = M.make_plan(params, num_to_remove=0).to_dict()
    assert d["total_keep"] == d["total_width"] and all(l["keep"] == l["size"] for l in d["layers"])


def test_make_plan_dense_layers_and_flat_mapping():
    # NTK MLP: width 635 at the count of width 8, last layer dense
    shapes = {"fc/kernel": (784, 635), "cl/kernel": (635, 10)}
    n = (635 - 8) * 794
    plan = M.make_plan(
        shapes, ["fc/kernel", "cl/kernel"], num_to_remove=n, dense_layers=["cl/kernel"]
    )
    assert plan.by_name["cl/kernel"].dense and plan.by_name["fc/kernel"].keep == 2
    assert plan.total_keep == 8 * 794 == 6352
    # the module path names the same layer
    by_module = M.make_plan(
        shapes, ["fc/kernel", "cl/kernel"], num_to_remove=n, dense_layers=["cl"]
    )
    assert [l.keep for l in by_module.layers] == [l.keep for l in plan.layers]
    # the paper method without dense_layers levels fc and cl instead
    paper = M.make_plan(shapes, num_to_remove=n)
    assert [l.keep for l in paper.layers] == [3176, 3176]
    # baseline MLP split: everything from fc (fract_freeze_cl = 0) == dense cl
    fc, cl = M.baseline_mlp_removals(784 * 635, 6350, n)
    assert (fc, cl) == (n, 0)
    plan2 = M.make_plan(
        shapes, num_to_remove=n, method="explicit", removals={"fc/kernel": fc, "cl/kernel": cl}
    )
    assert [l.keep for l in plan2.layers] == [l.keep for l in plan.layers]
    with pytest.raises(ValueError, match="at most 3919"):
        M.baseline_mlp_removals(3920, 10, 3925, num_remove_cl=5)


def test_make_plan_errors():
    params = resnet_shapes(8, 10)
    total = M.count_weights(params)
    with pytest.raises(ValueError, match=f"base_total={total + 1}.*below the base width"):
        M.make_plan(params, base_total=total + 1)
    with pytest.raises(ValueError, match="unknown method 'foo'.*paper"):
        M.make_plan(params, base_total=10, method="foo")
    with pytest.raises(ValueError, match="unknown granularity 'io'.*kernel"):
        M.make_plan(params, base_total=10, granularity="io")
    with pytest.raises(ValueError, match="cannot remove -5"):
        M.make_plan(params, num_to_remove=-5)
    with pytest.raises(ValueError, match="exactly one"):
        M.make_plan(params)
    order = M.counted_paths(params)[1:]
    with pytest.raises(ValueError, match="missing: \\['conv1/kernel'\\]"):
        M.make_plan(params, order, base_total=10)
    with pytest.raises(ValueError, match="dense_layers.*bn1"):
        M.make_plan(params, base_total=10, dense_layers=["bn1/scale"])


def test_kernel_granularity_plan():
    # ResNet: the sparsified group holds 1x1 shortcuts -> exact; otherwise close.
    params = resnet_shapes(32, 10)
    rng = random.Random(0)
    for base in [M.count_weights(resnet_shapes(b, 10)) for b in (8, 12, 16)] + [
        rng.randint(10_000, 300_000) for _ in range(20)
    ]:
        plan = M.make_plan(params, base_total=base, granularity="kernel")
        for l in plan.layers:
            assert l.keep % l.unit == 0 and l.unit == (
                9 if len(l.shape) == 4 and l.shape[0] == 3 else 1
            )
        group_units = {l.unit for l in plan.layers if not l.dense}
        if 1 in group_units:
            assert plan.difference == 0
        else:
            assert abs(plan.difference) <= 4
    # only 3x3 layers: the best achievable total is the nearest multiple of 9
    shapes = {"a/kernel": (3, 3, 8, 8), "b/kernel": (3, 3, 8, 16)}
    for n in range(0, 9 * 64 * 3, 7):
        plan = M.make_plan(shapes, num_to_remove=n, granularity="kernel")
        best = min(abs(n - 9 * t) for t in range(0, 3 * 64 + 1))
        assert abs(plan.difference) == best, n
    # a dense (unit 1) layer in the group absorbs the remainder exactly
    shapes = {"a/kernel": (3, 3, 8, 8), "b/kernel": (64, 10)}
    for n in range(0, 1000, 13):
        assert (
            M.make_plan(shapes, num_to_remove=n, method="uniform", granularity="kernel").difference
            == 0
        )


# ----------------------------------------------------------------------------------------------
# Layer order
# ----------------------------------------------------------------------------------------------


def _toy_params(order_of_keys):
    shapes = {
        "layer2": (4, 5),
        "layer10": (3, 4),
        "conv": (5, 6),
        "shortcut": (4, 6),
        "head": (6, 2),
    }
    return {
        k: {"kernel": jnp.ones(shapes[k]), "bias": jnp.zeros(shapes[k][1])} for k in order_of_keys
    }


def _toy_fn(p, x, scale=1.0):
    h = x @ p["layer10"]["kernel"]  # 3 -> 4
    h = jnp.tanh(h @ p["layer2"]["kernel"])  # 4 -> 5
    main = jax.jit(lambda a, w: a @ w)(h, p["conv"]["kernel"])  # inside a pjit
    sc = jax.checkpoint(lambda a, w: a @ w)(x @ p["layer10"]["kernel"], p["shortcut"]["kernel"])
    return (main + sc) @ p["head"]["kernel"] * scale


def test_forward_order_ignores_dict_order():
    want = [
        ("layer10", "kernel"),
        ("layer2", "kernel"),
        ("conv", "kernel"),
        ("shortcut", "kernel"),
        ("head", "kernel"),
    ]
    x = jnp.ones((2, 3))
    for keys in (
        ["head", "shortcut", "conv", "layer2", "layer10"],
        ["layer2", "layer10", "shortcut", "conv", "head"],
    ):
        params = _toy_params(keys)
        assert M.counted_paths(params) == [(k, "kernel") for k in keys]
        assert M.forward_order(_toy_fn, params, x, scale=2.0) == want
        shapes = jax.tree.map(lambda a: S(a.shape, a.dtype), params)
        assert M.forward_order(_toy_fn, shapes, S((2, 3), F32)) == want


def test_forward_order_flax_module_sorted_keys_differ():
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = nn.Dense(4, name="layer2")(x)
            b = nn.Dense(4, name="layer10")(a)
            c = nn.Dense(4, name="conv")(b)
            s = nn.Dense(4, name="shortcut")(b)
            return c + s

    net = Net()
    params = net.init(jax.random.key(0), jnp.ones((1, 3)))["params"]
    # reorder the dict so that insertion order is sorted order, not call order
    shuffled = {k: params[k] for k in sorted(params)}
    got = M.forward_order(lambda p, x: net.apply({"params": p}, x), shuffled, jnp.ones((1, 3)))
    assert [p[0] for p in got] == ["layer2", "layer10", "conv", "shortcut"]
    assert [p[0] for p in M.counted_paths(shuffled)] == ["conv", "layer10", "layer2", "shortcut"]


def test_forward_order_real_resnet_matches_golden_order():
    models = pytest.importorskip("widesparse_jax.models")
    model = models.create_model("resnet18", 4, 10, stem="cifar")
    x = S((1,) + tuple(models.input_shape("resnet18", stem="cifar")), F32)
    variables = jax.eval_shape(lambda k, xx: model.init(k, xx, train=False), jax.random.key(0), x)
    params, stats = variables["params"], variables["batch_stats"]
    order = M.forward_order(
        lambda p, s, xx: model.apply({"params": p, "batch_stats": s}, xx, train=False),
        params,
        stats,
        x,
    )
    golden = [l["name"] for l in golden_cases()[0]["layers"]]
    assert [torch_name(M.path_name(p)) for p in order] == golden


# ----------------------------------------------------------------------------------------------
# Drawing masks
# ----------------------------------------------------------------------------------------------


def _plan_and_params(method="paper", granularity="weight"):
    params = resnet_shapes(16, 10)
    plan = M.make_plan(
        params,
        base_total=M.count_weights(resnet_shapes(6, 10)),
        method=method,
        granularity=granularity,
    )
    return params, plan


@pytest.mark.parametrize(
    "method,granularity",
    [("paper", "weight"), ("uniform", "weight"), ("erk", "weight"), ("paper", "kernel")],
)
def test_draw_masks_exact_counts_and_structure(method, granularity):
    params, plan = _plan_and_params(method, granularity)
    masks = M.draw_masks(jax.random.key(3), params, plan)
    M.check_masks(params, masks)
    assert masks["bn1"]["scale"] is None and masks["linear"]["bias"] is None
    for lp in plan.layers:
        m = masks
        for k in lp.path:
            m = m[k]
        if lp.dense:
            assert m is None
        else:
            assert m.dtype == np.bool_ and m.shape == lp.shape
            assert int(m.sum()) == lp.keep
            if lp.unit > 1:  # whole kernels: constant over the spatial axes
                assert (m == m[:1, :1]).all()
    assert M.count_kept(masks, params) == plan.total_keep
    assert list(masks) == list(params)  # key order preserved


def test_invariant5_seed_and_path_determinism():
    params, plan = _plan_and_params()
    key = jax.random.key(11)
    a = M.draw_masks(key, params, plan)
    b = M.draw_masks(key, params, plan, num_threads=1)
    c = M.draw_masks(jax.random.key(12), params, plan)
    name = ("layer4_1", "conv2", "kernel")

    def get(t):
        return t[name[0]][name[1]][name[2]]

    assert np.array_equal(get(a), get(b))
    assert not np.array_equal(get(a), get(c))
    # add a layer and rename another: the mask of layer4_1/conv2 is unchanged
    params2 = dict(params)
    params2["extra"] = {"kernel": S((3, 3, 16, 16), F32)}
    params2["stem_renamed"] = params2.pop("conv1")
    lp = plan.by_name["layer4_1/conv2/kernel"]
    other = [
        M.LayerPlan(("extra", "kernel"), "extra/kernel", (3, 3, 16, 16), 2304, 100),
        M.LayerPlan(("stem_renamed", "kernel"), "stem_renamed/kernel", (3, 3, 3, 16), 432, 200),
        lp,
    ]
    plan2 = M.MaskPlan(tuple(other), "explicit", "weight", 0, 0, 0)
    sub = {
        "extra": params2["extra"],
        "stem_renamed": params2["stem_renamed"],
        "layer4_1": {"conv2": params["layer4_1"]["conv2"]},
    }
    d = M.draw_masks(key, sub, plan2)
    assert np.array_equal(get(d), get(a))
    # the layer's mask is exactly draw_layer_mask(key, its plan)
    assert np.array_equal(M.draw_layer_mask(key, lp), get(a))
    # int seeds work and equal jax.random.key(seed)
    assert np.array_equal(get(M.draw_masks(11, params, plan)), get(a))
    # old-style raw uint32[2] keys give the same masks as typed keys with the same data
    assert np.array_equal(get(M.draw_masks(jax.random.PRNGKey(11), params, plan)), get(a))


def test_frozendict_params_keep_their_type():
    core = pytest.importorskip("flax.core")
    params = core.freeze(
        {"b": {"kernel": S((6, 4), F32), "bias": S((4,), F32)}, "a": {"kernel": S((4, 3), F32)}}
    )
    plan = M.make_plan(params, num_to_remove=10)
    masks = M.draw_masks(0, params, plan)
    assert type(masks) is type(params) and list(masks) == ["b", "a"]
    assert int(masks["b"]["kernel"].sum()) == 14 and masks["a"]["kernel"] is None


def test_exact_subset_uniform():
    rng = np.random.default_rng(0)
    for n, k in ((6, 2), (6, 4)):  # minority = kept and minority = removed paths
        counts = {}
        trials = 6000
        for _ in range(trials):
            s = _exact_subset(rng, n, k)
            assert s.sum() == k
            key = tuple(np.flatnonzero(s))
            counts[key] = counts.get(key, 0) + 1
        assert len(counts) == math.comb(n, k)
        expect = trials / math.comb(n, k)
        chi2 = sum((c - expect) ** 2 / expect for c in counts.values())
        assert chi2 < 45  # 14 dof: p ~ 5e-5
    assert _exact_subset(rng, 10, 0).sum() == 0 and _exact_subset(rng, 10, 10).all()


def test_draw_position_frequencies_uniform():
    layer = M.LayerPlan(("a", "kernel"), "a/kernel", (4, 5), 20, 7)
    freq = np.zeros((4, 5))
    base = jax.random.key(0)
    for i in range(400):
        freq += M.draw_layer_mask(jax.random.fold_in(base, i), layer)
    p = freq / 400  # expected 7/20 = 0.35, sd ~ 0.024
    assert np.abs(p - 0.35).max() < 0.11


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _real_params():
    k = jax.random.key(0)
    return {
        "fc": {
            "kernel": jax.random.uniform(k, (20, 30), minval=-1, maxval=1),
            "bias": jnp.full((30,), 0.5),
        },
        "bn": {"scale": jnp.ones((30,))},
        "cl": {"kernel": jnp.ones((30, 4)), "bias": jnp.ones((4,))},
    }


def test_apply_count_report_rescale():
    params = _real_params()
    plan = M.make_plan(params, num_to_remove=450)  # fc 600 -> 150 kept (density 0.25)
    assert plan.by_name["fc/kernel"].keep == 150 and plan.by_name["cl/kernel"].dense
    masks = M.draw_masks(jax.random.key(0), params, plan)
    assert M.count_weights(params) == 720 and M.count_kept(masks, params) == 270
    masked = jax.jit(M.apply_masks)(params, masks)
    fc = np.asarray(masked["fc"]["kernel"])
    assert (fc[~masks["fc"]["kernel"]] == 0).all()
    assert np.array_equal(
        fc[masks["fc"]["kernel"]], np.asarray(params["fc"]["kernel"])[masks["fc"]["kernel"]]
    )
    assert M.apply_masks(params, masks)["cl"]["kernel"] is params["cl"]["kernel"]  # dense
    rep = M.density_report(params, masks, M.counted_paths(params))
    assert rep == [
        {"name": "fc/kernel", "shape": [20, 30], "size": 600, "kept": 150, "density": 0.25},
        {"name": "cl/kernel", "shape": [30, 4], "size": 120, "kept": 120, "density": 1.0},
    ]
    text = M.format_density_report(rep)
    assert "fc/kernel" in text and "0.2500" in text and "270" in text
    r = M.rescale_for_density(params, masks)
    m = masks["fc"]["kernel"]
    np.testing.assert_allclose(
        np.asarray(r["fc"]["kernel"])[m], 2.0 * np.asarray(params["fc"]["kernel"])[m], rtol=1e-6
    )
    assert (np.asarray(r["fc"]["kernel"])[~m] == 0).all()
    np.testing.assert_allclose(r["fc"]["bias"], 1.0)  # bias scaled by 1/sqrt(0.25)
    np.testing.assert_allclose(r["cl"]["bias"], 1.0)  # dense layer untouched
    np.testing.assert_allclose(r["bn"]["scale"], 1.0)


def test_check_masks_errors():
    params = _real_params()
    masks = M.draw_masks(0, params, M.make_plan(params, num_to_remove=100))
    M.check_masks(params, masks)
    bad = {**masks, "fc": {**masks["fc"], "kernel": np.ones((30, 20), bool)}}
    with pytest.raises(ValueError, match=r"\(30, 20\).*\(20, 30\).*fc/kernel"):
        M.check_masks(params, bad)
    with pytest.raises(ValueError, match="missing in masks \\['cl/kernel', 'cl/bias'\\]"):
        M.check_masks(params, {k: v for k, v in masks.items() if k != "cl"})
    with pytest.raises(ValueError, match="fc/bias.*must be None"):
        M.check_masks(params, {**masks, "fc": {**masks["fc"], "bias": np.ones(30, bool)}})
    with pytest.raises(ValueError, match="dtype"):
        M.check_masks(
            params, {**masks, "fc": {**masks["fc"], "kernel": np.ones((20, 30), np.float32)}}
        )
    with pytest.raises(ValueError, match="shape"):
        M.draw_masks(
            0,
            {"fc": {"kernel": S((3, 3), F32)}},
            M.make_plan({"fc/kernel": (3, 4)}, num_to_remove=1),
        )


def test_public_face_reexports_one_implementation():
    from widesparse_jax import choices, tree
    from widesparse_jax.sparsity import draw, order, plan, report

    assert all(hasattr(M, name) for name in M.__all__)
    assert M.apply_masks is tree.apply_masks and M.path_name is tree.path_name
    assert M.make_plan is plan.make_plan and M.forward_order is order.forward_order
    assert M.draw_masks is draw.draw_masks and M.check_masks is report.check_masks
    assert M.METHODS == choices.PLAN_METHODS and M.GRANULARITIES == choices.GRANULARITIES
    for gone in ("insertion_order", "walk_leaves", "map_with_path", "_leaves_by_path"):
        assert not hasattr(M, gone), gone
