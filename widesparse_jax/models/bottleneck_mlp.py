"""MLP d -> n -> C with ``fc`` and/or ``cl`` factorized through a narrow inner size k.

``'linear'``: W -> W1 W2; ``'nonlinear'``: W -> W2 relu(W1 .) (no BN, no bias on the first
factor). Params: ``fc/a/kernel (d, k)``, ``fc/b/kernel (k, n)`` and ``fc/b/bias (n,)`` (the
layer's bias sits on the second factor; ``cl`` likewise); an unfactorized layer keeps
``fc/kernel``, ``fc/bias``. Each factor is initialized like a standalone layer of its own
fan_in (standard: U(+-1/sqrt(fan_in)); ntk: N(0,1) weights with a 1/sqrt(fan_in) multiplier).
k comes from :func:`widesparse_jax.models.bottleneck_plan.mlp_bottleneck_plan`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from widesparse_jax.models.bottleneck_plan import mlp_bottleneck_plan
from widesparse_jax.models.init import torch_bias_init
from widesparse_jax.models.masked import masked_call
from widesparse_jax.models.mlp import (
    check_mlp_module,
    dense_layer,
    flatten,
    kernel_init_for,
    resolve_init_distribution,
)
from widesparse_jax.models.resnet import check_bottleneck

Dtype = Any


def check_options(model: str, kwargs: dict, allowed: set, named: set) -> None:
    """Raise ValueError naming the kwargs of ``model`` outside ``allowed`` (``named``: the
    keyword arguments taken explicitly, listed as allowed in the message too)."""
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise ValueError(f"unknown option(s) {bad} for {model}; allowed: {sorted(allowed | named)}")


class MLPBottleneck(nn.Module):
    """MLP d -> width -> C with fc and/or cl factorized through ``inner_fc``/``inner_cl``.

    x: [N, d] or [N, ...] (flattened) -> logits [N, C] float32. Same parametrization options
    as :class:`MLP` (no batch norm). Params: ``fc/{a,b}`` if factorized else ``fc``; same for cl.
    """

    width: int
    num_classes: int
    inner_fc: Optional[int] = None
    inner_cl: Optional[int] = None
    bottleneck: str = "linear"
    parametrization: str = "standard"
    use_bias: bool = True
    activation: str = "relu"
    init_distribution: Optional[str] = None
    dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        check_mlp_module(self)
        check_bottleneck(self.bottleneck)
        for nm, k in (("inner_fc", self.inner_fc), ("inner_cl", self.inner_cl)):
            if k is not None and (not isinstance(k, int) or k < 1):
                raise ValueError(f"{nm} must be None or an int >= 1, got {k!r}")
        super().__post_init__()

    def __call__(self, x: jax.Array, train: bool = False, masks=None) -> jax.Array:
        """``masks`` (mirrors params; None = dense): compute with the masked weights."""
        return masked_call(MLPBottleneck.forward, self, masks, x, train)

    @nn.compact
    def forward(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no train-dependent layers
        kw = dict(
            parametrization=self.parametrization,
            init_distribution=resolve_init_distribution(
                self.parametrization, self.init_distribution
            ),
            dtype=self.dtype,
        )
        layer = functools.partial(
            _FactorDense, nonlinear=self.bottleneck == "nonlinear", use_bias=self.use_bias, **kw
        )
        h = layer(self.width, self.inner_fc, name="fc")(flatten(x).astype(self.dtype))
        if self.activation == "relu":
            h = nn.relu(h)
        out = layer(self.num_classes, self.inner_cl, name="cl")(h)
        return out.astype(jnp.float32)


class _FactorDense(nn.Module):
    """Dense layer, optionally factorized I -> inner (``a``, no bias) -> features (``b``)."""

    features: int
    inner: Optional[int]
    nonlinear: bool
    use_bias: bool
    parametrization: str
    init_distribution: str
    dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(
            parametrization=self.parametrization,
            init_distribution=self.init_distribution,
            dtype=self.dtype,
        )
        if self.inner is None:
            # Unfactorized: params directly under this module (``fc/kernel``, ``fc/bias``).
            return _dense_here(self, x, self.features, self.use_bias, **kw)
        y = dense_layer(x, self.inner, use_bias=False, name="a", **kw)
        if self.nonlinear:
            y = nn.relu(y)
        return dense_layer(y, self.features, use_bias=self.use_bias, name="b", **kw)


def _dense_here(
    mdl: nn.Module,
    x: jax.Array,
    features: int,
    use_bias: bool,
    *,
    parametrization: str,
    init_distribution: str,
    dtype: Dtype,
) -> jax.Array:
    """A dense layer whose kernel/bias are params of ``mdl`` itself (no sub-module)."""
    fan_in = x.shape[-1]
    kinit = kernel_init_for(parametrization, init_distribution)
    kernel = mdl.param("kernel", kinit, (fan_in, features), jnp.float32)
    y = jnp.dot(x, kernel.astype(dtype))
    if use_bias:
        bias = mdl.param(
            "bias", torch_bias_init(fan_in, init_distribution), (features,), jnp.float32
        )
        y = y + bias.astype(dtype)
    if parametrization == "ntk":
        y = y * jnp.asarray(1.0 / math.sqrt(fan_in), y.dtype)
    return y


def make_mlp_bottleneck(
    width: int,
    num_classes: int,
    *,
    base_width: int,
    input_dim: int = 784,
    bottleneck: str = "linear",
    factorize: Sequence[str] = ("fc",),
    **kwargs,
) -> MLPBottleneck:
    """MLP of hidden ``width`` with ``factorize`` layers bottlenecked at the ``base_width``
    count. kwargs: ``parametrization``, ``use_bias``, ``activation``, ``init_distribution``,
    ``dtype``."""
    check_bottleneck(bottleneck)
    check_options(
        "mlp_bottleneck",
        kwargs,
        {"parametrization", "use_bias", "activation", "init_distribution", "dtype"},
        {"base_width", "bottleneck", "factorize", "input_dim"},
    )
    plan = mlp_bottleneck_plan(
        width, base_width, num_classes, input_dim=input_dim, factorize=factorize
    )
    return MLPBottleneck(
        width=width,
        num_classes=num_classes,
        inner_fc=plan.inner("fc"),
        inner_cl=plan.inner("cl"),
        bottleneck=bottleneck,
        **kwargs,
    )
