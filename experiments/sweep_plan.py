"""Planning a width sweep: its members (``RunSpec``, ``plan_runs``), each member's config
(``load_config_file``, ``apply_overrides``, ``run_config``, ``validate_all``) and the shell
command that trains one member (``job_command``). Pure: nothing here trains or writes files.

``experiments/width_sweep.py`` runs the members, writes the report and holds the CLI; it
re-exports every public name of this module.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import shlex
from typing import Any, Iterable, Optional, Sequence

import ml_collections

from experiments.sweep_report import FAMILIES
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


# ----------------------------------------------------------------------------- job commands


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
