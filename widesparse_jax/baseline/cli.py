"""The ``python -m widesparse_jax.baseline`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import numpy as np

from widesparse_jax.baseline.export import export_from
from widesparse_jax.baseline.formats import read_stats, save_npz
from widesparse_jax.baseline.load import load_baseline
from widesparse_jax.baseline.logits import baseline_logits


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m widesparse_jax.baseline",
        description="PyTorch baseline (wide-sparse-nets) interop.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def model_args(q):
        q.add_argument("--model-file", required=True)
        q.add_argument("--mask-file", default=None)
        q.add_argument("--width", type=int, required=True)
        q.add_argument("--num-classes", type=int, required=True)
        q.add_argument(
            "--allow-pickle",
            action="store_true",
            help="load with weights_only=False (trusted files only)",
        )

    q = sub.add_parser("logits", help="eval-mode logits of a baseline file with our Flax model")
    model_args(q)
    q.add_argument("--input", required=True, help=".npy, NHWC float32 (MLP: [N, d] or images)")
    q.add_argument("--output", required=True, help=".npy, float32 [N, C]")
    q = sub.add_parser("convert", help="baseline files -> .npz of our variables + masks")
    model_args(q)
    q.add_argument("--output", required=True)
    q = sub.add_parser("export", help="our checkpoint dir or .npz -> model file + smask.pt")
    q.add_argument("--input", required=True, help="checkpoint dir (restore.load_variables) or .npz")
    q.add_argument("--out-dir", required=True)
    q.add_argument("--width", type=int, default=None)
    q.add_argument("--num-classes", type=int, default=None)
    q.add_argument("--base-width", type=int, default=None)
    q.add_argument("--stem", default=None, choices=["cifar", "imagenet"])
    q.add_argument("--epoch", type=int, default=-1)
    q.add_argument("--model-name", default="model_final.pt")
    q.add_argument("--lr", type=float, default=None)
    q = sub.add_parser("stats", help="print a stats.pt log as JSON")
    q.add_argument("--stats-file", required=True)
    return p


def _logits(a: argparse.Namespace) -> None:
    if not os.path.isfile(a.input):
        raise ValueError(f"--input {a.input!r}: no such file")
    x = np.load(a.input, allow_pickle=False)
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    y = baseline_logits(
        a.model_file,
        a.mask_file,
        x,
        width=a.width,
        num_classes=a.num_classes,
        allow_pickle=a.allow_pickle,
    )
    np.save(a.output, y)
    print(f"wrote {a.output} {y.shape} float32")


def _convert(a: argparse.Namespace) -> None:
    bm = load_baseline(
        a.model_file,
        a.mask_file,
        width=a.width,
        num_classes=a.num_classes,
        allow_pickle=a.allow_pickle,
    )
    meta = {
        "model": bm.layout.model,
        "width": a.width,
        "num_classes": a.num_classes,
        "layout": bm.layout.description,
        "epoch": bm.epoch,
        "base_width": bm.args.get("base_width"),
        "source": os.path.abspath(a.model_file),
        "baseline_args": {
            k: v for k, v in bm.args.items() if v is None or isinstance(v, (bool, int, float, str))
        },
    }
    save_npz(a.output, bm.variables, bm.masks, bm.momentum, meta)
    print(f"wrote {a.output}")


def _export(a: argparse.Namespace) -> None:
    paths = export_from(
        a.input,
        a.out_dir,
        width=a.width,
        num_classes=a.num_classes,
        base_width=a.base_width,
        stem=a.stem,
        epoch=a.epoch,
        model_name=a.model_name,
        args={"lr": a.lr} if a.lr is not None else {},
    )
    print("wrote " + " ".join(paths))


def _stats(a: argparse.Namespace) -> None:
    s = read_stats(a.stats_file)
    print(json.dumps({k: v.tolist() for k, v in s.items()}))


_COMMANDS = {"logits": _logits, "convert": _convert, "export": _export, "stats": _stats}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit code (errors: message on stderr, code 2)."""
    a = _parser().parse_args(argv)
    try:
        _COMMANDS[a.cmd](a)
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
