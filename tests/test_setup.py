"""The run factory (widesparse_jax/setup.py): one route from a config to model, masks, μP."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default as default_config
from configs import fashion_mnist_mlp
from tests.markers import needs_fmnist
from widesparse_jax import config as config_lib
from widesparse_jax import masks as masks_lib
from widesparse_jax import preflight, setup, tree

MLP_INFO = types.SimpleNamespace(num_classes=10, image_shape=(28, 28, 1), num_train=1000)
CIFAR_INFO = types.SimpleNamespace(num_classes=10, image_shape=(32, 32, 3), num_train=1280)


def mlp_config(width=256, base_width=None, parametrization="standard", mup_base_width=None):
    c = fashion_mnist_mlp.get_config()
    c.model.width, c.model.base_width = width, base_width
    c.model.parametrization, c.model.mup_base_width = parametrization, mup_base_width
    c.train.batch_size = 100
    return config_lib.resolve_config(c)


def resnet_config(width=8, base_width=4, **model):
    c = default_config.get_config()
    c.model.width, c.model.base_width = width, base_width
    for k, v in model.items():
        c.model[k] = v
    c.train.batch_size = 128
    return config_lib.resolve_config(c)


def test_mup_route_applies_init_and_learning_rates_together():
    """μP through the factory: the init is rescaled AND the optimizer applies the per-layer
    lr multipliers (relative to the standard net at the same width); biases share their
    layer's role (fc is the input layer, cl the output layer), whatever the dict order."""
    m = 4  # width 256 from mup base 64
    sp = setup.build_run(mlp_config(256), MLP_INFO, axis_name=None)
    mup = setup.build_run(mlp_config(256, None, "mup", 64), MLP_INFO, axis_name=None)
    assert sp.lr_multipliers is None
    mult = {tree.path_name(p): v for p, v in tree.walk(mup.lr_multipliers)}
    assert mult == {"fc/kernel": m, "fc/bias": m, "cl/kernel": 1 / m, "cl/bias": 1.0}
    key = jax.random.key(0)
    p_sp = setup.init_params(sp, key)["params"]
    p_mup = setup.init_params(mup, key)["params"]
    np.testing.assert_array_equal(p_mup["fc"]["kernel"], p_sp["fc"]["kernel"])
    np.testing.assert_array_equal(p_mup["fc"]["bias"], p_sp["fc"]["bias"])
    np.testing.assert_allclose(p_mup["cl"]["kernel"], p_sp["cl"]["kernel"] / 2, rtol=1e-6)
    np.testing.assert_allclose(p_mup["cl"]["bias"], p_sp["cl"]["bias"] * 2, rtol=1e-6)
    # one optimizer step on the same gradients: updates scale by the multipliers
    grads = jax.tree.map(jnp.ones_like, p_sp)
    u_sp, _ = sp.tx.update(grads, sp.tx.init(p_sp), p_sp, masks=None)
    u_mup, _ = mup.tx.update(grads, mup.tx.init(p_mup), p_mup, masks=None)
    for path, k in mult.items():
        a = tree.leaves_by_path(u_mup)[tree.as_path(path)]
        b = tree.leaves_by_path(u_sp)[tree.as_path(path)]
        np.testing.assert_allclose(a, b * k, rtol=1e-6, err_msg=path)


def test_benchmark_route_gets_mup_learning_rates():
    """The step benchmark builds its net through the factory: μP lr multipliers included."""
    from benchmarks import step_vs_torch

    c = step_vs_torch.make_config(8, None, "float32")
    c.model.parametrization, c.model.mup_base_width = "mup", 4
    run = setup.build_run(config_lib.resolve_config(c), CIFAR_INFO, axis_name=None)
    mult = {tree.path_name(p): v for p, v in tree.walk(run.lr_multipliers)}
    assert mult["linear/kernel"] == pytest.approx(0.5)  # output layer: 1/m
    assert mult["conv1/kernel"] == pytest.approx(2.0)  # input layer: m
    assert mult["layer2_0/conv1/kernel"] == pytest.approx(1.0)  # hidden


