"""The one place where run configs are validated and resolved.

``validate_config(config)`` checks every field a run reads and raises a single
``ConfigError`` that lists each bad field, its value and what is allowed, before any
work starts (no data read, no model built, nothing written). ``resolve_config`` returns
a validated, locked copy with derived values filled in (e.g. the per-width learning rate
of the NTK MLP setting). Allowed values come from ``widesparse_jax.choices``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from widesparse_jax import choices, sanity
from widesparse_jax.data.spec import DataSpec

if TYPE_CHECKING:
    import ml_collections

SECTIONS = ("dataset", "model", "sparsity", "optimizer", "train")


class ConfigError(ValueError):
    """A config value is not allowed; the message lists every bad field."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Errors:
    """Collects 'config.<field>=<value> is not allowed: <allowed>' messages."""

    def __init__(self):
        self.messages: list[str] = []

    def check(self, cond: bool, field: str, value: Any, allowed: str) -> None:
        if not cond:
            self.messages.append(f"config.{field}={value!r} is not allowed: {allowed}")

    def choice(self, field: str, value: Any, allowed: tuple) -> None:
        self.check(value in allowed, field, value, f"one of {list(allowed)}")

    def positive_int(self, field: str, value: Any, minimum: int = 1) -> None:
        self.check(_is_int(value) and value >= minimum, field, value, f"an integer >= {minimum}")

    def optional_positive_int(self, field: str, value: Any) -> None:
        ok = value is None or (_is_int(value) and value >= 1)
        self.check(ok, field, value, "None or an integer >= 1")

    def boolean(self, field: str, value: Any) -> None:
        self.check(isinstance(value, bool), field, value, "True or False")


def _lr_table(config: ml_collections.ConfigDict, sparse: bool):
    name = "lr_table_sparse" if sparse else "lr_table_dense"
    table = config.optimizer.get(name)
    return name, (dict(table) if table is not None else None)


def is_sparse(config: ml_collections.ConfigDict) -> bool:
    """True when the run keeps the weight count of a narrower base width."""
    bw = config.model.base_width
    return bw not in (None, 0) and bw != config.model.width


def _check_dataset(e: _Errors, d) -> None:
    e.choice("dataset.name", d.name, choices.DATASETS)
    e.choice("dataset.source", d.source, choices.SOURCES)
    e.choice("dataset.augment", d.augment, choices.AUGMENTS)
    e.choice("dataset.normalization", d.normalization, choices.NORMALIZATIONS)
    e.choice("dataset.channel_stats", d.get("channel_stats", "dataset"), choices.CHANNEL_STATS)
    e.optional_positive_int("dataset.train_subset", d.train_subset)
    e.check(
        d.subset_seed is None or _is_int(d.subset_seed),
        "dataset.subset_seed",
        d.subset_seed,
        "None (first N examples) or an integer seed",
    )
    e.optional_positive_int("dataset.image_size", d.image_size)
    if not e.messages:  # the fields combine as the data pipeline allows (one validator)
        try:
            DataSpec.from_config(d)
        except ValueError as err:
            e.messages.append(f"config.dataset: {err}")


def _check_model(e: _Errors, m, d) -> None:
    e.choice("model.name", m.name, choices.MODELS)
    e.positive_int("model.width", m.width)
    e.check(
        m.base_width is None or (_is_int(m.base_width) and m.base_width >= 0),
        "model.base_width",
        m.base_width,
        "None or 0 (dense; 0 is the command-line spelling) or an integer >= 1",
    )
    if _is_int(m.width) and m.width >= 1 and _is_int(m.base_width) and m.base_width > m.width:
        e.messages.append(
            f"config.model.base_width={m.base_width!r} is larger than "
            f"config.model.width={m.width!r}: the base width must be <= width "
            "(a sparse net keeps the weight count of a NARROWER dense net)"
        )
    e.choice("model.stem", m.stem, choices.STEMS)
    e.choice("model.parametrization", m.parametrization, choices.PARAMETRIZATIONS)
    e.boolean("model.use_bias", m.use_bias)
    e.choice("model.activation", m.activation, choices.ACTIVATIONS)
    e.choice("model.init_distribution", m.init_distribution, choices.INIT_DISTRIBUTIONS)
    e.choice("model.bottleneck", m.bottleneck, choices.BOTTLENECKS)
    e.choice("model.dtype", m.dtype, choices.DTYPES)
    e.choice("model.mup_fan_in_mode", m.get("mup_fan_in_mode", "effective"), choices.FAN_IN_MODES)
    if m.name.startswith("mlp"):
        e.check(d.augment == "none", "dataset.augment", d.augment, "'none' for MLP models")
    if m.parametrization == "ntk":
        e.check(
            m.name == "mlp",
            "model.parametrization",
            m.parametrization,
            "'ntk' is implemented for model.name='mlp' only",
        )
        e.check(
            m.use_bias is False,
            "model.use_bias",
            m.use_bias,
            "False with the NTK parametrization (f = V relu(U x / sqrt(d)) / sqrt(n) has no bias)",
        )
    if m.parametrization == "mup":
        e.check(
            _is_int(m.get("mup_base_width")) and m.mup_base_width >= 1,
            "model.mup_base_width",
            m.get("mup_base_width"),
            "an integer >= 1 with parametrization='mup' (the width where muP equals standard)",
        )
    if m.name.endswith("_bottleneck"):
        e.check(
            m.base_width not in (None, 0),
            "model.base_width",
            m.base_width,
            "an integer: bottleneck models are widened at the weight count of base_width",
        )


