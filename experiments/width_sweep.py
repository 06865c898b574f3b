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
import ast
import dataclasses
import importlib.util
import json
import os
import shlex
import shutil
import sys
import time
from typing import Any, Iterable, Optional, Sequence

import ml_collections

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
from widesparse_jax.choices import BOTTLENECKS

# ----------------------------------------------------------------------------- run specs


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One member of a sweep: ``family`` at ``width`` (weight count of ``base_width``), ``seed``."""

    family: str
    width: int
    base_width: int
    seed: int

    @property
    def name(self) -> str:
        """Workdir name, e.g. ``'sparse_w40_s1'``."""
        return f"{self.family}_w{self.width}_s{self.seed}"


def parse_int_list(text: str | Sequence[int], what: str) -> list[int]:
    """``'5,10,20'`` (or a sequence) -> ``[5, 10, 20]``; raises ValueError naming ``what``."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            value = int(str(item).strip())
        except ValueError:
            raise ValueError(
                f'{what}: {item!r} is not an integer (expected e.g. "5,10,20")'
            ) from None
        out.append(value)
    if not out:
        raise ValueError(f"{what} is empty: give at least one integer")
    return out


def plan_runs(
    base_width: int,
    widths: Sequence[int],
    seeds: Sequence[int] = (0,),
    bottlenecks: Sequence[str] = (),
    sparse: bool = True,
    dense_widths: Optional[Sequence[int]] = None,
) -> list[RunSpec]:
    """All members of the sweep, dense first, widths ascending.

    ``dense_widths``: the dense family's widths when they differ from ``widths`` (e.g. sparse
    nets far wider than dense masking can afford); None: the same widths.
    Raises ValueError for a width below the base width, a non-positive width, duplicate widths
    or seeds, a negative seed, or an unknown bottleneck kind.
    """
    if not isinstance(base_width, int) or base_width < 1:
        raise ValueError(f"base width {base_width!r} not allowed: an integer >= 1")
    if dense_widths is not None:
        _check_widths(base_width, list(dense_widths), "dense widths")
    _check_widths(base_width, list(widths), "widths")
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ValueError(f"seeds {seeds} not allowed: distinct integers >= 0, at least one")
    unknown = [b for b in bottlenecks if b not in BOTTLENECKS]
    if unknown:
        raise ValueError(f"bottleneck kinds {unknown} unknown; allowed: {list(BOTTLENECKS)}")
    families = ["dense"] + (["sparse"] if sparse else []) + [f"bottleneck-{b}" for b in bottlenecks]
    specs = []
    for family in families:
        fam_widths = dense_widths if family == "dense" and dense_widths is not None else widths
        for w in sorted(fam_widths):
            if family != "dense" and w == base_width:
                continue  # the dense base net is every family's starting point
            for s in seeds:
                specs.append(RunSpec(family, w, base_width, s))
    return specs


def _check_widths(base_width: int, widths: list, what: str) -> None:
    """Raises ValueError unless ``widths`` are distinct integers >= ``base_width``."""
    if not widths:
        raise ValueError(f"{what} is empty: give at least one width >= the base width")
    bad = [w for w in widths if not isinstance(w, int) or w < 1]
    if bad:
        raise ValueError(f"{what} {bad} not allowed: integers >= 1")
    below = [w for w in widths if w < base_width]
    if below:
        raise ValueError(
            f"{what} {below} are below the base width {base_width}: every width must "
            f"be >= {base_width} (a sparse net keeps the weight count of the narrower "
            "base net)"
        )
    if len(set(widths)) != len(widths):
        raise ValueError(f"{what} {widths} contain duplicates")


# ----------------------------------------------------------------------------- configs


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Imports a config file (``get_config()``) by path. Config files import ``configs``
    (``from configs import default``): run from the repository root (``python -m ...``)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"config file {path!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"_width_sweep_cfg_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} has no get_config()")
    return module.get_config()


