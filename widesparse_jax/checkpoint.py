"""Checkpoints with orbax: save, resume exactly, refuse a checkpoint of another run.

A checkpoint at step s holds two items:

* ``state``: the host copy of the train state as a plain nested dict
  ``{step, params, batch_stats, opt_state, masks, rng}`` (``opt_state`` through
  ``flax.serialization.to_state_dict``; masks are bool arrays, ``None`` = dense);
* ``meta`` (JSON): the run fingerprint (what must match to resume), best test
  accuracy so far and the running sums of the epoch in progress, so that a resumed run
  reports the same per-epoch metrics as an uninterrupted one.

Every process calls ``save`` (orbax writes each process's shard to the shared workdir);
the data position is the step itself: the input pipeline skips to it on resume.

Integrity: after orbax commits a step, process 0 writes ``<step>/sha256.json`` (the
checksum of every file, ``widesparse_jax.integrity``). Reading a checkpoint first verifies
it; a damaged one (flipped bytes, truncated, garbage or missing files, no manifest although
its meta says it was written with one) is reported by path and skipped: the run resumes
from the newest intact step and, once past the fingerprint check, process 0 moves the damaged
newer steps to ``WORKDIR/checkpoints_corrupt/`` (nothing is deleted). No intact step at
all raises :class:`CheckpointCorruptError`. Multi-host: only process 0 verifies and moves;
its verdict is broadcast (:func:`agree`), so every process resumes the same step.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from widesparse_jax import integrity, paths, sanity

CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "checkpoints_corrupt"  # damaged steps are moved here, never deleted
DIVERGED_DIR = "checkpoints_diverged"  # steps newer than the newest sane one, after a divergence
CONFIG_FILE = "config.json"
_META_FILE = os.path.join("meta", "metadata")  # where orbax's JsonSave puts the meta item


class CheckpointMismatchError(ValueError):
    """The workdir holds a checkpoint of a different run (other width, masks, data...)."""


class CheckpointCorruptError(CheckpointMismatchError):
    """No checkpoint of the workdir passes verification (or the one asked for fails it)."""


def _legacy_meta(step_dir: str) -> bool:
    """True when the step's meta is readable and predates checksums (no 'integrity' key)."""
    try:
        with paths.path(step_dir, _META_FILE).open() as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "integrity" not in meta


def step_problem(step_dir: str) -> str | None:
    """What is wrong with the checkpoint in ``step_dir``; None when it is intact.

    A checkpoint written before checksums existed (no manifest, meta without 'integrity')
    cannot be verified: it is accepted with a warning.
    """
    problem = integrity.verify(step_dir)
    if problem and problem.startswith("no checksum manifest") and _legacy_meta(step_dir):
        logging.warning("checkpoint %s predates checksums: not verified", step_dir)
        return None
    return problem


def fingerprint_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Lists 'key: saved X, now Y' for every fingerprint entry that differs."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{k}: checkpoint has {saved.get(k)!r}, this config has {current.get(k)!r}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]


