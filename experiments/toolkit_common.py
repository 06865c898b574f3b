"""Shared pieces of the width-toolkit experiments (coord check, noise-scale sweep, consistency).

Small pure helpers built from the project's modules (models, masks, optim, parametrization,
input_pipeline): Fashion-MNIST as flat arrays, a one-hidden-layer MLP family (dense or sparse at
a base width's weight count) in standard / NTK / μP, and a jitted SGD step whose learning rate is
a traced argument (so one compiled step serves every lr, and runs can be vmapped over lrs).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from widesparse_jax import input_pipeline, masks as masks_lib, optim, parametrization
from widesparse_jax.models import MLP, mlp_weight_count

DATASET = "fashion_mnist"
INPUT_DIM = 784
NUM_CLASSES = 10


def load_fashion_mnist(split: str, n: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """First ``n`` examples of a Fashion-MNIST split, channel-normalized, flattened.

    Returns (x float32 [N, 784], y int32 [N]) in file order.
    """
    it = input_pipeline.create_eval_iterator(
        DATASET, global_batch_size=10000, split=split, num_local_devices=1, process_index=0,
        process_count=1, prefetch=0)
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


def make_mlp(width: int, *, base_width: int, sparse: bool, param: str, key: jax.Array,
             mask_seed: int = 0, mup_base_width: Optional[int] = None,
             fan_in_mode: str = "effective") -> Net:
    """MLP 784 -> width -> 10 in parametrization ``param``.

    * 'standard': PyTorch init, biases; lr multipliers all 1.
    * 'ntk': the model's native NTK parametrization (no bias, N(0,1) weights times
      1/sqrt(fan_in)); sparse runs keep the last layer dense (paper Fig. 8).
    * 'mup': standard model + ``parametrization.apply_parametrization`` /
      ``lr_multipliers`` relative to ``mup_base_width`` (default ``base_width``).
    Sparse: random static masks (paper distribution) keeping the dense ``base_width`` count,
    then ``rescale_for_density``. Dense: ``base_width`` only sets the μP base.
    """
    native = "ntk" if param == "ntk" else "standard"
    model = MLP(width=width, num_classes=NUM_CLASSES, parametrization=native,
                use_bias=(native == "standard"))
    params = model.init(key, jnp.zeros((1, INPUT_DIM)), train=False)["params"]
    masks = jax.tree.map(lambda _: None, params)
    if sparse and width > base_width:
        plan = masks_lib.make_plan(
            params, masks_lib.insertion_order(params),
            base_total=mlp_weight_count(base_width, NUM_CLASSES, INPUT_DIM),
            dense_layers=(("cl/kernel",) if param == "ntk" else ()))
        masks = masks_lib.draw_masks(jax.random.key(mask_seed), params, plan)
        params = masks_lib.rescale_for_density(params, masks)
    if param == "mup":
        b = mup_base_width or base_width
        params = parametrization.apply_parametrization(params, "mup", width, b, masks=masks,
                                                       fan_in_mode=fan_in_mode)
        lr_mult = parametrization.lr_multipliers(params, "mup", width, b, masks=masks,
                                                 fan_in_mode=fan_in_mode)
    else:
        lr_mult = jax.tree.map(lambda _: 1.0, params)
    masks = jax.tree.map(lambda m: None if m is None else jnp.asarray(m), masks,
                         is_leaf=lambda x: x is None)
    return Net(model, params, masks, lr_mult, width, base_width, sparse, param)


def make_tx(net: Net, momentum: float) -> optax.GradientTransformationExtraArgs:
    """Masked SGD-momentum (no weight decay) with lr 1 and the net's lr multipliers; the
    caller multiplies the updates by the (traced) base lr - exact, since the lr scale is the
    last, linear stage of the chain."""
    return optim.make_optimizer(None, learning_rate=1.0, momentum=momentum, weight_decay=0.0,
                                lr_multipliers=net.lr_mult)


def loss_fn(model, params, x, y):
    logits = model.apply({"params": params}, x, train=False)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def sgd_step(model, tx, params, opt_state, masks, lr, x, y):
    """One masked SGD step with traced ``lr``. Returns (params, opt_state, loss)."""
    loss, grads = jax.value_and_grad(lambda p: loss_fn(model, p, x, y))(params)
    updates, opt_state = tx.update(grads, opt_state, params, masks=masks)
    # tx has lr 1: updates = -(momentum trace) * multiplier; scale by the traced base lr.
    params = jax.tree.map(lambda p, u: p + lr * u, params, updates)
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
        correct += int(np.sum(np.argmax(np.asarray(logits_fn(model, params, x[i:i + batch])), -1)
                              == y[i:i + batch]))
    return correct / len(y)
