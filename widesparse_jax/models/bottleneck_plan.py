"""The k rule of the bottleneck variants: inner sizes at a fixed counted-weight budget (pure).

Every factorized layer l with input size I_l, output size O_l (kernel area A_l = 9 for the 3x3
convs, 1 for dense) gets ``k_l = floor(r * m_l)``, ``m_l = min(I_l, O_l)``, with one common
fraction ``r`` in (0, 1]. Its counted weights are ``k_l * (A_l * I_l + O_l)``. ``r`` is the
largest value (searched exactly over the breakpoints j/m_l with rational arithmetic) such that

    fixed(w) + sum_l k_l * (A_l I_l + O_l)  <=  target = count of the dense base-width net,

where fixed(w) counts the unfactorized kernels of the width-w net. So the achieved count meets
the target from below; ``BottleneckPlan.gap = target - count >= 0`` is the difference.
If the smallest r giving every k_l >= 1 already exceeds the target, or the fixed part alone
does, a ValueError is raised (width too large for the budget). Which layers are factorized:
see :mod:`widesparse_jax.models.bottleneck`.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Optional, Sequence, Tuple

from widesparse_jax.models.mlp import mlp_weight_count
from widesparse_jax.models.resnet import block_conv_shapes, resnet18_weight_count

MLP_FACTORIZABLE = ("fc", "cl")


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


def _make_plan(
    model: str, width: int, base_width: int, layers: Sequence[FactorLayer], fixed: int, target: int
) -> BottleneckPlan:
    """Solve the k rule for ``layers`` and record it as a :class:`BottleneckPlan`."""
    r, ks, count = solve_inner_dims(layers, fixed, target)
    return BottleneckPlan(
        model=model,
        width=width,
        base_width=base_width,
        inner_dims=tuple((l.name, k) for l, k in zip(layers, ks)),
        ratio=r,
        fixed=fixed,
        target=target,
        count=count,
    )


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
    return _make_plan("resnet18_bottleneck", width, base_width, layers, fixed, target)


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
    return _make_plan("mlp_bottleneck", width, base_width, layers, fixed, target)
