"""Baseline and own training runs read into one common form (:class:`Run`).

* Baseline run: a directory holding the baseline's ``stats.pt`` (or the file itself) and,
  when present, ``model_final.pt`` / ``model_init.pt`` whose pickled ``args`` give the run's
  configuration (format: ../shared/golden/README.md). Its epochs are 0-based (``stats[...][e]``
  is logged after training epoch e); they are shown as e + 1 so that both sides count
  completed epochs.
* Our run: a workdir of ``main.py`` with ``metrics.jsonl`` ('epoch' records: epoch,
  train_loss, train_accuracy, test_loss, test_accuracy, best_test_accuracy),
  ``summary.json`` and ``config.json``.

Used by :mod:`experiments.compare_baseline` (which re-exports every name here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from typing import Any, Mapping, Optional

import numpy as np

CURVES = ("train_loss", "test_loss", "train_accuracy", "test_accuracy")
CONFIG_FIELDS = (
    "dataset",
    "model",
    "width",
    "base_width",
    "lr",
    "momentum",
    "weight_decay",
    "num_epochs",
    "batch_size",
    "schedule",
)
BASELINE_MODEL_FILES = ("model_final.pt", "model_init.pt")


@dataclasses.dataclass
class Run:
    """One training run in a common form.

    epochs: float [E] completed epochs (1 = after the first epoch). curves: name -> float [E]
    for CURVES (accuracies in percent, NaN where missing). best_test_accuracy: percent.
    config: the CONFIG_FIELDS (+ 'seed') as plain values, None where unknown.
    """

    name: str
    side: str  # 'baseline' | 'ours'
    epochs: np.ndarray
    curves: dict
    best_test_accuracy: float
    config: dict


# ----------------------------------------------------------------------------- loading


def _nan_max(a: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    return float(np.nanmax(a)) if a.size and np.any(np.isfinite(a)) else float("nan")


# CONFIG_FIELDS (+ 'seed') -> the baseline's argparse name (ResNet18/main.py) / our
# config.json (section, field).
_BASELINE_KEYS = {
    "dataset": "dataset",
    "model": "model_name",
    "width": "width",
    "base_width": "base_width",
    "lr": "lr",
    "momentum": "momentum",
    "weight_decay": "wd",
    "num_epochs": "num_epochs",
    "batch_size": "mbs",
    "schedule": "scheduler",
    "seed": "seed",
}
_OUR_KEYS = {
    "dataset": ("dataset", "name"),
    "model": ("model", "name"),
    "width": ("model", "width"),
    "base_width": ("model", "base_width"),
    "lr": ("optimizer", "lr"),
    "momentum": ("optimizer", "momentum"),
    "weight_decay": ("optimizer", "weight_decay"),
    "num_epochs": ("train", "num_epochs"),
    "batch_size": ("train", "batch_size"),
    "schedule": ("optimizer", "schedule"),
    "seed": ("train", "seed"),
}


def _base_width_defaults_to_width(fields: dict) -> dict:
    """A run without a base width is dense: its base width is its width."""
    if fields["base_width"] is None:
        fields["base_width"] = fields["width"]
    return fields


def baseline_config(args: Mapping[str, Any]) -> dict:
    """The baseline's argparse fields (ResNet18/main.py names) -> our CONFIG_FIELDS."""
    fields = {k: args.get(a) for k, a in _BASELINE_KEYS.items()}
    return _base_width_defaults_to_width(fields)


def our_config(cfg: Mapping[str, Any]) -> dict:
    """Our config.json (nested dict of configs/default.py) -> CONFIG_FIELDS."""
    sections = {s: cfg.get(s, {}) or {} for s in ("dataset", "model", "optimizer", "train")}
    fields = {k: sections[s].get(f) for k, (s, f) in _OUR_KEYS.items()}
    return _base_width_defaults_to_width(fields)


def load_baseline_run(path: str, name: Optional[str] = None) -> Run:
    """A baseline run directory (stats.pt [+ model_final.pt/model_init.pt]) or a stats.pt file."""
    from widesparse_jax import baseline  # pylint: disable=g-import-not-at-top

    if os.path.isdir(path):
        run_dir, stats_path = path, os.path.join(path, "stats.pt")
    else:
        run_dir, stats_path = os.path.dirname(path), path
    if not os.path.exists(stats_path):
        raise ValueError(f"baseline run {path!r}: no stats.pt found (expected {stats_path!r})")
    st = baseline.read_stats(stats_path)
    curves = {
        "train_loss": st["train_loss"],
        "test_loss": st["test_loss"],
        "train_accuracy": st["train_acc1"],
        "test_accuracy": st["test_acc1"],
    }
    args: dict = {}
    best = None
    for fname in BASELINE_MODEL_FILES:
        p = os.path.join(run_dir, fname)
        if os.path.exists(p):
            ckpt = baseline.load_torch_file(p, allow_pickle=True)
            a = ckpt.get("args") if isinstance(ckpt, Mapping) else None
            args = dict(vars(a)) if isinstance(a, argparse.Namespace) else dict(a or {})
            if fname == "model_final.pt" and ckpt.get("best_acc") is not None:
                best = float(ckpt["best_acc"])
            break
    curve_best = _nan_max(curves["test_accuracy"])
    if best is None or not math.isfinite(best):
        best = curve_best
    return Run(
        name=name or path,
        side="baseline",
        epochs=st["epochs"].astype(np.float64) + 1.0,
        curves={k: np.asarray(v, np.float64) for k, v in curves.items()},
        best_test_accuracy=best,
        config=baseline_config(args),
    )


def load_our_run(workdir: str, name: Optional[str] = None) -> Run:
    """A workdir of main.py / train.train_and_evaluate (metrics.jsonl, summary.json, config.json)."""
    mpath = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(mpath):
        raise ValueError(f"our run {workdir!r}: no metrics.jsonl (is it a main.py workdir?)")
    with open(mpath) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    recs = sorted((r for r in recs if r.get("kind") == "epoch"), key=lambda r: r["epoch"])
    if not recs:
        raise ValueError(f"our run {workdir!r}: metrics.jsonl has no 'epoch' records")
    epochs = np.asarray([float(r["epoch"]) for r in recs])
    curves = {
        k: np.asarray([float(r.get(k, np.nan)) if r.get(k) is not None else np.nan for r in recs])
        for k in CURVES
    }
    best = None
    spath = os.path.join(workdir, "summary.json")
    if os.path.exists(spath):
        with open(spath) as f:
            best = json.load(f).get("best_test_accuracy")
    if best is None:
        best = recs[-1].get("best_test_accuracy", _nan_max(curves["test_accuracy"]))
    cpath = os.path.join(workdir, "config.json")
    cfg = {}
    if os.path.exists(cpath):
        with open(cpath) as f:
            cfg = json.load(f)
    return Run(
        name=name or workdir,
        side="ours",
        epochs=epochs,
        curves=curves,
        best_test_accuracy=float(best),
        config=our_config(cfg),
    )
