"""Standard, NTK and μP (maximal update) parametrizations without touching the model code.

A parametrization is expressed relative to a *base width* b, for a net of width w
(width multiplier ``m = w / b``), as two pieces applied around an ordinary Flax model built
with its standard (PyTorch-like) init:

(a) an init rescaling of the params pytree (:func:`apply_parametrization`),
(b) per-leaf SGD learning-rate multipliers (:func:`lr_multipliers`, a pytree of floats for
    ``optim.make_optimizer(lr_multipliers=...)`` / ``optim.scale_by_lr_multipliers``).

The forward pass is unchanged: the μP used is the "SP-like" form of Tensor Programs V,
Table 3, whose 1/width readout scale lives in the output layer's init and learning rate.

At ``width == base_width`` (dense) every factor is 1: the base net *is* the standard net.

Roles
-----
Every leaf gets the role of its layer (:func:`layer_roles`):

* ``'input'``  - weights whose fan-in is finite and fan-out scales with width (MLP ``fc``,
  ResNet stem ``conv1``),
* ``'hidden'`` - fan-in and fan-out both scale (ResNet block convs and shortcuts),
* ``'output'`` - fan-in scales, fan-out finite (MLP ``cl``, ResNet ``linear``),
* ``'other'``  - width-sized vectors not attached to a kernel (BatchNorm scale/bias).

A bias leaf (a non-kernel sibling of a kernel) takes its kernel's role but follows the bias
rules below. Default roles: counted kernels (``kernel``, ndim >= 2) in dict insertion order
(= Flax call order), first = input, last = output, others hidden. Pass ``roles`` (a mapping
``{path: role}`` with leaf paths ``'fc/kernel'`` or module paths ``'fc'``) for other models.

Rules (SGD; m = w / b; p = density of the layer's mask, 1 when dense)
--------------------------------------------------------------------
With ``m_in = m`` if the layer's fan-in scales with width (hidden, output) else 1 and
``m_out = m`` if its fan-out scales (input, hidden) else 1:

=========  ===========================  ================================  =====================
name       kernel init factor           kernel lr multiplier              bias: init / lr
=========  ===========================  ================================  =====================
standard   1                            1                                 1 / 1
ntk        1                            1 / (m_in p)                      sqrt(m_in p) / 1
mup        1/sqrt(m_in p) if output     m_out / (m_in p)                  sqrt(m_in p) / m_out
           else 1
=========  ===========================  ================================  =====================

``'other'`` leaves: init 1; lr ``m`` under mup (vector-like, like a bias), 1 otherwise.

This is Table 3 of Tensor Programs V (μP for SGD: input weights & biases lr ∝ fan_out, hidden
lr constant, output init var ∝ 1/fan_in², output lr ∝ 1/fan_in) written as ``lr ∝ fan_out /
fan_in`` and made relative to the base width, and NTK as ``lr ∝ 1 / fan_in`` on the SP-form
weights (equivalent to N(0,1) weights times 1/sqrt(fan_in)). Biases get a width-independent
init (the PyTorch bias bound 1/sqrt(fan_in) is undone for scaling fan-ins).

Sparse layers: effective fan-in
-------------------------------
For a masked layer we take **fan-in = effective fan-in fan_in * p** (``fan_in_mode=
'effective'``, default) and keep fan-out nominal. Reason: the sparse-aware init
(``masks.rescale_for_density``) already uses the effective fan-in, U(±1/sqrt(fan_in p)); and
an SGD update ``ΔW = -lr (g xᵀ) ⊙ M`` changes a pre-activation by
``Δh_i = -lr g_i Σ_j M_ij x_j² ≈ -lr g_i p fan_in E[x²]``, i.e. ``p`` times the dense change,
so every ``fan_in`` of the μP/NTK table becomes ``fan_in p``: the masked layer's lr gets an
extra ``1/p`` and the output init an extra ``1/sqrt(p)``. ``fan_in_mode='nominal'`` ignores
the density (p := 1 in the table; the sparse-aware init from ``rescale_for_density`` still
applies). Density is read from the mask: ``p = kept / size`` of that layer.

Order of use (see the wiring note in :func:`apply_parametrization`): model.init ->
masks drawn -> ``masks.rescale_for_density`` -> :func:`apply_parametrization` (with the
same masks) -> optimizer with :func:`lr_multipliers`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

import jax.numpy as jnp
import numpy as np

from widesparse_jax import tree
from widesparse_jax.choices import (
    FAN_IN_MODES,
    PARAMETRIZATIONS,
    ROLES,
    canonical_parametrization,
)
from widesparse_jax.masks import is_counted

Path = tuple
Params = Any


__all__ = [
    "PARAMETRIZATIONS",
    "ROLES",
    "FAN_IN_MODES",
    "canonical_name",
    "layer_roles",
    "leaf_factors",
    "init_factors",
    "apply_parametrization",
    "lr_multipliers",
]


# --------------------------------------------------------------------------------------
# Validation and tree walking
# --------------------------------------------------------------------------------------


def canonical_name(name: str) -> str:
    """'standard' | 'ntk' | 'mup' for ``name`` or an alias ('sp', 'μp', 'mean_field')."""
    return canonical_parametrization(name)


def _check_widths(width: Any, base_width: Any) -> float:
    for nm, v in (("width", width), ("base_width", base_width)):
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float, np.integer, np.floating))
            or not math.isfinite(float(v))
            or v <= 0
        ):
            raise ValueError(f"{nm} must be a positive number, got {v!r}")
    return float(width) / float(base_width)


# --------------------------------------------------------------------------------------
# Roles
# --------------------------------------------------------------------------------------


def layer_roles(params: Params, roles: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Role of every leaf of ``params``: {'a/b/kernel': 'input'|'hidden'|'output'|'other'}.

    Args:
      params: nested-dict params pytree (arrays or ShapeDtypeStruct leaves), e.g. the MLP's
        ``{'fc': {'kernel', 'bias'}, 'cl': {...}}`` or the ResNet-18 tree of docs/contracts.md.
      roles: optional overrides ``{path: role}``; a path is a leaf path ('fc/kernel') or a
        module path ('fc', applying to every leaf below it; the longest match wins).
    Returns:
      Default (see module doc): kernels (leaf 'kernel', ndim >= 2) in insertion order: first
      'input', last 'output', others 'hidden'; a kernel's siblings (bias) share its role; every
      other leaf (BatchNorm scale/bias) is 'other'. A single kernel is 'output'.
    """
    leaves = [(p, leaf) for p, leaf in tree.walk(params) if leaf is not None]
    if not leaves:
        raise ValueError("params has no leaves")
    kernels = [p for p, leaf in leaves if is_counted(p, leaf)]
    kernel_role: dict[Path, str] = {}
    for i, p in enumerate(kernels):
        kernel_role[p[:-1]] = "output" if i == len(kernels) - 1 else "input" if i == 0 else "hidden"
    out = {}
    for p, _ in leaves:
        out[tree.path_name(p)] = kernel_role.get(p[:-1], "other")
    if roles:
        names = set(out)
        for key, role in roles.items():
            if role not in ROLES:
                raise ValueError(f"role {role!r} for {key!r} unknown; allowed: {ROLES}")
            key = tree.path_name(key) if isinstance(key, tuple) else str(key)
            if not any(n == key or n.startswith(key + "/") for n in names):
                raise ValueError(f"roles key {key!r} matches no param path; paths: {sorted(names)}")
        for n in out:
            best = None
            for key, role in roles.items():
                key = tree.path_name(key) if isinstance(key, tuple) else str(key)
                if (n == key or n.startswith(key + "/")) and (
                    best is None or len(key) > len(best[0])
                ):
                    best = (key, role)
            if best is not None:
                out[n] = best[1]
    return out