def parse_value(text: str) -> Any:
    """A ``--set`` value: a Python literal if it parses as one, else the raw string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Iterable[str]
) -> ml_collections.ConfigDict:
    """Applies ``'a.b.c=value'`` overrides to a copy of ``config``; unknown keys raise ValueError."""
    config = _copy(config)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = config
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
                raise ValueError(
                    f"override {item!r}: config has no section {p!r} on the path {key!r}"
                )
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(f"override {item!r}: config has no field {key!r}")
        value = parse_value(text)
        if isinstance(value, list):
            value = tuple(value)
        try:
            node[parts[-1]] = value
        except TypeError as e:
            raise ValueError(f"override {item!r}: {e}") from None
    return config


def _copy(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(config.to_dict())


def run_config(base: ml_collections.ConfigDict, spec: RunSpec) -> ml_collections.ConfigDict:
    """The config of one member: width, base width (None when dense), seed, model name."""
    config = _copy(base)
    name = config.model.name
    plain = name[: -len("_bottleneck")] if name.endswith("_bottleneck") else name
    config.model.width = spec.width
    config.train.seed = spec.seed
    if spec.family == "dense":
        config.model.name = plain
        config.model.base_width = None
    elif spec.family == "sparse":
        config.model.name = plain
        config.model.base_width = spec.base_width
    elif spec.family.startswith("bottleneck-"):
        config.model.name = plain + "_bottleneck"
        config.model.base_width = spec.base_width
        config.model.bottleneck = spec.family[len("bottleneck-") :]
    else:
        raise ValueError(f"family {spec.family!r} unknown; allowed: {list(FAMILIES)}")
    return config


def check_bottleneck_feasible(config: ml_collections.ConfigDict) -> None:
    """Builds the bottleneck member's module (no data, no params): the factorization plan is
    solved there, so a width whose unfactorized layers alone exceed the base width's weight
    count raises ValueError here, before any member trains (not mid-sweep)."""
    from widesparse_jax import data, setup

    spec = data.DataSpec.from_config(config.dataset)
    try:
        setup.build_model(config.model, data.spec.NUM_CLASSES[spec.name], spec.image_shape)
    except ValueError as e:
        raise ValueError(
            f"bottleneck cannot reach the weight count of base width {config.model.base_width} "
            f"at width {config.model.width} ({e}); drop this width from --widths"
        ) from None


def validate_all(base: ml_collections.ConfigDict, specs: Sequence[RunSpec]) -> None:
    """Validates every member's config before any training (one error lists them all)."""
    from widesparse_jax import config as config_lib

    errors = []
    for spec in specs:
        try:
            config = run_config(base, spec)
            config_lib.validate_config(config)
            if spec.family.startswith("bottleneck-"):
                check_bottleneck_feasible(config)
        except ValueError as e:
            errors.append(f"{spec.name}: {e}")
    if errors:
        raise ValueError("invalid sweep member config(s):\n" + "\n".join(errors))


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


def shell_quote(arg: str) -> str:
    """Quotes one shell word; prefers readable double quotes for Python literals like ('a',)."""
    q = shlex.quote(arg)
    if q == arg or any(c in arg for c in '"$`\\!'):
        return q
    return f'"{arg}"'


def job_command(
    config_path: str,
    overrides: Sequence[str],
    spec: RunSpec,
    out_dir: str,
    prune_checkpoints: bool = False,
) -> str:
    """The shell command that trains one member on its own (``run-one``)."""
    args = [
        "python",
        "-m",
        "experiments.width_sweep",
        "run-one",
        "--config",
        config_path,
        "--out",
        out_dir,
        "--family",
        spec.family,
        "--width",
        str(spec.width),
        "--base-width",
        str(spec.base_width),
        "--seed",
        str(spec.seed),
    ]
    for o in overrides:
        args += ["--set", o]
    if prune_checkpoints:
        args.append("--prune-checkpoints")
    return " ".join(shell_quote(a) for a in args)


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd != "report":  # training progress lines (train.py logs through absl)
        from widesparse_jax import platform

        platform.enable_fast_cpu_convolutions()  # before JAX starts its CPU backend
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.INFO)
        absl_logging.set_stderrthreshold(absl_logging.INFO)
    command = "python -m experiments.width_sweep " + " ".join(
        shell_quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    try:
        if args.cmd == "report":
            ylim = None
            if args.test_ylim:
                try:
                    lo, hi = (float(v) for v in args.test_ylim.split(","))
                except ValueError:
                    raise ValueError(
                        f"--test-ylim {args.test_ylim!r} is not LO,HI (e.g. 75,85)"
                    ) from None
                if not lo < hi:
                    raise ValueError(f"--test-ylim {args.test_ylim!r}: LO must be < HI")
                ylim = (lo, hi)
            rows = write_report(args.out, args.title, ylim)
            print(f"{len(rows)} runs -> {args.out}/runs.csv, table.md, width_sweep.png")
            return 0
        if args.cmd == "run-one":
            kinds = (
                [args.family[len("bottleneck-") :]] if args.family.startswith("bottleneck-") else []
            )
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
        widths = parse_int_list(args.widths, "--widths")
        seeds = parse_int_list(args.seeds, "--seeds")
        bottlenecks = [b.strip() for b in args.bottleneck.split(",") if b.strip()]
        dense_widths = (
            None
            if args.dense_widths is None
            else parse_int_list(args.dense_widths, "--dense-widths")
        )
        specs = plan_runs(
            args.base_width, widths, seeds, bottlenecks, not args.no_sparse, dense_widths
        )
        if args.jobs_file is not None:
            base = apply_overrides(load_config_file(args.config), args.set)
            validate_all(base, specs)
            lines = [
                job_command(args.config, args.set, s, args.out, args.prune_checkpoints)
                for s in specs
            ]
            lines.append(f"python -m experiments.width_sweep report --out {shell_quote(args.out)}")
            text = "\n".join(lines) + "\n"
            if args.jobs_file == "-":
                sys.stdout.write(text)
            else:
                with open(args.jobs_file, "w") as f:
                    f.write(text)
                print(f"{len(specs)} run commands (+ report) -> {args.jobs_file}")
            return 0
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
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
