"""One-hidden-layer MLP d -> n -> C (the baseline's ``MLP/models.py`` ``MLP1``), Flax Linen.

Layers (baseline names, docs/contracts.md): hidden ``fc`` (kernel (d, n), bias (n,)) and
classifier ``cl`` (kernel (n, C), bias (C,)); optional BatchNorm ``bn`` after the activation
(the baseline's ``do_batch_norm``; off by default, and off in all paper experiments we reproduce).

Parametrizations:

* ``'standard'`` (paper Fig. 5): f = cl(act(fc(x))); kernels and biases
  U(+-1/sqrt(fan_in)) (``init_distribution='uniform'``, PyTorch default) or N(0, 1/fan_in)
  (``'normal'``, the baseline's ``init_distrib='normal'``).
* ``'ntk'`` (paper Fig. 8): f = (1/sqrt(n)) V act((1/sqrt(d)) U x), no biases (``use_bias``
  must be False). U, V ~ N(0, 1) (``init_distribution='normal'``, the default for ntk), or
  U(-1, 1) with ``'uniform'`` -- which is what the baseline's NTK runs actually used, since its
  ``--init_distrib`` default 'uniform' is not overridden for NTK-style nets.

Sparse layers: after masking, ``widesparse_jax.masks.rescale_for_density(params, masks)``
multiplies each sparse kernel (and its bias) by 1/sqrt(density). For 'standard' this gives
the baseline's U(+-1/sqrt(fan_in * density)) for kernel and bias (baseline ``reinit_parameters``
with ``stddev = 1/sqrt(num_in * ctvt)``); for 'ntk' the baseline's scale 1/sqrt(density)
(``stddev = 1/sqrt(ctvt)``; the 1/sqrt(fan_in) stays a forward multiplier over the full fan_in).

Keeping the last layer dense (paper's NTK runs): that is a masks-plan option,
``masks.make_plan(..., dense_layers=('cl/kernel',))``, not a model option.

Input: [N, d] or any [N, ...] (e.g. [N, 28, 28, 1] images), flattened inside.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from widesparse_jax.models.init import (
    DISTRIBUTIONS,
    scaled_init,
    torch_bias_init,
    torch_kernel_init,
)
from widesparse_jax.models.masked import masked_call

PARAMETRIZATIONS = ("standard", "ntk")
ACTIVATIONS = ("relu", "linear")

Dtype = Any


def resolve_init_distribution(parametrization: str, init_distribution: Optional[str]) -> str:
    """Default init distribution: 'uniform' for standard, 'normal' for ntk."""
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(
            f"parametrization {parametrization!r} unknown; allowed: {PARAMETRIZATIONS}"
        )
    if init_distribution is None:
        return "uniform" if parametrization == "standard" else "normal"
    if init_distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"init_distribution {init_distribution!r} unknown; allowed: {DISTRIBUTIONS}"
        )
    return init_distribution


def check_mlp_args(
    width: int,
    num_classes: int,
    parametrization: str,
    use_bias: bool,
    activation: str,
    init_distribution: Optional[str],
) -> None:
    """Validate MLP hyper-parameters; raises ValueError naming the bad value."""
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"width must be an int >= 1, got {width!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    resolve_init_distribution(parametrization, init_distribution)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} unknown; allowed: {ACTIVATIONS}")
    if parametrization == "ntk" and use_bias:
        raise ValueError(
            "parametrization='ntk' has no biases (f = V relu(U x)/sqrt(n d)); "
            "got use_bias=True, pass use_bias=False"
        )


def check_mlp_module(m: nn.Module) -> None:
    """:func:`check_mlp_args` on the fields of an MLP-like module ``m``."""
    check_mlp_args(
        m.width, m.num_classes, m.parametrization, m.use_bias, m.activation, m.init_distribution
    )


def kernel_init_for(parametrization: str, init_distribution: str):
    """Kernel initializer: PyTorch's default for 'standard', unit scale for 'ntk'."""
    if parametrization == "standard":
        return torch_kernel_init(init_distribution)
    return scaled_init(1.0, init_distribution)


def mlp_weight_count(width: int, num_classes: int, input_dim: int = 784) -> int:
    """Counted weights (kernels only) of the MLP: d*n + n*C."""
    return input_dim * width + width * num_classes


def dense_layer(
    x: jax.Array,
    features: int,
    *,
    parametrization: str,
    use_bias: bool,
    init_distribution: str,
    dtype: Dtype,
    name: str,
) -> jax.Array:
    """Apply a (standard|ntk) dense layer named ``name`` inside a compact module.

    x: [N, fan_in] -> [N, features]. NTK: N(0,1)/U(-1,1) weights times 1/sqrt(fan_in).
    Params: ``name/kernel`` (fan_in, features), ``name/bias`` (features,) if use_bias.
    """
    fan_in = x.shape[-1]
    out = nn.Dense(
        features,
        use_bias=use_bias,
        kernel_init=kernel_init_for(parametrization, init_distribution),
        bias_init=torch_bias_init(fan_in, init_distribution),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )(x)
    if parametrization == "ntk":
        out = out * jnp.asarray(1.0 / math.sqrt(fan_in), out.dtype)
    return out


def flatten(x: jax.Array) -> jax.Array:
    """[N, ...] -> [N, prod(...)]; a 1-D input is one example -> [1, d]."""
    if x.ndim == 1:
        return x[None, :]
    return x.reshape((x.shape[0], -1))


class MLP(nn.Module):
    """MLP d -> width -> num_classes (see module docstring).

    Call: ``apply(variables, x, train=bool, masks=None)`` (``mutable=['batch_stats']`` in training only if
    ``batch_norm``). x: [N, d] or [N, H, W, C] -> logits [N, num_classes] float32.
    ``init_distribution=None`` picks 'uniform' (standard) / 'normal' (ntk).
    """

    width: int
    num_classes: int
    parametrization: str = "standard"
    use_bias: bool = True
    activation: str = "relu"
    init_distribution: Optional[str] = None
    batch_norm: bool = False
    dtype: Dtype = jnp.float32

    def __post_init__(self) -> None:
        check_mlp_module(self)
        super().__post_init__()

    def __call__(self, x: jax.Array, train: bool = False, masks=None) -> jax.Array:
        """``masks`` (mirrors params; None = dense): compute with the masked weights."""
        return masked_call(MLP.forward, self, masks, x, train)

    @nn.compact
    def forward(self, x: jax.Array, train: bool = False) -> jax.Array:
        dist = resolve_init_distribution(self.parametrization, self.init_distribution)
        kw = dict(
            parametrization=self.parametrization,
            use_bias=self.use_bias,
            init_distribution=dist,
            dtype=self.dtype,
        )
        h = dense_layer(flatten(x).astype(self.dtype), self.width, name="fc", **kw)
        if self.activation == "relu":
            h = nn.relu(h)
        if self.batch_norm:
            h = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                dtype=self.dtype,
                name="bn",
            )(h)
        out = dense_layer(h, self.num_classes, name="cl", **kw)
        return out.astype(jnp.float32)
