"""ResNet-18 (BasicBlock) of width w, as in the wide-sparse-nets baseline, in Flax Linen.

Architecture (matches the baseline's ``third_party/resnet_model/resnet.py`` for the CIFAR stem and
torchvision's ResNet-18 for the ImageNet stem):

* stem ``conv1`` + ``bn1`` + ReLU.
  - ``'cifar'``: 3x3 conv, stride 1, pad 1, no max-pool.
  - ``'imagenet'``: 7x7 conv, stride 2, pad 3, then 3x3 max-pool stride 2 pad 1 (padding with
    -inf, i.e. PyTorch ``MaxPool2d`` semantics).
* four stages ``layer1..layer4`` of two BasicBlocks with w, 2w, 4w, 8w channels; the first block
  of stages 2-4 has stride 2 (in its first 3x3 conv) and a projection shortcut
  (1x1 conv, stride 2, no bias, + BatchNorm) named ``shortcut_0`` / ``shortcut_1``.
  A projection is used whenever stride != 1 or the channel count changes.
* global average pool (equals the baseline's ``avg_pool2d(out, 4)`` on 32x32 inputs), then
  ``linear`` (Dense 8w -> C, with bias).

Convolutions have no bias, explicit PyTorch paddings (3x3: 1, 7x7: 3, 1x1: 0). BatchNorm:
flax momentum 0.9 (= PyTorch momentum 0.1), epsilon 1e-5, scale 1, bias 0, optionally averaged
over the pmap axis ``bn_axis_name`` (e.g. ``'batch'``) in training mode.
Initialization = PyTorch default: kernels U(+-1/sqrt(fan_in)), dense bias U(+-1/sqrt(fan_in)).

Param tree (docs/contracts.md): ``conv1/kernel``, ``bn1``, ``layer{1..4}_{0,1}/{conv1,bn1,conv2,
bn2}``, ``layer{2,3,4}_0/{shortcut_0,shortcut_1}``, ``linear/{kernel,bias}``.

Counted weights (conv + dense kernels), Cin input channels, C classes:
``2724 w^2 + 9 Cin w + 8 w C`` (CIFAR stem) and ``2724 w^2 + 49 Cin w + 8 w C`` (ImageNet stem);
see :func:`resnet18_weight_count`.

Bottleneck extension (used by ``bottleneck.py``): ``inner_dims`` maps a block conv name such as
``'layer3_1/conv2'`` to an inner size k; that conv is then a :class:`FactorizedConv`
(3x3 conv Cin->k with the original stride/padding, then 1x1 conv k->Cout, optional ReLU between),
whose params live under ``<conv name>/a`` and ``<conv name>/b``.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from widesparse_jax.models.init import torch_bias_init, torch_kernel_init
from widesparse_jax.models.masked import masked_call

STEMS = ("cifar", "imagenet")
BOTTLENECKS = ("linear", "nonlinear")
STAGE_MULTIPLIERS = (1, 2, 4, 8)
BLOCKS_PER_STAGE = 2

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

Dtype = Any


def check_bottleneck(bottleneck: str) -> None:
    """Raise ValueError unless ``bottleneck`` is one of BOTTLENECKS."""
    if bottleneck not in BOTTLENECKS:
        raise ValueError(f"bottleneck {bottleneck!r} unknown; allowed: {BOTTLENECKS}")


def block_conv_names() -> Tuple[str, ...]:
    """Names of the 16 3x3 convs inside the residual blocks, in forward order."""
    return tuple(
        f"layer{s}_{b}/conv{c}"
        for s in range(1, 5)
        for b in range(BLOCKS_PER_STAGE)
        for c in (1, 2)
    )


def block_conv_shapes(width: int) -> Tuple[Tuple[str, int, int], ...]:
    """(name, Cin, Cout) of every 3x3 block conv for width w, in forward order."""
    out = []
    cin = width
    for s, mult in enumerate(STAGE_MULTIPLIERS, start=1):
        cout = mult * width
        for b in range(BLOCKS_PER_STAGE):
            out.append((f"layer{s}_{b}/conv1", cin, cout))
            out.append((f"layer{s}_{b}/conv2", cout, cout))
            cin = cout
    return tuple(out)


def resnet18_weight_count(
    width: int, num_classes: int, *, stem: str = "cifar", in_channels: int = 3
) -> int:
    """Number of counted weights (conv + dense kernels; no biases, no BN) of ResNet-18.

    CIFAR stem: 2724 w^2 + 9*Cin*w + 8*w*C; ImageNet stem: 2724 w^2 + 49*Cin*w + 8*w*C.
    """
    _check_resnet_args(width, num_classes, stem)
    k = 3 if stem == "cifar" else 7
    return 2724 * width * width + k * k * in_channels * width + 8 * width * num_classes


def _check_resnet_args(width: int, num_classes: int, stem: str) -> None:
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {width!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if stem not in STEMS:
        raise ValueError(f"stem {stem!r} unknown; allowed: {STEMS}")


def _conv(
    features: int,
    kernel: int,
    stride: int,
    pad: int,
    dtype: Dtype,
    name: str,
) -> nn.Conv:
    """Bias-free conv with explicit PyTorch padding and PyTorch default init (HWIO kernel)."""
    return nn.Conv(
        features=features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=torch_kernel_init("uniform"),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def _batch_norm(train: bool, axis_name: Optional[str], dtype: Dtype, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        axis_name=axis_name if train else None,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def max_pool_torch(x: jax.Array, window: int = 3, stride: int = 2, pad: int = 1) -> jax.Array:
    """PyTorch ``MaxPool2d(window, stride, pad)`` on NHWC input (pads with -inf)."""
    return nn.max_pool(
        x, (window, window), strides=(stride, stride), padding=((pad, pad), (pad, pad))
    )


class FactorizedConv(nn.Module):
    """A kxk conv replaced by kxk conv Cin->inner (params ``a``) then 1x1 conv inner->features
    (params ``b``), with a ReLU between them when ``nonlinear`` (no BN between).

    x: [N, H, W, Cin] -> [N, H', W', features]; stride and padding are those of the replaced conv.
    Counted weights: k*k*Cin*inner + inner*features.
    """

    features: int
    inner: int
    kernel: int = 3
    stride: int = 1
    pad: int = 1
    nonlinear: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = _conv(self.inner, self.kernel, self.stride, self.pad, self.dtype, "a")(x)
        if self.nonlinear:
            y = nn.relu(y)
        return _conv(self.features, 1, 1, 0, self.dtype, "b")(y)


class BasicBlock(nn.Module):
    """ResNet BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    x: [N, H, W, Cin] -> [N, H/stride, W/stride, features].
    ``inner1``/``inner2``: if set, conv1/conv2 is a :class:`FactorizedConv` with that inner size.
    """

    features: int
    stride: int = 1
    dtype: Dtype = jnp.float32
    bn_axis_name: Optional[str] = None
    inner1: Optional[int] = None
    inner2: Optional[int] = None
    nonlinear_bottleneck: bool = False

    def _conv3x3(self, features: int, stride: int, inner: Optional[int], name: str) -> nn.Module:
        if inner is None:
            return _conv(features, 3, stride, 1, self.dtype, name)
        return FactorizedConv(
            features=features,
            inner=inner,
            kernel=3,
            stride=stride,
            pad=1,
            nonlinear=self.nonlinear_bottleneck,
            dtype=self.dtype,
            name=name,
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        in_features = x.shape[-1]
        out = self._conv3x3(self.features, self.stride, self.inner1, "conv1")(x)
        out = nn.relu(_batch_norm(train, self.bn_axis_name, self.dtype, "bn1")(out))
        out = self._conv3x3(self.features, 1, self.inner2, "conv2")(out)
        out = _batch_norm(train, self.bn_axis_name, self.dtype, "bn2")(out)
        if self.stride != 1 or in_features != self.features:
            sc = _conv(self.features, 1, self.stride, 0, self.dtype, "shortcut_0")(x)
            sc = _batch_norm(train, self.bn_axis_name, self.dtype, "shortcut_1")(sc)
        else:
            sc = x
        return nn.relu(out + sc)


class ResNet18(nn.Module):
    """ResNet-18 of width ``width`` (stage channels w, 2w, 4w, 8w).

    Call: ``apply(variables, x, train=bool, mutable=['batch_stats'] if train else False,
    masks=None)`` (``masks`` mirrors params: the forward pass uses the masked weights).
    x: [N, H, W, Cin] float (Cin read from the input; 1 for Fashion-MNIST works) ->
    logits [N, num_classes] float32. Params are float32; ``dtype`` is the compute dtype.
    ``bn_axis_name``: pmap axis over which BN batch statistics are averaged in training.
    ``inner_dims``/``bottleneck``: factorized 3x3 block convs, see module docstring
    (use :func:`widesparse_jax.models.bottleneck.resnet18_bottleneck_plan` to choose them).
    """

    width: int
    num_classes: int
    stem: str = "cifar"
    dtype: Dtype = jnp.float32
    bn_axis_name: Optional[str] = None
    inner_dims: Optional[Tuple[Tuple[str, int], ...]] = None
    bottleneck: str = "linear"

    def __post_init__(self) -> None:
        _check_resnet_args(self.width, self.num_classes, self.stem)
        check_bottleneck(self.bottleneck)
        if self.inner_dims is not None:
            allowed = set(block_conv_names())
            for name, k in self.inner_dims:
                if name not in allowed:
                    raise ValueError(
                        f"inner_dims names a conv {name!r} that is not a block conv; "
                        f"allowed: {sorted(allowed)}"
                    )
                if not isinstance(k, int) or k < 1:
                    raise ValueError(f"inner size for {name!r} must be an int >= 1, got {k!r}")
        super().__post_init__()

    def __call__(self, x: jax.Array, train: bool, masks=None) -> jax.Array:
        """``masks`` (mirrors params; None = dense): compute with the masked weights."""
        return masked_call(ResNet18.forward, self, masks, x, train)

    @nn.compact
    def forward(self, x: jax.Array, train: bool) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"ResNet18 expects NHWC input [N, H, W, C], got shape {x.shape}")
        inner = dict(self.inner_dims or ())
        x = x.astype(self.dtype)
        w = self.width
        if self.stem == "cifar":
            x = _conv(w, 3, 1, 1, self.dtype, "conv1")(x)
        else:
            x = _conv(w, 7, 2, 3, self.dtype, "conv1")(x)
        x = nn.relu(_batch_norm(train, self.bn_axis_name, self.dtype, "bn1")(x))
        if self.stem == "imagenet":
            x = max_pool_torch(x, 3, 2, 1)
        for s, mult in enumerate(STAGE_MULTIPLIERS, start=1):
            for b in range(BLOCKS_PER_STAGE):
                stride = 2 if (s > 1 and b == 0) else 1
                name = f"layer{s}_{b}"
                x = BasicBlock(
                    features=mult * w,
                    stride=stride,
                    dtype=self.dtype,
                    bn_axis_name=self.bn_axis_name,
                    inner1=inner.get(f"{name}/conv1"),
                    inner2=inner.get(f"{name}/conv2"),
                    nonlinear_bottleneck=self.bottleneck == "nonlinear",
                    name=name,
                )(x, train)
        x = jnp.mean(x, axis=(1, 2))
        fan_in = x.shape[-1]
        x = nn.Dense(
            self.num_classes,
            use_bias=True,
            kernel_init=torch_kernel_init("uniform"),
            bias_init=torch_bias_init(fan_in, "uniform"),
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="linear",
        )(x)
        return x.astype(jnp.float32)