def test_masks_are_a_function_of_the_config():
    """build_run plans from shapes; init_state carries exactly run.masks; masked weights are
    0 before the first forward pass and the kept count is the base width's."""
    cfg = resnet_config(4, 2)
    run = setup.build_run(cfg, CIFAR_INFO)
    again = setup.build_run(cfg, CIFAR_INFO)
    for a, b in zip(jax.tree.leaves(run.masks), jax.tree.leaves(again.masks)):
        np.testing.assert_array_equal(a, b)
    state = setup.init_state(run)
    for a, b in zip(jax.tree.leaves(run.masks), jax.tree.leaves(state.masks)):
        np.testing.assert_array_equal(a, np.asarray(b))
    base = setup.build_model(cfg.model, 10, (32, 32, 3), width=2, axis_name=None)
    base_total = masks_lib.count_weights(setup.abstract_variables(base, (32, 32, 3))["params"])
    assert masks_lib.count_kept(state.masks, state.params) == base_total == run.plan.total_keep
    for p, m in tree.walk(run.masks):
        if m is not None:
            w = np.asarray(tree.leaves_by_path(state.params)[p])
            assert np.all(w[~m] == 0.0) and np.all(w[m] != 0.0)
    assert [tree.path_name(p) for p in run.order][:2] == ["conv1/kernel", "layer1_0/conv1/kernel"]


def test_state_template_matches_the_real_state_without_data():
    """The restore template (config + constant dataset facts) has the real state's tree,
    shapes and dtypes; it is built without any dataset."""
    cfg = mlp_config(256, 8, "mup", 64)
    info = types.SimpleNamespace(num_classes=10, image_shape=(28, 28, 1), num_train=None)
    template = setup.state_template(cfg, info)
    real = setup.state_to_dict(setup.init_state(setup.build_run(cfg, MLP_INFO)))
    t_leaves, t_def = jax.tree.flatten(template)
    r_leaves, r_def = jax.tree.flatten(real)
    assert t_def == r_def
    for t, r in zip(t_leaves, r_leaves):
        assert (tuple(t.shape), np.dtype(t.dtype)) == (np.shape(r), np.asarray(r).dtype)


def test_batch_larger_than_data_is_a_config_error():
    small = types.SimpleNamespace(num_classes=10, image_shape=(28, 28, 1), num_train=50)
    with pytest.raises(config_lib.ConfigError, match="batch_size=100 is larger than the 50"):
        setup.build_run(mlp_config(64), small)


def test_sparse_mlp_update_keeps_masked_entries_zero():
    run = setup.build_run(mlp_config(256, 8), MLP_INFO, axis_name=None)
    state = setup.init_state(run)
    grads = jax.tree.map(jnp.ones_like, state.params)
    updates, _ = run.tx.update(grads, state.opt_state, state.params, masks=state.masks)
    params = optax.apply_updates(state.params, updates)
    m = np.asarray(state.masks["fc"]["kernel"])
    assert np.all(np.asarray(params["fc"]["kernel"])[~m] == 0.0)


@needs_fmnist
def test_preflight_traces_the_model_init_once(tmp_path, monkeypatch):
    """check_run's memory check and build_run share one abstract trace of the width-64
    init (the base width's net is traced for its weight count); the Run is the one build_run
    makes on its own (same shapes, order, masks)."""
    widths = []
    traced = setup.abstract_variables
    monkeypatch.setattr(
        setup,
        "abstract_variables",
        lambda model, shape: widths.append(model.width) or traced(model, shape),
    )
    cfg = mlp_config(64, 8)
    run = preflight.check_run(cfg, str(tmp_path / "w"))
    assert sorted(widths) == [8, 64]
    alone = setup.build_run(cfg, MLP_INFO)
    assert sorted(widths) == [8, 8, 64, 64]  # build_run alone traces the width-64 net itself
    assert run.param_shapes == alone.param_shapes and run.order == alone.order
    for a, b in zip(jax.tree.leaves(run.masks), jax.tree.leaves(alone.masks)):
        np.testing.assert_array_equal(a, b)
