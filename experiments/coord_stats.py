"""Shared pieces of the coordinate checks (:mod:`experiments.coord_check`, MLP, and
:mod:`experiments.coord_check_resnet`): the training batches, the RMS records and their
log-log slopes vs width."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional

import jax.numpy as jnp
import numpy as np

from experiments import toolkit_common as tc


def rms(a: Any) -> float:
    """Root mean square of all entries of ``a``."""
    return float(jnp.sqrt(jnp.mean(jnp.square(a))))


def training_data(
    data: Optional[tuple[np.ndarray, np.ndarray]], steps: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(x [N, 784], y [N], need): ``steps`` training batches then one probe batch
    (``need`` = batch_size * (steps + 1) examples); default data: Fashion-MNIST train."""
    if data is None:
        data = tc.load_fashion_mnist("train", batch_size * (steps + 1))
    x, y = data
    need = batch_size * (steps + 1)
    if len(y) < need:
        raise ValueError(
            f"need {need} examples for {steps} steps of batch {batch_size}, got {len(y)}"
        )
    return x, y, need


def records(run: dict, step: int, values: Iterable[tuple[str, float]]) -> list[dict]:
    """One record {**run, step, quantity, rms} per (quantity, rms) of ``values``; ``run``
    holds param, sparse, width, seed."""
    return [dict(run, step=step, quantity=q, rms=v) for q, v in values]


def mean_curves(records: Sequence[dict]) -> dict[tuple, dict[int, float]]:
    """{(param, quantity, step): {width: rms averaged over seeds}}."""
    acc: dict[tuple, dict[int, list[float]]] = {}
    for r in records:
        acc.setdefault((r["param"], r["quantity"], r["step"]), {}).setdefault(
            r["width"], []
        ).append(r["rms"])
    return {k: {w: float(np.mean(v)) for w, v in sorted(d.items())} for k, d in acc.items()}


def log_slopes(records: Sequence[dict], quantity: str, step: int) -> dict[str, float]:
    """{param: slope of log(rms) vs log(width)} (least squares) at ``step``."""
    out = {}
    for (param, q, t), d in mean_curves(records).items():
        if q == quantity and t == step:
            w = np.log(np.array(list(d.keys()), float))
            v = np.log(np.maximum(np.array(list(d.values()), float), 1e-30))
            out[param] = float(np.polyfit(w, v, 1)[0])
    return out
