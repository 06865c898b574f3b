"""``config.sparsity.apply='sparse'`` in the training loop: which runs compute sparse, and
the pmapped steps and state conversions the loop uses for them.

Supported here: the MLP, standard parametrization (no μP multipliers, no BatchNorm), and
ResNet-18 with ``sparsity.granularity='kernel'`` (its kernel-masked convs below
``sparsity.sparse_conv_below_density`` run :func:`sparse.conv.sparse_conv`; params,
optimizer and checkpoints stay dense-masked). A per-weight ('weight' granularity) ResNet
stays dense-masked: no per-weight formulation measured beat dense masking on this CPU
(docs/performance.md, "Sparse execution"). A run whose hidden layer's density is at or above
``config.sparsity.sparse_below_density`` stays dense-masked (``make_mode`` returns None),
as does every run with another ``apply``.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from widesparse_jax.setup import AXIS
from widesparse_jax.sparse import conv as sconv
from widesparse_jax.sparse import step as sstep
from widesparse_jax.sparse.mlp import mlp_layout


def _is_kernel_resnet(config) -> bool:
    m = config.model
    return m.name == "resnet18" and config.sparsity.granularity == "kernel"


def _check_supported(config) -> None:
    m = config.model
    ok = m.name == "mlp" and m.parametrization == "standard"
    if not (ok or m.name == "resnet18"):
        raise ValueError(
            f"config.sparsity.apply='sparse' supports model.name='mlp' with parametrization "
            f"'standard', and model.name='resnet18'; got model.name={m.name!r}, "
            f"parametrization={m.parametrization!r} (use apply='update')"
        )


class ConvSparseMode:
    """Kernel-granularity ResNet: the convs in ``layouts`` compute sparse inside the dense
    train / eval steps (``sparse.conv.SparseConvModel``); the state stays dense-masked, so
    ``enter`` / ``leave`` are the identity."""

    def __init__(self, run, layouts: dict):
        self.run, self.layouts = run, layouts
        self.model = sconv.SparseConvModel(run.model, layouts)

    def enter(self, state):
        return state

    def leave(self, state):
        return state

    def p_steps(self):
        from widesparse_jax import train  # train imports this module

        run = self.run
        kw = dict(model=self.model, tx=run.tx, schedule=run.schedule, mask_apply="update")
        p_train = jax.pmap(
            functools.partial(train.train_step, **kw), axis_name=AXIS, donate_argnums=(0,)
        )
        p_eval = jax.pmap(functools.partial(train.eval_step, model=self.model), axis_name=AXIS)
        return p_train, p_eval


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


def make_mode(run) -> SparseMode | ConvSparseMode | None:
    """The run's SparseMode (MLP) or ConvSparseMode (ResNet, kernel granularity), or None
    when it computes dense-masked."""
    s = run.config.sparsity
    if s.get("apply", "update") != "sparse":
        return None
    _check_supported(run.config)
    if run.config.model.name == "resnet18" and not _is_kernel_resnet(run.config):
        return None  # per-weight convs: no sparse formulation beat dense masking on CPU
    if _is_kernel_resnet(run.config):
        layouts = sconv.conv_layouts(run.masks, s.get("sparse_conv_below_density", 0.03))
        return ConvSparseMode(run, layouts) if layouts else None
    fc = run.masks["fc"]["kernel"]
    density = 1.0 if fc is None else float(np.mean(fc))
    if density >= s.get("sparse_below_density", 0.02):
        return None
    return SparseMode(run)
