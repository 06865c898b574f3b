"""Widening by bottleneck at a fixed weight count (the paper's alternatives to sparsity).

A wide network of width w keeps the counted-weight budget of the dense base-width-b network by
factorizing some of its layers through a narrow inner dimension k instead of masking weights:

* ``'linear'``:    W  ->  W1 W2              (no non-linearity between the factors),
* ``'nonlinear'``: W  ->  W2 relu(W1 .)      (ReLU between the factors, nothing else: no BN,
                                              no bias on the first factor).

Which layers are factorized
---------------------------
* MLP (d -> n -> C): ``factorize=('fc',)`` (default) replaces fc by d -> k -> n; ``('cl',)``
  replaces cl by n -> k -> C; ``('fc', 'cl')`` both. Params: ``fc/a/kernel (d, k)``,
  ``fc/b/kernel (k, n)`` and ``fc/b/bias (n,)`` (the layer's bias sits on the second factor;
  ``cl`` likewise). Each factor is initialized like a standalone layer of its own fan_in
  (standard: U(+-1/sqrt(fan_in)); ntk: N(0,1) weights with a 1/sqrt(fan_in) multiplier).
* ResNet-18 (CIFAR stem): each of the 16 3x3 convs inside the residual blocks
  (``layer{1..4}_{0,1}/conv{1,2}``) becomes 3x3 conv Cin -> k (same stride, pad 1; params
  ``.../conv1/a``) then 1x1 conv k -> Cout (``.../conv1/b``); ReLU between for 'nonlinear'.
  The stem conv, the 1x1 projection shortcuts and the classifier stay as they are.

The rule for k (exact)
----------------------
Every factorized layer l with input size I_l, output size O_l (kernel area A_l = 9 for the 3x3
convs, 1 for dense) gets ``k_l = floor(r * m_l)``, ``m_l = min(I_l, O_l)``, with one common
fraction ``r`` in (0, 1]. Its counted weights are ``k_l * (A_l * I_l + O_l)``. ``r`` is the
largest value (searched exactly over the breakpoints j/m_l with rational arithmetic) such that

    fixed(w) + sum_l k_l * (A_l I_l + O_l)  <=  target = count of the dense base-width net,

where fixed(w) counts the unfactorized kernels of the width-w net. So the achieved count meets
the target from below; ``BottleneckPlan.gap = target - count >= 0`` is the difference.
If the smallest r giving every k_l >= 1 already exceeds the target, or the fixed part alone
does, a ValueError is raised (width too large for the budget).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from widesparse_jax.models.init import scaled_init, torch_bias_init, torch_kernel_init
from widesparse_jax.models.masked import masked_call
from widesparse_jax.models.mlp import (
    check_mlp_args,
    dense_layer,
    flatten,
    mlp_weight_count,
    resolve_init_distribution,
)
from widesparse_jax.models.resnet import (
    BOTTLENECKS,
    ResNet18,
    block_conv_shapes,
    resnet18_weight_count,
)

MLP_FACTORIZABLE = ("fc", "cl")

Dtype = Any


@dataclasses.dataclass(frozen=True)
class FactorLayer:
    """One factorizable layer: name, input size I, output size O, kernel area A (9 or 1)."""

    name: str
    fan_in: int
    fan_out: int
    area: int = 1

    @property
    def max_inner(self) -> int:
        return min(self.fan_in, self.fan_out)

    @property
    def cost_per_inner(self) -> int:
        """Counted weights per unit of inner size: A*I + O."""
        return self.area * self.fan_in + self.fan_out


@dataclasses.dataclass(frozen=True)
class BottleneckPlan:
    """Result of the k rule: inner sizes per factorized layer and the achieved count.

    ``inner_dims``: ((layer name, k), ...) in forward order; ``ratio``: the common r;
    ``target``: counted weights of the dense base-width net; ``count``: counted weights of the
    factorized width-w net; ``gap = target - count`` (>= 0).
    """

    model: str
    width: int
    base_width: int
    inner_dims: Tuple[Tuple[str, int], ...]
    ratio: Fraction
    fixed: int
    target: int
    count: int

    @property
    def gap(self) -> int:
        return self.target - self.count

    def inner(self, name: str) -> Optional[int]:
        return dict(self.inner_dims).get(name)


def _inner_sizes(layers: Sequence[FactorLayer], r: Fraction) -> Tuple[int, ...]:
    return tuple((r.numerator * l.max_inner) // r.denominator for l in layers)


def _factored_count(layers: Sequence[FactorLayer], ks: Sequence[int]) -> int:
    return sum(k * l.cost_per_inner for l, k in zip(layers, ks))


def solve_inner_dims(
    layers: Sequence[FactorLayer], fixed: int, target: int
) -> Tuple[Fraction, Tuple[int, ...], int]:
    """Largest common fraction r in (0, 1] with all k_l = floor(r m_l) >= 1 and
    fixed + sum k_l (A_l I_l + O_l) <= target. Returns (r, ks, achieved count)."""
    if not layers:
        raise ValueError("no layers to factorize")
    if fixed >= target:
        raise ValueError(
            f"the unfactorized layers alone have {fixed} weights, not below the target {target}: "
            "width too large for this base width"
        )
    cands = sorted({Fraction(j, l.max_inner) for l in layers for j in range(1, l.max_inner + 1)})
    r_min = max(Fraction(1, l.max_inner) for l in layers)  # smallest r with every k_l >= 1
    cands = [r for r in cands if r >= r_min]

    def fits(r: Fraction) -> bool:
        return fixed + _factored_count(layers, _inner_sizes(layers, r)) <= target

    if not fits(cands[0]):
        ks = _inner_sizes(layers, cands[0])
        raise ValueError(
            f"even inner sizes {ks} give {fixed + _factored_count(layers, ks)} weights > target "
            f"{target}: width too large for this base width"
        )
    lo, hi = 0, len(cands) - 1  # invariant: cands[lo] fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(cands[mid]):
            lo = mid
        else:
            hi = mid - 1
    r = cands[lo]
    ks = _inner_sizes(layers, r)
    return r, ks, fixed + _factored_count(layers, ks)


def _check_widths(width: int, base_width: int) -> None:
    for nm, v in (("width", width), ("base_width", base_width)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{nm} must be an int >= 1, got {v!r}")
    if width < base_width:
        raise ValueError(
            f"width {width} is below base_width {base_width}; need width >= base_width"
        )


def _check_bottleneck(bottleneck: str) -> None:
    if bottleneck not in BOTTLENECKS:
        raise ValueError(f"bottleneck {bottleneck!r} unknown; allowed: {BOTTLENECKS}")


def resnet18_bottleneck_plan(
    width: int, base_width: int, num_classes: int, *, in_channels: int = 3
) -> BottleneckPlan:
    """Inner sizes for a CIFAR ResNet-18 of ``width`` whose 16 block 3x3 convs are factorized
    (3x3 Cin->k, 1x1 k->Cout) to meet the dense ``base_width`` count from below."""
    _check_widths(width, base_width)
    w = width
    target = resnet18_weight_count(base_width, num_classes, stem="cifar", in_channels=in_channels)
    fixed = 9 * in_channels * w + (1 * 2 + 2 * 4 + 4 * 8) * w * w + 8 * w * num_classes
    layers = [FactorLayer(n, cin, cout, 9) for n, cin, cout in block_conv_shapes(w)]
    r, ks, count = solve_inner_dims(layers, fixed, target)
    return BottleneckPlan(
        model="resnet18_bottleneck",
        width=width,
        base_width=base_width,
        inner_dims=tuple((l.name, k) for l, k in zip(layers, ks)),
        ratio=r,
        fixed=fixed,
        target=target,
        count=count,
    )


def _check_factorize(factorize: Sequence[str]) -> Tuple[str, ...]:
    f = tuple(factorize)
    if not f or any(x not in MLP_FACTORIZABLE for x in f) or len(set(f)) != len(f):
        raise ValueError(
            f"factorize={factorize!r} invalid; use a non-empty subset of {MLP_FACTORIZABLE}"
        )
    return tuple(x for x in MLP_FACTORIZABLE if x in f)  # forward order


def mlp_bottleneck_plan(
    width: int,
    base_width: int,
    num_classes: int,
    *,
    input_dim: int = 784,
    factorize: Sequence[str] = ("fc",),
) -> BottleneckPlan:
    """Inner sizes for an MLP d -> width -> C with ``factorize`` layers replaced by
    I -> k -> O, meeting the dense ``base_width`` MLP's count d*b + b*C from below."""
    _check_widths(width, base_width)
    if input_dim < 1:
        raise ValueError(f"input_dim must be >= 1, got {input_dim}")
    f = _check_factorize(factorize)
    target = mlp_weight_count(base_width, num_classes, input_dim)
    shapes = {"fc": (input_dim, width), "cl": (width, num_classes)}
    fixed = sum(i * o for n, (i, o) in shapes.items() if n not in f)
    layers = [FactorLayer(n, *shapes[n], 1) for n in f]
    r, ks, count = solve_inner_dims(layers, fixed, target)
    return BottleneckPlan(
        model="mlp_bottleneck",
        width=width,
        base_width=base_width,
        inner_dims=tuple((l.name, k) for l, k in zip(layers, ks)),
        ratio=r,
        fixed=fixed,
        target=target,
        count=count,
    )


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
        check_mlp_args(
            self.width,
            self.num_classes,
            self.parametrization,
            self.use_bias,
            self.activation,
            self.init_distribution,
        )
        _check_bottleneck(self.bottleneck)
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
        h = _FactorDense(
            self.width,
            self.inner_fc,
            self.bottleneck == "nonlinear",
            self.use_bias,
            name="fc",
            **kw,
        )(flatten(x).astype(self.dtype))
        if self.activation == "relu":
            h = nn.relu(h)
        out = _FactorDense(
            self.num_classes,
            self.inner_cl,
            self.bottleneck == "nonlinear",
            self.use_bias,
            name="cl",
            **kw,
        )(h)
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
    if parametrization == "standard":
        kinit = torch_kernel_init(init_distribution)
    else:
        kinit = scaled_init(1.0, init_distribution)
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


