"""Training: the pmapped train and eval steps and the loop ``train_and_evaluate``.

Data flow of one run (docs/architecture.md): config (validated) -> dataset facts ->
``setup.build_run`` (model, forward order, plan, masks, optimizer) -> restore the newest
checkpoint or ``setup.init_state`` (masked weights 0 before the first forward) -> pmapped
``train_step`` (grads and BatchNorm batch statistics averaged over all devices of all hosts
with axis ``'batch'``; the masked optimizer keeps masked weights and momentum at 0) ->
metrics -> eval every epoch (padded last batch, every test example counted once) -> best
test accuracy -> orbax checkpoint -> JSONL / TensorBoard.

BatchNorm across devices: every replica holds the same parameters and running statistics,
so eval and checkpoints read them from replica 0. The loop's cadence (log, eval, checkpoint),
its clock and the divergence checks are ``loop.py``'s; this module hands it the steps.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from widesparse_jax import checkpoint as ckpt_lib
from widesparse_jax import compile_cache, data, paths, preflight, setup
from widesparse_jax import config as config_lib
from widesparse_jax import lock as lock_lib
from widesparse_jax import loop as loop_lib
from widesparse_jax import masks as masks_lib
from widesparse_jax import metrics as metrics_lib
from widesparse_jax.setup import AXIS, TrainState
from widesparse_jax.sparse import loop as sparse_loop

__all__ = ["TrainState", "train_step", "eval_step", "evaluate", "train_and_evaluate"]


# ----------------------------------------------------------------------------- steps


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy. logits [B, C] (any float dtype), labels int [B] -> [B] f32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _forward_update(state: TrainState) -> dict:
    del state  # masks act in the optimizer only (masked weights are kept at exactly 0)
    return {}


def _forward_masked(state: TrainState) -> dict:
    return {"masks": state.masks}  # the forward pass computes with where(mask, w, 0)


# config.sparsity.apply -> extra model.apply kwargs of the training forward pass. In every
# mode the optimizer masks too, so masked weights and their momentum stay exactly 0.
# 'sparse': runs that sparse/loop.py computes sparse never reach train_step; layers at or above
# sparsity.sparse_below_density stay dense-masked, i.e. update masking.
FORWARD_MODES = {"update": _forward_update, "forward": _forward_masked, "sparse": _forward_update}


def train_step(
    state: TrainState,
    batch: dict,
    *,
    model,
    tx,
    schedule,
    axis_name: str | None = AXIS,
    mask_apply: str = "update",
) -> tuple[TrainState, dict]:
    """One SGD step on one device's shard; gradients averaged over ``axis_name``.

    batch: {'image': f32 [B, ...], 'label': int32 [B]}. Returns the new state and
    {'loss', 'accuracy', 'lr'} (global means when ``axis_name`` is set).
    ``mask_apply``: ``config.sparsity.apply`` (a key of :data:`FORWARD_MODES`).
    """
    has_bn = bool(state.batch_stats)
    forward_kw = FORWARD_MODES[mask_apply](state)

    def loss_fn(params):
        variables = {"params": params}
        if has_bn:
            variables["batch_stats"] = state.batch_stats
            logits, new_vars = model.apply(
                variables, batch["image"], train=True, mutable=["batch_stats"], **forward_kw
            )
            new_bs = new_vars["batch_stats"]
        else:
            logits = model.apply(variables, batch["image"], train=True, **forward_kw)
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


def make_p_steps(run: setup.Run):
    """pmapped train and eval steps (state is donated in the train step)."""
    mask_apply = run.config.sparsity.get("apply", "update")
    p_train = jax.pmap(
        functools.partial(
            train_step, model=run.model, tx=run.tx, schedule=run.schedule, mask_apply=mask_apply
        ),
        axis_name=AXIS,
        donate_argnums=(0,),
    )
    p_eval = jax.pmap(functools.partial(eval_step, model=run.model), axis_name=AXIS)
    return p_train, p_eval


def evaluate(p_eval, state, eval_iter: Iterator[dict]) -> dict:
    """Test loss and accuracy (%) over every example of the eval split."""
    # Steps are dispatched back to back (no host sync per batch); the per-batch sums are
    # fetched once and added on the host in batch order.
    outs = [jax.tree.map(lambda x: x[0], p_eval(state, batch)) for batch in eval_iter]
    totals = None
    for out in jax.device_get(outs):
        totals = out if totals is None else jax.tree.map(np.add, totals, out)
    count = float(totals["count"])
    return {
        "test_loss": float(totals["loss_sum"]) / count,
        "test_accuracy": 100.0 * float(totals["correct"]) / count,
        "test_count": int(count),
    }


# ----------------------------------------------------------------------------- data


def data_spec(config) -> data.DataSpec:
    return data.DataSpec.from_config(config.dataset)


def _train_iterator(config, start_step: int):
    t = config.train
    return data.create_train_iterator(
        data_spec(config), t.batch_size, t.seed, start_step=start_step, prefetch=t.prefetch
    )


def _eval_iterator(config):
    return data.create_eval_iterator(data_spec(config), config.train.eval_batch_size)


# ----------------------------------------------------------------------------- the loop


def _make_loop(
    config, run: setup.Run, ckpt, workdir: str, state, progress, compiles_at_start
) -> loop_lib.Loop:
    """The run's :class:`loop.Loop` with its steps: sparse (``sparse.loop``) or dense-masked."""
    mode = sparse_loop.make_mode(run)  # None: dense-masked steps
    p_train, p_eval = mode.p_steps() if mode else make_p_steps(run)

    def run_eval(replicated_state) -> dict:
        return evaluate(p_eval, replicated_state, _eval_iterator(config))

    return loop_lib.Loop(
        config,
        run,
        ckpt,
        workdir,
        state,
        progress,
        mode=mode,
        p_train=p_train,
        evaluate=run_eval,
        compiles_at_start=compiles_at_start,
    )


