"""Figures and markdown tables of noise-scale sweeps (matplotlib Figure, no pyplot state)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from widesparse_jax.analysis.noise_scale_fit import (
    OptimalNoiseScale,
    PowerLawFit,
    _sort_key,
    best_per_noise_scale,
)

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


def _finish(fig, ax, title: str | None, path: str | None):
    """Title, legend, grid, layout; save to ``path`` when given; return the figure."""
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
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
    return _finish(fig, ax, title, path)


def _width_series(
    optima: Mapping[tuple, OptimalNoiseScale], group_keys: Sequence[str], use_refined: bool
) -> dict[tuple, list[tuple[float, float, bool]]]:
    """{other group values: [(width, optimal g_bar, at grid edge), ...]}."""
    wi = list(group_keys).index("width")
    series: dict[tuple, list[tuple[float, float, bool]]] = {}
    for key, o in optima.items():
        rest = tuple(v for j, v in enumerate(key) if j != wi)
        g = o.refined_noise_scale if use_refined else o.noise_scale
        series.setdefault(rest, []).append((float(key[wi]), g, o.at_edge))
    return series


def _plot_width_series(ax, pts: Sequence[tuple], label: str, fit: PowerLawFit | None) -> None:
    """One series of (width, g, at_edge) points (edge points hollow) and its fit line."""
    w = np.array([p[0] for p in pts])
    g = np.array([p[1] for p in pts])
    edge = np.array([p[2] for p in pts], dtype=bool)
    label = label or "optimal g"
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
    if fit is not None:
        ww = np.geomspace(w.min(), w.max(), 50)
        ax.plot(
            ww,
            fit.predict(ww),
            "-",
            color=line.get_color(),
            label=f"fit: k={fit.exponent:.2f}±{fit.exponent_stderr:.2f}",
        )


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
    series = _width_series(optima, group_keys, use_refined)
    rest_keys = [k for k in group_keys if k != "width"]
    if isinstance(fits, PowerLawFit):
        if len(series) != 1:
            raise ValueError("a single PowerLawFit needs exactly one series; pass a dict")
        fits = {next(iter(series)): fits}
    fig = _new_figure(figsize)
    ax = fig.subplots()
    for rest in sorted(series, key=_sort_key):
        fit = fits.get(rest) if fits is not None else None
        _plot_width_series(ax, sorted(series[rest]), _group_label(rest, rest_keys), fit)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.set_ylabel(r"optimal $\bar g$")
    return _finish(fig, ax, title, path)


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
