"""The normalized SGD noise scale and its inputs (Park et al. 2019); see noise_scale.py."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from widesparse_jax import tree
from widesparse_jax.choices import canonical_parametrization

# PyTorch's default Linear/Conv init is U(-1/sqrt(fan_in), +1/sqrt(fan_in)) (kaiming_uniform
# with a=sqrt(5)); its variance is bound**2 / 3 = 1 / (3 fan_in), i.e. sigma_w^2 = 1/3 in the
# Park et al. form Var(W) = sigma_w^2 / fan_in. The sparse-aware init U(+-1/sqrt(fan_in * p))
# has Var = 1 / (3 fan_in p): the same sigma_w^2 = 1/3 relative to the effective fan-in.
PYTORCH_UNIFORM_SIGMA_W2 = 1.0 / 3.0

# Where noise_scale_from_config looks for each quantity (dotted attribute / key paths).
DEFAULT_CONFIG_FIELDS: Mapping[str, str] = {
    "lr": "optimizer.lr",
    "momentum": "optimizer.momentum",
    "batch_size": "train.batch_size",
    "parametrization": "model.parametrization",
    # Optional: an explicit sigma_w^2; when the path is missing the parametrization default
    # of init_variance_scale is used.
    "sigma_w2": "model.sigma_w2",
}

_MISSING = object()


# --------------------------------------------------------------------------------------
# The formula
# --------------------------------------------------------------------------------------


def _check_number(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def noise_scale(lr: float, batch_size: float, momentum: float, init_variance: float) -> float:
    """Normalized SGD noise scale g_bar = lr / (batch_size * (1 - momentum) * init_variance).

    Args:
      lr: learning rate epsilon > 0.
      batch_size: B > 0 (total batch over all devices).
      momentum: heavy-ball momentum m in [0, 1).
      init_variance: width-independent init variance scale sigma2_init > 0
        (see :func:`init_variance_scale`).
    Returns:
      g_bar as a Python float.
    Raises:
      ValueError naming the bad value and the allowed range.
    """
    lr = _check_number("lr", lr)
    batch_size = _check_number("batch_size", batch_size)
    momentum = _check_number("momentum", momentum)
    init_variance = _check_number("init_variance", init_variance)
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if init_variance <= 0:
        raise ValueError(f"init_variance must be > 0, got {init_variance}")
    return lr / (batch_size * (1.0 - momentum) * init_variance)


def _from_weight_variance(kind: str, weight_variance: Any, fan_in: Any, density: float) -> float:
    """sigma_w^2 from the per-entry init variance: itself for 'ntk', else
    ``weight_variance * fan_in * density`` (``fan_in`` required)."""
    v = _check_number("weight_variance", weight_variance)
    if v <= 0:
        raise ValueError(f"weight_variance must be > 0, got {v}")
    if kind == "ntk":
        return v
    if fan_in is None:
        raise ValueError(f"fan_in is required with weight_variance for parametrization {kind!r}")
    f = _check_number("fan_in", fan_in)
    if f <= 0:
        raise ValueError(f"fan_in must be > 0, got {f}")
    return v * f * density


def init_variance_scale(
    parametrization: str,
    *,
    sigma_w2: float | None = None,
    weight_variance: float | None = None,
    fan_in: float | None = None,
    density: float = 1.0,
) -> float:
    """Width-independent init variance scale sigma2_init for g_bar.

    Convention (Park et al. 2019): a weight matrix is written as having per-entry variance
    ``sigma_w^2 / fan_in`` (standard, muP hidden layers) or ``sigma_w^2`` with an explicit
    ``1/sqrt(fan_in)`` multiplier in the forward pass (NTK); ``sigma2_init = sigma_w^2`` in both
    cases, so it does not change with width.

    * ``'standard'`` ('sp'): default is the PyTorch uniform init U(+-1/sqrt(fan_in)) used by
      the baseline, Var = 1/(3 fan_in) -> sigma_w^2 = 1/3. With a sparse layer of density p
      the effective fan-in is ``fan_in * p`` (init U(+-1/sqrt(fan_in p))): still 1/3.
    * ``'ntk'``: weights N(0, 1), forward multiplier 1/sqrt(fan_in) -> sigma_w^2 = 1.
    * ``'mup'`` ('μp', 'mean_field'): hidden weights N(0, sigma_w^2 / fan_in) as in
      Tensor Programs V (Table 3, SP-like form); default sigma_w^2 = 1. The output layer's
      extra 1/fan_in is width dependent by design and is not part of sigma2_init.

    Args:
      parametrization: 'standard' | 'ntk' | 'mup' (aliases above).
      sigma_w2: explicit sigma_w^2 (> 0); returned as is.
      weight_variance: the per-entry variance actually used at init (> 0). For 'standard'
        and 'mup' needs ``fan_in`` and gives ``weight_variance * fan_in * density``; for 'ntk'
        it is sigma_w^2 itself.
      fan_in: the layer's dense fan-in (e.g. 784 for the MNIST MLP hidden layer, k*k*C_in for
        a conv).
      density: fraction of kept weights of that layer, in (0, 1].
    Returns:
      sigma2_init as a float.
    """
    kind = canonical_parametrization(parametrization)
    if sigma_w2 is not None and weight_variance is not None:
        raise ValueError("give at most one of sigma_w2 and weight_variance, got both")
    if sigma_w2 is not None:
        s = _check_number("sigma_w2", sigma_w2)
        if s <= 0:
            raise ValueError(f"sigma_w2 must be > 0, got {s}")
        return s
    density = _check_number("density", density)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if weight_variance is not None:
        return _from_weight_variance(kind, weight_variance, fan_in, density)
    if kind == "standard":
        return PYTORCH_UNIFORM_SIGMA_W2
    return 1.0


def noise_scale_from_config(
    config: Any,
    *,
    fields: Mapping[str, str] | None = None,
    init_variance: float | None = None,
) -> float:
    """g_bar of one training config (ml_collections.ConfigDict, dict, or any attribute tree).

    Args:
      config: the run's config.
      fields: dotted paths overriding :data:`DEFAULT_CONFIG_FIELDS` per quantity, e.g.
        ``{'lr': 'optim.learning_rate', 'batch_size': 'data.batch_size'}``. Required
        quantities: lr, momentum, batch_size, and parametrization (unless ``init_variance``
        is given). ``sigma_w2`` is optional.
      init_variance: explicit sigma2_init, bypassing the parametrization lookup.
    Returns:
      g_bar (float).
    Raises:
      ValueError naming the missing path.
    """
    paths = dict(DEFAULT_CONFIG_FIELDS)
    if fields is not None:
        unknown = set(fields) - set(DEFAULT_CONFIG_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown field names {sorted(unknown)}; allowed: {sorted(DEFAULT_CONFIG_FIELDS)}"
            )
        paths.update(fields)

    def required(name: str) -> Any:
        value = tree.get_dotted(config, paths[name], _MISSING)
        if value is _MISSING:
            raise ValueError(
                f"config has no {paths[name]!r} (needed for {name}); pass fields={{{name!r}: "
                "'dotted.path'}} to point elsewhere"
            )
        return value

    lr = required("lr")
    momentum = required("momentum")
    batch_size = required("batch_size")
    if init_variance is None:
        parametrization = required("parametrization")
        sigma_w2 = tree.get_dotted(config, paths["sigma_w2"], _MISSING)
        init_variance = init_variance_scale(
            parametrization, sigma_w2=None if sigma_w2 is _MISSING or sigma_w2 is None else sigma_w2
        )
    return noise_scale(lr, batch_size, momentum, init_variance)