def _restore_or_init(run: setup.Run, ckpt: ckpt_lib.Checkpointer):
    """``(state, progress)``: the newest intact checkpoint's, or the run's initial state.

    Damaged newer checkpoints (logged by path) are moved aside so the run can write them again.
    """
    state = setup.init_state(run)
    step = ckpt.intact_step()
    ckpt.set_aside_newer(step)
    restored = ckpt.restore(setup.state_to_dict(state), step=step)
    if restored is None:
        return state, metrics_lib.RunProgress()
    state = setup.state_from_dict(state, restored[0])
    logging.info("resumed from step %d", int(state.step))
    return state, metrics_lib.RunProgress.from_meta(restored[1])


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, resume_diverged: bool = False
) -> dict:
    """Runs (or resumes) training and evaluation; returns the final summary.

    Resume: if ``workdir`` has a checkpoint of the same run (fingerprint), training
    continues from its step with the same masks, optimizer state, rng, best accuracy,
    epoch running sums and input-stream position, so the result is bitwise identical to
    an uninterrupted run (CPU). A checkpoint of another run is refused.
    ``resume_diverged``: resume a diverged run's last finite checkpoint with another
    ``optimizer.lr`` (the only fingerprint field then allowed to differ).
    """
    compiles_at_start = compile_cache.track().copy()  # XLA compile seconds of this session
    config = config_lib.resolve_config(config)
    run = preflight.check_run(config, workdir)  # every refusal before anything is written
    if config.model.base_width == config.model.width and jax.process_index() == 0:
        logging.info(
            "model.base_width == model.width (%d): training the dense net", run.config.model.width
        )
    lock = lock_lib.acquire(workdir) if jax.process_index() == 0 else None
    try:
        return _train_locked(run, workdir, resume_diverged, compiles_at_start)
    finally:
        if lock is not None:
            lock_lib.release(lock)


def _train_locked(run: setup.Run, workdir: str, resume_diverged: bool, compiles_at_start) -> dict:
    config = run.config
    ckpt = ckpt_lib.Checkpointer(
        workdir,
        config_lib.run_fingerprint(config),
        max_to_keep=config.train.max_checkpoints_to_keep,
        may_differ=("lr",) if resume_diverged else (),
        sane_loss_factor=config.train.sane_loss_factor,
    )
    ckpt.check_compatible()  # before any work is written
    if jax.process_index() == 0:
        ckpt_lib.write_config(workdir, config.to_dict())
    state, progress = _restore_or_init(run, ckpt)
    start_step = int(state.step)
    train_iter = _train_iterator(config, start_step)
    if jax.process_index() == 0:
        logging.info(
            "model %s width %d: %d counted weights kept of %d (%d steps, %d per epoch)",
            config.model.name,
            config.model.width,
            int(masks_lib.count_kept(state.masks, state.params)),
            masks_lib.count_weights(state.params),
            run.total_steps,
            run.steps_per_epoch,
        )
    loop = _make_loop(config, run, ckpt, workdir, state, progress, compiles_at_start)
    try:
        for step in range(start_step, run.total_steps):
            t0 = time.perf_counter()
            batch = next(train_iter)
            loop.clock.waited(time.perf_counter() - t0)
            loop.step(step, batch)
    finally:
        loop.log.close()
        ckpt.close()
    final = loop.final_summary()
    summary_path = paths.path(workdir, metrics_lib.SUMMARY_FILE)
    # A no-op restart of a finished run keeps its summary (wall time, steps) as written.
    if jax.process_index() == 0 and (loop.clock.steps_run or not summary_path.exists()):
        metrics_lib.write_summary(workdir, final)
    return final
