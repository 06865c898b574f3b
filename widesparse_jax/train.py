"""Training: TrainState, jitted + pmapped train/eval steps, ``train_and_evaluate``.

Data flow of one run (see docs/contracts.md and DESIGN.md):
config -> input pipeline (per-host shard, batches [local_devices, per_device, ...])
-> model.init -> sparsity plan + masks (seeded, per-layer keys) -> sparse-aware init
(masked weights are 0 before the first forward pass) -> pmapped train step (grads and
BatchNorm batch statistics averaged over all devices with axis 'batch'; the optimizer
zeroes masked gradients, momentum and updates) -> eval every epoch (padded last batch,
every test example counted once) -> best test accuracy -> orbax checkpoint -> metrics
(TensorBoard via clu + ``metrics.jsonl``).

BatchNorm across devices: the model's BatchNorm layers are built with
``axis_name='batch'``, so in training mode the batch mean/variance are averaged over
all devices of all hosts; every replica therefore holds the same running statistics and
eval/checkpoints read them from replica 0.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any, Callable, Iterator

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import jax_utils, serialization

from widesparse_jax import checkpoint as ckpt_lib
from widesparse_jax import config as config_lib
from widesparse_jax import input_pipeline, models, optim
from widesparse_jax import masks as masks_lib
from widesparse_jax import parametrization as param_lib

AXIS = "batch"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


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
class RunSetup:
    """Static pieces of a run derived from its config (no arrays)."""

    model: Any
    tx: optax.GradientTransformationExtraArgs
    schedule: Callable[[Any], Any]
    info: Any  # input_pipeline.DatasetInfo
    steps_per_epoch: int
    num_train_examples: int
    total_steps: int


# ----------------------------------------------------------------------------- model & masks


def build_model(
    config: ml_collections.ConfigDict,
    num_classes: int,
    input_dim: int,
    width: int | None = None,
    axis_name: str | None = AXIS,
):
    """The Flax module of ``config.model`` (at ``width``, default ``config.model.width``)."""
    m = config.model
    kwargs: dict[str, Any] = {}
    if m.name.startswith("resnet18"):
        kwargs.update(dtype=jnp.dtype(m.dtype), bn_axis_name=axis_name)
    else:
        # muP is applied to the standard net's params and learning rates (parametrization.py).
        mlp_param = "standard" if m.parametrization == "mup" else m.parametrization
        kwargs.update(
            parametrization=mlp_param,
            use_bias=m.use_bias,
            activation=m.activation,
            init_distribution=m.init_distribution,
            dtype=jnp.dtype(m.dtype),
        )
    if m.name.endswith("_bottleneck"):
        kwargs.update(base_width=m.base_width, bottleneck=m.bottleneck)
    return models.create_model(
        m.name, width or m.width, num_classes, stem=m.stem, input_dim=input_dim, **kwargs
    )


def _init_fn(model, input_shape):
    x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
    return lambda key: model.init(key, x, train=False)


def layer_order(config, params, input_shape, num_classes) -> list:
    """Counted kernels of the run's model in forward order (traced; dict order is not)."""
    plain = build_model(config, num_classes, int(np.prod(input_shape)), axis_name=None)
    x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
    variables_shapes = jax.eval_shape(_init_fn(plain, input_shape), jax.random.PRNGKey(0))
    non_params = {}
    if "batch_stats" in variables_shapes:
        non_params["batch_stats"] = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), variables_shapes["batch_stats"]
        )
    return masks_lib.forward_order(
        lambda p, xx: plain.apply({"params": p, **non_params}, xx, train=False), params, x
    )


