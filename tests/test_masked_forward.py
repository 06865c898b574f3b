"""Masks in the forward pass: the project models, the generic Masked wrapper, and the train
step's config.sparsity.apply='forward' against today's 'update' masking."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from configs import fashion_mnist_mlp
from widesparse_jax import config as config_lib
from widesparse_jax import data, models, setup, train, tree
from widesparse_jax import masks as masks_lib


def _random_masks(params, key, p=0.5):
    """A mask (bool, keep prob p) on every counted kernel, None elsewhere."""
    counted = set(masks_lib.counted_paths(params))
    leaves = tree.leaves_by_path(params)
    keys = dict(zip(leaves, jax.random.split(key, len(leaves))))

    def draw(path, leaf):
        if path not in counted:
            return None
        return jax.random.bernoulli(keys[path], p, leaf.shape)

    return tree.map_with_path(draw, params)


def _masked_entries(grads, masks):
    out = []
    for path, m in tree.walk(masks):
        if m is not None:
            g = np.asarray(tree.leaves_by_path(grads)[path])
            out.append(g[~np.asarray(m)])
    return np.concatenate(out)


MODELS = {
    "mlp": (lambda: models.create_model("mlp", 16, 10), (4, 784)),
    "mlp_bottleneck": (
        lambda: models.create_model("mlp_bottleneck", 16, 10, base_width=8, input_dim=20),
        (4, 20),
    ),
    "resnet18": (lambda: models.create_model("resnet18", 2, 10), (2, 16, 16, 3)),
}


@pytest.mark.parametrize(
    "name",
    # resnet18: six ResNet-18 compiles (~3 min on 2 cores); the MLPs cover the default run
    [pytest.param(n, marks=pytest.mark.slow) if n == "resnet18" else n for n in MODELS],
)
def test_model_masks_equal_masked_params_and_zero_grads(name):
    make, shape = MODELS[name]
    model = make()
    x = jax.random.normal(jax.random.key(0), shape)
    variables = model.init(jax.random.key(1), x, train=False)
    masks = _random_masks(variables["params"], jax.random.key(2))
    assert any(m is not None for _, m in tree.walk(masks))
    # init with masks: the same tree, initial params with the masked entries at 0
    init_masked = model.init(jax.random.key(1), x, train=False, masks=masks)
    want_init = {**variables, "params": masks_lib.apply_masks(variables["params"], masks)}
    eq = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), init_masked, want_init)
    assert jax.tree.all(eq)
    mutable = ["batch_stats"] if "batch_stats" in variables else False

    def run(params, m=None):
        out = model.apply({**variables, "params": params}, x, train=True, mutable=mutable, masks=m)
        return out[0] if mutable else out

    masked_params = masks_lib.apply_masks(variables["params"], masks)
    got = run(variables["params"], masks)
    want = run(masked_params)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    dense = run(variables["params"])
    assert not np.allclose(np.asarray(dense), np.asarray(got))  # the masks did something
    grads = jax.grad(lambda p: jnp.sum(run(p, masks) ** 2))(variables["params"])
    g = _masked_entries(grads, masks)
    assert g.size > 0 and np.all(g == 0.0)
    dense_grads = jax.grad(lambda p: jnp.sum(run(p) ** 2))(variables["params"])
    assert np.any(_masked_entries(dense_grads, masks) != 0.0)


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Dense(8, name="fc")(x))
        x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
        return nn.Dense(3, name="cl")(x)


def test_masked_wrapper_keeps_params_tree_and_masks_forward():
    x = jax.random.normal(jax.random.key(0), (5, 6))
    plain = _Net()
    wrapped = models.Masked(_Net())
    v_plain = plain.init(jax.random.key(1), x)
    v = wrapped.init(jax.random.key(1), x)
    assert jax.tree.structure(v) == jax.tree.structure(v_plain)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), v, v_plain))
    assert list(v["params"]) == list(v_plain["params"]) == ["fc", "bn", "cl"]
    masks = _random_masks(v["params"], jax.random.key(3))
    y, bs = wrapped.apply(v, x, train=True, masks=masks, mutable=["batch_stats"])
    y_ref, bs_ref = plain.apply(
        {**v, "params": masks_lib.apply_masks(v["params"], masks)},
        x,
        train=True,
        mutable=["batch_stats"],
    )
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    np.testing.assert_array_equal(
        bs["batch_stats"]["bn"]["mean"], bs_ref["batch_stats"]["bn"]["mean"]
    )
    np.testing.assert_array_equal(
        np.asarray(wrapped.apply(v, x)), np.asarray(plain.apply(v_plain, x))
    )  # masks=None: dense
    grads = jax.grad(lambda p: jnp.sum(wrapped.apply({**v, "params": p}, x, masks=masks)))(
        v["params"]
    )
    assert np.all(_masked_entries(grads, masks) == 0.0)
    bad = {"fc": {"kernel": jnp.ones((2, 2), bool)}}
    with pytest.raises(ValueError, match="fc/kernel"):
        wrapped.apply(v, x, masks=bad)


# ----------------------------------------------------------------------------- train step


def _mlp_config():
    c = fashion_mnist_mlp.get_config()
    c.model.width, c.model.base_width = 64, 8
    c.train.batch_size = 32
    return c


def _resnet_config():
    c = default_config.get_config()
    c.dataset.name = "cifar10"
    c.model.name, c.model.width, c.model.base_width = "resnet18", 4, 2
    c.optimizer.lr = 0.05
    c.train.batch_size = 8
    return c


def _losses(c, mode, steps, image_shape):
    c.sparsity.apply = mode
    cfg = config_lib.resolve_config(c)
    run = setup.build_run(cfg, data.static_info(train.data_spec(cfg)), axis_name=None)
    state = setup.init_state(run)
    step = jax.jit(
        functools.partial(
            train.train_step,
            model=run.model,
            tx=run.tx,
            schedule=run.schedule,
            axis_name=None,
            mask_apply=mode,
        )
    )
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        b = c.train.batch_size
        batch = {
            "image": jnp.asarray(rng.normal(size=(b, *image_shape)), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 10, size=b), jnp.int32),
        }
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    return run, state, np.array(losses)


@pytest.mark.parametrize(
    "make, image_shape, steps",
    [
        (_mlp_config, (28, 28, 1), 25),
        pytest.param(_resnet_config, (32, 32, 3), 20, marks=pytest.mark.slow),
    ],
    ids=["mlp", "resnet18"],
)
def test_forward_masking_trains_like_update_masking(make, image_shape, steps):
    run_u, s_u, l_u = _losses(make(), "update", steps, image_shape)
    run_f, s_f, l_f = _losses(make(), "forward", steps, image_shape)
    assert l_u[-1] < l_u[0]  # it trains
    np.testing.assert_allclose(l_f, l_u, rtol=2e-4, atol=1e-5)
    # masked weights and momentum stay exactly 0 in forward mode too
    from widesparse_jax import optim

    assert optim.masked_entries_are_zero(s_f.params, s_f.opt_state, s_f.masks)
    # checkpoints are interchangeable: same tree, same fingerprint, same masks
    d_u, d_f = setup.state_to_dict(s_u), setup.state_to_dict(s_f)
    assert jax.tree.structure(d_u) == jax.tree.structure(d_f)
    assert config_lib.run_fingerprint(run_u.config) == config_lib.run_fingerprint(run_f.config)
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), s_u.masks, s_f.masks)
    assert jax.tree.all(same)


def test_sparsity_apply_is_validated():
    c = default_config.get_config()
    c.sparsity.apply = "backward"
    with pytest.raises(config_lib.ConfigError, match="sparsity.apply='backward'.*'forward'"):
        config_lib.validate_config(c)


def test_resnet18_forward_with_masks_equals_masked_params():
    """The default-suite ResNet check (the full one with gradients is slow-marked above)."""
    model = models.create_model("resnet18", 2, 10)
    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 3))
    variables = jax.jit(model.init, static_argnames="train")(jax.random.key(1), x, train=False)
    masks = _random_masks(variables["params"], jax.random.key(2))

    @jax.jit  # one compile for all three forwards (eager dispatch of ResNet-18 is slower)
    def forwards(variables, masks):
        masked = {**variables, "params": masks_lib.apply_masks(variables["params"], masks)}
        return (
            model.apply(variables, x, train=False, masks=masks),
            model.apply(masked, x, train=False),
            model.apply(variables, x, train=False),
        )

    got, want, dense = (np.asarray(a) for a in forwards(variables, masks))
    np.testing.assert_array_equal(got, want)
    assert not np.allclose(got, dense)
