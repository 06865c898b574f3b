"""The one place where run configs are validated and resolved.

``validate_config(config)`` checks every field a run reads and raises a single
``ConfigError`` that lists each bad field, its value and what is allowed, before any
work starts (no data read, no model built, nothing written). ``resolve_config`` returns
a validated, locked copy with derived values filled in (e.g. the per-width learning rate
of the NTK MLP setting).
"""

from __future__ import annotations

from typing import Any

import ml_collections

DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped", "imagenet2012")
SOURCES = ("auto", "tfds", "idx")
AUGMENTS = ("cifar_crop_flip", "crop", "imagenet", "none")
NORMALIZATIONS = ("channel", "pixel", "none")
CHANNEL_STATS = ("dataset", "imagenet")
MODELS = ("resnet18", "mlp", "resnet18_bottleneck", "mlp_bottleneck")
STEMS = ("cifar", "imagenet")
PARAMETRIZATIONS = ("standard", "ntk", "mup")
ACTIVATIONS = ("relu", "linear")
INIT_DISTRIBUTIONS = ("uniform", "normal")
BOTTLENECKS = ("linear", "nonlinear")
DTYPES = ("float32", "bfloat16")
SPARSITY_METHODS = ("paper", "uniform", "erk")
GRANULARITIES = ("weight", "kernel")
SCHEDULES = ("constant", "multistep", "cosine")


