"""Load a run's model variables and masks from its workdir, without its dataset.

``load_variables(workdir)`` reads ``config.json`` and the newest checkpoint. The restore
target is built from the config alone (``setup.state_template`` on constant dataset
facts: class count and input shape), so no data has to be on the machine. The checkpoint is
verified against its checksums first (``checkpoint.CheckpointCorruptError`` if damaged).
"""

from __future__ import annotations

from widesparse_jax import checkpoint, data, paths, setup
from widesparse_jax import config as config_lib


def load_variables(workdir: str, step: int | None = None):
    """Loads a finished (or running) run's model variables and masks from its workdir.

    ``step``: which checkpoint (default: the newest on disk). It is verified against its
    checksums first: ``checkpoint.CheckpointCorruptError`` (naming the newest intact step)
    if damaged, ValueError if there is no such step.

    Returns:
      ``(variables, masks, config)``: ``variables = {'params', 'batch_stats'}`` as numpy
      pytrees, ``masks`` the keep-mask pytree (bool / None), ``config`` the run's ConfigDict.
    """
    config = config_lib.resolve_config(checkpoint.read_config(workdir))
    template = setup.state_template(
        config, data.static_info(data.DataSpec.from_config(config.dataset))
    )
    # lr may differ: after --resume_diverged, config.json has the new lr and the older
    # checkpoints the old one (the state's structure does not depend on it).
    fingerprint = config_lib.run_fingerprint(config)
    ckpt = checkpoint.Checkpointer(workdir, fingerprint=fingerprint, may_differ=("lr",))
    try:
        restored = ckpt.restore(template, step=_checked_step(ckpt, workdir, step))
    finally:
        ckpt.close()
    if restored is None:
        raise FileNotFoundError(
            f"no checkpoint in {paths.path(workdir, checkpoint.CHECKPOINT_DIR)}"
        )
    state, _ = restored
    return {"params": state["params"], "batch_stats": state["batch_stats"]}, state["masks"], config


def _checked_step(ckpt: checkpoint.Checkpointer, workdir: str, step: int | None) -> int | None:
    """``step`` (default: the newest on disk) if it exists and passes verification."""
    steps = ckpt.all_steps()
    if step is not None and step not in steps:
        raise ValueError(f"step={step} is not a checkpoint of {workdir} (steps {sorted(steps)})")
    step = ckpt.latest_step() if step is None else step
    if step is not None and ckpt.problem(step):
        intact = [s for s in sorted(steps, reverse=True) if not ckpt.problem(s)]
        hint = f"; the newest intact one is step={intact[0]}" if intact else "; none is intact"
        raise checkpoint.CheckpointCorruptError(
            f"checkpoint {ckpt.step_dir(step)} fails verification ({ckpt.problem(step)}){hint}"
        )
    return step
