"""Shared pieces of the width-toolkit experiments (coord check, noise-scale sweep, consistency).

Small helpers on top of the project's modules: Fashion-MNIST as flat arrays, a
one-hidden-layer MLP family (dense or sparse at a base width's weight count) in standard /
NTK / μP and a CIFAR-stem ResNet-18 family in SP / μP, both built by the run factory
``widesparse_jax.setup`` (so masks, μP init and μP learning rates are the ones a training run
gets), and jitted SGD steps (the project's optimizer, ``optim.make_optimizer``) whose learning
rate is a traced argument (one compiled step serves every lr; runs can be vmapped over lrs).
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import default as default_config
from widesparse_jax import data, optim, setup

DATASET = "fashion_mnist"
INPUT_DIM = 784
NUM_CLASSES = 10


def load_fashion_mnist(split: str, n: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """First ``n`` examples of a Fashion-MNIST split, channel-normalized, flattened.

    Returns (x float32 [N, 784], y int32 [N]) in file order.
    """
    it = data.create_eval_iterator(
        data.DataSpec(DATASET), 10000, split=split, devices=data.DeviceLayout(), prefetch=0
    )
    xs, ys = [], []
    for b in it:
        keep = b["mask"][0]
        xs.append(b["image"][0][keep].reshape(-1, INPUT_DIM))
        ys.append(b["label"][0][keep])
        if n is not None and sum(len(y) for y in ys) >= n:
            break
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.int32)
    if n is not None:
        if n > len(y):
            raise ValueError(f"n={n} exceeds the {len(y)} examples of split {split!r}")
        x, y = x[:n], y[:n]
    return x.astype(np.float32), y


@dataclasses.dataclass
class Net:
    """One member of an MLP family: module, params, masks, lr multipliers and its setting."""

    model: Any
    params: Any
    masks: Any
    lr_mult: Any
    width: int
    base_width: int
    sparse: bool
    parametrization: str  # 'standard' | 'ntk' (native MLP) | 'mup' (via parametrization.py)


def _config(model: dict, *, mask_seed: int = 0, dense_layers: tuple = ()):
    """A run config (configs/default.py) for the toolkit nets: the given model fields,
    plain SGD at lr 1 without weight decay (the experiments scale updates by a traced lr)."""
    c = default_config.get_config()
    c.dataset.name, c.dataset.augment = DATASET, "none"
    for k, v in model.items():
        c.model[k] = v
    c.sparsity.mask_seed, c.sparsity.dense_layers = mask_seed, dense_layers
    c.optimizer.lr, c.optimizer.weight_decay, c.optimizer.schedule = 1.0, 0.0, "constant"
    return c


def _build(config, image_shape: tuple, key: jax.Array):
    """(run, variables) of a toolkit net: factory run (no pmap axis), variables from ``key``."""
    info = types.SimpleNamespace(num_classes=NUM_CLASSES, image_shape=image_shape, num_train=None)
    run = setup.build_run(config, info, axis_name=None)
    return run, setup.init_params(run, key)


def _masks_as_arrays(masks):
    return jax.tree.map(jnp.asarray, masks)


def make_mlp(
    width: int,
    *,
    base_width: int,
    sparse: bool,
    param: str,
    key: jax.Array,
    mask_seed: int = 0,
    mup_base_width: Optional[int] = None,
    fan_in_mode: str = "effective",
) -> Net:
    """MLP 784 -> width -> 10 in parametrization ``param``, built by ``setup.build_run``.

    * 'standard': PyTorch init, biases; lr multipliers all 1.
    * 'ntk': the model's native NTK parametrization (no bias, N(0,1) weights times
      1/sqrt(fan_in)); sparse runs keep the last layer dense (paper Fig. 8).
    * 'mup': standard model + μP init and lr multipliers relative to ``mup_base_width``
      (default ``base_width``), ``fan_in_mode`` for sparse layers.
    Sparse: random static masks (paper distribution) keeping the dense ``base_width`` count,
    sparse-aware init. Dense: ``base_width`` only sets the μP base.
    """
    fields = dict(
        name="mlp",
        width=width,
        base_width=base_width if sparse else None,
        parametrization=param,
        use_bias=param != "ntk",
        init_distribution="normal" if param == "ntk" else "uniform",
        mup_base_width=(mup_base_width or base_width) if param == "mup" else None,
        mup_fan_in_mode=fan_in_mode,
    )
    dense = ("cl/kernel",) if param == "ntk" else ()
    config = _config(fields, mask_seed=mask_seed, dense_layers=dense)
    run, variables = _build(config, (INPUT_DIM,), key)
    lr_mult = run.lr_multipliers
    if lr_mult is None:
        lr_mult = jax.tree.map(lambda _: 1.0, variables["params"])
    masks = _masks_as_arrays(run.masks)
    return Net(run.model, variables["params"], masks, lr_mult, width, base_width, sparse, param)


def make_tx(net, momentum: float) -> optax.GradientTransformationExtraArgs:
    """Masked SGD-momentum (no weight decay) with lr 1 and the net's lr multipliers; the
    caller multiplies the updates by the (traced) base lr - exact, since the lr scale is the
    last, linear stage of the chain."""
    return optim.make_optimizer(
        1.0, momentum=momentum, weight_decay=0.0, lr_multipliers=net.lr_mult
    )


def _apply_update(tx, params, opt_state, masks, grads, lr):
    updates, opt_state = tx.update(grads, opt_state, params, masks=masks)
    # tx has lr 1: updates = -(momentum trace) * multiplier; scale by the traced base lr.
    return jax.tree.map(lambda p, u: p + lr * u, params, updates), opt_state


def loss_fn(model, params, x, y):
    logits = model.apply({"params": params}, x, train=False)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def sgd_step(model, tx, params, opt_state, masks, lr, x, y):
    """One masked SGD step with traced ``lr``. Returns (params, opt_state, loss)."""
    loss, grads = jax.value_and_grad(lambda p: loss_fn(model, p, x, y))(params)
    params, opt_state = _apply_update(tx, params, opt_state, masks, grads, lr)
    return params, opt_state, loss


@functools.partial(jax.jit, static_argnums=(0, 1))
def train_epoch(model, tx, params, opt_state, masks, lr, xb, yb):
    """lax.scan of :func:`sgd_step` over batches xb [S, B, 784], yb [S, B].

    Returns (params, opt_state, losses [S]).
    """

    def body(carry, batch):
        p, s = carry
        p, s, loss = sgd_step(model, tx, p, s, masks, lr, *batch)
        return (p, s), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xb, yb))
    return params, opt_state, losses


@functools.partial(jax.jit, static_argnums=(0,))
def logits_fn(model, params, x):
    return model.apply({"params": params}, x, train=False)


def epoch_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int):
    """The epoch's shuffled batches (drop remainder): xb [S, B, 784], yb [S, B]. The order is a
    function of (seed, epoch) only, so every width sees the same data stream."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(y))
    s = len(y) // batch_size
    idx = perm[: s * batch_size].reshape(s, batch_size)
    return x[idx], y[idx]


