"""``config.sparsity.apply='sparse'`` in the training loop: which runs compute sparse, and
the pmapped steps and state conversions the loop uses for them.

Supported here: the MLP, standard parametrization (no μP multipliers, no BatchNorm). A run
whose hidden layer's density is at or above ``config.sparsity.sparse_below_density`` stays
dense-masked (``make_mode`` returns None), as does every run with another ``apply``.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from widesparse_jax.setup import AXIS
from widesparse_jax.sparse import step as sstep
from widesparse_jax.sparse.mlp import mlp_layout


def _check_supported(config) -> None:
    m = config.model
    ok = m.name == "mlp" and m.parametrization == "standard"
    if not ok:
        raise ValueError(
            f"config.sparsity.apply='sparse' supports model.name='mlp' with parametrization "
            f"'standard' in this branch; got model.name={m.name!r}, "
            f"parametrization={m.parametrization!r} (use apply='update')"
        )


class SparseMode:
    """Compact MLP execution of a run: ``enter``/``leave`` convert a (host) TrainState,
    ``p_steps`` returns the pmapped (train, eval) steps on the compact state."""

    def __init__(self, run):
        self.run = run
        self.layout = mlp_layout(run.masks, run.param_shapes)
        self.activation = run.config.model.activation

    def enter(self, state):
        return sstep.to_sparse_state(state, self.layout)

    def leave(self, state):
        return sstep.to_dense_state(state, self.layout, self.run.masks)

    def p_steps(self):
        run, kw = self.run, dict(layout=self.layout, activation=self.activation)
        train_fn = functools.partial(
            sstep.sparse_train_step, tx=run.tx, schedule=run.schedule, **kw
        )
        p_train = jax.pmap(train_fn, axis_name=AXIS, donate_argnums=(0,))
        p_eval = jax.pmap(functools.partial(sstep.sparse_eval_step, **kw), axis_name=AXIS)
        return p_train, p_eval


def make_mode(run) -> SparseMode | None:
    """The run's SparseMode, or None when it computes dense-masked."""
    s = run.config.sparsity
    if s.get("apply", "update") != "sparse":
        return None
    _check_supported(run.config)
    fc = run.masks["fc"]["kernel"]
    density = 1.0 if fc is None else float(np.mean(fc))
    if density >= s.get("sparse_below_density", 0.5):
        return None
    return SparseMode(run)
