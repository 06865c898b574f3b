"""Per-layer pre-activation statistics and sharpness (top Hessian eigenvalue, edge of
stability); see consistency.py (Vyas et al. 2023)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from widesparse_jax import tree

DEFAULT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


# --------------------------------------------------------------------------------------
# Pre-activation statistics
# --------------------------------------------------------------------------------------


def _stats_1d(v: np.ndarray, quantiles: Sequence[float]) -> dict[str, float]:
    mean = float(v.mean())
    c = v - mean
    m2 = float(np.mean(c**2))
    m4 = float(np.mean(c**4))
    kurt = m4 / m2**2 if m2 > 0 else float("nan")
    out = {
        "mean": mean,
        "std": math.sqrt(m2),
        "kurtosis": kurt,
        "excess_kurtosis": kurt - 3.0,
        "frac_positive": float(np.mean(v > 0)),
        "min": float(v.min()),
        "max": float(v.max()),
        "size": int(v.size),
    }
    qs = np.quantile(v, list(quantiles))
    for q, val in zip(quantiles, qs):
        out[f"q{q:g}"] = float(val)
    return out


def preactivation_stats(
    preacts: Any,
    *,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> dict[str, dict[str, float]]:
    """Distribution statistics of each layer's pre-activations, over all entries.

    Args:
      preacts: an array (one layer) or any pytree of arrays, e.g. a Flax ``intermediates``
        collection ({'fc': {'__call__': (array,)}}) - one entry per leaf.
      quantiles: probabilities in [0, 1].
    Returns:
      {layer name ('/'-joined path; '' for a bare array): {'mean', 'std' (population),
       'kurtosis' (m4 / m2^2, 3 for a Gaussian), 'excess_kurtosis' (kurtosis - 3),
       'frac_positive', 'min', 'max', 'size', 'q<p>' per quantile, e.g. 'q0.5'}}.
    """
    qs = [float(q) for q in quantiles]
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantiles must lie in [0, 1], got {q}")
    leaves = jax.tree_util.tree_flatten_with_path(preacts)[0]
    if not leaves:
        raise ValueError("preacts has no arrays")
    out = {}
    for path, leaf in leaves:
        v = np.asarray(leaf, dtype=np.float64).reshape(-1)
        name = tree.path_name(tuple(tree.key_name(k) for k in path))
        if v.size == 0:
            raise ValueError(f"pre-activations {name!r} are empty")
        out[name] = _stats_1d(v, qs)
    return out


# --------------------------------------------------------------------------------------
# Sharpness
# --------------------------------------------------------------------------------------


class HessianEigResult(NamedTuple):
    """eigenvalue: the Rayleigh quotient v'Hv at the last iterate (float; the
    largest-*magnitude* eigenvalue, with its sign); vector: the last unit-norm iterate
    (params-shaped pytree); num_iters: HVPs done; converged: the relative change of the
    estimate fell below tol."""

    eigenvalue: float
    vector: Any
    num_iters: int
    converged: bool


def _tree_vdot(a: Any, b: Any) -> jax.Array:
    return sum(
        (
            jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
        ),
        jnp.float32(0.0),
    )


def hessian_vector_product(
    loss_fn: Callable[[Any, Any], jax.Array], params: Any, batch: Any, vector: Any
) -> Any:
    """H(params) @ vector for the Hessian of ``loss_fn(params, batch)`` w.r.t. params.

    Forward-over-reverse: ``jax.jvp(jax.grad(loss_fn), (params,), (vector,))``; ``vector`` has
    the params' tree structure. Returns a params-shaped pytree.
    """
    grad_fn = jax.grad(lambda p: loss_fn(p, batch))
    return jax.jvp(grad_fn, (params,), (vector,))[1]


def top_hessian_eigenvalue(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    key: jax.Array,
    num_iters: int = 20,
    tol: float = 1e-4,
    *,
    masks: Any | None = None,
) -> HessianEigResult:
    """Top Hessian eigenvalue (sharpness) of ``loss_fn`` at ``params`` by power iteration.

    Power iteration v <- Hv / ||Hv|| with HVPs from :func:`hessian_vector_product`, the whole
    loop in one jitted ``lax.while_loop`` (no host sync per iteration; recompiled per call
    because ``loss_fn`` is a new closure). It converges to the eigenvalue of largest
    **magnitude**, returned with its sign (for trained nets this is normally the top positive
    one, the EoS sharpness; if the Hessian has a larger negative eigenvalue you get that negative value). Convergence
    speed depends on the gap |lambda_2| / |lambda_1|.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``; close over anything else (batch_stats,
        ``train=False`` apply, etc.).
      params: any pytree of float arrays.
      batch: passed through to loss_fn (any pytree).
      key: PRNG key for the random start vector.
      num_iters: maximum number of HVPs (>= 1).
      tol: stop when |lambda_t - lambda_{t-1}| <= tol * |lambda_t| (>= 0; 0 runs all iters).
      masks: optional mask pytree mirroring params (bool leaf = keep, None = dense), as in
        docs/contracts.md: the iteration stays in the subspace of kept weights (the masked
        weights are frozen at 0 during training), i.e. the eigenvalue of the restricted
        Hessian P H P.
    Returns:
      HessianEigResult(eigenvalue, vector, num_iters, converged).
    """
    _check_power_iteration(params, num_iters, tol)
    n_max = int(num_iters)
    body = _power_step(loss_fn, float(tol))

    def cond(state):
        it, _, _, done, *_ = state
        return (it < n_max) & jnp.logical_not(done)

    @jax.jit
    def run(p, b, k, m):
        v0, n0 = _unit_start_vector(p, k, m)
        init = (jnp.int32(0), jnp.float32(0.0), v0, n0 == 0, p, b, m)
        it, lam, v, done, *_ = jax.lax.while_loop(cond, body, init)
        return n0, it, lam, v, done

    n0, it, lam, v, done = run(params, batch, key, masks)
    if not float(n0) > 0:
        raise ValueError("masks keep no weights: nothing to iterate on")
    lam = float(lam)
    if not math.isfinite(lam):
        raise ValueError(
            f"Hessian-vector product is not finite (eigenvalue estimate {lam}; loss diverged?)"
        )
    return HessianEigResult(eigenvalue=lam, vector=v, num_iters=int(it), converged=bool(done))


def _check_power_iteration(params: Any, num_iters: int, tol: float) -> None:
    """Raise ValueError for a bad ``num_iters`` / ``tol`` or params without float arrays."""
    if int(num_iters) != num_iters or num_iters < 1:
        raise ValueError(f"num_iters must be an integer >= 1, got {num_iters!r}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("params has no arrays")
    for x in leaves:
        if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
            raise ValueError(
                f"params leaves must be floating arrays, got dtype {jnp.asarray(x).dtype}"
            )


def _unit_start_vector(p: Any, k: jax.Array, m: Any) -> tuple[Any, jax.Array]:
    """(v0, n0): a normal random direction (one key per leaf), masked, scaled to norm 1;
    n0 = its norm before scaling (0 when the masks keep nothing)."""
    leaves_p, treedef = jax.tree.flatten(p)
    keys = jax.random.split(k, len(leaves_p))
    v0 = jax.tree.unflatten(
        treedef, [jax.random.normal(kk, x.shape, x.dtype) for kk, x in zip(keys, leaves_p)]
    )
    v0 = tree.apply_masks(v0, m)
    n0 = jnp.sqrt(_tree_vdot(v0, v0))
    v0 = jax.tree.map(lambda x: x / jnp.where(n0 > 0, n0, 1.0).astype(x.dtype), v0)
    return v0, n0


def _power_step(loss_fn: Callable[[Any, Any], jax.Array], tol_f: float) -> Callable:
    """One power-iteration step on the while-loop state (it, lam, v, done, params, batch,
    masks): v <- P H v / ||P H v||, lam = v . P H v; done when converged within ``tol_f``."""

    def body(state):
        it, lam_prev, v, _, p, b, m = state
        hv = tree.apply_masks(hessian_vector_product(loss_fn, p, b, v), m)
        lam = _tree_vdot(v, hv)
        norm = jnp.sqrt(_tree_vdot(hv, hv))
        safe = jnp.where(norm > 0, norm, 1.0)
        v_new = jax.tree.map(lambda h, x: jnp.where(norm > 0, h / safe, x).astype(x.dtype), hv, v)
        # norm == 0: H v = 0, v is an eigenvector with eigenvalue 0.
        done = (norm == 0) | ((it > 0) & (jnp.abs(lam - lam_prev) <= tol_f * jnp.abs(lam)))
        return it + 1, lam, v_new, done, p, b, m

    return body


def edge_of_stability(sharpness: float, lr: float, momentum: float = 0.0) -> dict[str, float]:
    """Compare sharpness with the stability threshold of (heavy-ball) gradient descent.

    GD on a quadratic is stable iff lambda_max < 2/lr; with heavy-ball momentum m the
    threshold is (2 + 2m)/lr (Cohen et al. 2021). Returns {'threshold', 'ratio' =
    sharpness / threshold (~1 at the edge of stability), 'sharpness', 'lr', 'momentum'}.
    """
    s, lr, m = float(sharpness), float(lr), float(momentum)
    if not math.isfinite(s):
        raise ValueError(f"sharpness must be finite, got {sharpness!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not 0.0 <= m < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    threshold = (2.0 + 2.0 * m) / lr
    return {"threshold": threshold, "ratio": s / threshold, "sharpness": s, "lr": lr, "momentum": m}
