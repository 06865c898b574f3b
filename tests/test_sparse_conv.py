"""Kernel-granularity sparse convs (widesparse_jax/sparse/conv.py): exact vs dense masking."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fashion_mnist_resnet
from widesparse_jax import config as config_lib
from widesparse_jax import data, setup, train
from widesparse_jax.sparse import conv as sconv
from widesparse_jax.sparse import loop as sparse_loop

DN = ("NHWC", "HWIO", "NHWC")


def _kernel_mask(rng, k, cin, cout, density=0.4):
    conn = rng.rand(cin, cout) < density
    conn[:, 0] = False  # an output channel with no inputs
    return np.broadcast_to(conn, (k, k, cin, cout)).copy()


@pytest.mark.parametrize("k,stride,pad", [(3, 2, 1), (1, 2, 0)])
def test_sparse_conv_outputs_and_grads_match_dense_masking(k, stride, pad):
    rng = np.random.RandomState(k + stride)
    mask = _kernel_mask(rng, k, 6, 5)
    lay = sconv.conv_layout(mask)
    w = jnp.asarray(rng.randn(k, k, 6, 5).astype(np.float32))
    x = jnp.asarray(rng.randn(2, 9, 9, 6).astype(np.float32))
    strides, padding = (stride, stride), ((pad, pad), (pad, pad))

    def dense(w, x):
        y = jax.lax.conv_general_dilated(
            x, jnp.where(mask, w, 0.0), strides, padding, None, None, DN
        )
        return jnp.sum(jnp.sin(y)), y

    def sparse(w, x):
        y = sconv.sparse_conv(x, sconv.kernel_values(w, lay), lay, strides, padding)
        return jnp.sum(jnp.sin(y)), y

    (_, yd), gd = jax.jit(jax.value_and_grad(dense, (0, 1), has_aux=True))(w, x)
    (_, ys), gs = jax.jit(jax.value_and_grad(sparse, (0, 1), has_aux=True))(w, x)
    assert ys.shape == yd.shape
    np.testing.assert_allclose(np.asarray(ys), np.asarray(yd), rtol=1e-5, atol=1e-5)
    assert not np.asarray(ys)[..., 0].any()  # the unconnected output channel is 0
    for a, b in zip(gs, gd):  # sums over N * Ho * Wo positions: round-off ~1e-5 absolute
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    assert not np.asarray(gs[0])[~mask].any()  # masked kernels get gradient exactly 0


def test_kernel_values_round_trip_and_per_weight_masks_are_refused():
    rng = np.random.RandomState(0)
    mask = _kernel_mask(rng, 3, 4, 7)
    lay = sconv.conv_layout(mask)
    assert lay.nnz == mask[0, 0].sum() and np.all(np.diff(lay.cols) >= 0)
    w = rng.randn(3, 3, 4, 7).astype(np.float32) * mask
    back = sconv.dense_kernel(sconv.kernel_values(w, lay), lay)
    np.testing.assert_array_equal(np.asarray(back), w)
    per_weight = mask.copy()
    per_weight[0, 1, 0, 1] = not per_weight[0, 1, 0, 1]
    with pytest.raises(ValueError, match="granularity='kernel'"):
        sconv.conv_layout(per_weight)


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        kw = dict(use_bias=False, padding=((1, 1), (1, 1)))
        x = nn.Conv(8, (3, 3), name="a", **kw)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn")(x))
        x = nn.Conv(6, (3, 3), strides=(2, 2), name="b", **kw)(x)
        return nn.Dense(3, name="out")(x.mean((1, 2)))


def test_interceptor_gives_the_same_loss_and_grads_as_dense_masking():
    rng = np.random.RandomState(1)
    x = jnp.asarray(rng.randn(4, 8, 8, 3).astype(np.float32))
    net = _Net()
    variables = jax.jit(functools.partial(net.init, train=False))(jax.random.key(0), x)
    masks = {
        "a": {"kernel": _kernel_mask(rng, 3, 3, 8)},
        "b": {"kernel": _kernel_mask(rng, 3, 8, 6)},
    }
    params = dict(variables["params"])
    for n in ("a", "b"):
        params[n] = {"kernel": params[n]["kernel"] * masks[n]["kernel"]}
    layouts = sconv.conv_layouts({**masks, "out": {"kernel": None}}, threshold=1.0)
    assert sorted(layouts) == ["a", "b"]
    assert sconv.conv_layouts(masks, threshold=0.01) == {}

    def loss(model, p):
        v = {"params": p, "batch_stats": variables["batch_stats"]}
        y, _ = model.apply(v, x, train=True, mutable=["batch_stats"])
        return jnp.sum(y**2)

    ld, gd = jax.jit(jax.value_and_grad(functools.partial(loss, net)))(params)
    sparse_net = sconv.SparseConvModel(net, layouts)
    ls, gs = jax.jit(jax.value_and_grad(functools.partial(loss, sparse_net)))(params)
    np.testing.assert_allclose(float(ls), float(ld), rtol=1e-5)
    for n in ("a", "b"):  # the dense forward also differentiates masked entries
        gd[n] = {"kernel": gd[n]["kernel"] * masks[n]["kernel"]}
    for a, b in zip(jax.tree.leaves(gs), jax.tree.leaves(gd)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert not np.asarray(gs["b"]["kernel"])[~masks["b"]["kernel"]].any()


def _resnet_run(apply, width=8, base_width=4):
    c = fashion_mnist_resnet.get_config()
    c.model.width, c.model.base_width = width, base_width
    c.sparsity.granularity = "kernel"
    c.sparsity.apply = apply
    c.sparsity.sparse_conv_below_density = 1.0  # every kernel-masked conv runs sparse
    c.dataset.train_subset = 64
    c.train.batch_size = 8
    cfg = config_lib.resolve_config(c)
    return setup.build_run(cfg, data.static_info(train.data_spec(cfg)), axis_name=None)


@pytest.mark.slow
def test_resnet18_sparse_steps_match_dense_masking():
    """10 SGD steps of a width-8 kernel-granularity ResNet-18 on 16x16 images: the sparse
    convs give the losses and params of dense masking (two ResNet compiles, ~1-2 min)."""
    run = _resnet_run("sparse")
    mode = sparse_loop.make_mode(run)
    assert isinstance(mode, sparse_loop.ConvSparseMode) and len(mode.layouts) >= 8
    kw = dict(tx=run.tx, schedule=run.schedule, axis_name=None)
    dense = jax.jit(functools.partial(train.train_step, model=run.model, **kw))
    sp = jax.jit(functools.partial(train.train_step, model=mode.model, **kw))
    s_d = setup.init_state(run)
    s_s = mode.enter(setup.init_state(run))
    rng = np.random.RandomState(0)
    losses = []
    for _ in range(10):
        batch = {
            "image": jnp.asarray(rng.randn(8, 16, 16, 1).astype(np.float32)),
            "label": jnp.asarray(rng.randint(0, 10, 8).astype(np.int32)),
        }
        s_d, m_d = dense(s_d, batch)
        s_s, m_s = sp(s_s, batch)
        losses.append((float(m_s["loss"]), float(m_d["loss"])))
        if len(losses) == 1:  # one update: the same params to round-off
            for a, b in zip(jax.tree.leaves(s_s.params), jax.tree.leaves(s_d.params)):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    # Step 1 is the same step to round-off; SGD (lr 0.1, BN at batch 8) then amplifies
    # round-off (measured by step 10: loss 1.2e-4 relative, one kernel entry 3.6e-3 off
    # among ~2e-5 typical); a wrong conv gives O(1) differences.
    np.testing.assert_allclose(*losses[0], rtol=1e-5)
    np.testing.assert_allclose(*np.array(losses).T, rtol=2e-3)
    back = mode.leave(s_s)
    for a, b in zip(jax.tree.leaves(back.params), jax.tree.leaves(s_d.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-2, atol=1e-2)
    k = np.asarray(back.params["layer4_1"]["conv2"]["kernel"])
    assert not k[~np.asarray(run.masks["layer4_1"]["conv2"]["kernel"])].any()
