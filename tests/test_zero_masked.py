"""optim.zero_masked: chained after any optax optimizer, masked weights stay exactly 0."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from widesparse_jax import masks as masks_lib
from widesparse_jax import optim

OPTIMIZERS = {
    "sgd_momentum": lambda: optax.sgd(0.05, momentum=0.9),
    "adam": lambda: optax.adam(1e-2),
    "adamw_decoupled_wd": lambda: optax.adamw(1e-2, weight_decay=0.1),
    "coupled_wd_sgd": lambda: optax.chain(optax.add_decayed_weights(0.1), optax.sgd(0.05, 0.9)),
    "project_sgd": lambda: optim.sgd(0.05, momentum=0.9, weight_decay=5e-4, nesterov=True),
}


def _problem():
    k = jax.random.split(jax.random.key(0), 4)
    params = {
        "fc": {"kernel": jax.random.normal(k[0], (6, 5)), "bias": jnp.zeros(5)},
        "cl": {"kernel": jax.random.normal(k[1], (5, 3)), "bias": jnp.zeros(3)},
    }
    masks = {
        "fc": {"kernel": jax.random.bernoulli(k[2], 0.4, (6, 5)), "bias": None},
        "cl": {"kernel": jax.random.bernoulli(k[3], 0.5, (5, 3)), "bias": None},
    }
    x = jax.random.normal(jax.random.key(9), (16, 6))
    y = jax.random.randint(jax.random.key(8), (16,), 0, 3)

    def loss(p):
        h = jax.nn.relu(x @ p["fc"]["kernel"] + p["fc"]["bias"])
        logits = h @ p["cl"]["kernel"] + p["cl"]["bias"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return masks_lib.apply_masks(params, masks), masks, loss


def _train(tx, params, loss, steps=30):
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        g = jax.grad(loss)(params)
        u, state = tx.update(g, state, params)
        return optax.apply_updates(params, u), state

    losses = []
    for _ in range(steps):
        losses.append(float(loss(params)))
        params, state = step(params, state)
    return params, losses


def _masked_values(params, masks):
    return np.concatenate(
        [np.asarray(params[l]["kernel"])[~np.asarray(masks[l]["kernel"])] for l in ("fc", "cl")]
    )


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_zero_masked_keeps_masked_weights_exactly_zero(name):
    params, masks, loss = _problem()
    out, losses = _train(optax.chain(OPTIMIZERS[name](), optim.zero_masked(masks)), params, loss)
    assert np.all(_masked_values(out, masks) == 0.0)
    assert losses[-1] < losses[0]
    kept = np.asarray(out["fc"]["kernel"])[np.asarray(masks["fc"]["kernel"])]
    assert np.any(kept != np.asarray(params["fc"]["kernel"])[np.asarray(masks["fc"]["kernel"])])
    # without it, the same optimizer revives masked weights (the test can fail)
    dense, _ = _train(OPTIMIZERS[name](), params, loss)
    assert np.any(_masked_values(dense, masks) != 0.0)


def test_zero_masked_none_is_identity_and_checks_shapes():
    params, masks, _ = _problem()
    g = jax.tree.map(jnp.ones_like, params)
    tx = optim.zero_masked(None)
    u, _ = tx.update(g, tx.init(params), params)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), u, g))
    bad = {**masks, "cl": {"kernel": jnp.ones((3, 5), bool), "bias": None}}
    tx = optim.zero_masked(bad)
    with pytest.raises(ValueError, match="cl/kernel"):
        tx.update(g, tx.init(params), params)


def test_zero_masked_matches_masked_wrapper_for_plain_sgd():
    """With momentum-free SGD both transforms give the same trajectory."""
    params, masks, loss = _problem()
    a, _ = _train(optax.chain(optax.sgd(0.1), optim.zero_masked(masks)), params, loss, 10)
    inner = optim.masked(optax.sgd(0.1))
    state = inner.init(params)
    b = params
    for _ in range(10):
        u, state = inner.update(jax.grad(loss)(b), state, b, masks=masks)
        b = optax.apply_updates(b, u)
    for l in ("fc", "cl"):
        np.testing.assert_allclose(a[l]["kernel"], b[l]["kernel"], rtol=1e-6, atol=1e-7)