def make_masks(config, model, params, input_shape, num_classes, order=None):
    """Keep-masks of the run: all None when dense, else the planned random masks.

    The base count is the counted-weight total of the dense ``base_width`` net; the layer
    order is the model's forward order (traced), as the paper's tie-breaking needs.
    ``params`` may be abstract (ShapeDtypeStruct): only shapes are read.
    Returns ``(masks, plan or None)``.
    """
    m = config.model
    if not config_lib.is_sparse(config) or m.name.endswith("_bottleneck"):
        return jax.tree.map(lambda _: None, params), None
    input_dim = int(np.prod(input_shape))
    base_model = build_model(config, num_classes, input_dim, width=m.base_width, axis_name=None)
    base_shapes = jax.eval_shape(_init_fn(base_model, input_shape), jax.random.PRNGKey(0))
    base_total = masks_lib.count_weights(base_shapes["params"])
    if order is None:
        order = layer_order(config, params, input_shape, num_classes)
    plan = masks_lib.make_plan(
        params,
        order,
        base_total=base_total,
        method=config.sparsity.method,
        granularity=config.sparsity.granularity,
        dense_layers=tuple(config.sparsity.dense_layers),
    )
    key = jax.random.PRNGKey(config.sparsity.mask_seed)
    return masks_lib.draw_masks(key, params, plan), plan


def mup_roles(order) -> dict:
    """muP layer roles from the forward order: first kernel 'input', last 'output'."""
    names = [masks_lib.path_name(p) for p in order]
    return {
        n: "input" if i == 0 else "output" if i == len(names) - 1 else "hidden"
        for i, n in enumerate(names)
    }


def parametrization_args(config, params, masks, order):
    """``(name, width, base, roles, masks)`` for parametrization.py, or None if not muP."""
    if config.model.parametrization != "mup":
        return None
    return ("mup", config.model.width, config.model.mup_base_width, mup_roles(order), masks)


def make_optimizer(config, steps_per_epoch: int, lr_multipliers=None):
    """The run's optax optimizer (masked SGD-momentum, coupled wd) and its lr schedule."""
    o = config.optimizer
    kw = dict(
        learning_rate=o.lr,
        momentum=o.momentum,
        weight_decay=o.weight_decay,
        nesterov=o.nesterov,
        lr_schedule=o.schedule,
        lr_boundaries=tuple(o.milestones),
        lr_gamma=o.gamma,
        num_epochs=config.train.num_epochs,
        warmup_epochs=o.warmup_epochs,
    )
    tx = optim.make_optimizer(
        None, steps_per_epoch=steps_per_epoch, lr_multipliers=lr_multipliers, **kw
    )
    schedule = optim.schedule_from_config(None, steps_per_epoch=steps_per_epoch, **kw)
    return tx, schedule


