"""Benchmark: plan + draw masks for ImageNet ResNet-18 width 256 from base 64 (~180.6 M weights).

Builds parameter SHAPES only (``jax.eval_shape`` of ``model.init``), then times
``masks.make_plan`` (forward order given) and ``masks.draw_masks`` separately, best of N.

    python -m benchmarks.mask_build [--width 256] [--base-width 64] [--repeats 3] [--threads N]
"""

import argparse
import json
import time

import jax

from widesparse_jax import masks, models, setup


def param_shapes(width: int, num_classes: int, stem: str):
    """(model, params shapes, batch_stats shapes, input shape) of ResNet-18 at ``width``."""
    shape = models.input_shape("resnet18", stem=stem)
    model = setup.build_model(
        {"name": "resnet18", "width": width, "stem": stem}, num_classes, shape, axis_name=None
    )
    variables = setup.abstract_variables(model, shape)
    return model, variables["params"], variables["batch_stats"], shape


def best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--base-width", type=int, default=64)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--stem", default="imagenet")
    ap.add_argument("--method", default="paper")
    ap.add_argument("--granularity", default="weight")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()

    t = time.perf_counter()
    model, params, stats, x = param_shapes(a.width, a.num_classes, a.stem)
    _, base_params, _, _ = param_shapes(a.base_width, a.num_classes, a.stem)
    t_shapes = time.perf_counter() - t
    t = time.perf_counter()
    order = setup.layer_order(model, {"params": params, "batch_stats": stats}, x)
    t_order = time.perf_counter() - t
    base_total = masks.count_weights(base_params)

    t_plan, plan = best_of(
        lambda: masks.make_plan(
            params, order, base_total=base_total, method=a.method, granularity=a.granularity
        ),
        a.repeats,
    )
    key = jax.random.key(0)
    masks.draw_masks(key, params, plan, num_threads=a.threads)  # warm up jax fold_in dispatch
    t_draw, m = best_of(
        lambda: masks.draw_masks(key, params, plan, num_threads=a.threads), a.repeats
    )
    kept = masks.count_kept(m, params)
    assert kept == plan.total_keep
    print(
        json.dumps(
            {
                "width": a.width,
                "base_width": a.base_width,
                "stem": a.stem,
                "method": a.method,
                "granularity": a.granularity,
                "total_width": plan.total_width,
                "total_base": plan.total_base,
                "total_keep": plan.total_keep,
                "kept_drawn": kept,
                "seconds_shapes": round(t_shapes, 3),
                "seconds_forward_order": round(t_order, 3),
                "seconds_plan": round(t_plan, 5),
                "seconds_draw": round(t_draw, 3),
                "repeats": a.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
