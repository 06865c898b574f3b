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

The rule for k (one common fraction of each layer's max inner size, meeting the dense
base-width count from below) and :class:`BottleneckPlan`: :mod:`bottleneck_plan`. The MLP
variant: :mod:`bottleneck_mlp`. The ResNet variant is :class:`ResNet18` with ``inner_dims``;
this module builds it and re-exports every public name of the two others.
"""

from __future__ import annotations

from widesparse_jax.models.bottleneck_mlp import (  # noqa: F401
    MLPBottleneck,
    _dense_here,
    _FactorDense,
    check_options,
    make_mlp_bottleneck,
)
from widesparse_jax.models.bottleneck_plan import (  # noqa: F401
    MLP_FACTORIZABLE,
    BottleneckPlan,
    FactorLayer,
    _check_factorize,
    _check_widths,
    _factored_count,
    _inner_sizes,
    mlp_bottleneck_plan,
    resnet18_bottleneck_plan,
    solve_inner_dims,
)
from widesparse_jax.models.resnet import (  # noqa: F401
    BOTTLENECKS,
    ResNet18,
    block_conv_shapes,
    check_bottleneck,
)


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
    check_bottleneck(bottleneck)
    check_options(
        "resnet18_bottleneck",
        kwargs,
        {"dtype", "bn_axis_name"},
        {"base_width", "bottleneck", "in_channels"},
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