def _check_sparsity(e: _Errors, s) -> None:
    e.choice("sparsity.method", s.method, choices.SPARSITY_METHODS)
    e.choice("sparsity.granularity", s.granularity, choices.GRANULARITIES)
    e.choice("sparsity.apply", s.get("apply", "update"), choices.MASK_APPLY)
    e.check(
        all(isinstance(n, str) for n in tuple(s.dense_layers)),
        "sparsity.dense_layers",
        s.dense_layers,
        'a tuple of layer names (e.g. ("cl",))',
    )
    e.check(
        s.mask_seed is None or _is_int(s.mask_seed),
        "sparsity.mask_seed",
        s.mask_seed,
        "None (use train.seed) or an integer",
    )
    for field in ("sparse_below_density", "sparse_conv_below_density"):
        density = s.get(field, 0.0)
        e.check(
            _is_number(density) and 0 <= density <= 1,
            f"sparsity.{field}",
            density,
            "a number in [0, 1]",
        )


def _check_learning_rate(e: _Errors, config) -> None:
    m, o = config.model, config.optimizer
    if o.lr is not None:
        ok = _is_number(o.lr) and o.lr > 0 and math.isfinite(o.lr)
        e.check(ok, "optimizer.lr", o.lr, "a finite number > 0")
        return
    name, table = _lr_table(config, _is_int(m.width) and is_sparse(config))
    if table is None:
        e.messages.append(
            "config.optimizer.lr=None is not allowed: give a number > 0 "
            f"(no optimizer.{name} table to look it up in)"
        )
    elif str(m.width) not in table:
        e.messages.append(
            f"config.model.width={m.width!r} has no tuned learning rate in "
            f"optimizer.{name} (widths {sorted(int(k) for k in table)}): "
            "pass --config.optimizer.lr"
        )


def _check_optimizer(e: _Errors, config) -> None:
    o = config.optimizer
    _check_learning_rate(e, config)
    e.check(
        _is_number(o.momentum) and 0 <= o.momentum < 1,
        "optimizer.momentum",
        o.momentum,
        "a number in [0, 1)",
    )
    e.boolean("optimizer.nesterov", o.nesterov)
    e.check(
        _is_number(o.weight_decay) and o.weight_decay >= 0,
        "optimizer.weight_decay",
        o.weight_decay,
        "a number >= 0",
    )
    e.choice("optimizer.schedule", o.schedule, choices.SCHEDULES)
    ms = tuple(o.milestones)
    e.check(
        all(_is_int(x) and x > 0 for x in ms) and list(ms) == sorted(set(ms)),
        "optimizer.milestones",
        o.milestones,
        "strictly increasing positive epochs",
    )
    e.check(
        _is_number(o.gamma) and 0 < o.gamma <= 1, "optimizer.gamma", o.gamma, "a number in (0, 1]"
    )
    e.check(
        _is_int(o.warmup_epochs) and o.warmup_epochs >= 0,
        "optimizer.warmup_epochs",
        o.warmup_epochs,
        "an integer >= 0",
    )
    _check_run_length(e, o, config.train.num_epochs)


def _check_run_length(e: _Errors, o, num_epochs: Any) -> None:
    """Warmup and multistep milestones must fall inside the run's num_epochs."""
    if not _is_int(num_epochs) or num_epochs < 1 or not _is_int(o.warmup_epochs):
        return
    e.check(
        o.warmup_epochs < num_epochs,
        "optimizer.warmup_epochs",
        o.warmup_epochs,
        f"fewer than train.num_epochs={num_epochs} (warmup longer than the run)",
    )
    if o.schedule == "multistep":
        late = [x for x in tuple(o.milestones) if _is_int(x) and x >= num_epochs]
        e.check(
            not late,
            "optimizer.milestones",
            o.milestones,
            f"epochs < train.num_epochs={num_epochs} (milestones {late} would never take effect)",
        )


