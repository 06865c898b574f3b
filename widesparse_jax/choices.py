"""Every choice a config field or public function accepts, declared once.

Modules import their allowed values from here (config validation, data, models, masks,
optimizer, parametrization), so the lists cannot disagree. No imports: safe anywhere.
"""

# ---- data
SMALL_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped")
STREAMING_DATASETS = ("imagenet2012",)
DATASETS = SMALL_DATASETS + STREAMING_DATASETS
SOURCES = ("auto", "tfds", "idx")
AUGMENTS = ("cifar_crop_flip", "crop", "imagenet", "none")
NORMALIZATIONS = ("channel", "pixel", "none")
CHANNEL_STATS = ("dataset", "imagenet")

# ---- models
MODELS = ("resnet18", "mlp", "resnet18_bottleneck", "mlp_bottleneck")
STEMS = ("cifar", "imagenet")
ACTIVATIONS = ("relu", "linear")
INIT_DISTRIBUTIONS = ("uniform", "normal")
BOTTLENECKS = ("linear", "nonlinear")
DTYPES = ("float32", "bfloat16")

# ---- parametrizations (standard / NTK / muP scalings)
PARAMETRIZATIONS = ("standard", "ntk", "mup")
PARAMETRIZATION_ALIASES = {
    "standard": "standard",
    "sp": "standard",
    "ntk": "ntk",
    "mup": "mup",
    "μp": "mup",
    "mean_field": "mup",
}
MLP_PARAMETRIZATIONS = ("standard", "ntk")  # built into the MLP module itself
ROLES = ("input", "hidden", "output", "other")
FAN_IN_MODES = ("effective", "nominal")

# ---- sparsity
SPARSITY_METHODS = ("paper", "uniform", "erk")
PLAN_METHODS = SPARSITY_METHODS + ("explicit",)  # make_plan also takes explicit removals
GRANULARITIES = ("weight", "kernel")
# where the train step applies the masks: 'update' (optimizer only; masked weights stay 0),
# 'forward' (also in the forward pass, model.apply(..., masks=...); same results) or 'sparse'
# (layers below sparsity.sparse_below_density compute with their kept weights only; sparse/)
MASK_APPLY = ("update", "forward", "sparse")

# ---- optimizer
SCHEDULES = ("constant", "multistep", "cosine")


def canonical_parametrization(name: str) -> str:
    """'standard' | 'ntk' | 'mup' for ``name`` or an alias ('sp', 'μp', 'mean_field')."""
    key = str(name).strip().lower()
    if key not in PARAMETRIZATION_ALIASES:
        raise ValueError(
            f"unknown parametrization {name!r}; allowed: {PARAMETRIZATIONS} "
            f"(aliases: {sorted(set(PARAMETRIZATION_ALIASES) - set(PARAMETRIZATIONS))})"
        )
    return PARAMETRIZATION_ALIASES[key]
