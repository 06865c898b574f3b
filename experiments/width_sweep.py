"""Width sweeps: train a family of networks at growing width and report them (paper Fig. 1).

A sweep is one base config (a config file + overrides), a base width ``b`` and widths
``w_1 < ... < w_k`` (all ``>= b``). Its runs ("members"):

* ``dense``: the dense net at every width (its weight count grows with width);
* ``sparse``: at every width ``w > b``, the net of width ``w`` with a random static mask that
  keeps exactly the weight count of the dense width-``b`` net (``model.base_width = b``);
* optional ``bottleneck-linear`` / ``bottleneck-nonlinear``: the same widths and weight count,
  widened by factorizing layers instead of masking them (``mlp_bottleneck`` /
  ``resnet18_bottleneck``);
* each of them for every seed (``train.seed``; the mask seed follows it).

Every run trains in its own workdir ``OUT/runs/<family>_w<width>_s<seed>`` through
``widesparse_jax.train.train_and_evaluate``. A run whose ``summary.json`` exists is skipped,
an interrupted one resumes from its checkpoint, so re-running a sweep command finishes it.

Outputs in ``OUT``: ``runs.csv`` (one row per run), ``table.md`` (mean ± std over seeds),
``width_sweep.png`` (best test accuracy and final train accuracy vs width, log-x, error bars =
std over seeds) and ``sweep.json`` (the sweep's arguments and command line).

CLI (run from the repository root)::

  # all runs, sequentially in this process, then the report
  python -m experiments.width_sweep sweep --config configs/mnist_mlp.py --out results/x \\
      --base-width 5 --widths 5,10,20 --seeds 0,1 --set dataset.name=fashion_mnist
  # only print one command per run (cluster launch), run nothing
  python -m experiments.width_sweep sweep ... --jobs-file jobs.txt   # '-' = stdout
  python -m experiments.width_sweep run-one --config ... --out ... --family sparse --width 20 \\
      --base-width 5 --seed 0
  # rebuild runs.csv / table.md / figure from existing workdirs
  python -m experiments.width_sweep report --out results/x

``--set key=value`` overrides any config field (dotted path; value read as a Python literal,
else as a string: ``--set "sparsity.dense_layers=('cl/kernel',)"``, ``--set
dataset.train_subset=None``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Optional, Sequence

import ml_collections

from experiments.sweep_plan import (
    RunSpec,
    apply_overrides,
    check_bottleneck_feasible,
    job_command,
    load_config_file,
    parse_int_list,
    parse_value,
    plan_runs,
    run_config,
    shell_quote,
    validate_all,
)
from experiments.sweep_report import (
    FAILED_FILE,
    FAMILIES,
    RUNS_DIR,
    SUMMARY_FILE,
    aggregate,
    fmt,
    is_finished,
    markdown_table,
    write_report,
)

# The planning names live in experiments/sweep_plan.py; they stay importable from here.
__all__ = [
    "RunSpec",
    "apply_overrides",
    "build_parser",
    "check_bottleneck_feasible",
    "job_command",
    "load_config_file",
    "main",
    "parse_int_list",
    "parse_value",
    "plan_runs",
    "run_config",
    "run_one",
    "run_sweep",
    "shell_quote",
    "validate_all",
    "workdir_of",
]

# ----------------------------------------------------------------------------- running


def workdir_of(out_dir: str, spec: RunSpec) -> str:
    return os.path.join(out_dir, RUNS_DIR, spec.name)


def run_one(
    base: ml_collections.ConfigDict, spec: RunSpec, out_dir: str, prune_checkpoints: bool = False
) -> dict:
    """Trains one member unless its summary.json exists. Returns ``{'skipped': bool, ...summary}``."""
    workdir = workdir_of(out_dir, spec)
    if is_finished(workdir):
        with open(os.path.join(workdir, SUMMARY_FILE)) as f:
            return {"skipped": True, **json.load(f)}
    from widesparse_jax import train

    os.makedirs(workdir, exist_ok=True)
    summary = train.train_and_evaluate(run_config(base, spec), workdir)
    if prune_checkpoints:
        shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
    return {"skipped": False, **summary}


def run_sweep(
    config_path: str,
    out_dir: str,
    base_width: int,
    widths: Sequence[int],
    seeds: Sequence[int] = (0,),
    overrides: Sequence[str] = (),
    bottlenecks: Sequence[str] = (),
    sparse: bool = True,
    prune_checkpoints: bool = False,
    title: Optional[str] = None,
    command: Optional[str] = None,
    log=print,
    dense_widths: Optional[Sequence[int]] = None,
) -> list[dict]:
    """Runs every member (skipping finished ones) sequentially, then writes the report.

    ``dense_widths``: the dense family's widths (None: ``widths``).
    Returns the report rows (see ``sweep_report.collect_rows``).
    """
    specs = plan_runs(base_width, widths, seeds, bottlenecks, sparse, dense_widths)
    base = apply_overrides(load_config_file(config_path), overrides)
    validate_all(base, specs)
    os.makedirs(out_dir, exist_ok=True)
    _write_sweep_json(
        out_dir, config_path, overrides, base_width, widths, seeds, bottlenecks, title, command
    )
    t0 = time.time()
    for i, spec in enumerate(specs):
        t = time.time()
        try:
            res = run_one(base, spec, out_dir, prune_checkpoints)
        except FloatingPointError as e:  # diverged (non-finite loss): record it, go on
            _write_failure(workdir_of(out_dir, spec), e)
            if prune_checkpoints:
                shutil.rmtree(
                    os.path.join(workdir_of(out_dir, spec), "checkpoints"), ignore_errors=True
                )
            log(f"[{i + 1}/{len(specs)}] {spec.name}: FAILED ({type(e).__name__}: {e})")
            continue
        status = "skipped (finished before)" if res["skipped"] else f"{time.time() - t:.1f} s"
        log(
            f"[{i + 1}/{len(specs)}] {spec.name}: best test {res.get('best_test_accuracy')} "
            f"train {fmt(res.get('final_train_accuracy'))} kept {res.get('kept_weights')} "
            f"- {status} (sweep {time.time() - t0:.0f} s)"
        )
    return write_report(out_dir, title=title)


def _write_failure(workdir: str, error: BaseException) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, FAILED_FILE), "w") as f:
        json.dump({"error": type(error).__name__, "message": str(error)}, f, indent=2)


def _write_sweep_json(
    out_dir, config_path, overrides, base_width, widths, seeds, bottlenecks, title, command
):
    info = {
        "config": config_path,
        "overrides": list(overrides),
        "base_width": base_width,
        "widths": list(widths),
        "seeds": list(seeds),
        "bottlenecks": list(bottlenecks),
        "title": title,
        "command": command,
    }
    with open(os.path.join(out_dir, "sweep.json"), "w") as f:
        json.dump(info, f, indent=2)


# ----------------------------------------------------------------------------- CLI


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="config file with get_config()")
    p.add_argument("--out", required=True, help="sweep output dir (workdirs under OUT/runs)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. --set dataset.name=fashion_mnist (repeatable)",
    )
    p.add_argument("--base-width", type=int, required=True)
    p.add_argument(
        "--prune-checkpoints",
        action="store_true",
        help="delete a run's checkpoints once it has finished (keeps summaries)",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.width_sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sweep", help="run every member (sequentially) and write the report")
    _add_common(s)
    s.add_argument("--widths", required=True, help="comma-separated, each >= --base-width")
    s.add_argument(
        "--dense-widths", default=None, help="the dense family's widths (default: --widths)"
    )
    s.add_argument("--seeds", default="0", help="comma-separated train seeds (default 0)")
    s.add_argument("--bottleneck", default="", help="comma-separated: linear,nonlinear")
    s.add_argument("--no-sparse", action="store_true", help="skip the masked sparse family")
    s.add_argument("--title", default=None, help="title of the table and figure")
    s.add_argument(
        "--jobs-file",
        default=None,
        help="write one 'run-one' command per member to this file ('-': stdout) and run nothing",
    )
    r = sub.add_parser("run-one", help="train one member (skipped if finished)")
    _add_common(r)
    r.add_argument("--family", required=True, choices=FAMILIES)
    r.add_argument("--width", type=int, required=True)
    r.add_argument("--seed", type=int, default=0)
    rep = sub.add_parser("report", help="rebuild runs.csv, table.md and the figure")
    rep.add_argument("--out", required=True)
    rep.add_argument("--title", default=None)
    rep.add_argument(
        "--test-ylim",
        default=None,
        metavar="LO,HI",
        help="zoom the test-accuracy panel (points below LO are marked on the edge)",
    )
    return ap


def _enable_training_logs() -> None:
    """Training progress lines (train.py logs through absl); fast CPU convs before JAX starts."""
    from widesparse_jax import platform

    platform.enable_fast_cpu_convolutions()  # before JAX starts its CPU backend
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logging.set_stderrthreshold(absl_logging.INFO)


def _parse_ylim(text: Optional[str]) -> Optional[tuple[float, float]]:
    """``--test-ylim 'LO,HI'`` -> ``(LO, HI)``; None when not given."""
    if not text:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--test-ylim {text!r} is not LO,HI (e.g. 75,85)") from None
    if not lo < hi:
        raise ValueError(f"--test-ylim {text!r}: LO must be < HI")
    return (lo, hi)


def _cmd_report(args: argparse.Namespace, command: str) -> int:
    rows = write_report(args.out, args.title, _parse_ylim(args.test_ylim))
    print(f"{len(rows)} runs -> {args.out}/runs.csv, table.md, width_sweep.png")
    return 0


def _cmd_run_one(args: argparse.Namespace, command: str) -> int:
    kinds = [args.family[len("bottleneck-") :]] if args.family.startswith("bottleneck-") else []
    specs = plan_runs(
        args.base_width, [args.width], [args.seed], kinds, sparse=args.family == "sparse"
    )
    spec = RunSpec(args.family, args.width, args.base_width, args.seed)
    if spec not in specs:
        raise ValueError(
            f"--family {args.family} needs --width > --base-width "
            f"(got width {args.width}, base width {args.base_width})"
        )
    base = apply_overrides(load_config_file(args.config), args.set)
    validate_all(base, [spec])
    res = run_one(base, spec, args.out, args.prune_checkpoints)
    print(json.dumps(res, indent=2))
    return 0


def _write_jobs(args: argparse.Namespace, specs: Sequence[RunSpec]) -> int:
    """``sweep --jobs-file``: one ``run-one`` command per member (+ the report), run nothing."""
    base = apply_overrides(load_config_file(args.config), args.set)
    validate_all(base, specs)
    lines = [job_command(args.config, args.set, s, args.out, args.prune_checkpoints) for s in specs]
    lines.append(f"python -m experiments.width_sweep report --out {shell_quote(args.out)}")
    text = "\n".join(lines) + "\n"
    if args.jobs_file == "-":
        sys.stdout.write(text)
    else:
        with open(args.jobs_file, "w") as f:
            f.write(text)
        print(f"{len(specs)} run commands (+ report) -> {args.jobs_file}")
    return 0


def _cmd_sweep(args: argparse.Namespace, command: str) -> int:
    widths = parse_int_list(args.widths, "--widths")
    seeds = parse_int_list(args.seeds, "--seeds")
    bottlenecks = [b.strip() for b in args.bottleneck.split(",") if b.strip()]
    dense_widths = (
        None if args.dense_widths is None else parse_int_list(args.dense_widths, "--dense-widths")
    )
    specs = plan_runs(args.base_width, widths, seeds, bottlenecks, not args.no_sparse, dense_widths)
    if args.jobs_file is not None:
        return _write_jobs(args, specs)
    rows = run_sweep(
        args.config,
        args.out,
        args.base_width,
        widths,
        seeds,
        args.set,
        bottlenecks,
        not args.no_sparse,
        args.prune_checkpoints,
        args.title,
        command,
        dense_widths=dense_widths,
    )
    print(markdown_table(aggregate(rows), args.title))
    return 0


_COMMANDS = {"report": _cmd_report, "run-one": _cmd_run_one, "sweep": _cmd_sweep}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd != "report":
        _enable_training_logs()
    command = "python -m experiments.width_sweep " + " ".join(
        shell_quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    try:
        return _COMMANDS[args.cmd](args, command)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