def _check_train(e: _Errors, t) -> None:
    e.check(_is_int(t.seed) and t.seed >= 0, "train.seed", t.seed, "an integer >= 0")
    e.positive_int("train.num_epochs", t.num_epochs)
    e.positive_int("train.batch_size", t.batch_size)
    e.positive_int("train.eval_batch_size", t.eval_batch_size)
    e.check(
        _is_int(t.num_train_steps) and (t.num_train_steps == -1 or t.num_train_steps >= 1),
        "train.num_train_steps",
        t.num_train_steps,
        "-1 (use num_epochs) or an integer >= 1",
    )
    for field in ("eval_every_epochs", "log_every_steps", "checkpoint_every_steps"):
        e.positive_int(f"train.{field}", t[field])
    e.positive_int("train.max_checkpoints_to_keep", t.max_checkpoints_to_keep)
    e.positive_int("train.prefetch", t.prefetch, minimum=0)
    f = t.get("sane_loss_factor", sanity.DEFAULT_FACTOR)
    e.check(
        _is_number(f) and math.isfinite(f) and f > 1,
        "train.sane_loss_factor",
        f,
        "a finite number > 1 (a checkpoint is sane while the loss with its weights is at most "
        "this times the run's first loss)",
    )


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming every invalid field; returns None when all are valid."""
    for section in SECTIONS:
        if section not in config:
            raise ConfigError(f"config has no section {section!r}; start from configs/default.py")
    e = _Errors()
    _check_dataset(e, config.dataset)
    _check_model(e, config.model, config.dataset)
    _check_sparsity(e, config.sparsity)
    _check_optimizer(e, config)
    _check_train(e, config.train)
    if len(e.messages) == 1:
        raise ConfigError(e.messages[0])
    if e.messages:
        raise ConfigError(f"invalid config ({len(e.messages)} fields): " + "; ".join(e.messages))


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Validates ``config`` and returns a locked copy with derived values filled in."""
    import ml_collections  # lazy: validation itself needs no ml_collections

    validate_config(config)
    config = ml_collections.ConfigDict(config.to_dict())
    if config.optimizer.lr is None:
        _, table = _lr_table(config, is_sparse(config))
        config.optimizer.lr = float(table[str(config.model.width)])
    if config.sparsity.mask_seed is None:
        config.sparsity.mask_seed = config.train.seed
    config.sparsity.dense_layers = tuple(config.sparsity.dense_layers)
    if "sane_loss_factor" not in config.train:  # a config (or config.json) that predates it
        config.train.sane_loss_factor = sanity.DEFAULT_FACTOR
    config.optimizer.milestones = tuple(config.optimizer.milestones)
    config.lock()
    return config


# Settings that change the trajectory, as (fingerprint key, dotted config field). A resume is
# refused when any differs (docs/trust.md). Cadence fields (log/eval/checkpoint every, prefetch,
# max_checkpoints_to_keep, num_train_steps: where to stop) may change between sessions.
FINGERPRINT_FIELDS = (
    ("dataset", "dataset.name"),
    ("augment", "dataset.augment"),
    ("normalization", "dataset.normalization"),
    ("channel_stats", "dataset.channel_stats"),
    ("train_subset", "dataset.train_subset"),
    ("subset_seed", "dataset.subset_seed"),
    ("image_size", "dataset.image_size"),
    ("model", "model.name"),
    ("width", "model.width"),
    ("base_width", "model.base_width"),
    ("stem", "model.stem"),
    ("parametrization", "model.parametrization"),
    ("mup_base_width", "model.mup_base_width"),
    ("mup_fan_in_mode", "model.mup_fan_in_mode"),
    ("use_bias", "model.use_bias"),
    ("activation", "model.activation"),
    ("init_distribution", "model.init_distribution"),
    ("bottleneck", "model.bottleneck"),
    ("dtype", "model.dtype"),
    ("sparsity_method", "sparsity.method"),
    ("granularity", "sparsity.granularity"),
    ("dense_layers", "sparsity.dense_layers"),
    ("mask_seed", "sparsity.mask_seed"),
    ("lr", "optimizer.lr"),
    ("momentum", "optimizer.momentum"),
    ("nesterov", "optimizer.nesterov"),
    ("weight_decay", "optimizer.weight_decay"),
    ("schedule", "optimizer.schedule"),
    ("milestones", "optimizer.milestones"),
    ("gamma", "optimizer.gamma"),
    ("warmup_epochs", "optimizer.warmup_epochs"),
    ("num_epochs", "train.num_epochs"),
    ("seed", "train.seed"),
    ("batch_size", "train.batch_size"),
)


def run_fingerprint(config: ml_collections.ConfigDict) -> dict:
    """What must be equal to resume a checkpoint: every setting of the trajectory (JSON-able)."""
    out = {}
    for key, dotted in FINGERPRINT_FIELDS:
        section, field = dotted.split(".")
        value = config[section].get(field)
        out[key] = list(value) if isinstance(value, (tuple, list)) else value
    return out