def make_resnet18_bottleneck(
    width: int,
    num_classes: int,
    *,
    base_width: int,
    bottleneck: str = "linear",
    in_channels: int = 3,
    **kwargs,
) -> ResNet18:
    """CIFAR ResNet-18 of ``width`` with factorized block convs at the ``base_width`` count.
    kwargs: ``dtype``, ``bn_axis_name``."""
    _check_bottleneck(bottleneck)
    bad = sorted(set(kwargs) - {"dtype", "bn_axis_name"})
    if bad:
        raise ValueError(
            f"unknown option(s) {bad} for resnet18_bottleneck; allowed: "
            "['base_width', 'bottleneck', 'bn_axis_name', 'dtype', 'in_channels']"
        )
    plan = resnet18_bottleneck_plan(width, base_width, num_classes, in_channels=in_channels)
    return ResNet18(
        width=width,
        num_classes=num_classes,
        stem="cifar",
        inner_dims=plan.inner_dims,
        bottleneck=bottleneck,
        **kwargs,
    )


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
    _check_bottleneck(bottleneck)
    allowed = {"parametrization", "use_bias", "activation", "init_distribution", "dtype"}
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise ValueError(
            f"unknown option(s) {bad} for mlp_bottleneck; allowed: "
            f"{sorted(allowed | {'base_width', 'bottleneck', 'factorize', 'input_dim'})}"
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