def create_train_state(config, model, tx, input_shape, num_classes) -> TrainState:
    """Initial state: init variables, draw masks, sparse-aware rescale (masked weights 0)."""
    key = jax.random.PRNGKey(config.train.seed)
    init_key, state_key = jax.random.split(key)
    variables = jax.jit(_init_fn(model, input_shape))(init_key)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    order = layer_order(config, params, input_shape, num_classes)
    masks, _ = make_masks(config, model, params, input_shape, num_classes, order=order)
    params = masks_lib.rescale_for_density(params, masks)
    mup = parametrization_args(config, params, masks, order)
    if mup is not None:  # after masking and the density rescale (effective fan-in)
        name, width, base, roles, _ = mup
        params = param_lib.apply_parametrization(params, name, width, base, roles, masks=masks)
    params = jax.tree.map(jnp.asarray, params)
    masks = jax.tree.map(jnp.asarray, masks)
    opt_state = tx.init(params)
    return TrainState(
        step=jnp.asarray(0, jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        masks=masks,
        rng=jax.random.key_data(state_key),
    )


def state_to_dict(state: TrainState) -> dict:
    """Host (numpy) nested-dict form of a TrainState, as checkpoints store it."""
    return jax.device_get(serialization.to_state_dict(state))


def state_from_dict(template: TrainState, d: dict) -> TrainState:
    return serialization.from_state_dict(template, d)


def run_fingerprint(config) -> dict:
    """What must be equal to resume a checkpoint (model, masks, data stream)."""
    return {
        "dataset": config.dataset.name,
        "train_subset": config.dataset.train_subset,
        "subset_seed": config.dataset.subset_seed,
        "model": config.model.name,
        "width": config.model.width,
        "base_width": config.model.base_width,
        "stem": config.model.stem,
        "parametrization": config.model.parametrization,
        "mup_base_width": config.model.get("mup_base_width"),
        "sparsity_method": config.sparsity.method,
        "granularity": config.sparsity.granularity,
        "dense_layers": list(config.sparsity.dense_layers),
        "mask_seed": config.sparsity.mask_seed,
        "seed": config.train.seed,
        "batch_size": config.train.batch_size,
    }


def _data_kwargs(config) -> dict:
    d = config.dataset
    return dict(
        data_dir=d.data_dir,
        source=d.source,
        idx_dir=d.idx_dir,
        normalization=d.normalization,
        train_subset=d.train_subset,
        subset_seed=d.subset_seed,
        image_size=d.image_size,
        channel_stats=d.get("channel_stats", "dataset"),
    )


def setup_run(config) -> RunSetup:
    """Dataset info, model, optimizer and step counts of a (resolved) config."""
    info = input_pipeline.dataset_info(
        config.dataset.name,
        data_dir=config.dataset.data_dir,
        source=config.dataset.source,
        idx_dir=config.dataset.idx_dir,
    )
    n_train = info.num_train
    if config.dataset.train_subset is not None:
        if config.dataset.train_subset > n_train:
            raise config_lib.ConfigError(
                f"config.dataset.train_subset={config.dataset.train_subset} is larger than the "
                f"{n_train} training examples of {config.dataset.name}"
            )
        n_train = config.dataset.train_subset
    spe = input_pipeline.steps_per_epoch(n_train, config.train.batch_size)
    input_shape = _input_shape(config, info)
    model = build_model(config, info.num_classes, int(np.prod(input_shape)))
    lr_multipliers = None
    if config.model.parametrization == "mup":
        # Per-layer muP learning rates need the layer densities: the masks are a pure function
        # of (config, shapes), so they are planned here from abstract params.
        shapes = jax.eval_shape(_init_fn(model, input_shape), jax.random.PRNGKey(0))["params"]
        order = layer_order(config, shapes, input_shape, info.num_classes)
        masks, _ = make_masks(config, model, shapes, input_shape, info.num_classes, order=order)
        name, width, base, roles, _ = parametrization_args(config, shapes, masks, order)
        lr_multipliers = param_lib.lr_multipliers(shapes, name, width, base, roles, masks=masks)
    tx, schedule = make_optimizer(config, spe, lr_multipliers)
    total = (
        config.train.num_train_steps
        if config.train.num_train_steps > 0
        else config.train.num_epochs * spe
    )
    return RunSetup(
        model=model,
        tx=tx,
        schedule=schedule,
        info=info,
        steps_per_epoch=spe,
        num_train_examples=n_train,
        total_steps=total,
    )


def _input_shape(config, info) -> tuple:
    if config.dataset.name == "imagenet2012":
        s = config.dataset.image_size or 224
        return (s, s, 3)
    return tuple(info.image_shape)


def abstract_state_dict(config) -> dict:
    """The checkpoint structure of a run (real initial state; used as restore target)."""
    config = config_lib.resolve_config(config) if not config.is_locked else config
    setup = setup_run(config)
    state = create_train_state(
        config, setup.model, setup.tx, _input_shape(config, setup.info), setup.info.num_classes
    )
    return state_to_dict(state)


# ----------------------------------------------------------------------------- steps


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy. logits [B, C] (any float dtype), labels int [B] -> [B] f32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def train_step(
    state: TrainState, batch: dict, *, model, tx, schedule, axis_name: str | None = AXIS
) -> tuple[TrainState, dict]:
    """One SGD step on one device's shard; gradients averaged over ``axis_name``.

    batch: {'image': f32 [B, ...], 'label': int32 [B]}. Returns the new state and
    {'loss', 'accuracy', 'lr'} (global means when ``axis_name`` is set).
    """
    has_bn = bool(state.batch_stats)

    def loss_fn(params):
        variables = {"params": params}
        if has_bn:
            variables["batch_stats"] = state.batch_stats
            logits, new_vars = model.apply(
                variables, batch["image"], train=True, mutable=["batch_stats"]
            )
            new_bs = new_vars["batch_stats"]
        else:
            logits = model.apply(variables, batch["image"], train=True)
            new_bs = state.batch_stats
        loss = jnp.mean(cross_entropy(logits, batch["label"]))
        return loss, (logits, new_bs)

    (loss, (logits, new_bs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        loss = jax.lax.pmean(loss, axis_name)
        accuracy = jax.lax.pmean(accuracy, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, masks=state.masks)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "accuracy": accuracy, "lr": schedule(state.step)}
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=new_bs, opt_state=opt_state
    )
    return new_state, metrics


def eval_step(state: TrainState, batch: dict, *, model, axis_name: str | None = AXIS) -> dict:
    """Sums over one device's eval shard, psummed: {'loss_sum', 'correct', 'count'}.

    batch: {'image', 'label', 'mask'}; padded examples (mask False) count for nothing.
    """
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    logits = model.apply(variables, batch["image"], train=False)
    w = batch["mask"].astype(jnp.float32)
    out = {
        "loss_sum": jnp.sum(cross_entropy(logits, batch["label"]) * w),
        "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * w),
        "count": jnp.sum(w),
    }
    if axis_name is not None:
        out = jax.lax.psum(out, axis_name)
    return out


def make_p_steps(setup: RunSetup):
    """pmapped train and eval steps (state is donated in the train step)."""
    p_train = jax.pmap(
        functools.partial(train_step, model=setup.model, tx=setup.tx, schedule=setup.schedule),
        axis_name=AXIS,
        donate_argnums=(0,),
    )
    p_eval = jax.pmap(functools.partial(eval_step, model=setup.model), axis_name=AXIS)
    return p_train, p_eval


def evaluate(p_eval, state, eval_iter: Iterator[dict]) -> dict:
    """Test loss and accuracy (%) over every example of the eval split."""
    totals = None
    for batch in eval_iter:
        out = jax.device_get(jax.tree.map(lambda x: x[0], p_eval(state, batch)))
        totals = out if totals is None else jax.tree.map(np.add, totals, out)
    count = float(totals["count"])
    return {
        "test_loss": float(totals["loss_sum"]) / count,
        "test_accuracy": 100.0 * float(totals["correct"]) / count,
        "test_count": int(count),
    }


# ----------------------------------------------------------------------------- the loop


class MetricsLog:
    """Writes metrics as JSONL (process 0 only) and TensorBoard summaries via clu."""

    def __init__(self, workdir: str, resume_step: int):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, METRICS_FILE)
        self.writer = None
        if not self.enabled:
            return
        # Drop records written after the checkpoint we resume from (the run repeats them).
        if os.path.exists(self.path):
            with open(self.path) as f:
                kept = [
                    line for line in f if line.strip() and json.loads(line)["step"] <= resume_step
                ]
            with open(self.path, "w") as f:
                f.writelines(kept)
        from clu import metric_writers

        self.writer = metric_writers.create_default_writer(
            os.path.join(workdir, "tensorboard"), just_logging=False, asynchronous=False
        )

    def write(self, kind: str, step: int, values: dict):
        if not self.enabled:
            return
        record = {"kind": kind, "step": int(step), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        scalars = {
            f"{kind}/{k}": v
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.writer.write_scalars(int(step), scalars)

    def close(self):
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def _check_finite(step: int, values: dict, ckpt: ckpt_lib.Checkpointer):
    bad = {k: v for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        last = ckpt.latest_step()
        raise FloatingPointError(
            f"non-finite training metric(s) {bad} at step {step}; stopping. The last good "
            f"checkpoint (step {last}) in {ckpt.directory} is kept; lower optimizer.lr or check "
            "the data."
        )


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``metrics.jsonl`` in ``workdir`` (train, epoch and final records)."""
    with open(os.path.join(workdir, METRICS_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]


def _last_epoch_record(workdir: str) -> dict:
    if not os.path.exists(os.path.join(workdir, METRICS_FILE)):
        return {}
    epochs = [r for r in read_metrics(workdir) if r["kind"] == "epoch"]
    return epochs[-1] if epochs else {}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) training and evaluation; returns the final summary.

    Resume: if ``workdir`` has a checkpoint of the same run (fingerprint), training
    continues from its step with the same masks, optimizer state, rng, best accuracy,
    epoch running sums and input-stream position, so the result is bitwise identical to
    an uninterrupted run (CPU). A checkpoint of another run is refused.
    """
    config = config_lib.resolve_config(config)
    n_dev = jax.device_count()
    if config.train.batch_size % n_dev:
        raise config_lib.ConfigError(
            f"config.train.batch_size={config.train.batch_size} is not divisible by the "
            f"{n_dev} devices; use a multiple of {n_dev}"
        )
    if config.train.eval_batch_size % n_dev:
        raise config_lib.ConfigError(
            f"config.train.eval_batch_size={config.train.eval_batch_size} is not divisible by "
            f"the {n_dev} devices; use a multiple of {n_dev}"
        )

    setup = setup_run(config)
    ckpt = ckpt_lib.Checkpointer(
        workdir, run_fingerprint(config), max_to_keep=config.train.max_checkpoints_to_keep
    )
    ckpt.check_compatible()  # before any work is written
    if jax.process_index() == 0:
        ckpt_lib.write_config(workdir, config.to_dict())

    input_shape = _input_shape(config, setup.info)
    state = create_train_state(config, setup.model, setup.tx, input_shape, setup.info.num_classes)
    meta = {
        "best_test_accuracy": None,
        "best_epoch": None,
        "epoch_sums": {"loss": 0.0, "accuracy": 0.0, "steps": 0},
        "window_sums": {"loss": 0.0, "accuracy": 0.0, "steps": 0},
    }
    restored = ckpt.restore(state_to_dict(state))
    if restored is not None:
        state = state_from_dict(state, restored[0])
        meta.update({k: restored[1][k] for k in meta if k in restored[1]})
        logging.info("resumed from step %d", int(state.step))
    start_step = int(state.step)
    spe, total = setup.steps_per_epoch, setup.total_steps
    log = MetricsLog(workdir, start_step)

    p_train, p_eval = make_p_steps(setup)
    data_kw = _data_kwargs(config)
    train_iter = input_pipeline.create_train_iterator(
        config.dataset.name,
        global_batch_size=config.train.batch_size,
        seed=config.train.seed,
        start_step=start_step,
        augment=config.dataset.augment,
        prefetch=config.train.prefetch,
        **data_kw,
    )

    def eval_iter():
        return input_pipeline.create_eval_iterator(
            config.dataset.name,
            global_batch_size=config.train.eval_batch_size,
            split="test",
            **data_kw,
        )

    if jax.process_index() == 0:
        kept = int(masks_lib.count_kept(state.masks, state.params))
        logging.info(
            "model %s width %d: %d counted weights kept of %d (%d steps, %d per epoch)",
            config.model.name,
            config.model.width,
            kept,
            masks_lib.count_weights(state.params),
            total,
            spe,
        )

    state = jax_utils.replicate(state)
    # Running sums of the epoch and of the logging window; saved with checkpoints so that a
    # resumed run reports the same metrics as an uninterrupted one.
    sums, window = meta["epoch_sums"], meta["window_sums"]
    pending: list[dict] = []  # device metrics not yet pulled to the host
    t_window, timed_steps = time.time(), 0  # throughput counts this session's steps only
    t_start = time.time()
    steps_run = 0
    # The latest epoch record (kept when a finished run is started again: nothing to redo).
    summary = _last_epoch_record(workdir) if jax.process_index() == 0 else {}

    def flush(step):
        """Pulls pending step metrics to the host, in order (float64 sums)."""
        nonlocal pending
        for m in jax.device_get([jax.tree.map(lambda x: x[0], p) for p in pending]):
            loss, acc = float(m["loss"]), float(m["accuracy"])
            _check_finite(step, {"loss": loss}, ckpt)
            for d in (sums, window):
                d["loss"] += loss
                d["accuracy"] += acc
                d["steps"] += 1
        pending = []

    def host_state():
        return state_to_dict(jax_utils.unreplicate(state))

    try:
        for step in range(start_step, total):
            batch = next(train_iter)
            state, metrics = p_train(state, batch)
            pending.append(metrics)
            steps_run += 1
            timed_steps += 1
            done = step + 1
            epoch_end = done % spe == 0
            if done % config.train.log_every_steps == 0 or done == total or epoch_end:
                flush(done)
            if done % config.train.log_every_steps == 0 and window["steps"]:
                dt = time.time() - t_window
                lr = float(setup.schedule(step))
                eps = timed_steps * config.train.batch_size / max(dt, 1e-9)
                eta = (total - done) * dt / timed_steps
                values = {
                    "train_loss": window["loss"] / window["steps"],
                    "train_accuracy": 100.0 * window["accuracy"] / window["steps"],
                    "lr": lr,
                    "examples_per_sec": eps,
                }
                log.write("train", done, values)
                if jax.process_index() == 0:
                    logging.info(
                        "step %d/%d epoch %.2f loss %.4f acc %.2f%% lr %.4g %.0f ex/s ETA %s",
                        done,
                        total,
                        done / spe,
                        values["train_loss"],
                        values["train_accuracy"],
                        lr,
                        eps,
                        _fmt_seconds(eta),
                    )
                window.update(loss=0.0, accuracy=0.0, steps=0)
                t_window, timed_steps = time.time(), 0
            epoch = done // spe
            if (epoch_end and epoch % config.train.eval_every_epochs == 0) or done == total:
                ev = evaluate(p_eval, state, eval_iter())
                best = meta["best_test_accuracy"]
                if best is None or ev["test_accuracy"] > best:
                    meta["best_test_accuracy"], meta["best_epoch"] = ev["test_accuracy"], done / spe
                values = {
                    "epoch": done / spe,
                    "lr": float(setup.schedule(step)),
                    **ev,
                    "best_test_accuracy": meta["best_test_accuracy"],
                }
                if sums["steps"]:
                    values.update(
                        train_loss=sums["loss"] / sums["steps"],
                        train_accuracy=100.0 * sums["accuracy"] / sums["steps"],
                    )
                summary = values
                log.write("epoch", done, values)
                if jax.process_index() == 0:
                    logging.info(
                        "epoch %.2f: test acc %.2f%% (best %.2f%%) test loss %.4f train acc %s",
                        done / spe,
                        ev["test_accuracy"],
                        meta["best_test_accuracy"],
                        ev["test_loss"],
                        values.get("train_accuracy"),
                    )
            if epoch_end:
                sums.update(loss=0.0, accuracy=0.0, steps=0)
            if done % config.train.checkpoint_every_steps == 0 or done == total:
                flush(done)
                ckpt.save(done, host_state(), meta)
    finally:
        log.close()
        ckpt.close()

    wall = time.time() - t_start
    final = {
        "step": total,
        "best_test_accuracy": meta["best_test_accuracy"],
        "best_epoch": meta["best_epoch"],
        "final_test_accuracy": summary.get("test_accuracy"),
        "final_train_accuracy": summary.get("train_accuracy"),
        "kept_weights": int(
            masks_lib.count_kept(
                jax_utils.unreplicate(state).masks, jax_utils.unreplicate(state).params
            )
        ),
        "total_weights": int(masks_lib.count_weights(jax_utils.unreplicate(state).params)),
        "wall_time_s": wall,
        "steps_this_session": steps_run,
    }
    if jax.process_index() == 0:
        with open(os.path.join(workdir, SUMMARY_FILE), "w") as f:
            json.dump(final, f, indent=2)
    return final


def _fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{(s % 3600) // 60:02d}m{s % 60:02d}s"