class ConfigError(ValueError):
    """A config value is not allowed; the message lists every bad field."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _lr_table(config: ml_collections.ConfigDict, sparse: bool):
    name = "lr_table_sparse" if sparse else "lr_table_dense"
    table = config.optimizer.get(name)
    return name, (dict(table) if table is not None else None)


def is_sparse(config: ml_collections.ConfigDict) -> bool:
    """True when the run keeps the weight count of a narrower base width."""
    bw = config.model.base_width
    return bw not in (None, 0) and bw != config.model.width


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming every invalid field; returns None when all are valid."""
    errors: list[str] = []

    def check(cond: bool, field: str, value: Any, allowed: str):
        if not cond:
            errors.append(f"config.{field}={value!r} is not allowed: {allowed}")

    def choice(field: str, value: Any, allowed: tuple):
        check(value in allowed, field, value, f"one of {list(allowed)}")

    def positive_int(field: str, value: Any, minimum: int = 1):
        check(_is_int(value) and value >= minimum, field, value, f"an integer >= {minimum}")

    def optional_positive_int(field: str, value: Any):
        check(
            value is None or (_is_int(value) and value >= 1),
            field,
            value,
            "None or an integer >= 1",
        )

    for section in ("dataset", "model", "sparsity", "optimizer", "train"):
        if section not in config:
            raise ConfigError(f"config has no section {section!r}; start from configs/default.py")

    d, m, s, o, t = config.dataset, config.model, config.sparsity, config.optimizer, config.train
    choice("dataset.name", d.name, DATASETS)
    choice("dataset.source", d.source, SOURCES)
    choice("dataset.augment", d.augment, AUGMENTS)
    choice("dataset.normalization", d.normalization, NORMALIZATIONS)
    choice("dataset.channel_stats", d.get("channel_stats", "dataset"), CHANNEL_STATS)
    optional_positive_int("dataset.train_subset", d.train_subset)
    check(
        d.subset_seed is None or _is_int(d.subset_seed),
        "dataset.subset_seed",
        d.subset_seed,
        "None (first N examples) or an integer seed",
    )
    optional_positive_int("dataset.image_size", d.image_size)
    if d.augment == "imagenet":
        check(
            d.name == "imagenet2012",
            "dataset.augment",
            d.augment,
            "'imagenet' augmentation needs dataset.name='imagenet2012'",
        )
    if d.source == "idx":
        check(
            d.name in ("mnist", "fashion_mnist"),
            "dataset.source",
            d.source,
            "'idx' files exist only for mnist and fashion_mnist",
        )

    choice("model.name", m.name, MODELS)
    positive_int("model.width", m.width)
    check(
        m.base_width is None or (_is_int(m.base_width) and m.base_width >= 0),
        "model.base_width",
        m.base_width,
        "None or 0 (dense; 0 is the command-line spelling) or an integer >= 1",
    )
    if _is_int(m.width) and _is_int(m.base_width) and m.base_width > m.width:
        errors.append(
            f"config.model.base_width={m.base_width!r} is larger than "
            f"config.model.width={m.width!r}: the base width must be <= width "
            "(a sparse net keeps the weight count of a NARROWER dense net)"
        )
    choice("model.stem", m.stem, STEMS)
    choice("model.parametrization", m.parametrization, PARAMETRIZATIONS)
    check(isinstance(m.use_bias, bool), "model.use_bias", m.use_bias, "True or False")
    choice("model.activation", m.activation, ACTIVATIONS)
    choice("model.init_distribution", m.init_distribution, INIT_DISTRIBUTIONS)
    choice("model.bottleneck", m.bottleneck, BOTTLENECKS)
    choice("model.dtype", m.dtype, DTYPES)
    if m.name.startswith("mlp"):
        check(d.augment == "none", "dataset.augment", d.augment, "'none' for MLP models")
    if m.parametrization == "ntk":
        check(
            m.name == "mlp",
            "model.parametrization",
            m.parametrization,
            "'ntk' is implemented for model.name='mlp' only",
        )
        check(
            m.use_bias is False,
            "model.use_bias",
            m.use_bias,
            "False with the NTK parametrization (f = V relu(U x / sqrt(d)) / sqrt(n) has no bias)",
        )
    if m.parametrization == "mup":
        check(
            _is_int(m.get("mup_base_width")) and m.mup_base_width >= 1,
            "model.mup_base_width",
            m.get("mup_base_width"),
            "an integer >= 1 with parametrization='mup' (the width where muP equals standard)",
        )
    if m.name.endswith("_bottleneck"):
        check(
            m.base_width not in (None, 0),
            "model.base_width",
            m.base_width,
            "an integer: bottleneck models are widened at the weight count of base_width",
        )

    choice("sparsity.method", s.method, SPARSITY_METHODS)
    choice("sparsity.granularity", s.granularity, GRANULARITIES)
    check(
        all(isinstance(n, str) for n in tuple(s.dense_layers)),
        "sparsity.dense_layers",
        s.dense_layers,
        'a tuple of layer names (e.g. ("cl",))',
    )
    check(
        s.mask_seed is None or _is_int(s.mask_seed),
        "sparsity.mask_seed",
        s.mask_seed,
        "None (use train.seed) or an integer",
    )

    sparse = _is_int(m.width) and is_sparse(config)
    if o.lr is None:
        name, table = _lr_table(config, sparse)
        if table is None:
            errors.append(
                "config.optimizer.lr=None is not allowed: give a number > 0 "
                f"(no optimizer.{name} table to look it up in)"
            )
        elif str(m.width) not in table:
            errors.append(
                f"config.model.width={m.width!r} has no tuned learning rate in "
                f"optimizer.{name} (widths {sorted(int(k) for k in table)}): "
                "pass --config.optimizer.lr"
            )
    else:
        check(_is_number(o.lr) and o.lr > 0, "optimizer.lr", o.lr, "a number > 0")
    check(
        _is_number(o.momentum) and 0 <= o.momentum < 1,
        "optimizer.momentum",
        o.momentum,
        "a number in [0, 1)",
    )
    check(isinstance(o.nesterov, bool), "optimizer.nesterov", o.nesterov, "True or False")
    check(
        _is_number(o.weight_decay) and o.weight_decay >= 0,
        "optimizer.weight_decay",
        o.weight_decay,
        "a number >= 0",
    )
    choice("optimizer.schedule", o.schedule, SCHEDULES)
    ms = tuple(o.milestones)
    check(
        all(_is_int(x) and x > 0 for x in ms) and list(ms) == sorted(set(ms)),
        "optimizer.milestones",
        o.milestones,
        "strictly increasing positive epochs",
    )
    check(
        _is_number(o.gamma) and 0 < o.gamma <= 1, "optimizer.gamma", o.gamma, "a number in (0, 1]"
    )
    check(
        _is_number(o.warmup_epochs) and o.warmup_epochs >= 0,
        "optimizer.warmup_epochs",
        o.warmup_epochs,
        "a number >= 0",
    )

    check(_is_int(t.seed) and t.seed >= 0, "train.seed", t.seed, "an integer >= 0")
    positive_int("train.num_epochs", t.num_epochs)
    positive_int("train.batch_size", t.batch_size)
    positive_int("train.eval_batch_size", t.eval_batch_size)
    check(
        _is_int(t.num_train_steps) and (t.num_train_steps == -1 or t.num_train_steps >= 1),
        "train.num_train_steps",
        t.num_train_steps,
        "-1 (use num_epochs) or an integer >= 1",
    )
    positive_int("train.eval_every_epochs", t.eval_every_epochs)
    positive_int("train.log_every_steps", t.log_every_steps)
    positive_int("train.checkpoint_every_steps", t.checkpoint_every_steps)
    positive_int("train.max_checkpoints_to_keep", t.max_checkpoints_to_keep)
    positive_int("train.prefetch", t.prefetch, minimum=0)

    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Validates ``config`` and returns a locked copy with derived values filled in."""
    validate_config(config)
    config = ml_collections.ConfigDict(config.to_dict())
    if config.optimizer.lr is None:
        _, table = _lr_table(config, is_sparse(config))
        config.optimizer.lr = float(table[str(config.model.width)])
    if config.sparsity.mask_seed is None:
        config.sparsity.mask_seed = config.train.seed
    config.sparsity.dense_layers = tuple(config.sparsity.dense_layers)
    config.optimizer.milestones = tuple(config.optimizer.milestones)
    config.lock()
    return config
