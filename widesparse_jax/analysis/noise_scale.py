"""SGD noise scale and width sweeps (Park, Sohl-Dickstein, Le, Smith, ICML 2019).

Normalized noise scale (PAPERS.md section 2)::

    g_bar = lr / (B * (1 - m) * sigma2_init)

with ``lr`` the learning rate, ``B`` the batch size, ``m`` the momentum and ``sigma2_init``
the *width-independent* weight-initialization variance scale (see
:func:`init_variance_scale` for the convention per parametrization).

Everything here is pure: numbers / records in, numbers / small dataclasses out. Records of a
sweep are mappings (e.g. dicts) with at least the keys::

    width, lr, batch_size, momentum, init_variance, best_test_acc
    sparse (optional, default False), noise_scale (optional, computed when absent)

Results are grouped by ``(width, sparse)`` by default (``group_keys`` changes that).
Plotting helpers build a ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot
global state); pass ``path`` to save it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "PYTORCH_UNIFORM_SIGMA_W2",
    "DEFAULT_CONFIG_FIELDS",
    "noise_scale",
    "init_variance_scale",
    "noise_scale_from_config",
    "record_noise_scale",
    "NoiseScaleCurve",
    "best_per_noise_scale",
    "OptimalNoiseScale",
    "optimal_noise_scale_per_width",
    "PowerLawFit",
    "fit_power_law",
    "BestBatchSize",
    "best_batch_size_per_width",
    "plot_acc_vs_noise_scale",
    "plot_optimal_noise_scale_vs_width",
    "markdown_table",
    "optimal_noise_scale_table",
]

# PyTorch's default Linear/Conv init is U(-1/sqrt(fan_in), +1/sqrt(fan_in)) (kaiming_uniform
# with a=sqrt(5)); its variance is bound**2 / 3 = 1 / (3 fan_in), i.e. sigma_w^2 = 1/3 in the
# Park et al. form Var(W) = sigma_w^2 / fan_in. The sparse-aware init U(+-1/sqrt(fan_in * p))
# has Var = 1 / (3 fan_in p): the same sigma_w^2 = 1/3 relative to the effective fan-in.
PYTORCH_UNIFORM_SIGMA_W2 = 1.0 / 3.0

_PARAMETRIZATIONS = {
    "standard": "standard",
    "sp": "standard",
    "ntk": "ntk",
    "mup": "mup",
    "μp": "mup",
    "mean_field": "mup",
}

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


def _canonical_parametrization(parametrization: str) -> str:
    key = str(parametrization).strip().lower()
    if key not in _PARAMETRIZATIONS:
        raise ValueError(
            f"unknown parametrization {parametrization!r}; allowed: "
            f"{sorted(set(_PARAMETRIZATIONS))}"
        )
    return _PARAMETRIZATIONS[key]


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
    kind = _canonical_parametrization(parametrization)
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
        v = _check_number("weight_variance", weight_variance)
        if v <= 0:
            raise ValueError(f"weight_variance must be > 0, got {v}")
        if kind == "ntk":
            return v
        if fan_in is None:
            raise ValueError(
                f"fan_in is required with weight_variance for parametrization {kind!r}"
            )
        f = _check_number("fan_in", fan_in)
        if f <= 0:
            raise ValueError(f"fan_in must be > 0, got {f}")
        return v * f * density
    if kind == "standard":
        return PYTORCH_UNIFORM_SIGMA_W2
    return 1.0


def _get_path(config: Any, path: str) -> Any:
    """Read a dotted path from attribute-style (ConfigDict) or mapping-style configs."""
    node = config
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        else:
            try:
                node = getattr(node, part)
            except (AttributeError, KeyError):
                node = _MISSING
        if node is _MISSING:
            return _MISSING
    return node


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
        value = _get_path(config, paths[name])
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
        sigma_w2 = _get_path(config, paths["sigma_w2"])
        init_variance = init_variance_scale(
            parametrization, sigma_w2=None if sigma_w2 is _MISSING or sigma_w2 is None else sigma_w2
        )
    return noise_scale(lr, batch_size, momentum, init_variance)


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


# --------------------------------------------------------------------------------------
# Plots and tables
# --------------------------------------------------------------------------------------


def _group_label(key: tuple, group_keys: Sequence[str]) -> str:
    parts = []
    for k, v in zip(group_keys, key):
        if k == "sparse":
            parts.append("sparse" if v else "dense")
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def plot_acc_vs_noise_scale(
    records: Iterable[Mapping[str, Any]],
    *,
    group_keys: Sequence[str] = ("width", "sparse"),
    reduce: str = "max",
    optima: Mapping[tuple, OptimalNoiseScale] | None = None,
    title: str | None = None,
    path: str | None = None,
    figsize: tuple[float, float] = (6.0, 4.0),
):
    """Best test accuracy vs g_bar (log x axis), one line per group; optional optima marked.

    Returns the matplotlib Figure (saved to ``path`` when given).
    """
    curves = best_per_noise_scale(records, group_keys=group_keys, reduce=reduce)
    fig = _new_figure(figsize)
    ax = fig.subplots()
    for key, c in curves.items():
        sparse = "sparse" in group_keys and key[list(group_keys).index("sparse")]
        (line,) = ax.plot(
            c.noise_scale,
            c.acc,
            marker="o",
            linestyle="--" if sparse else "-",
            label=_group_label(key, group_keys),
        )
        if optima is not None and key in optima:
            o = optima[key]
            ax.plot(
                [o.refined_noise_scale],
                [o.refined_acc],
                marker="*",
                markersize=12,
                color=line.get_color(),
            )
    ax.set_xscale("log")
    ax.set_xlabel(r"noise scale $\bar g = \epsilon / (B(1-m)\sigma^2_{init})$")
    ax.set_ylabel("best test accuracy")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def plot_optimal_noise_scale_vs_width(
    optima: Mapping[tuple, OptimalNoiseScale],
    *,
    fits: Mapping[Any, PowerLawFit] | None = None,
    group_keys: Sequence[str] = ("width", "sparse"),
    use_refined: bool = True,
    title: str | None = None,
    path: str | None = None,
    figsize: tuple[float, float] = (5.0, 4.0),
):
    """Optimal g_bar vs width on log-log axes, one series per value of the non-width group
    keys (e.g. dense / sparse), with the power-law fit lines in ``fits`` (keyed by that
    remaining group tuple, e.g. ``(False,)`` for dense; a PowerLawFit alone is also allowed
    when there is one series). Points at the grid edge are drawn hollow.

    Returns the matplotlib Figure (saved to ``path`` when given).
    """
    if "width" not in group_keys:
        raise ValueError(f"group_keys must contain 'width', got {tuple(group_keys)}")
    wi = list(group_keys).index("width")
    series: dict[tuple, list[tuple[float, float, bool]]] = {}
    for key, o in optima.items():
        rest = tuple(v for j, v in enumerate(key) if j != wi)
        g = o.refined_noise_scale if use_refined else o.noise_scale
        series.setdefault(rest, []).append((float(key[wi]), g, o.at_edge))
    rest_keys = [k for k in group_keys if k != "width"]
    if isinstance(fits, PowerLawFit):
        if len(series) != 1:
            raise ValueError("a single PowerLawFit needs exactly one series; pass a dict")
        fits = {next(iter(series)): fits}
    fig = _new_figure(figsize)
    ax = fig.subplots()
    for rest in sorted(series, key=_sort_key):
        pts = sorted(series[rest])
        w = np.array([p[0] for p in pts])
        g = np.array([p[1] for p in pts])
        edge = np.array([p[2] for p in pts], dtype=bool)
        label = _group_label(rest, rest_keys) or "optimal g"
        (line,) = ax.plot(w[~edge], g[~edge], "o", label=label)
        if edge.any():
            ax.plot(
                w[edge],
                g[edge],
                "o",
                mfc="none",
                color=line.get_color(),
                label=f"{label} (grid edge)",
            )
        if fits is not None and rest in fits:
            f = fits[rest]
            ww = np.geomspace(w.min(), w.max(), 50)
            ax.plot(
                ww,
                f.predict(ww),
                "-",
                color=line.get_color(),
                label=f"fit: k={f.exponent:.2f}±{f.exponent_stderr:.2f}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.set_ylabel(r"optimal $\bar g$")
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


def _fmt(v: Any, float_fmt: str) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return format(float(v), float_fmt)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v).replace("|", "\\|")


def markdown_table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    float_fmt: str = ".4g",
    headers: Mapping[str, str] | None = None,
) -> str:
    """GitHub markdown table of ``rows`` (mappings). ``columns`` defaults to the keys of the
    first row, in order; a missing cell prints empty; floats use ``float_fmt``."""
    rows = list(rows)
    if columns is None:
        if not rows:
            raise ValueError("rows is empty and no columns given")
        columns = list(rows[0].keys())
    columns = list(columns)
    if not columns:
        raise ValueError("columns is empty")
    headers = dict(headers or {})
    lines = [
        "| " + " | ".join(headers.get(c, c) for c in columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    for r in rows:
        lines.append(
            "| " + " | ".join(_fmt(r[c], float_fmt) if c in r else "" for c in columns) + " |"
        )
    return "\n".join(lines) + "\n"


def optimal_noise_scale_table(
    optima: Mapping[tuple, OptimalNoiseScale],
    *,
    group_keys: Sequence[str] = ("width", "sparse"),
    float_fmt: str = ".4g",
) -> str:
    """Markdown table: group keys, optimal g_bar (grid and refined), best acc, grid edge, and
    the lr / batch_size of the best record."""
    rows = []
    for key, o in optima.items():
        row: dict[str, Any] = dict(zip(group_keys, key))
        row.update(
            noise_scale=o.noise_scale,
            refined_noise_scale=o.refined_noise_scale,
            best_test_acc=o.best_test_acc,
            at_edge=o.at_edge,
            lr=o.record.get("lr", ""),
            batch_size=o.record.get("batch_size", ""),
        )
        rows.append(row)
    cols = list(group_keys) + [
        "noise_scale",
        "refined_noise_scale",
        "best_test_acc",
        "at_edge",
        "lr",
        "batch_size",
    ]
    return markdown_table(rows, cols, float_fmt=float_fmt)
