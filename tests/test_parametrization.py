"""Tests of widesparse_jax.parametrization: roles, factors, composition with masks and the
masked optimizer, and the μP coordinate check on real Fashion-MNIST."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from widesparse_jax import masks as masks_lib
from widesparse_jax import optim
from widesparse_jax import parametrization as P
from widesparse_jax.models import MLP, ResNet18


def mlp_params(width, key=0):
    return MLP(width=width, num_classes=10).init(jax.random.key(key), jnp.zeros((1, 784)))["params"]


@pytest.fixture(scope="module")
def resnet_shapes():
    m = ResNet18(width=4, num_classes=10)
    v = jax.eval_shape(
        lambda k: m.init(k, jnp.zeros((1, 32, 32, 3)), train=False), jax.random.key(0)
    )
    return v["params"]


def test_roles_mlp_and_resnet(resnet_shapes):
    r = P.layer_roles(mlp_params(8))
    assert r == {
        "fc/kernel": "input",
        "fc/bias": "input",
        "cl/kernel": "output",
        "cl/bias": "output",
    }
    r = P.layer_roles(resnet_shapes)
    assert r["conv1/kernel"] == "input"
    assert r["bn1/scale"] == "other" and r["layer3_1/bn2/bias"] == "other"
    assert r["layer1_0/conv1/kernel"] == "hidden"
    assert r["layer2_0/shortcut_0/kernel"] == "hidden"
    assert r["linear/kernel"] == "output" and r["linear/bias"] == "output"
    assert sum(v == "input" for v in r.values()) == 1


def test_roles_override_and_errors():
    p = mlp_params(8)
    r = P.layer_roles(p, {"fc": "hidden", "cl/bias": "other"})
    assert r["fc/kernel"] == "hidden" and r["fc/bias"] == "hidden" and r["cl/bias"] == "other"
    assert r["cl/kernel"] == "output"
    with pytest.raises(ValueError, match="role 'middle'"):
        P.layer_roles(p, {"fc": "middle"})
    with pytest.raises(ValueError, match="matches no param path"):
        P.layer_roles(p, {"nope": "hidden"})


@pytest.mark.parametrize("name", ["standard", "ntk", "mup"])
def test_base_width_is_identity(name, resnet_shapes):
    p = mlp_params(16)
    q = P.apply_parametrization(p, name, 16, 16)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
        np.testing.assert_array_equal(a, b)
    assert set(jax.tree.leaves(P.lr_multipliers(p, name, 16, 16))) == {1.0}
    assert set(jax.tree.leaves(P.lr_multipliers(resnet_shapes, name, 4, 4))) == {1.0}


def test_mup_and_ntk_factors_mlp():
    p = mlp_params(64)
    q = P.apply_parametrization(p, "mup", 64, 16)  # m = 4
    np.testing.assert_allclose(q["cl"]["kernel"], p["cl"]["kernel"] / 2, rtol=1e-6)
    np.testing.assert_allclose(q["cl"]["bias"], p["cl"]["bias"] * 2, rtol=1e-6)
    np.testing.assert_array_equal(q["fc"]["kernel"], p["fc"]["kernel"])
    np.testing.assert_array_equal(q["fc"]["bias"], p["fc"]["bias"])
    lr = P.lr_multipliers(p, "mup", 64, 16)
    assert lr == {"fc": {"kernel": 4.0, "bias": 4.0}, "cl": {"kernel": 0.25, "bias": 1.0}}
    lr = P.lr_multipliers(p, "ntk", 64, 16)
    assert lr == {"fc": {"kernel": 1.0, "bias": 1.0}, "cl": {"kernel": 0.25, "bias": 1.0}}
    assert set(jax.tree.leaves(P.lr_multipliers(p, "sp", 64, 16))) == {1.0}
    # μP output init variance ~ 1/fan_in^2: std * width is width-independent.
    stds = {
        w: float(np.std(P.apply_parametrization(mlp_params(w), "mup", w, 16)["cl"]["kernel"]))
        for w in (16, 256)
    }
    assert stds[256] * 256 == pytest.approx(stds[16] * 16, rel=0.1)


def test_mup_factors_resnet(resnet_shapes):
    lr = P.lr_multipliers(resnet_shapes, "mup", 4, 2)  # m = 2
    assert lr["conv1"]["kernel"] == 2.0
    assert lr["bn1"]["scale"] == 2.0 and lr["bn1"]["bias"] == 2.0
    assert lr["layer2_0"]["conv1"]["kernel"] == 1.0
    assert lr["layer2_0"]["shortcut_0"]["kernel"] == 1.0
    assert lr["linear"]["kernel"] == 0.5 and lr["linear"]["bias"] == 1.0
    f = P.init_factors(resnet_shapes, "mup", 4, 2)
    assert f["linear"]["kernel"] == pytest.approx(1 / math.sqrt(2))
    assert f["layer4_1"]["conv2"]["kernel"] == 1.0 and f["bn1"]["scale"] == 1.0


def _sparse_mlp(width, base):
    p = mlp_params(width)
    plan = masks_lib.make_plan(p, masks_lib.counted_paths(p), base_total=784 * base + base * 10)
    m = masks_lib.draw_masks(jax.random.key(0), p, plan)
    return masks_lib.rescale_for_density(p, m), m


def test_sparse_effective_fan_in_and_masks_stay_zero():
    p, m = _sparse_mlp(64, 16)
    dens = m["fc"]["kernel"].mean()
    assert m["cl"]["kernel"] is None and 0 < dens < 0.5
    lr = P.lr_multipliers(p, "mup", 64, 16, masks=m)
    assert lr["fc"]["kernel"] == pytest.approx(4.0 / dens)
    assert lr["cl"]["kernel"] == pytest.approx(0.25)  # dense output layer
    f = P.init_factors(p, "mup", 64, 16, masks=m)
    assert f["fc"]["bias"] == pytest.approx(math.sqrt(dens))  # undo the bias' 1/sqrt(p)
    nominal = P.lr_multipliers(p, "mup", 64, 16, masks=m, fan_in_mode="nominal")
    assert nominal["fc"]["kernel"] == 4.0
    q = P.apply_parametrization(p, "mup", 64, 16, masks=m)
    assert np.all(np.asarray(q["fc"]["kernel"])[~m["fc"]["kernel"]] == 0.0)
    with pytest.raises(ValueError, match="fan_in_mode"):
        P.lr_multipliers(p, "mup", 64, 16, fan_in_mode="half")


def test_composes_with_masked_optimizer():
    p, m = _sparse_mlp(32, 8)
    p = P.apply_parametrization(p, "mup", 32, 8, masks=m)
    mult = P.lr_multipliers(p, "mup", 32, 8, masks=m)
    tx = optim.make_optimizer(0.1, momentum=0.9, weight_decay=0.0, lr_multipliers=mult)
    jm = jax.tree.map(
        lambda x: None if x is None else jnp.asarray(x), m, is_leaf=lambda x: x is None
    )
    grads = jax.tree.map(jnp.ones_like, p)
    upd, _ = tx.update(grads, tx.init(p), p, masks=jm)
    keep = m["fc"]["kernel"]
    np.testing.assert_allclose(
        np.asarray(upd["fc"]["kernel"])[keep], -0.1 * mult["fc"]["kernel"], rtol=1e-5
    )
    assert np.all(np.asarray(upd["fc"]["kernel"])[~keep] == 0.0)
    np.testing.assert_allclose(upd["cl"]["kernel"], -0.1 * mult["cl"]["kernel"], rtol=1e-5)
    np.testing.assert_allclose(upd["fc"]["bias"], -0.1 * mult["fc"]["bias"], rtol=1e-5)


def test_bad_inputs():
    p = mlp_params(8)
    with pytest.raises(ValueError, match="unknown parametrization 'mu'"):
        P.apply_parametrization(p, "mu", 8, 8)
    with pytest.raises(ValueError, match="width must be a positive number"):
        P.lr_multipliers(p, "mup", 0, 8)
    with pytest.raises(ValueError, match="base_width"):
        P.lr_multipliers(p, "mup", 8, -1)
    with pytest.raises(ValueError, match="mask shape"):
        P.lr_multipliers(
            p,
            "mup",
            8,
            8,
            masks={
                "fc": {"kernel": np.ones((3, 3), bool), "bias": None},
                "cl": {"kernel": None, "bias": None},
            },
        )


def test_coordinate_check_mup_flat_sp_not():
    """After one SGD step on real Fashion-MNIST, the logits' and hidden pre-activations'
    updates are flat in width under μP (|log-slope| < 0.1) and not under SP."""
    from experiments import coord_check as cc

    rec = cc.coord_check(
        [256, 1024, 4096], params=("standard", "mup"), steps=1, seeds=(0, 1), base_width=64, lr=0.1
    )
    dl = cc.log_slopes(rec, "delta_logits", 1)
    dh = cc.log_slopes(rec, "delta_h", 1)
    assert abs(dl["mup"]) < 0.1 and abs(dh["mup"]) < 0.1, (dl, dh)
    assert dl["standard"] > 0.3 and dh["standard"] < -0.3, (dl, dh)