# --------------------------------------------------------------------------------------
# Factors
# --------------------------------------------------------------------------------------


def _densities(params: Params, masks: Optional[Params]) -> dict[Path, float]:
    """{module path: density} of every masked kernel (kept / size)."""
    if masks is None:
        return {}
    pl = dict(tree.walk(params))
    out = {}
    for p, m in tree.walk(masks):
        if m is None:
            continue
        if p not in pl:
            raise ValueError(f"mask at {tree.path_name(p)!r} has no matching param")
        if tuple(np.shape(m)) != tuple(np.shape(pl[p])):
            raise ValueError(
                f"mask shape {tuple(np.shape(m))} != param shape "
                f"{tuple(np.shape(pl[p]))} at {tree.path_name(p)!r}"
            )
        size = int(np.prod(np.shape(m)))
        out[p[:-1]] = float(np.count_nonzero(np.asarray(m))) / size if size else 1.0
    return out


def leaf_factors(
    params: Params,
    name: str,
    width: float,
    base_width: float,
    *,
    roles: Optional[Mapping[str, str]] = None,
    masks: Optional[Params] = None,
    fan_in_mode: str = "effective",
) -> dict[str, tuple[float, float]]:
    """{leaf path name: (init factor, lr multiplier)} following the module-doc table.

    Args:
      params: params pytree (shapes suffice). name: 'standard' | 'ntk' | 'mup' (or alias).
      width, base_width: the net's width and the base width (> 0); m = width / base_width.
      roles: role overrides for :func:`layer_roles`. masks: mask pytree (bool leaf = keep,
        None = dense) giving each layer's density p, or None (all dense).
      fan_in_mode: 'effective' (fan_in * p, default) or 'nominal' (density ignored).
    """
    kind = canonical_name(name)
    m = _check_widths(width, base_width)
    if fan_in_mode not in FAN_IN_MODES:
        raise ValueError(f"fan_in_mode {fan_in_mode!r} unknown; allowed: {FAN_IN_MODES}")
    role_of = layer_roles(params, roles)
    dens = _densities(params, masks) if fan_in_mode == "effective" else {}
    out = {}
    for p, leaf in tree.walk(params):
        if leaf is None:
            continue
        n = tree.path_name(p)
        role = role_of[n]
        if kind == "standard":
            out[n] = (1.0, 1.0)
            continue
        if role == "other":
            out[n] = (1.0, m if kind == "mup" else 1.0)
            continue
        dens_p = dens.get(p[:-1], 1.0)
        if dens_p <= 0.0:  # an all-zero layer: nothing to scale
            out[n] = (1.0, 1.0)
            continue
        m_in = (m if role in ("hidden", "output") else 1.0) * dens_p
        m_out = m if role in ("input", "hidden") else 1.0
        if is_counted(p, leaf):
            if kind == "ntk":
                out[n] = (1.0, 1.0 / m_in)
            else:
                out[n] = (1.0 / math.sqrt(m_in) if role == "output" else 1.0, m_out / m_in)
        else:  # bias of a layer: width-independent init (undo 1/sqrt(fan_in) of the torch bias)
            out[n] = (math.sqrt(m_in), m_out if kind == "mup" else 1.0)
    return out


