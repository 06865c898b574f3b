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
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"


class CheckpointMismatchError(ValueError):
    """The workdir holds a checkpoint of a different run (other width, masks, data...)."""


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
      max_to_keep: number of checkpoints kept on disk.
    """

    def __init__(
        self,
        workdir: str,
        fingerprint: Mapping[str, Any],
        max_to_keep: int = 2,
        may_differ: tuple = (),
    ):
        self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
        self.fingerprint = dict(fingerprint)
        self.may_differ = tuple(may_differ)  # fingerprint keys allowed to change (e.g. 'lr')
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def read_meta(self, step: int | None = None) -> dict | None:
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def check_compatible(self) -> None:
        """Raises CheckpointMismatchError if the latest checkpoint belongs to another run."""
        meta = self.read_meta()
        if meta is None:
            return
        saved = {k: v for k, v in meta.get("fingerprint", {}).items() if k not in self.may_differ}
        now = {k: v for k, v in self.fingerprint.items() if k not in self.may_differ}
        diffs = fingerprint_differences(saved, now)
        if diffs:
            raise CheckpointMismatchError(
                f"the checkpoint in {self.directory} (step {self.latest_step()}) was written by a "
                "different run; refusing to resume it. Differences:\n  "
                + "\n  ".join(diffs)
                + "\nUse a new --workdir, or the original config."
            )

    def restore(self, abstract_state: Any) -> tuple[Any, dict] | None:
        """Restores the latest checkpoint into the structure of ``abstract_state``.

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` (or arrays) with the saved
            structure (``TrainState`` as a state dict).
        Returns:
          ``(state, meta)`` or None when the workdir has no checkpoint.
        """
        step = self.latest_step()
        if step is None:
            return None
        self.check_compatible()
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
        return restored["state"], dict(restored["meta"])

    def save(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
        """Saves ``state`` (host pytree) and ``meta`` (JSON-able) at ``step``; blocks until written."""
        meta = dict(meta, fingerprint=self.fingerprint, step=int(step))
        self._manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def write_config(workdir: str, config_dict: Mapping[str, Any]) -> None:
    """Writes the resolved config as JSON beside the checkpoints (process 0 only)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config_dict, f, indent=2, sort_keys=True, default=list)
    os.replace(tmp, path)


def read_config(workdir: str):
    """Reads the config a run wrote into its workdir, as a ConfigDict."""
    import ml_collections

    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} the workdir of a training run?")
    with open(path) as f:
        d = json.load(f)
    for key in ("milestones", "dense_layers"):
        for section in d.values():
            if isinstance(section, dict) and isinstance(section.get(key), list):
                section[key] = tuple(section[key])
    return ml_collections.ConfigDict(d)
