"""Tests for widesparse_jax.optim: torch parity, schedules, masked updates, jit, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from widesparse_jax import optim

SHAPES = {
    "conv": {"kernel": (3, 3, 2, 4)},
    "bn": {"scale": (4,), "bias": (4,)},
    "fc": {"kernel": (6, 5), "bias": (5,)},
}


# Scale 0.1 (weights and gradients of a realistic size). torch's CPU kernels fuse
# `p + alpha * buf` and `g + wd * p` into FMAs, XLA does not: each step may differ by an ulp,
# so the 1e-6 absolute bound is a few ulps at the final weight sizes (|w| up to ~1.5).
def _params(seed=0, scale=0.1):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: (scale * rng.normal(size=s)).astype(np.float32),
        SHAPES,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def _grads(num_steps, seed=1, scale=0.1):
    rng = np.random.default_rng(seed)
    return [
        jax.tree.map(
            lambda s: (scale * rng.normal(size=s)).astype(np.float32),
            SHAPES,
            is_leaf=lambda x: isinstance(x, tuple),
        )
        for _ in range(num_steps)
    ]


def _paths(tree):
    return [tuple(k.key for k in kp) for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _make_step(tx):
    @jax.jit
    def step(params, state, g, masks):
        upd, state = tx.update(g, state, params, masks=masks)
        return optax.apply_updates(params, upd), state

    return step


def _run_jax(tx, params, grads, masks=None):
    state = tx.init(params)
    step = _make_step(tx)
    for g in grads:
        params, state = step(params, state, g, masks)
    return params, state


def _run_torch(
    params,
    grads,
    *,
    lr,
    momentum,
    wd,
    nesterov=False,
    sched=None,
    spe=1,
    group_lr_mult=None,
    frozen=None,
):
    """torch.optim.SGD on the same leaves; scheduler stepped once per epoch of `spe` steps.

    group_lr_mult: path -> multiplier (one param group per leaf). frozen: path -> bool array of
    removed entries, whose grads are zeroed before the step (the baseline's gradient masking).
    """
    paths = _paths(params)
    flat = jax.tree.leaves(params)
    tparams = [torch.tensor(np.array(x), requires_grad=True) for x in flat]
    mult = group_lr_mult or (lambda p: 1.0)
    groups = [{"params": [t], "lr": lr * mult(p)} for t, p in zip(tparams, paths)]
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    scheduler = sched(opt) if sched else None
    lrs = []
    for s, g in enumerate(grads):
        lrs.append(opt.param_groups[0]["lr"])
        for t, gl, p in zip(tparams, jax.tree.leaves(g), paths):
            t.grad = torch.tensor(np.array(gl))
            if frozen is not None and frozen.get(p) is not None:
                t.grad[torch.tensor(frozen[p])] = 0
        opt.step()
        if scheduler is not None and (s + 1) % spe == 0:
            scheduler.step()
    bufs = [opt.state[t]["momentum_buffer"].numpy() for t in tparams]
    return [t.detach().numpy() for t in tparams], bufs, np.array(lrs)


def _max_diff(jax_leaves, torch_leaves):
    return max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(jax_leaves, torch_leaves))


@pytest.mark.parametrize("nesterov", [False, True])
def test_torch_parity_multistep(nesterov):
    spe, n = 5, 50  # boundaries at epochs 2, 5, 8 -> steps 10, 25, 40
    params, grads = _params(), _grads(n)
    sched = optim.make_schedule(
        "multistep", 0.1, steps_per_epoch=spe, boundaries=(2, 5, 8), gamma=0.1
    )
    tx = optim.make_optimizer(sched, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    out, state = _run_jax(tx, params, grads)
    ref, bufs, lrs = _run_torch(
        params,
        grads,
        lr=0.1,
        momentum=0.9,
        wd=5e-4,
        nesterov=nesterov,
        spe=spe,
        sched=lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5, 8], gamma=0.1),
    )
    diff = _max_diff(jax.tree.leaves(out), ref)
    assert diff < 1e-6, diff
    trace = optax.tree.get(state, "trace")  # the momentum buffer
    assert _max_diff(jax.tree.leaves(trace), bufs) < 1e-5
    # the change happens at exactly the first step of the milestone epoch
    sched = optim.make_schedule("multistep", 0.1, steps_per_epoch=spe, boundaries=(2, 5, 8))
    ours = np.array([sched(s) for s in range(n)])
    np.testing.assert_allclose(ours, lrs, rtol=1e-6)
    assert ours[9] == np.float32(0.1) and ours[10] == np.float32(0.1 * 0.1)
    assert lrs[9] == 0.1 and abs(lrs[10] - 0.01) < 1e-12


def test_torch_parity_cosine_per_epoch():
    spe, epochs = 5, 10
    n = spe * epochs
    params, grads = _params(2), _grads(n, seed=3)
    sched = optim.make_schedule("cosine", 0.1, steps_per_epoch=spe, num_epochs=epochs)
    tx = optim.make_optimizer(sched, weight_decay=1e-4)
    out, _ = _run_jax(tx, params, grads)
    ref, _, lrs = _run_torch(
        params,
        grads,
        lr=0.1,
        momentum=0.9,
        wd=1e-4,
        spe=spe,
        sched=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs),
    )
    assert _max_diff(jax.tree.leaves(out), ref) < 1e-6
    sched = optim.make_schedule("cosine", 0.1, steps_per_epoch=spe, num_epochs=epochs)
    ours = np.array([sched(s) for s in range(n)])
    np.testing.assert_allclose(ours, lrs, rtol=1e-6, atol=1e-9)
    assert len(set(ours[5:10].tolist())) == 1  # constant within an epoch
    assert float(sched(n)) == 0.0 and float(sched(n + 37)) == 0.0  # stays at 0 past the end


def test_lr_multipliers_match_torch_param_groups():
    spe, n = 4, 30
    params, grads = _params(4), _grads(n, seed=5)
    mult = {("fc", "kernel"): 0.25, ("conv", "kernel"): 2.0}
    fn = lambda p: mult.get(p, 1.0)  # noqa: E731
    sched = optim.make_schedule("multistep", 0.05, steps_per_epoch=spe, boundaries=(3, 5))
    tx = optim.make_optimizer(sched, weight_decay=5e-4, lr_multipliers=fn)
    out, _ = _run_jax(tx, params, grads)
    ref, _, _ = _run_torch(
        params,
        grads,
        lr=0.05,
        momentum=0.9,
        wd=5e-4,
        spe=spe,
        group_lr_mult=fn,
        sched=lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[3, 5], gamma=0.1),
    )
    assert _max_diff(jax.tree.leaves(out), ref) < 1e-6
    # the pytree form (None = 1.0) gives the same result as the function form
    tree = {
        "conv": {"kernel": 2.0},
        "bn": {"scale": None, "bias": 1.0},
        "fc": {"kernel": 0.25, "bias": None},
    }
    tx2 = optim.make_optimizer(sched, weight_decay=5e-4, lr_multipliers=tree)
    out2, _ = _run_jax(tx2, params, grads)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(out2)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="fc/bias"):
        bad = {"conv": {"kernel": 2.0}, "bn": {"scale": 1.0, "bias": 1.0}, "fc": {"kernel": 0.25}}
        optim.make_optimizer(lr_multipliers=bad).update(grads[0], tx2.init(params), params)
    with pytest.raises(ValueError, match="-1.0"):
        optim.make_optimizer(lr_multipliers=lambda p: -1.0).update(
            grads[0], tx2.init(params), params
        )


def _masks(params, seed=7):
    rng = np.random.default_rng(seed)
    return {
        "conv": {"kernel": rng.random(params["conv"]["kernel"].shape) < 0.4},
        "bn": {"scale": None, "bias": None},
        "fc": {"kernel": rng.random(params["fc"]["kernel"].shape) < 0.6, "bias": None},
    }


def _masked_params(params, masks):
    return jax.tree.map(
        lambda m, x: x if m is None else np.where(m, x, 0).astype(x.dtype),
        masks,
        params,
        is_leaf=lambda x: x is None,
    )


def test_masked_invariant_300_steps_and_dense_equivalence():
    n = 300
    params = _params(8)
    masks = _masks(params)
    params = _masked_params(params, masks)
    grads = _grads(n, seed=9)  # nonzero at masked positions
    kw = dict(
        learning_rate=optim.make_schedule("multistep", 0.1, steps_per_epoch=20, boundaries=(5, 10)),
        weight_decay=5e-3,
    )
    tx = optim.make_optimizer(**kw)
    state = tx.init(params)
    step = _make_step(tx)
    p = params
    for g in grads:
        p, state = step(p, state, g, masks)
        assert optim.masked_entries_are_zero(p, state, masks)
    trace = optax.tree.get(state, "trace")
    for path in [("conv", "kernel"), ("fc", "kernel")]:
        m = masks[path[0]][path[1]]
        assert np.all(np.asarray(p[path[0]][path[1]])[~m] == 0.0)
        assert np.all(np.asarray(trace[path[0]][path[1]])[~m] == 0.0)
        assert np.any(np.asarray(p[path[0]][path[1]])[m] != 0.0)
    # dense optimizer on grads restricted to kept entries gives the same weights (up to rounding:
    # the two programs fuse differently, so XLA's FMA contraction may differ by an ulp per step)
    pre = [_masked_params(g, masks) for g in grads]
    dense, _ = _run_jax(optim.make_optimizer(**kw), params, pre, masks=None)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(dense)):
        np.testing.assert_array_equal(np.asarray(a) == 0, np.asarray(b) == 0)
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)
    # and torch SGD with the baseline's gradient masking agrees on the first 50 steps
    frozen = {
        ("conv", "kernel"): ~masks["conv"]["kernel"],
        ("fc", "kernel"): ~masks["fc"]["kernel"],
    }
    ref, _, _ = _run_torch(
        params,
        grads[:50],
        lr=0.1,
        momentum=0.9,
        wd=5e-3,
        spe=20,
        frozen=frozen,
        sched=lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[5, 10], gamma=0.1),
    )
    out50, _ = _run_jax(optim.make_optimizer(**kw), params, grads[:50], masks)
    assert _max_diff(jax.tree.leaves(out50), ref) < 1e-6


def test_masked_entries_are_zero_detects_violation():
    params = _params(8)
    masks = _masks(params)
    params = _masked_params(params, masks)
    tx = optim.make_optimizer()
    state = tx.init(params)
    assert optim.masked_entries_are_zero(params, state, masks)
    assert optim.masked_entries_are_zero(params, state, None)
    # a nonzero momentum entry at a masked position is detected
    bad_trace = jax.tree.map(lambda x: x + 1.0, optax.tree.get(state, "trace"))
    bad_state = optax.tree.set(state, trace=bad_trace)
    assert not optim.masked_entries_are_zero(params, bad_state, masks)
    # a nonzero masked weight is detected
    assert not optim.masked_entries_are_zero(_params(8), state, masks)


def test_masks_are_jit_arguments_not_constants():
    params = _params(10)
    masks_a = _masks(params, seed=1)
    masks_b = _masks(params, seed=2)
    tx = optim.make_optimizer(weight_decay=5e-4)
    state = tx.init(params)
    g = _grads(1, seed=11)[0]
    traces = []

    @jax.jit
    def step(p, s, g, m):
        traces.append(1)
        return tx.update(g, s, p, masks=m)

    upd_a, _ = step(params, state, g, masks_a)
    upd_b, _ = step(params, state, g, masks_b)
    assert len(traces) == 1  # new masks reuse the compiled step
    for upd, m in [(upd_a, masks_a), (upd_b, masks_b)]:
        k = np.asarray(upd["conv"]["kernel"])
        assert np.all(k[~m["conv"]["kernel"]] == 0) and np.all(k[m["conv"]["kernel"]] != 0)
    assert not np.array_equal(upd_a["conv"]["kernel"], upd_b["conv"]["kernel"])
    # the masks are inputs of the traced program, never baked-in constants
    closed = jax.make_jaxpr(lambda p, s, g, m: tx.update(g, s, p, masks=m))(
        params, state, g, masks_a
    )
    assert not any(getattr(c, "dtype", None) == np.bool_ for c in closed.consts)
    assert sum(v.aval.dtype == jnp.bool_ for v in closed.jaxpr.invars) == 2
    # masks=None is dense
    upd_d, _ = jax.jit(lambda p, s, g: tx.update(g, s, p))(params, state, g)
    assert np.all(np.asarray(upd_d["conv"]["kernel"]) != 0)


def test_mask_structure_mismatch_errors():
    params = _params(12)
    tx = optim.make_optimizer()
    state = tx.init(params)
    g = _grads(1)[0]
    masks = _masks(params)
    missing = {"conv": masks["conv"], "fc": masks["fc"]}
    with pytest.raises(ValueError, match="masks tree does not match.*bn/scale"):
        tx.update(g, state, params, masks=missing)
    extra = {**masks, "head": {"kernel": np.ones((2, 2), bool)}}
    with pytest.raises(ValueError, match="unexpected leaves.*head/kernel"):
        tx.update(g, state, params, masks=extra)
    wrong_shape = {**masks, "fc": {"kernel": np.ones((5, 6), bool), "bias": None}}
    with pytest.raises(ValueError, match=r"fc/kernel has shape \(5, 6\).*\(6, 5\)"):
        jax.jit(lambda p, s, g, m: tx.update(g, s, p, masks=m))(params, state, g, wrong_shape)


def test_schedules_warmup_and_per_step():
    spe = 10
    s = optim.make_schedule("cosine", 1.0, steps_per_epoch=spe, num_epochs=12, warmup_epochs=2)
    vals = np.array([s(i) for i in range(130)])
    np.testing.assert_allclose(
        vals[:20], np.arange(1, 21) / 20, rtol=1e-6
    )  # linear ramp to base_lr
    # after warmup: cosine over the remaining 10 epochs, constant within each epoch
    expect = [0.5 * (1 + np.cos(np.pi * e / 10)) for e in range(10)]
    np.testing.assert_allclose(vals[20:120], np.repeat(expect, spe), rtol=1e-6, atol=1e-7)
    assert np.all(vals[120:] == 0)
    ps = optim.make_schedule("cosine", 0.1, steps_per_epoch=spe, num_epochs=3, per_step=True)
    pv = np.array([ps(i) for i in range(31)])
    np.testing.assert_allclose(
        pv, 0.05 * (1 + np.cos(np.pi * np.arange(31) / 30)), rtol=1e-5, atol=1e-7
    )
    assert len(set(pv[:10].tolist())) == 10  # changes every step
    c = optim.make_schedule("constant", 0.3)
    assert float(c(0)) == np.float32(0.3) and float(c(10**6)) == np.float32(0.3)
    m = optim.make_schedule(
        "multistep", 0.1, steps_per_epoch=100, warmup_epochs=1
    )  # paper CIFAR milestones
    assert float(m(0)) == pytest.approx(0.1 / 100)
    assert [float(m(e * 100 - d)) for e in (50, 120, 200) for d in (1, 0)] == pytest.approx(
        [0.1, 0.01, 0.01, 0.001, 0.001, 0.0001], rel=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(learning_rate=-0.1), "-0.1"),
        (dict(momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
        (dict(momentum=-0.5), "-0.5"),
        (dict(weight_decay=-1e-4), "-0.0001"),
        (dict(learning_rate=float("nan")), "nan"),
    ],
)
def test_bad_optimizer_inputs_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optim.make_optimizer(**kwargs)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("step_decay",), dict(steps_per_epoch=10), "unknown schedule 'step_decay'.*constant"),
        (
            ("multistep",),
            dict(boundaries=(50, 20, 200), steps_per_epoch=10),
            r"strictly increasing.*\(50, 20, 200\)",
        ),
        (("multistep",), dict(boundaries=(50, 50), steps_per_epoch=10), r"\(50, 50\)"),
        (("multistep",), dict(boundaries=(0, 10), steps_per_epoch=10), "positive integer"),
        (("multistep",), dict(gamma=0.0, steps_per_epoch=10), "gamma"),
        (("multistep",), dict(), "steps_per_epoch must be a positive integer, got None"),
        (("cosine",), dict(steps_per_epoch=10), "num_epochs must be a positive integer, got None"),
        (("cosine",), dict(steps_per_epoch=10, num_epochs=5, warmup_epochs=5), "warmup_epochs"),
        (("multistep",), dict(steps_per_epoch=10, warmup_epochs=60), "warmup"),
        (("constant",), dict(per_step=True), "per_step"),
        (("constant", -0.1), dict(), "-0.1"),
    ],
)
def test_bad_schedule_inputs_raise_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        optim.make_schedule(*args, **kwargs)


def test_sgd_composes_with_optax():
    params = _params(13)
    g = _grads(1)[0]
    tx = optax.chain(
        optax.clip_by_global_norm(1e-3), optim.sgd(0.1, momentum=0.9, weight_decay=0.0)
    )
    upd, _ = tx.update(g, tx.init(params), params)
    norm = optax.global_norm(upd)
    assert float(norm) == pytest.approx(0.1 * 1e-3, rel=1e-5)  # first step: buf = clipped g


def test_masked_wrapper_masks_final_updates_and_momentum_of_any_inner():
    params = _params(14)  # NOT pre-masked: masked entries are nonzero
    masks = _masks(params)
    g = _grads(5, seed=15)
    # an inner transform that adds noise everywhere: only the final masking keeps entries fixed
    tx = optim.masked(
        optax.chain(optim.sgd(0.1, 0.9, weight_decay=1e-2), optax.add_noise(0.1, 0.0, key=0))
    )
    state = tx.init(params)
    p = params
    for gi in g:
        upd, state = tx.update(gi, state, p, masks=masks)
        p = optax.apply_updates(p, upd)
    trace = optax.tree.get(state, "trace")
    for name in ("conv", "fc"):
        m = masks[name]["kernel"]
        np.testing.assert_array_equal(np.asarray(p[name]["kernel"])[~m], params[name]["kernel"][~m])
        assert np.all(np.asarray(trace[name]["kernel"])[~m] == 0.0)  # weight decay never saw them
        assert np.all(np.asarray(p[name]["kernel"])[m] != params[name]["kernel"][m])


def test_from_config_reads_the_project_nested_config():
    import ml_collections

    cfg = ml_collections.ConfigDict()
    cfg.optimizer = ml_collections.ConfigDict(
        dict(
            lr=0.1,
            momentum=0.9,
            nesterov=False,
            weight_decay=5e-4,
            schedule="multistep",
            milestones=(2, 4),
            gamma=0.5,
            warmup_epochs=0,
        )
    )
    cfg.train = ml_collections.ConfigDict(dict(num_epochs=6))
    spe = 3
    tx, s = optim.from_config(cfg, steps_per_epoch=spe)
    assert [float(s(i)) for i in (5, 6, 11, 12)] == pytest.approx([0.1, 0.05, 0.05, 0.025])
    params, grads = _params(16), _grads(20, seed=17)
    out, _ = _run_jax(tx, params, grads)
    sched = optim.make_schedule("multistep", 0.1, steps_per_epoch=spe, boundaries=(2, 4), gamma=0.5)
    ref, _ = _run_jax(optim.make_optimizer(sched, weight_decay=5e-4), params, grads)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(a, b)
    cfg.optimizer.schedule = "cosine"  # num_epochs comes from config.train
    _, c = optim.from_config(cfg, steps_per_epoch=spe)
    assert float(c(3 * spe)) == pytest.approx(0.05) and float(c(6 * spe)) == 0.0
    cfg.optimizer.momentum = 1.5
    with pytest.raises(ValueError, match="1.5"):
        optim.from_config(cfg, steps_per_epoch=spe)
