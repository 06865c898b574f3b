"""``python -m widesparse_jax.masks``: the per-layer sparsity plan of a model, as JSON.

Builds parameter SHAPES only, through the run factory (``widesparse_jax.setup``); prints
layers in forward order (name, shape, size, keep), totals, method, granularity, difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import jax

from widesparse_jax.choices import GRANULARITIES, SPARSITY_METHODS
from widesparse_jax.masks import count_weights, density_report, draw_masks, make_plan


def _model_shapes(model_name: str, width: int, num_classes: int, stem: str, input_dim: int):
    """``(params shapes, forward order)`` of a model, built by the run factory
    ``widesparse_jax.setup`` (lazy import: keeps this module Flax-free)."""
    from widesparse_jax import models, setup

    shape = models.input_shape(model_name, stem=stem, input_dim=input_dim)
    fields = {"name": model_name, "width": width, "stem": stem}
    model = setup.build_model(fields, num_classes, shape, axis_name=None)
    variables = setup.abstract_variables(model, shape)
    return variables["params"], setup.layer_order(model, variables, shape)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m widesparse_jax.masks",
        description="Per-layer sparsity plan of a wide sparse net.",
    )
    ap.add_argument("--model", required=True, help="resnet18 | mlp (see widesparse_jax.models)")
    ap.add_argument("--stem", default="cifar", help="resnet stem: cifar | imagenet")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--input-dim", type=int, default=784, help="MLP input dimension")
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument(
        "--base-width",
        type=int,
        default=None,
        help="dense base width whose weight count is kept (default: dense net)",
    )
    ap.add_argument("--method", default="paper", help=f"one of {', '.join(SPARSITY_METHODS)}")
    ap.add_argument("--granularity", default="weight", help="weight | kernel")
    ap.add_argument(
        "--dense-layers", default="", help="comma-separated layer names kept dense, e.g. cl/kernel"
    )
    ap.add_argument("--seed", type=int, default=0, help="mask seed (used with --draw)")
    ap.add_argument(
        "--draw",
        action="store_true",
        help="also draw the masks and report the kept count per layer",
    )
    return ap


def _base_width(ap: argparse.ArgumentParser, a: argparse.Namespace) -> int:
    """Checks the choices and widths; the base width (default: the width itself)."""
    if a.method not in SPARSITY_METHODS:
        ap.error(f"--method {a.method!r} unknown; allowed: {', '.join(SPARSITY_METHODS)}")
    if a.granularity not in GRANULARITIES:
        ap.error(f"--granularity {a.granularity!r} unknown; allowed: {', '.join(GRANULARITIES)}")
    base_width = a.width if a.base_width is None else a.base_width
    if base_width > a.width:
        ap.error(
            f"--width {a.width} is below --base-width {base_width} (allowed: width >= base width)"
        )
    if base_width < 1:
        ap.error(f"--base-width {base_width} must be >= 1")
    return base_width


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m widesparse_jax.masks --model resnet18 --width 64 --base-width 18 ...``.

    Prints the plan as JSON: layers in forward order (name, shape, size, keep), totals,
    method, granularity, difference. Builds parameter shapes only.
    """
    ap = _parser()
    a = ap.parse_args(argv)
    base_width = _base_width(ap, a)
    params, order = _model_shapes(a.model, a.width, a.num_classes, a.stem, a.input_dim)
    base_params = params
    if base_width != a.width:
        base_params, _ = _model_shapes(a.model, base_width, a.num_classes, a.stem, a.input_dim)
    dense = [d for d in a.dense_layers.split(",") if d]
    try:
        plan = make_plan(
            params,
            list(order),
            base_total=count_weights(base_params),
            method=a.method,
            granularity=a.granularity,
            dense_layers=dense,
        )
    except ValueError as e:
        ap.error(str(e))
    out = plan.to_dict()
    out.update(model=a.model, width=a.width, base_width=base_width)
    if a.draw:
        masks = draw_masks(jax.random.key(a.seed), params, plan)
        rows = density_report(params, masks, [l.path for l in plan.layers])
        for layer, row in zip(out["layers"], rows):
            layer["kept_drawn"] = row["kept"]
        out["seed"] = a.seed
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
