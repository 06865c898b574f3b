"""Load a run's model variables and masks from its workdir.

``load_variables(workdir)`` reads ``config.json`` and the newest checkpoint; the restore
target is built from the config alone (shapes, no dataset needed).
"""

from __future__ import annotations

import os

from widesparse_jax import checkpoint, train


def load_variables(workdir: str, step: int | None = None):
    """Loads a finished (or running) run's model variables and masks from its workdir.

    Returns:
      ``(variables, masks, config)``: ``variables = {'params', 'batch_stats'}`` as numpy
      pytrees, ``masks`` the keep-mask pytree (bool / None), ``config`` the run's ConfigDict.
    """
    config = checkpoint.read_config(workdir)
    abstract = train.abstract_state_dict(config)
    ckpt = checkpoint.Checkpointer(workdir, fingerprint=train.run_fingerprint(config))
    if step is not None and step != ckpt.latest_step():
        raise ValueError(
            f"step={step} is not the latest checkpoint ({ckpt.latest_step()}) of {workdir}"
        )
    restored = ckpt.restore(abstract)
    ckpt.close()
    if restored is None:
        raise FileNotFoundError(
            f"no checkpoint in {os.path.join(workdir, checkpoint.CHECKPOINT_DIR)}"
        )
    state, _ = restored
    return {"params": state["params"], "batch_stats": state["batch_stats"]}, state["masks"], config
