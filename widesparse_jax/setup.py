"""THE factory: a run config + dataset facts -> everything static a run needs, computed once.

``build_run(config, info)`` returns a :class:`Run`: the Flax model, the abstract variable
shapes (``jax.eval_shape``, no FLOPs), the counted layers in forward order (traced), the
sparsity plan and the keep-masks (seeded per layer), the μP learning-rate multipliers, the
optimizer and its schedule, and the step counts. ``init_state(run)`` draws the initial
:class:`TrainState` (masked weights are 0 before the first forward pass);
``state_template(config)`` is the checkpoint structure of a run built from its config
alone (no dataset on the machine needed), for restoring.

Everything that builds a network (training, restore, the baseline interop, experiments,
benchmarks) goes through here, so the μP init and the μP learning rates always come
together and the masks of a config are the same everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from widesparse_jax import config as config_lib
from widesparse_jax import masks as masks_lib
from widesparse_jax import models, optim, tree
from widesparse_jax import parametrization as param_lib

AXIS = "batch"  # the pmap axis: gradients and BatchNorm statistics are averaged over it


@flax.struct.dataclass
class TrainState:
    """Everything that evolves during training (a pytree; replicated under pmap).

    step: int32 scalar, optimizer steps taken. params / batch_stats: Flax collections
    (batch_stats is ``{}`` for models without BatchNorm). opt_state: optax state.
    masks: keep-mask pytree mirroring params (bool arrays, None = dense). rng: uint32[2]
    key data of the run's PRNG key (saved so a resumed run continues the same stream).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    masks: Any
    rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Run:
    """The static pieces of one run (no parameter values; masks are numpy bools).

    input_shape: one example's shape, (H, W, C) or (d,). param_shapes / batch_stats_shapes:
    ShapeDtypeStruct pytrees. order: counted layer paths in forward order. plan: the
    sparsity plan (None when dense). masks: keep-mask pytree (None leaves = dense).
    roles: μP role per counted layer name. lr_multipliers: per-leaf floats (None unless μP).
    """

    config: Any  # the resolved, locked ml_collections.ConfigDict
    model: Any
    input_shape: tuple
    num_classes: int
    param_shapes: Any
    batch_stats_shapes: Any
    order: tuple
    plan: Any
    masks: Any
    roles: dict
    lr_multipliers: Any
    tx: optax.GradientTransformationExtraArgs
    schedule: Callable[[Any], Any]
    steps_per_epoch: int
    num_train_examples: int
    total_steps: int


# ----------------------------------------------------------------------------- pieces


def build_model(
    model_config: Any,
    num_classes: int,
    input_shape: tuple,
    width: int | None = None,
    axis_name: str | None = AXIS,
):
    """The Flax module described by a model config section at ``width``.

    ``model_config``: ``config.model`` or any mapping with its fields (``name``, ``width``;
    the others default as in ``configs/default.py``: stem 'cifar', dtype 'float32',
    parametrization 'standard', use_bias True, activation 'relu', init_distribution
    'uniform', bottleneck 'linear'). ``axis_name``: the axis BatchNorm averages its batch
    statistics over (None outside pmap).
    """

    def field(name, default=None):
        return tree.get_dotted(model_config, name, default)

    name, param = field("name"), field("parametrization", "standard")
    kwargs: dict[str, Any] = {"dtype": jnp.dtype(field("dtype", "float32"))}
    if name.startswith("resnet18"):
        kwargs["bn_axis_name"] = axis_name
    else:
        # muP is applied to the standard net's params and learning rates (parametrization.py).
        kwargs.update(
            parametrization="standard" if param == "mup" else param,
            use_bias=field("use_bias", True),
            activation=field("activation", "relu"),
            init_distribution=field("init_distribution", "uniform"),
        )
        if field("batch_norm", False):  # baseline MLP files with BatchNorm (baseline.logits)
            kwargs["batch_norm"] = True
    if name.endswith("_bottleneck"):
        kwargs.update(base_width=field("base_width"), bottleneck=field("bottleneck", "linear"))
    return models.create_model(
        name,
        width or field("width"),
        num_classes,
        stem=field("stem", "cifar"),
        input_dim=int(np.prod(input_shape)),
        **kwargs,
    )


def _example(input_shape: tuple) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)


def abstract_variables(model, input_shape: tuple) -> dict:
    """``{'params': ..., 'batch_stats'?: ...}`` as ShapeDtypeStructs (``jax.eval_shape``)."""
    return dict(
        jax.eval_shape(
            lambda k, x: model.init(k, x, train=False), jax.random.key(0), _example(input_shape)
        )
    )


def layer_order(model, variables: dict, input_shape: tuple) -> tuple:
    """Counted kernels in forward order, by tracing ``model.apply`` (dict order is not)."""
    params = variables["params"]
    others = {k: v for k, v in variables.items() if k != "params"}
    return tuple(
        masks_lib.forward_order(
            lambda p, o, x: model.apply({"params": p, **o}, x, train=False),
            params,
            others,
            _example(input_shape),
        )
    )


def plan_masks(config, param_shapes, order, num_classes: int, input_shape: tuple):
    """``(masks, plan)``: the run's keep-masks (all None when dense) and its plan (or None).

    The base count is the counted-weight total of the dense ``base_width`` net; layers are
    planned in forward order (the paper's tie-breaking), each mask drawn from its own key.
    """
    m = config.model
    if not config_lib.is_sparse(config) or m.name.endswith("_bottleneck"):
        return tree.map_with_path(lambda p, leaf: None, param_shapes), None
    base = build_model(m, num_classes, input_shape, width=m.base_width, axis_name=None)
    base_total = masks_lib.count_weights(abstract_variables(base, input_shape)["params"])
    plan = masks_lib.make_plan(
        param_shapes,
        list(order),
        base_total=base_total,
        method=config.sparsity.method,
        granularity=config.sparsity.granularity,
        dense_layers=tuple(config.sparsity.dense_layers),
    )
    key = jax.random.PRNGKey(config.sparsity.mask_seed)
    return masks_lib.draw_masks(key, param_shapes, plan), plan