def accuracy(model, params, x, y, batch: int = 5000) -> float:
    correct = 0
    for i in range(0, len(y), batch):
        correct += int(
            np.sum(
                np.argmax(np.asarray(logits_fn(model, params, x[i : i + batch])), -1)
                == y[i : i + batch]
            )
        )
    return correct / len(y)


# --------------------------------------------------------------------------------------
# Small ResNet-18 (CIFAR stem) on Fashion-MNIST images, SP or μP, dense
# --------------------------------------------------------------------------------------

IMAGE_SHAPE = (28, 28, 1)
RESNET_PARAMS = ("standard", "mup")


def to_images(x: np.ndarray) -> np.ndarray:
    """Flat Fashion-MNIST rows [N, 784] -> NHWC images [N, 28, 28, 1] (no copy)."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != INPUT_DIM:
        raise ValueError(f"expected flat images [N, {INPUT_DIM}], got shape {x.shape}")
    return x.reshape((-1,) + IMAGE_SHAPE)


@dataclasses.dataclass
class ResNetNet:
    """One member of a ResNet-18 family: module, params, BN statistics, per-leaf lr multipliers
    (pytree of floats) and the μP roles used."""

    model: Any
    params: Any
    batch_stats: Any
    lr_mult: Any
    roles: dict
    width: int
    base_width: int
    parametrization: str  # 'standard' | 'mup'


def make_resnet(width: int, *, base_width: int, param: str, key: jax.Array) -> ResNetNet:
    """CIFAR-stem ResNet-18 (stage channels w, 2w, 4w, 8w) for 28x28x1 inputs, 10 classes,
    built by ``setup.build_run`` (no pmap axis: BatchNorm uses the local batch).

    * 'standard': PyTorch default init, lr multipliers 1.
    * 'mup': μP init and lr multipliers relative to ``base_width``, roles from the forward
      order (first conv 'input', ``linear`` 'output', other kernels 'hidden'; BatchNorm
      scale/bias 'other', i.e. lr x m) - exactly what a training run gets.
    """
    if param not in RESNET_PARAMS:
        raise ValueError(f"param {param!r} unknown for the ResNet; allowed: {RESNET_PARAMS}")
    fields = dict(
        name="resnet18",
        width=width,
        base_width=None,
        stem="cifar",
        parametrization=param,
        mup_base_width=base_width if param == "mup" else None,
    )
    run, variables = _build(_config(fields), IMAGE_SHAPE, key)
    mult = run.lr_multipliers
    if mult is None:
        mult = jax.tree.map(lambda _: 1.0, variables["params"])
    return ResNetNet(
        run.model,
        variables["params"],
        variables["batch_stats"],
        mult,
        run.roles,
        width,
        base_width,
        param,
    )


def resnet_loss(model, params, batch_stats, x, y):
    """Train-mode (batch-statistics) cross-entropy; returns (loss, new batch_stats)."""
    logits, new = model.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
    )
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    return loss, new["batch_stats"]


def resnet_sgd_step(model, tx, params, batch_stats, opt_state, lr, x, y):
    """One SGD step of ``tx`` (:func:`make_tx`) with traced ``lr``, BatchNorm on the batch.
    x: [B, 28, 28, 1], y: [B]. Returns (params, batch_stats, opt_state, loss)."""
    (loss, batch_stats), g = jax.value_and_grad(
        lambda p: resnet_loss(model, p, batch_stats, x, y), has_aux=True
    )(params)
    params, opt_state = _apply_update(tx, params, opt_state, None, g, lr)
    return params, batch_stats, opt_state, loss


resnet_step = jax.jit(resnet_sgd_step, static_argnums=(0, 1))


@functools.partial(jax.jit, static_argnums=(0, 1))
def resnet_train_epoch(model, tx, params, batch_stats, opt_state, lr, xb, yb):
    """lax.scan of :func:`resnet_sgd_step` over xb [S, B, 28, 28, 1], yb [S, B].
    Returns (params, batch_stats, opt_state, losses [S])."""

    def body(carry, batch):
        p, bs, s = carry
        p, bs, s, loss = resnet_sgd_step(model, tx, p, bs, s, lr, *batch)
        return (p, bs, s), loss

    (params, batch_stats, opt_state), losses = jax.lax.scan(
        body, (params, batch_stats, opt_state), (xb, yb)
    )
    return params, batch_stats, opt_state, losses


@functools.partial(jax.jit, static_argnums=(0, 4))
def resnet_features(model, params, batch_stats, x, batch_bn: bool = False):
    """(logits [N, 10], penultimate features [N, 8w] = global-average-pooled output of the last
    block ``layer4_1``). BN: running statistics, or (``batch_bn``) the statistics of ``x``
    itself (train-mode BN; the running statistics are not changed)."""
    filt = lambda mdl, _: mdl.path == ("layer4_1",)  # noqa: E731
    v = {"params": params, "batch_stats": batch_stats}
    if batch_bn:
        out, inter = model.apply(
            v, x, train=True, capture_intermediates=filt, mutable=["batch_stats"]
        )
    else:
        out, inter = model.apply(v, x, train=False, capture_intermediates=filt)
    feat = inter["intermediates"]["layer4_1"]["__call__"][0]
    return out, jnp.mean(feat, axis=(1, 2))


def resnet_logits_features(
    model, params, batch_stats, x: np.ndarray, batch: int = 1000, batch_bn: bool = False
):
    """Logits [N, 10] and penultimate features [N, 8w] of images x [N, 28, 28, 1], in chunks
    of ``batch``; BN with running statistics or (``batch_bn``) each chunk's statistics."""
    zs, fs = [], []
    for i in range(0, len(x), batch):
        z, f = resnet_features(model, params, batch_stats, jnp.asarray(x[i : i + batch]), batch_bn)
        zs.append(np.asarray(z))
        fs.append(np.asarray(f))
    return np.concatenate(zs), np.concatenate(fs)
