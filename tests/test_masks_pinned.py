"""Pinned mask checksums: the same seed gives bit-identical masks across releases.

Recorded with the code of commit cbc9ead (before the mask library became a package). Each
digest is sha256 over, per planned layer in forward order: its name, its shape and
``np.packbits`` of its mask (``b'dense'`` for a dense layer). Real Flax models, shapes only.
"""

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from widesparse_jax import masks as M

models = pytest.importorskip("widesparse_jax.models")

# (model, width, base width, method, granularity, dense layers, seed): (digest, kept)
PINNED = {
    ("mlp", 640, 5, "paper", "weight", (), 0): (
        "5b986422ca78f6a42ba82e0d06eb317fc019ec89765119ef55e23da6db400f68",
        3970,
    ),
    ("mlp", 635, 8, "uniform", "weight", ("cl/kernel",), 1): (
        "b5b5f4c2570a232ec37aa9d33e3c41e4906f37a21aef085257716f552ab28aff",
        6352,
    ),
    ("resnet18", 16, 8, "paper", "weight", (), 0): (
        "f9aa931213a13470a2960e5b712543ad094fb383222a5e93803c584370b6d0d1",
        175192,
    ),
    ("resnet18", 16, 8, "uniform", "weight", (), 2): (
        "2edfab610057c820b66c89c64d78d2a8cb9eeea3ad6494ca1e5af0cb795d5434",
        175192,
    ),
    ("resnet18", 16, 8, "erk", "weight", (), 3): (
        "c16259b78e0b05a5ac43e166da0d13fd370ef5f5d9d837f98e147a2d3c35926d",
        175192,
    ),
    ("resnet18", 16, 8, "paper", "kernel", (), 4): (
        "cfaf03acc106f5ca1cb81d2c46cc26518d6a6b08ea460ba84ee1a9aefa4482e0",
        175193,
    ),
    ("resnet18", 16, 6, "erk", "kernel", (), 5): (
        "040d0ea5c9660aae0e2722b0804647be7e2a453b636a92aeab13676f951f4049",
        98702,
    ),
}


@functools.lru_cache(maxsize=None)
def _shapes(name, width):
    model = models.create_model(name, width, 10, stem="cifar", input_dim=784)
    shape = (1,) + tuple(models.input_shape(name, stem="cifar", input_dim=784))
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    v = dict(jax.eval_shape(lambda k, xx: model.init(k, xx, train=False), jax.random.key(0), x))
    params = v.pop("params")
    return model, params, v, x


def _digest(plan, masks):
    h = hashlib.sha256()
    for lp in plan.layers:
        m = masks
        for k in lp.path:
            m = m[k]
        h.update(lp.name.encode())
        h.update(str(lp.shape).encode())
        h.update(b"dense" if m is None else np.packbits(m).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("case", list(PINNED), ids=lambda c: "-".join(map(str, c[:5] + c[6:])))
def test_masks_match_pinned_checksums(case):
    name, width, base, method, granularity, dense, seed = case
    model, params, others, x = _shapes(name, width)
    order = M.forward_order(
        lambda p, o, xx: model.apply({"params": p, **o}, xx, train=False), params, others, x
    )
    plan = M.make_plan(
        params,
        order,
        base_total=M.count_weights(_shapes(name, base)[1]),
        method=method,
        granularity=granularity,
        dense_layers=dense,
    )
    masks = M.draw_masks(jax.random.key(seed), params, plan)
    assert (_digest(plan, masks), M.count_kept(masks, params)) == PINNED[case]
