"""Checks that need the machine (devices, workdir, data, memory), run before anything is written.

``config.validate_config`` checks the config on its own; :func:`check_run` then checks it
against this machine and raises one ``ConfigError`` naming the field, the value and what is
allowed: the batch split over the devices, a workdir that can be created and written, the
dataset present with enough examples (for ImageNet also its resize op built), the model's
memory (parameters + activations, estimated from shapes alone, before anything is
allocated) and the layer names ``sparsity.dense_layers`` refers to. It returns the run's
``setup.Run``, so the loop builds nothing twice.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from widesparse_jax import data, paths, setup
from widesparse_jax.config import ConfigError

# Bytes per parameter on the device: params, gradients, momentum (f32) and a bool mask.
_BYTES_PER_PARAM = 3 * 4 + 1


def check_devices(config) -> None:
    """Global batch sizes must split evenly over every device of every host."""
    n_dev = jax.device_count()
    for field in ("batch_size", "eval_batch_size"):
        value = config.train[field]
        if value % n_dev:
            raise ConfigError(
                f"config.train.{field}={value} is not divisible by the {n_dev} devices; "
                f"use a multiple of {n_dev}"
            )


def _existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_workdir(workdir: str) -> None:
    """The workdir is a directory (or can be created) on a writable file system.

    A URI (``gs://...``) is checked offline: its store must be reachable through etils.epath
    (a TF file system or an fsspec implementation for the scheme); permissions and the
    bucket itself are checked by the first write (the run lock).
    """
    bad = f"workdir {workdir!r} "
    if paths.is_remote(workdir):
        problem = paths.backend_problem(workdir)
        if problem:
            raise ConfigError(bad + f"cannot be used: {problem}")
        return
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(bad + "is a file: --workdir must be a directory (or a new path)")
    base = _existing_ancestor(workdir)
    if not os.path.isdir(base):
        raise ConfigError(bad + f"is under the file {base!r}: --workdir must be a directory path")
    read_only = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
    if read_only or not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(bad + f"is not writable ({base!r} is read-only): use another --workdir")


def check_idx_dir(name: str, idx_dir: str) -> None:
    """``idx_dir`` holds the four IDX files (train and t10k images and labels) of ``name``."""
    if data.find_idx_dir(name, idx_dir) is not None:
        return
    if os.path.isdir(idx_dir):
        what = f"lacks some of the IDX files of {name} (found {sorted(os.listdir(idx_dir))[:4]})"
    else:
        what = "does not exist"
    raise ConfigError(
        f"config.dataset.idx_dir={idx_dir!r} {what}: give the folder with "
        "train-images/labels and t10k-images/labels-idx*-ubyte(.gz)"
    )


def dataset_info(config) -> data.DatasetInfo:
    """The dataset's facts (split sizes from metadata or headers); ConfigError if unusable."""
    d = config.dataset
    if d.data_dir and "://" not in d.data_dir and not os.path.isdir(d.data_dir):
        raise ConfigError(
            f"config.dataset.data_dir={d.data_dir!r} does not exist: give an existing TFDS "
            "data directory, or None for the TFDS default"
        )
    if d.idx_dir is not None and d.source in ("idx", "auto"):
        check_idx_dir(d.name, d.idx_dir)
    try:
        spec = data.DataSpec.from_config(d)
        info = data.dataset_info(spec)
    except (ValueError, OSError) as e:
        raise ConfigError(f"config.dataset (name={d.name!r}, source={d.source!r}): {e}") from None
    if spec.streaming:
        check_resize_op(d.name)
    return info


def check_resize_op(name: str) -> None:
    """The streaming (ImageNet) path's compiled resize op builds and loads (pil_resize)."""
    from widesparse_jax.data import pil_resize, sources

    try:
        pil_resize.load(sources.import_tf()[0])
    except pil_resize.BuildError as e:
        raise ConfigError(f"config.dataset.name={name!r}: {e}") from None


def memory_estimate(
    model, input_shape: tuple, batch_per_device: int, dtype: str, variables: dict | None = None
) -> tuple:
    """``(num_params, bytes)``: a lower bound of a train step's device memory, from shapes.

    Parameters x (param + grad + momentum + mask) plus one copy of every module output of
    the forward pass for ``batch_per_device`` examples (kept for the backward pass).
    ``variables``: ``setup.abstract_variables(model, input_shape)`` if traced already.
    """
    x = jax.ShapeDtypeStruct((batch_per_device, *input_shape), jnp.float32)
    if variables is None:
        variables = setup.abstract_variables(model, input_shape)

    def forward(v, xb):
        return model.apply(
            v, xb, train=False, capture_intermediates=True, mutable=["intermediates"]
        )

    _, state = jax.eval_shape(forward, variables, x)
    n_params = sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))
    n_act = sum(math.prod(a.shape) for a in jax.tree.leaves(state["intermediates"]))
    return n_params, n_params * _BYTES_PER_PARAM + n_act * np.dtype(dtype).itemsize


def device_memory() -> int | None:
    """Bytes one device can hold: the accelerator's limit, or the host's available memory."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_memory(config, info) -> dict:
    """Refuses a model whose parameters + activations cannot fit in one device's memory.

    Returns the model's ``setup.abstract_variables`` (``setup.build_run`` reuses them)."""
    m = config.model
    model = setup.build_model(m, info.num_classes, tuple(info.image_shape), axis_name=None)
    variables = setup.abstract_variables(model, tuple(info.image_shape))
    per_device = max(1, config.train.batch_size // jax.device_count())
    n_params, need = memory_estimate(model, tuple(info.image_shape), per_device, m.dtype, variables)
    have = device_memory()
    if have is not None and need > have:
        raise ConfigError(
            f"config.model.width={m.width!r} ({m.name}) needs at least {need / 2**30:.1f} GiB "
            f"per device ({n_params:.3g} parameters, activations of {per_device} examples) but "
            f"the device has {have / 2**30:.1f} GiB: use a smaller model.width or train.batch_size"
        )
    return variables


def build_checked_run(config, info, variables: dict | None = None) -> setup.Run:
    """``setup.build_run``; its refusals (e.g. dense_layers naming no layer) as ConfigError."""
    try:
        return setup.build_run(config, info, variables=variables)
    except ConfigError:
        raise
    except (ValueError, KeyError) as e:
        field = "sparsity.dense_layers" if "dense_layers" in str(e) else "sparsity"
        value = config.sparsity.dense_layers if "dense_layers" in str(e) else config.sparsity.method
        raise ConfigError(f"config.{field}={value!r} is not allowed: {e}") from None


def check_run(config, workdir: str) -> setup.Run:
    """Every machine-dependent refusal, before anything is written; the run's ``setup.Run``."""
    check_devices(config)
    check_workdir(workdir)
    info = dataset_info(config)
    if info.num_train is not None and config.train.batch_size > info.num_train:
        raise ConfigError(
            f"config.train.batch_size={config.train.batch_size} is larger than the "
            f"{info.num_train} training examples: use a batch size <= {info.num_train}"
        )
    variables = check_memory(config, info)
    # One trace of the model's init: build_run reuses the memory check's abstract variables
    # when it will not resolve the config again (a resolved config is locked).
    return build_checked_run(config, info, variables if config.is_locked else None)