def _factor_tree(params: Params, factors: Mapping[str, tuple], index: int) -> Params:
    """Pytree (params structure) of ``factors[layer name][index]`` (0: init, 1: lr)."""
    return tree.map_with_path(
        lambda p, leaf: None if leaf is None else factors[tree.path_name(p)][index], params
    )


def init_factors(
    params: Params,
    name: str,
    width: float,
    base_width: float,
    *,
    roles: Optional[Mapping[str, str]] = None,
    masks: Optional[Params] = None,
    fan_in_mode: str = "effective",
) -> Params:
    """Pytree (params structure) of the init factors (floats) of :func:`leaf_factors`."""
    f = leaf_factors(
        params, name, width, base_width, roles=roles, masks=masks, fan_in_mode=fan_in_mode
    )
    return _factor_tree(params, f, 0)


def apply_parametrization(
    params: Params,
    name: str,
    width: float,
    base_width: float,
    roles: Optional[Mapping[str, str]] = None,
    *,
    masks: Optional[Params] = None,
    fan_in_mode: str = "effective",
) -> Params:
    """Rescale the initial params of a standard-init model into parametrization ``name``.

    Call it once at init, AFTER masking and ``masks.rescale_for_density(params, masks)``,
    with the same ``masks`` (for the effective fan-in); it multiplies each leaf by its init
    factor (module doc), so masked entries stay exactly 0. The model must have been built
    with its standard init (MLP ``parametrization='standard'``), never with 'ntk' built in.

    Args:
      params: params pytree [arrays]. name: 'standard' | 'ntk' | 'mup'.
      width, base_width: as in :func:`leaf_factors`. roles, masks, fan_in_mode: idem.
    Returns:
      params with the same structure, dtypes and shapes.
    """
    f = leaf_factors(
        params, name, width, base_width, roles=roles, masks=masks, fan_in_mode=fan_in_mode
    )

    def scale(p, leaf):
        if leaf is None:
            return None
        s = f[tree.path_name(p)][0]
        return leaf if s == 1.0 else leaf * jnp.asarray(s, jnp.asarray(leaf).dtype)

    return tree.map_with_path(scale, params)


def lr_multipliers(
    params: Params,
    name: str,
    width: float,
    base_width: float,
    roles: Optional[Mapping[str, str]] = None,
    *,
    masks: Optional[Params] = None,
    fan_in_mode: str = "effective",
) -> Params:
    """Per-leaf SGD learning-rate multipliers (pytree of Python floats, params structure).

    Pass to ``optim.make_optimizer(..., lr_multipliers=...)`` (chained inside the masked
    wrapper, so masked entries stay 0). With coupled weight decay the decay of a leaf is
    scaled by the same factor (it is part of the SGD step).
    """
    f = leaf_factors(
        params, name, width, base_width, roles=roles, masks=masks, fan_in_mode=fan_in_mode
    )
    return _factor_tree(params, f, 1)
