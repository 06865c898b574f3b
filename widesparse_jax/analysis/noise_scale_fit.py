"""Sweep records -> best accuracy per noise scale, optimal noise scale per width, power-law fits."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from widesparse_jax.analysis.noise_scale_formula import _check_number, noise_scale

# --------------------------------------------------------------------------------------
# Sweep analysis
# --------------------------------------------------------------------------------------

_REQUIRED_RECORD_KEYS = ("width", "best_test_acc")


def record_noise_scale(record: Mapping[str, Any]) -> float:
    """g_bar of one sweep record: its 'noise_scale' if present, else from lr/batch_size/
    momentum/init_variance."""
    if "noise_scale" in record and record["noise_scale"] is not None:
        g = _check_number("noise_scale", record["noise_scale"])
        if g <= 0:
            raise ValueError(f"record noise_scale must be > 0, got {g}")
        return g
    missing = [k for k in ("lr", "batch_size", "momentum", "init_variance") if k not in record]
    if missing:
        raise ValueError(
            f"record {dict(record)!r} has no 'noise_scale' and lacks {missing} to compute it"
        )
    return noise_scale(
        record["lr"], record["batch_size"], record["momentum"], record["init_variance"]
    )


def _group_key(record: Mapping[str, Any], group_keys: Sequence[str]) -> tuple:
    out = []
    for k in group_keys:
        if k == "sparse":
            out.append(bool(record.get("sparse", False)))
        elif k not in record:
            raise ValueError(f"record {dict(record)!r} lacks group key {k!r}")
        else:
            out.append(record[k])
    return tuple(out)


def _validated(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    records = list(records)
    if not records:
        raise ValueError("records is empty; need at least one sweep record")
    for r in records:
        if not isinstance(r, Mapping):
            raise ValueError(f"each record must be a mapping, got {type(r).__name__}: {r!r}")
        for k in _REQUIRED_RECORD_KEYS:
            if k not in r:
                raise ValueError(f"record {dict(r)!r} lacks required key {k!r}")
        _check_number("best_test_acc", r["best_test_acc"])
    return records


@dataclasses.dataclass(frozen=True)
class NoiseScaleCurve:
    """Accuracy vs g_bar for one group (sorted by g_bar ascending).

    noise_scale: [K] distinct g_bar values; acc: [K] reduced best_test_acc at each;
    count: [K] number of records merged; records: the record achieving the max at each
    (for reduce='mean' the first record of the bin).
    """

    noise_scale: np.ndarray
    acc: np.ndarray
    count: np.ndarray
    records: tuple


def best_per_noise_scale(
    records: Iterable[Mapping[str, Any]],
    *,
    group_keys: Sequence[str] = ("width", "sparse"),
    reduce: str = "max",
    rtol: float = 1e-6,
) -> dict[tuple, NoiseScaleCurve]:
    """Group records, then merge records whose g_bar agree to ``rtol`` (relative).

    Different (lr, B) pairs with equal g_bar, or several seeds, fall in one bin; ``reduce``
    is 'max' (best over the bin) or 'mean' (e.g. average over seeds).

    Returns:
      {group tuple (e.g. (width, sparse)): NoiseScaleCurve}.
    """
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    if not rtol >= 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    groups: dict[tuple, list[tuple[float, float, Mapping[str, Any]]]] = {}
    for r in _validated(records):
        groups.setdefault(_group_key(r, group_keys), []).append(
            (record_noise_scale(r), float(r["best_test_acc"]), r)
        )
    out = {}
    for key in sorted(groups, key=_sort_key):
        items = sorted(groups[key], key=lambda t: t[0])
        bins: list[list[tuple[float, float, Mapping[str, Any]]]] = []
        for item in items:
            if bins and abs(item[0] - bins[-1][0][0]) <= rtol * bins[-1][0][0]:
                bins[-1].append(item)
            else:
                bins.append([item])
        gs, accs, counts, recs = [], [], [], []
        for b in bins:
            gs.append(b[0][0])
            vals = [t[1] for t in b]
            if reduce == "max":
                i = int(np.argmax(vals))
                accs.append(vals[i])
                recs.append(b[i][2])
            else:
                accs.append(float(np.mean(vals)))
                recs.append(b[0][2])
            counts.append(len(b))
        out[key] = NoiseScaleCurve(
            noise_scale=np.asarray(gs, dtype=np.float64),
            acc=np.asarray(accs, dtype=np.float64),
            count=np.asarray(counts, dtype=np.int64),
            records=tuple(recs),
        )
    return out


def _sort_key(key: tuple) -> tuple:
    # Sort groups numerically where possible, else by string (mixed types never compare).
    return tuple(
        (0, v, "") if isinstance(v, (int, float, np.number)) else (1, 0, str(v)) for v in key
    )


@dataclasses.dataclass(frozen=True)
class OptimalNoiseScale:
    """Best g_bar of one group.

    noise_scale: grid argmax of acc; best_test_acc: the acc there; refined_noise_scale: the
    vertex of a parabola fitted in log(g_bar) around the max (equals noise_scale when not
    refined or when the fit is not a valid maximum inside the window); refined_acc: the
    parabola's value at the vertex (or best_test_acc); at_edge: the grid max sits at the
    smallest or largest g_bar tried (or only one was tried), so the true optimum may lie
    outside the grid;
    num_points: grid size; record: the best record.
    """

    noise_scale: float
    best_test_acc: float
    refined_noise_scale: float
    refined_acc: float
    at_edge: bool
    num_points: int
    record: Mapping[str, Any]


def _parabola_vertex(log_g: np.ndarray, acc: np.ndarray) -> tuple[float, float] | None:
    """Vertex (x*, y*) of a least-squares parabola; None if not a maximum inside the range."""
    if len(log_g) < 3:
        return None
    a, b, c = np.polyfit(log_g, acc, 2)
    if not a < 0:
        return None
    x = -b / (2 * a)
    if not log_g.min() <= x <= log_g.max():
        return None
    return float(x), float(c - b * b / (4 * a))


def optimal_noise_scale_per_width(
    records: Iterable[Mapping[str, Any]],
    *,
    refine: bool = False,
    window: int = 1,
    group_keys: Sequence[str] = ("width", "sparse"),
    reduce: str = "max",
) -> dict[tuple, OptimalNoiseScale]:
    """Per group, the g_bar with the best test accuracy (Park et al.: grows ~ width).

    Args:
      records: sweep records (module docstring).
      refine: fit a parabola acc(log g_bar) to the max and ``window`` neighbours each side
        (least squares; 3 points for window=1) and report its vertex for sub-grid resolution.
        Falls back to the grid value at the grid edge or when the fit is not concave.
      window: neighbours on each side used by the fit (>= 1).
      group_keys, reduce: as in :func:`best_per_noise_scale`.
    Returns:
      {group tuple: OptimalNoiseScale}.
    """
    if int(window) != window or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    curves = best_per_noise_scale(records, group_keys=group_keys, reduce=reduce)
    out = {}
    for key, c in curves.items():
        i = int(np.argmax(c.acc))
        g, acc = float(c.noise_scale[i]), float(c.acc[i])
        n = len(c.acc)
        at_edge = i == 0 or i == n - 1  # a single point counts as at the edge
        rg, racc = g, acc
        if refine and n >= 3 and 0 < i < n - 1:
            lo, hi = max(0, i - window), min(n, i + window + 1)
            v = _parabola_vertex(np.log(c.noise_scale[lo:hi]), c.acc[lo:hi])
            if v is not None:
                rg, racc = float(np.exp(v[0])), v[1]
        out[key] = OptimalNoiseScale(
            noise_scale=g,
            best_test_acc=acc,
            refined_noise_scale=rg,
            refined_acc=racc,
            at_edge=bool(at_edge),
            num_points=n,
            record=c.records[i],
        )
    return out


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """values ~= prefactor * widths ** exponent, fitted by least squares in log-log.

    exponent_stderr / log_prefactor_stderr: standard errors of slope / intercept of the
    log-log regression (nan with only 2 points); prefactor_stderr = prefactor *
    log_prefactor_stderr (delta method); r2: coefficient of determination in log space.
    """

    exponent: float
    prefactor: float
    exponent_stderr: float
    prefactor_stderr: float
    log_prefactor_stderr: float
    r2: float
    num_points: int

    def predict(self, widths: Any) -> np.ndarray:
        """prefactor * widths ** exponent, elementwise."""
        return self.prefactor * np.asarray(widths, dtype=np.float64) ** self.exponent


def fit_power_law(widths: Sequence[float], values: Sequence[float]) -> PowerLawFit:
    """Fit values = C * widths**k by ordinary least squares on (log w, log v).

    Args:
      widths: [n] positive x values (n >= 2, at least two distinct).
      values: [n] positive y values.
    Returns:
      PowerLawFit with exponent k, prefactor C and their standard errors.
    """
    x = np.asarray(widths, dtype=np.float64).reshape(-1)
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"widths and values must have the same length, got {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError(f"need at least 2 points to fit a power law, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(x > 0)):
        raise ValueError(f"widths must be finite and > 0, got {x.tolist()}")
    if not (np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ValueError(f"values must be finite and > 0, got {y.tolist()}")
    lx, ly = np.log(x), np.log(y)
    n = x.size
    mx = lx.mean()
    sxx = float(np.sum((lx - mx) ** 2))
    if sxx <= 0:
        raise ValueError(f"widths must contain at least two distinct values, got {x.tolist()}")
    slope = float(np.sum((lx - mx) * (ly - ly.mean())) / sxx)
    intercept = float(ly.mean() - slope * mx)
    resid = ly - (intercept + slope * lx)
    ssr = float(np.sum(resid**2))
    sst = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - ssr / sst if sst > 0 else 1.0
    if n > 2:
        s2 = ssr / (n - 2)
        se_slope = math.sqrt(s2 / sxx)
        se_int = math.sqrt(s2 * (1.0 / n + mx**2 / sxx))
    else:
        se_slope = se_int = float("nan")
    pref = math.exp(intercept)
    return PowerLawFit(
        exponent=slope,
        prefactor=pref,
        exponent_stderr=se_slope,
        prefactor_stderr=pref * se_int,
        log_prefactor_stderr=se_int,
        r2=r2,
        num_points=n,
    )


@dataclasses.dataclass(frozen=True)
class BestBatchSize:
    """batch_size: B of the best record of the group (lr tuned per B); best_test_acc: its acc;
    acc_per_batch_size: {B: best acc over the other hyper-parameters}; at_edge: B_opt is the
    smallest or largest B tried; record: the best record."""

    batch_size: float
    best_test_acc: float
    acc_per_batch_size: dict
    at_edge: bool
    record: Mapping[str, Any]


def best_batch_size_per_width(
    records: Iterable[Mapping[str, Any]],
    *,
    group_keys: Sequence[str] = ("width", "sparse"),
) -> dict[tuple, BestBatchSize]:
    """Per group, the batch size of the best run (Park et al.: B_opt <= const * width)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in _validated(records):
        if "batch_size" not in r:
            raise ValueError(f"record {dict(r)!r} lacks 'batch_size'")
        groups.setdefault(_group_key(r, group_keys), []).append(r)
    out = {}
    for key in sorted(groups, key=_sort_key):
        per_b: dict[Any, tuple[float, Mapping[str, Any]]] = {}
        for r in groups[key]:
            b, acc = r["batch_size"], float(r["best_test_acc"])
            if b not in per_b or acc > per_b[b][0]:
                per_b[b] = (acc, r)
        bs = sorted(per_b)
        best_b = max(bs, key=lambda b: per_b[b][0])
        out[key] = BestBatchSize(
            batch_size=best_b,
            best_test_acc=per_b[best_b][0],
            acc_per_batch_size={b: per_b[b][0] for b in bs},
            at_edge=best_b in (bs[0], bs[-1]),  # True with a single batch size
            record=per_b[best_b][1],
        )
    return out