class Checkpointer:
    """Thin wrapper around ``ocp.CheckpointManager`` for one run's workdir.

    Args:
      workdir: the run directory; checkpoints go to ``workdir/checkpoints``.
      fingerprint: JSON-able dict of everything that must match to resume (model, width,
        masks seed, dataset, ...). A checkpoint with a different fingerprint is refused.
      max_to_keep: number of checkpoints kept on disk, besides the newest sane one.
      sane_loss_factor: ``config.train.sane_loss_factor`` (``widesparse_jax.sanity``).
    """

    def __init__(
        self,
        workdir: str,
        fingerprint: Mapping[str, Any],
        max_to_keep: int = 2,
        may_differ: tuple = (),
        sane_loss_factor: float = sanity.DEFAULT_FACTOR,
    ):
        self.directory = paths.join(workdir, CHECKPOINT_DIR)  # absolute, or the URI
        self.fingerprint = dict(fingerprint)
        self.may_differ = tuple(may_differ)  # fingerprint keys allowed to change (e.g. 'lr')
        self.health = sanity.Health(sane_loss_factor)  # fed by the loop: Health.observe
        keep = ocp.checkpoint_managers.AnyPreservationPolicy(
            [ocp.checkpoint_managers.LatestN(n=max_to_keep), sanity.KeepNewestSane(self.health)]
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(preservation_policy=keep, create=True),
            item_names=("state", "meta"),
        )
        self._problems: dict[int, str | None] = {}  # verification results, by step
        self._intact: int | None | object = _UNSET  # intact_step(), agreed by all processes

    def latest_step(self) -> int | None:
        """The newest step on disk (intact or not); see :meth:`intact_step`."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every step on disk, oldest first (intact or not)."""
        return sorted(self._manager.all_steps())

    def step_dir(self, step: int) -> str:
        return os.fspath(paths.path(self.directory, str(int(step))))

    def problem(self, step: int) -> str | None:
        """Verifies ``step`` once (cached); logs one line naming a damaged checkpoint."""
        if step not in self._problems:
            problem = step_problem(self.step_dir(step))
            if problem:
                logging.warning(
                    "checkpoint %s fails verification (%s): skipped", self.step_dir(step), problem
                )
            self._problems[step] = problem
        return self._problems[step]

    def intact_step(self) -> int | None:
        """The newest step that passes verification; None when there is no checkpoint.

        Multi-host: process 0 verifies and broadcasts its verdict, so every process resumes
        the same step (see :func:`agree`); the others trust it without re-hashing. Cached
        until the next save. Raises CheckpointCorruptError when none is intact.
        """
        if self._intact is _UNSET:
            multi = jax.process_count() > 1
            step = agree(
                self._local_intact_step, jax.process_index() == 0, _broadcast if multi else None
            )
            if step is not None:
                self._problems.setdefault(step, None)  # process 0 verified it
            self._intact = step
        return self._intact

    def _local_intact_step(self) -> int | None:
        steps = sorted(self._manager.all_steps(), reverse=True)
        for step in steps:
            if self.problem(step) is None:
                return step
        if steps:
            found = "; ".join(f"{self.step_dir(s)}: {self._problems[s]}" for s in steps)
            raise CheckpointCorruptError(
                f"no intact checkpoint in {self.directory} ({found}). Nothing was changed; "
                "move the damaged steps away to start from scratch, or use a new --workdir."
            )
        return None

    def set_aside_newer(self, step: int | None) -> list[str]:
        """Moves damaged steps newer than ``step`` to ``WORKDIR/checkpoints_corrupt/``.

        Called once the resume is accepted, so that the run can write those steps again.
        Process 0 moves; every process then re-reads the step list. Returns the new paths.
        """
        moved = []
        if jax.process_index() == 0:  # only process 0 looks: the others may list other steps
            for s in sorted(s for s in self._manager.all_steps() if step is None or s > step):
                moved.append(_move_aside(self.step_dir(s), self.workdir()))
                logging.warning("moved damaged checkpoint %s to %s", self.step_dir(s), moved[-1])
        if jax.process_count() > 1:  # every process, whatever it moved: no one waits alone
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("checkpoint_set_aside")
            self._manager.reload()
        elif moved:
            self._manager.reload()
        return moved

    def read_meta(self, step: int | None = None) -> dict | None:
        step = self.intact_step() if step is None else step
        if step is None:
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def check_compatible(self, step: int | None = None) -> None:
        """Raises CheckpointMismatchError if the newest intact checkpoint (or ``step``) is
        another run's; CheckpointCorruptError if none is intact."""
        step = self.intact_step() if step is None else step
        meta = self.read_meta(step)
        if meta is None:
            return
        saved = {k: v for k, v in meta.get("fingerprint", {}).items() if k not in self.may_differ}
        now = {k: v for k, v in self.fingerprint.items() if k not in self.may_differ}
        diffs = fingerprint_differences(saved, now)
        if diffs:
            raise CheckpointMismatchError(
                f"the checkpoint in {self.directory} (step {step}) was written by a "
                "different run; refusing to resume it. Differences:\n  "
                + "\n  ".join(diffs)
                + "\nUse a new --workdir, or the original config."
            )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict] | None:
        """Restores the newest intact checkpoint (or ``step``) into ``abstract_state``'s structure.

        Reads only (damaged newer steps stay where they are; see :meth:`set_aside_newer`).

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` (or arrays) with the saved
            structure (``TrainState`` as a state dict).
          step: a given step (CheckpointCorruptError if it fails verification).
        Returns:
          ``(state, meta)`` or None when the workdir has no checkpoint.
        """
        if step is None:
            step = self.intact_step()
        elif self.problem(step):
            raise CheckpointCorruptError(
                f"checkpoint {self.step_dir(step)} fails verification: {self.problem(step)}"
            )
        if step is None:
            return None
        self.check_compatible(step)
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointMismatchError(
                f"checkpoint step {step} in {self.directory} does not match this run's state "
                f"structure (corrupt, or written by another version): {e}"
            ) from e
        meta = dict(restored["meta"])
        self.health.load(meta.get("sanity"))
        self.health.watch(step)  # the next train step's loss judges its weights
        return restored["state"], meta

    def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
        """Saves ``state`` (host pytree) and ``meta`` (JSON-able) at ``step``; blocks until written."""
        meta = dict(meta, fingerprint=self.fingerprint, step=int(step), integrity=integrity.FORMAT)
        meta["sanity"] = self.health.to_meta(self.all_steps())
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        if jax.process_index() == 0:  # orbax has committed every process's files
            integrity.write_manifest(self.step_dir(step))
        self._problems.pop(int(step), None)
        self._intact = _UNSET
        self.health.watch(step)

    def set_aside_diverged(self) -> str:
        """After a divergence: names the newest sane checkpoint and (process 0) moves every
        newer step to ``WORKDIR/checkpoints_diverged/``, so that a resume starts from it.

        Returns the sentences for the divergence message. Nothing is moved when no
        checkpoint is sane (nothing to resume) or the newest one is.
        """
        steps = self.all_steps()
        if not steps:
            return "No checkpoint was written yet (the run diverged before its first one)."
        h = self.health
        newest = h.newest_sane(steps)
        judged = "; ".join(h.describe(s) for s in steps)
        rule = h.rule()
        if newest is None:
            return (
                f"No checkpoint in {self.directory} holds sane weights (the loss computed with "
                f"its weights must be {rule}; {judged}). Start again with a lower lr."
            )
        newer = [s for s in steps if s > newest]
        note = f"The newest checkpoint with sane weights is step {newest} in {self.directory}"
        note += f" (the loss computed with its weights is {rule}; {judged})."
        if newer and jax.process_index() == 0:
            moved = [_move_aside(self.step_dir(s), self.workdir(), DIVERGED_DIR) for s in newer]
            note += f" Moved the newer steps {newer} to {epath.Path(moved[0]).parent}."
        return note + (
            " Nothing non-finite was saved; resume from it with a lower lr: "
            "--resume_diverged --config.optimizer.lr=<lower>."
        )

    def workdir(self) -> str:
        return os.fspath(epath.Path(self.directory).parent)

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


