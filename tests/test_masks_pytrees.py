"""The mask library on every pytree: Haiku, Equinox (MLP and CNN), Flax NNX, PyTorch names.

Each example runs the whole route with the functions' defaults: forward order, a plan with
``base_total`` (the dense base-width count, from shapes only), drawn masks, 25 steps of
real SGD (optax, masked updates), the exact kept count, and masked weights exactly 0 after
training.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from widesparse_jax import masks as M
from widesparse_jax import tree

hk = pytest.importorskip("haiku")
eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")

STEPS = 25


def _data(x_shape, classes=3, seed=0):
    """A learnable toy task (numpy: no PRNG kernels to compile)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    y = np.argmax(x.reshape(x.shape[0], -1) @ rng.standard_normal((x[0].size, classes)), -1)
    return jnp.asarray(x), jnp.asarray(y)


def _xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _numpy_init(shapes, seed=0):
    """Real arrays for a tree of ``ShapeDtypeStruct`` leaves (from the library's own init
    under ``eval_shape``): weights N(0, 1/fan_in), vectors 0. numpy draws them, so no PRNG
    kernel is compiled (that would cost seconds per shape on CPU)."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        if len(leaf.shape) < 2:
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = leaf.size // (leaf.shape[0] if path[-1] == "weight" else leaf.shape[-1])
        return jnp.asarray(rng.normal(0, fan_in**-0.5, leaf.shape), leaf.dtype)

    return tree.map_with_path(fill, shapes)


def _train(loss, params, masks, x, y, lr=0.1):
    """25 SGD-momentum steps with masked gradients and updates -> (params, first, last loss)."""
    tx = optax.sgd(lr, momentum=0.9)

    @jax.jit
    def start(params):
        params = M.apply_masks(params, masks)
        return params, tx.init(params)

    @jax.jit
    def step(params, opt):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        updates, opt = tx.update(M.apply_masks(grads, masks), opt, params)
        return optax.apply_updates(params, M.apply_masks(updates, masks)), opt, value

    params, opt = start(params)
    losses = []
    for _ in range(STEPS):
        params, opt, value = step(params, opt)
        losses.append(float(value))
    return params, losses[0], losses[-1]


def _check_trained(params, masks, plan, base_total):
    """Exact kept count; masked weights exactly 0, kept ones trained (non-zero)."""
    assert plan.total_keep == base_total == M.count_kept(masks, params)
    by_path = tree.leaves_by_path(masks)
    for p, w in tree.walk(params):
        m = by_path.get(p)
        if m is not None:
            w = np.asarray(w)
            assert (w[~m] == 0).all() and np.count_nonzero(w[m]) == m.sum(), tree.path_name(p)
    assert sum(m is not None for m in by_path.values()) >= 1
    # mask trees have the params' structure and work with jax.tree.map
    kept = jax.tree.map(
        lambda m, w: None if m is None else int(m.sum()),
        masks,
        params,
        is_leaf=lambda v: v is None,
    )
    assert jax.tree.structure(kept, is_leaf=lambda v: v is None) == jax.tree.structure(
        masks, is_leaf=lambda v: v is None
    )


def _plan_draw(params, order, base_total, **kw):
    plan = M.make_plan(params, order, base_total=base_total, **kw)
    masks = M.draw_masks(jax.random.key(7), params, plan)
    M.check_masks(params, masks)
    return plan, masks


# ---- Haiku


def _haiku_mlp(widths):
    return hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP(widths)(x)))


def test_haiku_mlp():
    x, y = _data((64, 6))
    net = _haiku_mlp([32, 32, 3])
    params = _numpy_init(jax.eval_shape(net.init, jax.random.key(0), x[:1]))
    base = M.count_weights(jax.eval_shape(_haiku_mlp([8, 8, 3]).init, jax.random.key(0), x[:1]))
    order = M.forward_order(net.apply, params, x[:1])
    assert [M.path_name(p) for p in order] == [f"mlp/~/linear_{i}/w" for i in range(3)]
    assert order == [(f"mlp/~/linear_{i}", "w") for i in range(3)]
    # the module path names the last layer (Haiku keys hold '/' themselves)
    plan, masks = _plan_draw(params, order, base, dense_layers=["mlp/~/linear_2"])
    assert plan.by_name["mlp/~/linear_2/w"].dense and masks["mlp/~/linear_2"]["w"] is None
    assert masks["mlp/~/linear_0"]["b"] is None
    scaled = M.rescale_for_density(params, masks)  # the sibling bias 'b' of 'w' is scaled
    d = plan.by_name["mlp/~/linear_0/w"].density
    np.testing.assert_allclose(
        scaled["mlp/~/linear_0"]["b"], params["mlp/~/linear_0"]["b"] / np.sqrt(d), rtol=1e-6
    )

    def loss(p, x, y):
        return _xent(net.apply(p, x), y)

    trained, first, last = _train(loss, scaled, masks, x, y)
    assert last < first
    _check_trained(trained, masks, plan, base)


# ---- Equinox


def test_equinox_mlp():
    x, y = _data((64, 6))
    model = _numpy_init(eqx.filter_eval_shape(eqx.nn.MLP, 6, 3, 32, 2, key=jax.random.key(0)))
    base = M.count_weights(eqx.filter_eval_shape(eqx.nn.MLP, 6, 3, 4, 2, key=jax.random.key(0)))
    assert base == 6 * 4 + 4 * 4 + 4 * 3
    order = M.forward_order(lambda m, x: jax.vmap(m)(x), model, x)
    assert order == [("layers", i, "weight") for i in range(3)]
    plan, masks = _plan_draw(model, order, base, method="erk")
    assert isinstance(masks, eqx.nn.MLP) and masks.activation is None
    assert masks.layers[0].bias is None and masks.layers[0].weight.shape == (32, 6)
    params, static = eqx.partition(model, eqx.is_array)

    def loss(p, x, y):
        return _xent(jax.vmap(eqx.combine(p, static))(x), y)

    trained, first, last = _train(loss, params, masks, x, y)
    assert last < first
    _check_trained(trained, masks, plan, base)


class _CNN(eqx.Module):
    head: eqx.nn.Linear  # declared first: walk order is not forward order
    conv2: eqx.nn.Conv2d
    conv1: eqx.nn.Conv2d

    def __init__(self, width, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(1, width, 3, key=k1)
        self.conv2 = eqx.nn.Conv2d(width, 2 * width, 3, key=k2)
        self.head = eqx.nn.Linear(2 * width, 3, key=k3)

    def __call__(self, x):
        h = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
        return self.head(h.mean(axis=(1, 2)))


@pytest.mark.parametrize("granularity", ["weight", "kernel"])
def test_equinox_cnn(granularity):
    x, y = _data((32, 1, 8, 8))
    model = _numpy_init(eqx.filter_eval_shape(_CNN, 8, jax.random.key(0)))
    base = M.count_weights(eqx.filter_eval_shape(_CNN, 3, jax.random.key(0)))
    assert M.counted_paths(model) == [("head", "weight"), ("conv2", "weight"), ("conv1", "weight")]
    order = M.forward_order(lambda m, x: jax.vmap(m)(x), model, x)
    assert order == [("conv1", "weight"), ("conv2", "weight"), ("head", "weight")]
    plan, masks = _plan_draw(model, order, base, granularity=granularity)
    if granularity == "kernel":  # OIHW: whole 3x3 kernels, constant over the last two axes
        conv2 = plan.by_name["conv2/weight"]
        assert conv2.unit == 9 and conv2.channels_first and not conv2.dense
        m = masks.conv2.weight
        assert m.shape == (16, 8, 3, 3) and (m == m[:, :, :1, :1]).all()
        assert int(m[:, :, 0, 0].sum()) * 9 == conv2.keep
        assert abs(plan.difference) <= 4
        base = plan.total_keep
    params, static = eqx.partition(model, eqx.is_array)

    def loss(p, x, y):
        return _xent(jax.vmap(eqx.combine(p, static))(x), y)

    trained, first, last = _train(loss, params, masks, x, y)
    assert last < first
    _check_trained(trained, masks, plan, base)


# ---- Flax NNX


class _NNXNet(nnx.Module):
    def __init__(self, width, rngs):
        self.b_in = nnx.Linear(6, width, rngs=rngs)  # 'b_in' sorts after 'a_out'
        self.a_out = nnx.Linear(width, 3, rngs=rngs)

    def __call__(self, x):
        return self.a_out(jax.nn.relu(self.b_in(x)))


def test_flax_nnx():
    x, y = _data((64, 6))
    graph, shapes = nnx.split(nnx.eval_shape(lambda: _NNXNet(32, nnx.Rngs(0))))
    params = _numpy_init(shapes)
    base = M.count_weights(nnx.split(nnx.eval_shape(lambda: _NNXNet(4, nnx.Rngs(0))))[1])
    assert base == 6 * 4 + 4 * 3
    assert M.counted_paths(params) == [("a_out", "kernel"), ("b_in", "kernel")]

    def apply(p, x):
        return nnx.merge(graph, p)(x)

    order = M.forward_order(apply, params, x)
    assert order == [("b_in", "kernel"), ("a_out", "kernel")]
    plan, masks = _plan_draw(params, order, base, method="uniform")
    assert type(masks) is type(params)

    def loss(p, x, y):
        return _xent(apply(p, x), y)

    trained, first, last = _train(loss, params, masks, x, y)
    assert last < first
    _check_trained(trained, masks, plan, base)
    model = nnx.merge(graph, trained)
    assert (np.asarray(model.b_in.kernel[...])[~masks["b_in"]["kernel"]] == 0).all()


# ---- plain dict with PyTorch names (OIHW conv, (out, in) linear)


def _torch_named(width, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "features": {
            "0": {
                "weight": jnp.asarray(rng.normal(0, 0.3, (width, 3, 3, 3)), jnp.float32),
                "bias": jnp.zeros(width),
            }
        },
        "classifier": {
            "weight": jnp.asarray(rng.normal(0, 0.3, (3, width)), jnp.float32),
            "bias": jnp.zeros(3),
        },
    }


def _torch_forward(p, x):
    conv = p["features"]["0"]
    h = jax.lax.conv_general_dilated(x, conv["weight"], (1, 1), "SAME")  # NCHW, OIHW
    h = jax.nn.relu(h + conv["bias"][:, None, None]).mean(axis=(2, 3))
    return h @ p["classifier"]["weight"].T + p["classifier"]["bias"]


@pytest.mark.parametrize("granularity", ["weight", "kernel"])
def test_pytorch_named_dict(granularity):
    x, y = _data((32, 3, 6, 6))
    params = _torch_named(16)
    base = M.count_weights(jax.eval_shape(lambda: _torch_named(4)))
    assert base == 4 * 27 + 3 * 4
    order = M.forward_order(_torch_forward, params, x)
    assert [M.path_name(p) for p in order] == ["features/0/weight", "classifier/weight"]
    plan, masks = _plan_draw(params, order, base, granularity=granularity)
    if granularity == "kernel":
        m = masks["features"]["0"]["weight"]
        assert (m == m[:, :, :1, :1]).all()
        base = plan.total_keep
    rescaled = M.rescale_for_density(params, masks)  # 'bias' beside 'weight' is scaled
    d = plan.by_name["features/0/weight"].density
    assert d < 1

    def loss(p, x, y):
        return _xent(_torch_forward(p, x), y)

    trained, first, last = _train(loss, rescaled, masks, x, y)
    assert last < first
    _check_trained(trained, masks, plan, base)


# ---- predicates and errors


def test_nothing_counted_is_an_error_listing_the_leaves():
    only_bias = {"fc": {"bias": jnp.zeros(3)}, "bn": {"scale": jnp.ones(3)}}
    for fn in (
        M.count_weights,
        M.counted_paths,
        lambda p: M.make_plan(p, num_to_remove=0),
        lambda p: M.forward_order(lambda q: q["fc"]["bias"].sum(), p),
        lambda p: M.count_kept(jax.tree.map(lambda _: None, p), p),
        lambda p: M.density_report(p, jax.tree.map(lambda _: None, p)),
    ):
        with pytest.raises(ValueError, match=r"no counted weights.*\['fc/bias', 'bn/scale'\]"):
            fn(only_bias)
    # integer and bool 'kernel' leaves are not weights; 1-d 'w' is not either
    odd = {"a": {"kernel": jnp.zeros((3, 3), jnp.int32)}, "b": {"w": jnp.zeros(4)}}
    with pytest.raises(ValueError, match="no counted weights"):
        M.count_weights(odd)
    assert M.count_weights({"a": {"kernel": jnp.zeros((2, 3), jnp.bfloat16)}}) == 6


def test_custom_predicate_is_passed_through_everything():
    """A flat PyTorch state_dict ('fc1.weight'): counted only with a custom predicate."""
    sd = {
        "fc1.weight": jnp.ones((8, 5)),
        "fc1.bias": jnp.zeros(8),
        "fc2.weight": jnp.ones((2, 8)),
    }

    def pred(path, leaf):
        return str(path[-1]).endswith(".weight") and leaf.ndim >= 2

    def forward(p, x):
        return (x @ p["fc1.weight"].T + p["fc1.bias"]) @ p["fc2.weight"].T

    with pytest.raises(ValueError, match="no counted weights"):
        M.make_plan(sd, num_to_remove=10)
    order = M.forward_order(forward, sd, jnp.ones((1, 5)), predicate=pred)
    assert order == [("fc1.weight",), ("fc2.weight",)]
    plan = M.make_plan(sd, order, base_total=20, predicate=pred)
    masks = M.draw_masks(0, sd, plan, predicate=pred)
    with pytest.raises(ValueError, match="no counted weights"):
        M.draw_masks(0, sd, plan)
    M.check_masks(sd, masks, predicate=pred)
    assert M.count_weights(sd, pred) == 56 and M.count_kept(masks, sd, pred) == 20
    assert [r["kept"] for r in M.density_report(sd, masks, predicate=pred)] == [
        l.keep for l in plan.layers
    ]
    assert M.rescale_for_density(sd, masks, pred)["fc1.bias"] is sd["fc1.bias"]


def test_names_resolve_for_int_and_slash_keys():
    model = eqx.filter_eval_shape(eqx.nn.MLP, 4, 2, 8, 1, key=jax.random.key(0))
    plan = M.make_plan(model, ["layers/0/weight", "layers/1/weight"], num_to_remove=10)
    assert [l.path for l in plan.layers] == [("layers", 0, "weight"), ("layers", 1, "weight")]
    dense = M.make_plan(model, num_to_remove=10, dense_layers=["layers/1"])
    assert dense.by_name["layers/1/weight"].dense and dense.by_name["layers/0/weight"].keep == 22
    with pytest.raises(ValueError, match=r"not counted / unknown: \['layers/9/weight'\]"):
        M.make_plan(model, ["layers/0/weight", "layers/9/weight"], num_to_remove=1)
    # a flat {name: shape} plan draws onto the real tree (matched by name)
    flat = M.make_plan({"layers/0/weight": (8, 4), "layers/1/weight": (2, 8)}, num_to_remove=10)
    masks = M.draw_masks(0, model, flat)
    assert int(masks.layers[0].weight.sum()) == 22 and masks.layers[1].weight is None
    assert M.count_kept(masks, model) == 38


def test_two_counted_leaves_with_one_name_are_refused():
    clash = {"a/b": {"kernel": jnp.ones((2, 2))}, "a": {"b": {"kernel": jnp.ones((2, 2))}}}
    with pytest.raises(ValueError, match="share the name 'a/b/kernel'"):
        M.count_weights(clash)
