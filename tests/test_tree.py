"""Tests for widesparse_jax.tree: paths and names on every pytree, map, apply masks, dotted get."""

import collections
import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from widesparse_jax import tree

S = jax.ShapeDtypeStruct
F32 = jnp.float32


def test_dicts_walk_in_insertion_order_not_sorted():
    params = {"b": {"kernel": S((2, 3), F32), "bias": None}, "a": {"kernel": S((3, 1), F32)}}
    assert [p for p, _ in tree.walk(params)] == [("b", "kernel"), ("b", "bias"), ("a", "kernel")]
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    assert [tree.key_name(kp[0]) for kp, _ in flat] == ["a", "b"]  # JAX sorts
    out = tree.map_with_path(lambda p, leaf: tree.path_name(p), params)
    assert list(out) == ["b", "a"] and out["b"] == {"kernel": "b/kernel", "bias": "b/bias"}


def test_frozendict_keeps_its_order_and_type():
    core = pytest.importorskip("flax.core")
    params = core.freeze({"z": {"kernel": jnp.ones((2, 2))}, "a": {"kernel": jnp.ones((2, 2))}})
    assert [p for p, _ in tree.walk(params)] == [("z", "kernel"), ("a", "kernel")]
    out = tree.map_with_path(lambda p, leaf: leaf.shape, params)
    assert type(out) is type(params) and list(out) == ["z", "a"]
    assert type(out["z"]) is type(params["z"])


def test_sequences_dataclasses_namedtuples_and_ordered_dicts():
    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Layer:
        weight: jax.Array
        bias: jax.Array

    Pair = collections.namedtuple("Pair", ["first", "second"])
    t = {
        "layers": [Layer(jnp.ones((2, 3)), jnp.zeros(2)), Layer(jnp.ones((3, 2)), jnp.zeros(3))],
        "pair": Pair(jnp.ones(1), (jnp.ones(2),)),
        "od": collections.OrderedDict([("y", 1.0), ("x", 2.0)]),
    }
    names = [tree.path_name(p) for p, _ in tree.walk(t)]
    assert names == [
        "layers/0/weight",
        "layers/0/bias",
        "layers/1/weight",
        "layers/1/bias",
        "pair/first",
        "pair/second/0",
        "od/y",
        "od/x",
    ]
    assert tree.leaves_by_path(t)[("layers", 1, "weight")].shape == (3, 2)
    out = tree.map_with_path(lambda p, leaf: None, t)
    assert isinstance(out["layers"][0], Layer) and isinstance(out["pair"], Pair)
    assert type(out["od"]) is collections.OrderedDict and list(out["od"]) == ["y", "x"]
    # the mapped tree has the original's structure once None is a leaf
    same = jax.tree.structure(out, is_leaf=lambda v: v is None)
    assert same == jax.tree.structure(t)


def test_equinox_module_paths_keep_static_fields():
    eqx = pytest.importorskip("equinox")
    model = eqx.filter_eval_shape(eqx.nn.MLP, 3, 2, 4, 1, key=jax.random.key(0))
    walked = dict(tree.walk(model))
    assert set(walked) >= {("layers", 0, "weight"), ("layers", 1, "bias"), ("activation",)}
    out = tree.map_with_path(lambda p, leaf: leaf if p == ("activation",) else None, model)
    assert isinstance(out, eqx.nn.MLP) and out.activation is model.activation
    assert out.layers[0].weight is None and out.in_size == 3


def test_nnx_state_boxes_are_transparent():
    nnx = pytest.importorskip("flax.nnx")
    _, state = nnx.split(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))
    assert [p for p, _ in tree.walk(state)] == [("bias",), ("kernel",)]
    assert tree.leaves_by_path(state)[("kernel",)].shape == (3, 4)
    out = tree.map_with_path(lambda p, leaf: tree.path_name(p), state)
    assert type(out) is type(state) and tree.leaves_by_path(out)[("kernel",)] == "kernel"


def test_names_paths_and_shapes():
    assert tree.path_name(("mlp/~/linear_0", "w")) == "mlp/~/linear_0/w"
    assert tree.path_name(("layers", 0, "weight")) == "layers/0/weight"
    assert tree.path_name("a/b") == "a/b" and tree.as_path("a/b") == ("a", "b")
    assert tree.as_path(("a", 0)) == ("a", 0)
    assert tree.key_name(jax.tree_util.DictKey("k")) == "k"
    assert tree.key_name(jax.tree_util.GetAttrKey("w")) == "w"
    assert tree.key_name(jax.tree_util.SequenceKey(3)) == 3
    assert tree.shape_of(np.zeros((2, 3))) == (2, 3) and tree.shape_of(S((4,), F32)) == (4,)
    assert tree.shape_of(1.0) is None and tree.shape_of(None) is None
    assert list(tree.walk(None)) == [((), None)] and tree.children(jnp.ones(3)) is None


def test_apply_masks_zeroes_exactly_and_is_jit_safe():
    params = {"fc": {"kernel": jnp.arange(1.0, 7.0).reshape(2, 3), "bias": jnp.ones(3)}}
    masks = {"fc": {"kernel": np.array([[True, False, True], [False, True, False]]), "bias": None}}
    out = jax.jit(tree.apply_masks)(params, masks)
    np.testing.assert_array_equal(out["fc"]["kernel"], [[1.0, 0.0, 3.0], [0.0, 5.0, 0.0]])
    assert out["fc"]["bias"] is not None and tree.apply_masks(params, None) is params
    assert tree.apply_masks(params, masks)["fc"]["bias"] is params["fc"]["bias"]
    grads = jax.grad(lambda p: tree.apply_masks(p, masks)["fc"]["kernel"].sum())(params)
    np.testing.assert_array_equal(grads["fc"]["kernel"], masks["fc"]["kernel"].astype(F32))


def test_apply_masks_refuses_masks_that_do_not_fit():
    params = {"fc": {"kernel": jnp.ones((2, 3))}}
    with pytest.raises(ValueError, match=r"'fc/kernel' has shape \(3, 2\), params have \(2, 3\)"):
        tree.apply_masks(params, {"fc": {"kernel": np.ones((3, 2), bool)}})
    with pytest.raises(ValueError, match=r"'fc/weight' has shape \(2, 3\).*no such leaf"):
        tree.apply_masks(params, {"fc": {"weight": np.ones((2, 3), bool)}})
    with pytest.raises(ValueError, match="shape \\(1, 3\\)"):  # would broadcast silently
        tree.apply_masks(params, {"fc": {"kernel": np.ones((1, 3), bool)}})


def test_get_dotted():
    cfg = {"optim": {"lr": 0.1}, "model": types.SimpleNamespace(width=8)}
    assert tree.get_dotted(cfg, "optim.lr") == 0.1 and tree.get_dotted(cfg, "model.width") == 8
    assert tree.get_dotted(cfg, "optim.momentum", None) is None
    with pytest.raises(KeyError, match="'optim.momentum'.*'momentum'"):
        tree.get_dotted(cfg, "optim.momentum")