_UNSET = object()
_NO_CHECKPOINT, _NONE_INTACT = -1, -2  # broadcast codes besides a step number


def _broadcast(code: int) -> int:
    """Process 0's ``code`` on every process (a collective: every process must call it)."""
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(code)))


def agree(local_verdict, is_primary: bool, broadcast) -> int | None:
    """Process 0's resume step on every process: the decision of :meth:`Checkpointer.intact_step`.

    Args:
      local_verdict: ``() -> step | None``, may raise CheckpointCorruptError; called on
        process 0 only (the others would hash the same shared files and could, on a lagging
        or caching file system, see another verdict: a deadlock or a diverged run).
      is_primary: True on process 0.
      broadcast: ``code -> process 0's code`` (a collective), or None for a single process.
    Returns:
      the step every process restores, or None (no checkpoint). Raises
      CheckpointCorruptError on every process when process 0 found none intact.
    """
    code, error = _NONE_INTACT, None
    if is_primary:
        try:
            step = local_verdict()
            code = _NO_CHECKPOINT if step is None else int(step)
        except CheckpointCorruptError as e:
            error = e
    if broadcast is not None:
        code = broadcast(code)  # process 0 sends even when it is about to raise
    if error is not None:
        raise error
    if code == _NONE_INTACT:
        raise CheckpointCorruptError(
            "process 0 found no intact checkpoint (its log names each damaged step)"
        )
    return None if code == _NO_CHECKPOINT else code


def _move_aside(step_dir: str, workdir: str, into: str = CORRUPT_DIR) -> str:
    """Moves ``step_dir`` into ``workdir/into/`` (a free name there); the new path."""
    target_root = paths.path(workdir, into)
    target_root.mkdir(parents=True, exist_ok=True)
    name, n = epath.Path(step_dir).name, 0
    target = target_root / name
    while target.exists():
        n += 1
        target = target_root / f"{name}.{n}"
    # Local: one os.replace. Remote: the store's rename (copy + delete of each object).
    epath.Path(step_dir).replace(target)
    return os.fspath(target)


def write_config(workdir: str, config_dict: Mapping[str, Any]) -> None:
    """Writes the resolved config as JSON beside the checkpoints (process 0 only)."""
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    text = json.dumps(config_dict, indent=2, sort_keys=True, default=list)
    paths.write_atomic(paths.path(workdir, CONFIG_FILE), text)


def read_config(workdir: str):
    """Reads the config a run wrote into its workdir, as a ConfigDict."""
    import ml_collections

    path = paths.path(workdir, CONFIG_FILE)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is {workdir!r} the workdir of a training run?")
    with path.open() as f:
        d = json.load(f)
    for key in ("milestones", "dense_layers"):
        for section in d.values():
            if isinstance(section, dict) and isinstance(section.get(key), list):
                section[key] = tuple(section[key])
    return ml_collections.ConfigDict(d)
