"""The training loop's machinery: one run's cadence (log, eval, checkpoint), its clock, and
the divergence checks.

``train.py`` builds the pmapped steps and hands them to :class:`Loop` (the train step and an
``evaluate(state) -> metrics`` function), so this module imports no step code and no module
imports it but ``train``. State lives on the devices (replicated), progress and logs on the
host; step metrics are pulled to the host only at log / eval / checkpoint points.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from absl import logging
from flax import jax_utils

from widesparse_jax import checkpoint as ckpt_lib
from widesparse_jax import compile_cache, setup
from widesparse_jax import masks as masks_lib
from widesparse_jax import metrics as metrics_lib


def _all_finite(tree) -> jax.Array:
    """True when every floating leaf of ``tree`` is finite (one fused reduction)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


_p_all_finite = jax.pmap(_all_finite)


def _divergence_message(step: int, what: str, ckpt: ckpt_lib.Checkpointer) -> str:
    # names the newest checkpoint with sane weights and moves the newer ones aside
    return f"non-finite {what} at step {step}; stopping. {ckpt.set_aside_diverged()}"


def _check_finite(step: int, values: dict, ckpt: ckpt_lib.Checkpointer) -> None:
    bad = {k: v for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise FloatingPointError(_divergence_message(step, f"training metric(s) {bad}", ckpt))


@functools.cache
def _to_step_layout() -> Callable:
    """A pmapped identity over ``AXIS`` (one function, so its program is compiled once)."""
    return jax.pmap(lambda x: x, axis_name=setup.AXIS, donate_argnums=0)


def replicate(tree):
    """``tree`` replicated over the local devices, placed the way the pmapped steps place
    their outputs. ``jax_utils.replicate`` alone gives another sharding (mesh axis
    ``_device_put_sharded``, not ``AXIS``), and pmap compiles its program again for every new
    input sharding: the train step would be compiled twice, at step 1 and at step 2."""
    return _to_step_layout()(jax_utils.replicate(tree))


def _fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{(s % 3600) // 60:02d}m{s % 60:02d}s"


@dataclasses.dataclass
class Clock:
    """Wall time of the run and of the logging window (this session's steps only)."""

    start: float = dataclasses.field(default_factory=time.time)
    window_start: float = dataclasses.field(default_factory=time.time)
    window_steps: int = 0
    steps_run: int = 0
    window_wait: float = 0.0  # seconds blocked on next(train_iter) in this window
    total_wait: float = 0.0

    def waited(self, seconds: float) -> None:
        self.window_wait += seconds
        self.total_wait += seconds

    def tick(self) -> None:
        self.window_steps += 1
        self.steps_run += 1

    def restart_window(self) -> None:
        self.window_start, self.window_steps, self.window_wait = time.time(), 0, 0.0


class Loop:
    """One run's training loop: state on the devices, progress and logs on the host."""

    def __init__(
        self,
        config,
        run: setup.Run,
        ckpt,
        workdir: str,
        state,
        progress,
        *,
        mode,
        p_train: Callable,
        evaluate: Callable[..., dict],
        compiles_at_start: compile_cache.CompileStats,
    ):
        """``state``: the host TrainState (dense masked); ``mode``: ``sparse.loop.make_mode``'s
        result (None: dense-masked steps); ``p_train(state, batch) -> (state, metrics)``;
        ``evaluate(replicated_state) -> {'test_loss', 'test_accuracy', 'test_count'}``;
        ``compiles_at_start``: a copy of :func:`compile_cache.track`'s count when the session
        started."""
        self.config, self.run, self.ckpt = config, run, ckpt
        self.mode = mode
        self.state = replicate(self.mode.enter(state) if self.mode else state)
        self.progress = progress
        self.p_train, self.evaluate = p_train, evaluate
        self.log = metrics_lib.MetricsLog(workdir, int(state.step))
        self.pending: list[dict] = []  # device metrics not yet pulled to the host
        self.clock = Clock()
        # XLA compile seconds and cache hits of this session (train_and_evaluate's start).
        self.compiles = compile_cache.track()
        self.compiles_at_start = compiles_at_start
        self.startup: dict = {}  # filled at this session's first step
        self.primary = jax.process_index() == 0
        # The latest epoch record (kept when a finished run is started again).
        self.summary = metrics_lib.last_epoch_record(workdir) if self.primary else {}

    def flush(self, step: int) -> None:
        """Pulls pending step metrics to the host, in order (float64 sums)."""
        host = jax.device_get([jax.tree.map(lambda x: x[0], p) for p in self.pending])
        first = step - len(host)  # 0-based index of the first pending train step
        for i, m in enumerate(host):
            loss, acc = float(m["loss"]), float(m["accuracy"])
            self.ckpt.health.observe(first + i, loss)  # judges the checkpoint of step first+i
            _check_finite(step, {"loss": loss}, self.ckpt)
            self.progress.add_step(loss, acc)
        self.pending = []
        if not bool(_p_all_finite(self.state.params)[0]):
            raise FloatingPointError(_divergence_message(step, "parameters", self.ckpt))

    def log_window(self, step: int, done: int) -> None:
        window, clock, t = self.progress.window, self.clock, self.config.train
        dt = time.time() - clock.window_start
        lr = float(self.run.schedule(step))
        eps = clock.window_steps * t.batch_size / max(dt, 1e-9)
        eta = (self.run.total_steps - done) * dt / clock.window_steps
        values = {**window.means(), "lr": lr, "examples_per_sec": eps}
        values["input_wait_fraction"] = clock.window_wait / max(dt, 1e-9)
        self.log.write("train", done, values)
        if self.primary:
            logging.info(
                "step %d/%d epoch %.2f loss %.4f acc %.2f%% lr %.4g %.0f ex/s input wait %.0f%% ETA %s",
                done,
                self.run.total_steps,
                done / self.run.steps_per_epoch,
                values["train_loss"],
                values["train_accuracy"],
                lr,
                eps,
                100.0 * values["input_wait_fraction"],
                _fmt_seconds(eta),
            )
        window.reset()
        clock.restart_window()

    def evaluate_epoch(self, step: int, done: int) -> None:
        epoch = done / self.run.steps_per_epoch
        ev = self.evaluate(self.state)
        self.progress.record_eval(ev["test_accuracy"], epoch)
        values = {
            "epoch": epoch,
            "lr": float(self.run.schedule(step)),
            **ev,
            "best_test_accuracy": self.progress.best_test_accuracy,
        }
        if self.progress.epoch.steps:
            values.update(self.progress.epoch.means())
        self.summary = values
        self.log.write("epoch", done, values)
        if self.primary:
            logging.info(
                "epoch %.2f: test acc %.2f%% (best %.2f%%) test loss %.4f train acc %s",
                epoch,
                ev["test_accuracy"],
                self.progress.best_test_accuracy,
                ev["test_loss"],
                values.get("train_accuracy"),
            )

    def save(self, done: int) -> None:
        host = setup.state_to_dict(self.dense_state())
        self.ckpt.save(done, host, self.progress.to_meta())

    def step(self, step: int, batch: dict) -> None:
        """Train step ``step`` (0-based) and whatever falls due after it."""
        t, run = self.config.train, self.run
        self.state, metrics = self.p_train(self.state, batch)
        self.pending.append(metrics)
        self.clock.tick()
        done = step + 1
        if self.clock.steps_run == 1:
            self.report_startup(done, metrics)
        epoch_end = done % run.steps_per_epoch == 0
        if done % t.log_every_steps == 0 or done == run.total_steps or epoch_end:
            self.flush(done)
        if done % t.log_every_steps == 0 and self.progress.window.steps:
            self.log_window(step, done)
        epoch = done // run.steps_per_epoch
        if (epoch_end and epoch % t.eval_every_epochs == 0) or done == run.total_steps:
            self.evaluate_epoch(step, done)
        if epoch_end:
            self.progress.epoch.reset()
        if done % t.checkpoint_every_steps == 0 or done == run.total_steps:
            self.flush(done)
            self.save(done)

    def report_startup(self, done: int, metrics) -> None:
        """Logs (and keeps for the summary) how long this launch took to finish its first
        step, and how much of that was XLA compilation (persistent-cache hits load instead)."""
        jax.block_until_ready(metrics)
        compiled = self.compiles.since(self.compiles_at_start)
        self.startup = {
            "first_step_s": time.time() - compile_cache.process_start_time(),
            "first_step_compile_s": compiled.seconds,
            "first_step_compile_cache_hits": compiled.cache_hits,
        }
        if self.primary:
            logging.info(
                "step %d done %.1f s after launch: XLA compilation %.1f s "
                "(%d compilations, %d loaded from the persistent cache)",
                done,
                self.startup["first_step_s"],
                compiled.seconds,
                compiled.compilations,
                compiled.cache_hits,
            )

    def dense_state(self):
        """The host TrainState in dense masked form (as checkpoints store it)."""
        state = jax_utils.unreplicate(self.state)
        return self.mode.leave(state) if self.mode else state

    def final_summary(self) -> dict:
        state = self.dense_state()
        return {
            "step": self.run.total_steps,
            "best_test_accuracy": self.progress.best_test_accuracy,
            "best_epoch": self.progress.best_epoch,
            "final_test_accuracy": self.summary.get("test_accuracy"),
            "final_train_accuracy": self.summary.get("train_accuracy"),
            "kept_weights": int(masks_lib.count_kept(state.masks, state.params)),
            "total_weights": int(masks_lib.count_weights(state.params)),
            "wall_time_s": time.time() - self.clock.start,
            "steps_this_session": self.clock.steps_run,
            "input_wait_s": self.clock.total_wait,
            **self.startup,
            **self.compiles.since(self.compiles_at_start).as_dict(),
        }