def mup_roles(order) -> dict:
    """μP roles of the layers (module paths, so a kernel's bias shares its role) from the
    forward order: first counted kernel 'input', last 'output', the others 'hidden'."""
    names = [tree.path_name(p[:-1]) for p in order]
    return {
        n: "input" if i == 0 else "output" if i == len(names) - 1 else "hidden"
        for i, n in enumerate(names)
    }


def _mup_args(config) -> dict:
    m = config.model
    return dict(
        name="mup",
        width=m.width,
        base_width=m.mup_base_width,
        fan_in_mode=m.get("mup_fan_in_mode", "effective"),
    )


def _steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Full global batches per epoch (drop remainder)."""
    if batch_size > num_train:
        raise config_lib.ConfigError(
            f"config.train.batch_size={batch_size} is larger than the {num_train} training "
            "examples; use a batch size <= the training set size"
        )
    return num_train // batch_size


# ----------------------------------------------------------------------------- the factory


def build_run(
    config: Any,
    info: Any,
    *,
    axis_name: str | None = AXIS,
    variables: dict | None = None,
) -> Run:
    """Everything static of a run, from its config and its dataset facts.

    Args:
      config: a run config (validated and resolved here if it is not locked yet).
      info: dataset facts with ``num_classes``, ``image_shape`` (the model's input shape
        of one example) and ``num_train`` (examples trained on; None for a restore template).
      axis_name: BatchNorm's cross-device axis (``AXIS`` under pmap, None for a plain jit).
      variables: ``abstract_variables`` of this config's model (``axis_name=None``) when the
        caller traced them already (preflight's memory check); None: traced here.
    """
    if not config.is_locked:
        config = config_lib.resolve_config(config)
    input_shape = tuple(info.image_shape)
    num_classes = int(info.num_classes)
    model = build_model(config.model, num_classes, input_shape, axis_name=axis_name)
    plain = build_model(config.model, num_classes, input_shape, axis_name=None)
    if variables is None:
        variables = abstract_variables(plain, input_shape)
    order = layer_order(plain, variables, input_shape)
    masks, plan = plan_masks(config, variables["params"], order, num_classes, input_shape)
    roles = mup_roles(order)
    multipliers = None
    if config.model.parametrization == "mup":
        multipliers = param_lib.lr_multipliers(
            variables["params"], roles=roles, masks=masks, **_mup_args(config)
        )
    n_train = info.num_train
    spe = 1 if n_train is None else _steps_per_epoch(n_train, config.train.batch_size)
    tx, schedule = optim.from_config(config, steps_per_epoch=spe, lr_multipliers=multipliers)
    steps = config.train.num_train_steps
    return Run(
        config=config,
        model=model,
        input_shape=input_shape,
        num_classes=num_classes,
        param_shapes=variables["params"],
        batch_stats_shapes=variables.get("batch_stats", {}),
        order=order,
        plan=plan,
        masks=masks,
        roles=roles,
        lr_multipliers=multipliers,
        tx=tx,
        schedule=schedule,
        steps_per_epoch=spe,
        num_train_examples=n_train,
        total_steps=steps if steps > 0 else config.train.num_epochs * spe,
    )


def init_params(run: Run, key: jax.Array) -> dict:
    """Initial variables ``{'params', 'batch_stats'?}`` drawn with ``key``: the model's init,
    then the sparse-aware rescale (masked weights exactly 0), then the μP rescale."""
    x = jnp.zeros((1,) + run.input_shape, jnp.float32)
    variables = dict(jax.jit(lambda k: run.model.init(k, x, train=False))(key))
    params = masks_lib.rescale_for_density(variables["params"], run.masks)
    if run.config.model.parametrization == "mup":  # after the density rescale (effective fan-in)
        params = param_lib.apply_parametrization(
            params, roles=run.roles, masks=run.masks, **_mup_args(run.config)
        )
    variables["params"] = jax.tree.map(jnp.asarray, params)
    return variables


def init_state(run: Run) -> TrainState:
    """The run's initial TrainState, from ``config.train.seed`` (masks from ``run.masks``)."""
    init_key, state_key = jax.random.split(jax.random.PRNGKey(run.config.train.seed))
    variables = init_params(run, init_key)
    params = variables["params"]
    return TrainState(
        step=jnp.asarray(0, jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=run.tx.init(params),
        masks=jax.tree.map(jnp.asarray, run.masks),
        rng=jax.random.key_data(state_key),
    )


def state_to_dict(state: TrainState) -> dict:
    """Host (numpy) nested-dict form of a TrainState, as checkpoints store it."""
    return jax.device_get(serialization.to_state_dict(state))


def state_from_dict(template: TrainState, d: dict) -> TrainState:
    return serialization.from_state_dict(template, d)


def abstract_state(run: Run) -> TrainState:
    """The run's TrainState as ShapeDtypeStructs (no values computed)."""
    return jax.eval_shape(lambda: init_state(run))


def state_template(config: Any, info: Any) -> dict:
    """The checkpoint structure (state dict of ShapeDtypeStructs) of the run of ``config``.

    ``info`` needs only ``num_classes`` and ``image_shape`` (e.g. ``data.static_info``), so
    a workdir can be restored on a machine without its dataset.
    """
    run = build_run(config, info, axis_name=None)
    return serialization.to_state_dict(abstract_state(run))
