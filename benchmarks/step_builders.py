"""The two train steps :mod:`benchmarks.step_vs_torch` times: the project's jitted JAX step
(built by ``setup.build_run``) and its PyTorch twin (``torch_reference``) started from the
same weights, masks and batch. JAX and torch are imported inside the functions, so that
importing this module leaves ``XLA_FLAGS`` still to be set."""

from __future__ import annotations

from typing import Callable, Optional

TORCH_VARIANTS = ("nchw", "channels_last")
BATCH = 128
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)


# ----------------------------------------------------------------------------- JAX side


def single_device_run(config):
    """``setup.Run`` of ``config`` (validated and resolved) for one device (``axis_name=None``),
    from the dataset's static shapes only (no data is read)."""
    from widesparse_jax import config as config_lib  # pylint: disable=g-import-not-at-top
    from widesparse_jax import data, setup, train

    cfg = config_lib.resolve_config(config)
    return setup.build_run(cfg, data.static_info(train.data_spec(cfg)), axis_name=None)


def train_step_fn(run, model=None, **kwargs) -> Callable:
    """``train.train_step`` bound to ``run`` (or another ``model``) on one device: a function
    ``(state, batch) -> (state, metrics)`` to jit; ``kwargs`` go to train_step
    (``mask_apply``)."""
    import functools  # pylint: disable=g-import-not-at-top

    from widesparse_jax import train

    model = run.model if model is None else model
    return functools.partial(
        train.train_step, model=model, tx=run.tx, schedule=run.schedule, axis_name=None, **kwargs
    )


def make_config(width: int, base_width: Optional[int], dtype: str):
    """The project's default (paper CIFAR) config at this width; base_width None = dense."""
    from configs import default  # pylint: disable=g-import-not-at-top

    config = default.get_config()
    config.model.width = width
    config.model.base_width = base_width
    config.model.dtype = dtype
    config.sparsity.mask_seed = 0
    config.optimizer.schedule = "constant"
    config.train.batch_size = BATCH
    return config


def build_jax_step(width: int, base_width: Optional[int], dtype: str, device) -> dict:
    """The project's jitted, donating train step and its initial state on ``device``.

    Returns {'step': state, batch -> (state, metrics), 'state', 'batch', 'masks' (numpy),
    'params0' (numpy, for the torch twin)}.
    """
    import types  # pylint: disable=g-import-not-at-top

    import jax
    import numpy as np

    from widesparse_jax import setup

    config = make_config(width, base_width, dtype)
    info = types.SimpleNamespace(
        num_classes=NUM_CLASSES, image_shape=IMAGE_SHAPE, num_train=390 * BATCH
    )
    run = setup.build_run(config, info, axis_name=None)
    state = setup.init_state(run)
    host = jax.device_get(state)
    state = jax.device_put(state, device)
    rng = np.random.RandomState(0)
    batch = {
        "image": rng.randn(BATCH, *IMAGE_SHAPE).astype(np.float32),
        "label": (np.arange(BATCH) % NUM_CLASSES).astype(np.int32),
    }
    batch_dev = jax.device_put(batch, device)
    step = jax.jit(train_step_fn(run), donate_argnums=(0,))
    return {
        "step": step,
        "state": state,
        "batch": batch_dev,
        "batch_np": batch,
        "masks": host.masks,
        "params0": host.params,
        "batch_stats0": host.batch_stats,
    }


class JaxRunner:
    """Holds the (donated) state across calls; ``__call__`` runs one step and waits."""

    def __init__(self, built: dict):
        self.step, self.state, self.batch = built["step"], built["state"], built["batch"]
        self.last_loss = None

    def __call__(self) -> None:
        import jax  # pylint: disable=g-import-not-at-top

        self.state, metrics = self.step(self.state, self.batch)
        self.last_loss = jax.block_until_ready(metrics["loss"])


# ----------------------------------------------------------------------------- torch side


def build_torch_step(width: int, built: dict, layout_kind: str, device: str) -> Callable:
    """The PyTorch twin with the JAX run's initial weights and masks; returns a step closure."""
    import numpy as np  # pylint: disable=g-import-not-at-top
    import torch

    from widesparse_jax import baseline
    from widesparse_jax import torch_reference as tr

    if layout_kind not in TORCH_VARIANTS:
        raise ValueError(f"torch variant {layout_kind!r}; allowed: {TORCH_VARIANTS}")
    layout = baseline.resnet18_layout(width, NUM_CLASSES)
    model = tr.resnet18(width, NUM_CLASSES)
    sd = baseline.variables_to_state_dict(
        {"params": built["params0"], "batch_stats": built["batch_stats0"]}, layout
    )
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in sd.items()})
    smask = baseline.masks_to_smask(built["masks"], layout)
    if all(v is None for v in smask.values()):
        smask = None
    x = torch.as_tensor(np.transpose(built["batch_np"]["image"], (0, 3, 1, 2)).copy())
    y = torch.as_tensor(built["batch_np"]["label"].astype(np.int64))
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    if smask is not None:
        smask = {k: (None if v is None else v.to(device)) for k, v in smask.items()}
    if layout_kind == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = tr.make_sgd(model, lr=0.1, momentum=0.9, weight_decay=5e-4)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    losses = []

    def run() -> None:
        losses.append(tr.masked_sgd_step(model, opt, smask, x, y))  # .item() syncs
        sync()

    run.losses = losses  # type: ignore[attr-defined]
    return run
