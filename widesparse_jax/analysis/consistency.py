"""Consistency of networks across widths (Vyas et al. 2023, arXiv 2305.18411).

Pure measurement functions; the caller runs the models and passes arrays in:

* :func:`loss_curve_gaps` - per-step loss gap of each width to the widest (reference) net.
* :func:`prediction_disagreement`, :func:`disagreement_vs_reference` - point-wise
  disagreement of predictions ([N, C] logits or probabilities) with a reference model.
* :func:`ensemble_accuracy`, :func:`ensemble_vs_single` - ensemble-of-k (average of
  probabilities) accuracy vs one wide net ("bias of narrower width").
* :func:`linear_cka`, :func:`minibatch_cka` - representation similarity (linear CKA; biased
  or unbiased HSIC).
* :func:`preactivation_stats` - per-layer distribution statistics of pre-activations.
* :func:`top_hessian_eigenvalue`, :func:`edge_of_stability` - sharpness by power iteration
  on Hessian-vector products, compared with the 2/lr stability threshold.

Metrics on model outputs are computed in float64 NumPy (accepts NumPy or JAX arrays);
the Hessian code is JAX and works on any params pytree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from widesparse_jax.analysis.consistency_curvature import (  # noqa: F401
    DEFAULT_QUANTILES,
    HessianEigResult,
    edge_of_stability,
    hessian_vector_product,
    preactivation_stats,
    top_hessian_eigenvalue,
)

__all__ = [
    "softmax",
    "loss_curve_gaps",
    "prediction_disagreement",
    "disagreement_vs_reference",
    "accuracy",
    "ensemble_accuracy",
    "ensemble_vs_single",
    "linear_cka",
    "unbiased_hsic",
    "minibatch_cka",
    "DEFAULT_QUANTILES",
    "preactivation_stats",
    "HessianEigResult",
    "hessian_vector_product",
    "top_hessian_eigenvalue",
    "edge_of_stability",
]


def _as_2d(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, C], got shape {a.shape}")
    return a


def softmax(logits: Any, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64. logits: [..., C] -> probabilities [..., C]."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def _probs(name: str, x: Any, from_logits: bool) -> np.ndarray:
    a = _as_2d(name, x)
    if from_logits:
        return softmax(a)
    if np.any(a < 0) or not np.allclose(a.sum(-1), 1.0, atol=1e-4):
        raise ValueError(
            f"{name} must be probabilities (non-negative rows summing to 1) when from_logits=False"
        )
    return a


# --------------------------------------------------------------------------------------
# Loss curves
# --------------------------------------------------------------------------------------


def loss_curve_gaps(
    curves: Mapping[Any, Any],
    *,
    reference: Any | None = None,
) -> dict[Any, dict[str, Any]]:
    """Gap of each loss curve to the reference (default: the widest width, the max key).

    Args:
      curves: {width: [T_w] loss per step (or per eval)}; all on the same step grid. Curves of
        different lengths are compared on their common prefix (``length`` says how long).
      reference: key of the reference curve (default ``max(curves)``).
    Returns:
      {width: {'gap': [T] curve - reference, 'mean_abs_gap', 'rms_gap', 'max_abs_gap',
               'final_gap', 'relative_mean_abs_gap' (mean |gap| / mean |reference|),
               'length'}} - the reference itself gets all-zero gaps. NaN in a curve (a
      diverged run) propagates into its summaries.
    """
    if not curves:
        raise ValueError("curves is empty; need at least one {width: loss curve}")
    arrs = {}
    for k, v in curves.items():
        a = np.asarray(v, dtype=np.float64)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"curve for width {k!r} must be a non-empty 1-D array, got {a.shape}")
        arrs[k] = a
    if reference is None:
        reference = max(arrs)
    if reference not in arrs:
        raise ValueError(f"reference {reference!r} not among curve keys {sorted(arrs)}")
    ref = arrs[reference]
    out = {}
    for k in sorted(arrs):
        t = min(arrs[k].size, ref.size)
        gap = arrs[k][:t] - ref[:t]
        ref_scale = float(np.mean(np.abs(ref[:t])))
        mean_abs = float(np.mean(np.abs(gap)))
        out[k] = {
            "gap": gap,
            "mean_abs_gap": mean_abs,
            "rms_gap": float(np.sqrt(np.mean(gap**2))),
            "max_abs_gap": float(np.max(np.abs(gap))),
            "final_gap": float(gap[-1]),
            "relative_mean_abs_gap": mean_abs / ref_scale if ref_scale > 0 else float("nan"),
            "length": t,
        }
    return out


# --------------------------------------------------------------------------------------
# Point-wise predictions
# --------------------------------------------------------------------------------------


def prediction_disagreement(
    outputs: Any,
    reference_outputs: Any,
    *,
    from_logits: bool = True,
) -> dict[str, float]:
    """Point-wise disagreement of one model with a reference on the same N examples.

    Args:
      outputs, reference_outputs: [N, C] logits (``from_logits=True``) or probabilities.
    Returns:
      {'prob_msd': mean over examples of sum_c (p_c - q_c)^2 (squared L2 distance of the
                   softmax probability vectors; in [0, 2]),
       'prob_mse': the same divided by C (mean over examples and classes),
       'logit_msd': mean over examples of sum_c (z_c - z'_c)^2 of the logits after
                    subtracting each row's mean (softmax-invariant); only with from_logits,
       'argmax_disagreement': fraction of examples whose argmax classes differ,
       'tv_distance': mean total-variation distance 0.5 * sum_c |p_c - q_c|}.
    """
    a = _as_2d("outputs", outputs)
    b = _as_2d("reference_outputs", reference_outputs)
    if a.shape != b.shape:
        raise ValueError(f"outputs {a.shape} and reference_outputs {b.shape} differ in shape")
    if a.shape[0] == 0:
        raise ValueError("outputs has no examples (N = 0)")
    p = _probs("outputs", a, from_logits)
    q = _probs("reference_outputs", b, from_logits)
    d2 = np.sum((p - q) ** 2, axis=-1)
    out = {
        "prob_msd": float(np.mean(d2)),
        "prob_mse": float(np.mean(d2) / a.shape[1]),
        "argmax_disagreement": float(np.mean(np.argmax(p, -1) != np.argmax(q, -1))),
        "tv_distance": float(np.mean(0.5 * np.sum(np.abs(p - q), axis=-1))),
    }
    if from_logits:
        za = a - a.mean(-1, keepdims=True)
        zb = b - b.mean(-1, keepdims=True)
        out["logit_msd"] = float(np.mean(np.sum((za - zb) ** 2, axis=-1)))
    return out


def disagreement_vs_reference(
    outputs: Mapping[Any, Any],
    *,
    reference: Any | None = None,
    from_logits: bool = True,
) -> dict[Any, dict[str, float]]:
    """:func:`prediction_disagreement` of every model in ``{width: [N, C] outputs}`` against
    ``outputs[reference]`` (default: the widest, max key)."""
    if not outputs:
        raise ValueError("outputs is empty")
    if reference is None:
        reference = max(outputs)
    if reference not in outputs:
        raise ValueError(f"reference {reference!r} not among keys {sorted(outputs)}")
    return {
        k: prediction_disagreement(outputs[k], outputs[reference], from_logits=from_logits)
        for k in sorted(outputs)
    }


def _labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim == 2:  # one-hot
        y = np.argmax(y, -1)
    if y.shape != (n,):
        raise ValueError(
            f"labels must be [N] = [{n}] integers or [N, C] one-hot, got {np.shape(labels)}"
        )
    return y


def accuracy(outputs: Any, labels: Any) -> float:
    """Top-1 accuracy of [N, C] logits or probabilities against [N] int labels (or one-hot)."""
    a = _as_2d("outputs", outputs)
    return float(np.mean(np.argmax(a, -1) == _labels(labels, a.shape[0])))


def ensemble_accuracy(
    member_outputs: Sequence[Any],
    labels: Any,
    *,
    from_logits: bool = True,
) -> float:
    """Accuracy of the ensemble that averages the members' softmax probabilities.

    member_outputs: k arrays [N, C]; labels: [N] ints (or [N, C] one-hot).
    """
    members = list(member_outputs)
    if not members:
        raise ValueError("member_outputs is empty; need at least one model")
    probs = [_probs(f"member_outputs[{i}]", m, from_logits) for i, m in enumerate(members)]
    shape = probs[0].shape
    for i, p in enumerate(probs):
        if p.shape != shape:
            raise ValueError(f"member_outputs[{i}] has shape {p.shape}, expected {shape}")
    mean = np.mean(np.stack(probs), axis=0)
    return float(np.mean(np.argmax(mean, -1) == _labels(labels, shape[0])))


def ensemble_vs_single(
    member_outputs: Sequence[Any],
    single_outputs: Any,
    labels: Any,
    *,
    ks: Sequence[int] | None = None,
    from_logits: bool = True,
) -> dict[str, Any]:
    """Ensemble-of-k (narrow) accuracy vs one (wide) model's accuracy.

    Args:
      member_outputs: K arrays [N, C] (e.g. K seeds of a narrow net); the ensemble of size k
        uses the first k.
      single_outputs: [N, C] outputs of the single reference (e.g. widest) model.
      labels: [N] int labels.
      ks: ensemble sizes (default 1..K).
    Returns:
      {'ensemble_acc': {k: acc}, 'single_acc', 'member_accs': [K],
       'member_mean_acc', 'gap': single_acc - ensemble_acc[max k]} (gap > 0: an ensemble of
       narrow nets is still worse than the wide net, Vyas et al.'s bias of narrower width).
    """
    members = list(member_outputs)
    if not members:
        raise ValueError("member_outputs is empty; need at least one model")
    if ks is None:
        ks = range(1, len(members) + 1)
    ks = list(ks)
    for k in ks:
        if int(k) != k or not 1 <= k <= len(members):
            raise ValueError(f"ensemble size {k!r} must be an integer in [1, {len(members)}]")
    ens = {
        int(k): ensemble_accuracy(members[: int(k)], labels, from_logits=from_logits) for k in ks
    }
    single = accuracy(single_outputs, labels)
    member_accs = [accuracy(m, labels) for m in members]
    return {
        "ensemble_acc": ens,
        "single_acc": single,
        "member_accs": member_accs,
        "member_mean_acc": float(np.mean(member_accs)),
        "gap": single - ens[max(ens)],
    }


# --------------------------------------------------------------------------------------
# Representations: CKA
# --------------------------------------------------------------------------------------


def _features(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim < 2:
        raise ValueError(f"{name} must be [N, d] (or [N, ...], flattened), got shape {a.shape}")
    return a.reshape(a.shape[0], -1)


def unbiased_hsic(K: Any, L: Any) -> float:
    """Unbiased HSIC estimator (Song et al. 2012) of two [n, n] Gram matrices, n >= 4.

    HSIC_1 = [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)),
    with K~, L~ the Gram matrices with zeroed diagonals.
    """
    K = np.array(K, dtype=np.float64)
    L = np.array(L, dtype=np.float64)
    n = K.shape[0]
    if K.shape != (n, n) or L.shape != (n, n):
        raise ValueError(f"K and L must be square [n, n] of equal size, got {K.shape}, {L.shape}")
    if n < 4:
        raise ValueError(f"unbiased HSIC needs n >= 4 examples, got {n}")
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    k1, l1 = K.sum(0), L.sum(0)
    term1 = float(np.sum(K * L))  # tr(K L) for symmetric matrices
    term2 = float(k1.sum() * l1.sum()) / ((n - 1) * (n - 2))
    term3 = 2.0 * float(k1 @ l1) / (n - 2)
    return (term1 + term2 - term3) / (n * (n - 3))


def linear_cka(X: Any, Y: Any, *, unbiased: bool = False) -> float:
    """Linear CKA between two representations of the same N examples.

    Args:
      X: [N, d1] features (extra trailing axes are flattened); Y: [N, d2].
      unbiased: False (default): the standard biased estimator on centered features,
        ||Yc' Xc||_F^2 / (||Xc' Xc||_F ||Yc' Yc||_F) (Kornblith et al. 2019), computed in
        feature space (O(N d1 d2)). True: the debiased estimator built from
        :func:`unbiased_hsic` on the [N, N] Gram matrices (Nguyen et al. 2021); close to 0
        for unrelated features at moderate N (the biased one is only ~0 for N >> d).
    Returns:
      CKA in [0, 1] (the unbiased value can be slightly negative); invariant to orthogonal
      transforms and isotropic scaling of either representation. NaN if a representation is
      constant.
    """
    x = _features("X", X)
    y = _features("Y", Y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and Y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}"
        )
    if unbiased:
        K, L = x @ x.T, y @ y.T
        hxy, hxx, hyy = unbiased_hsic(K, L), unbiased_hsic(K, K), unbiased_hsic(L, L)
        denom = math.sqrt(hxx * hyy) if hxx > 0 and hyy > 0 else 0.0
        return hxy / denom if denom > 0 else float("nan")
    if x.shape[0] < 2:
        raise ValueError(f"linear CKA needs N >= 2 examples, got {x.shape[0]}")
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    num = np.linalg.norm(y.T @ x) ** 2
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(num / denom) if denom > 0 else float("nan")


def minibatch_cka(batches: Iterable[tuple[Any, Any]]) -> float:
    """Minibatch linear CKA (Nguyen et al. 2021): sum over minibatches of unbiased HSIC,

    CKA = sum_i HSIC_1(K_i, L_i) / sqrt(sum_i HSIC_1(K_i, K_i) * sum_i HSIC_1(L_i, L_i)),

    with K_i = X_i X_i', L_i = Y_i Y_i'. ``batches`` yields (X_i [b, d1], Y_i [b, d2]) pairs,
    b >= 4. Memory O(b^2), so it scales to whole test sets.
    """
    hxy = hxx = hyy = 0.0
    count = 0
    for i, (xb, yb) in enumerate(batches):
        x, y = _features(f"X batch {i}", xb), _features(f"Y batch {i}", yb)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"batch {i}: X has {x.shape[0]} rows and Y has {y.shape[0]}")
        K, L = x @ x.T, y @ y.T
        hxy += unbiased_hsic(K, L)
        hxx += unbiased_hsic(K, K)
        hyy += unbiased_hsic(L, L)
        count += 1
    if count == 0:
        raise ValueError("batches is empty")
    if hxx <= 0 or hyy <= 0:
        return float("nan")
    return hxy / math.sqrt(hxx * hyy)
