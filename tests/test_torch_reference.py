"""PyTorch twin (widesparse_jax.torch_reference) vs the baseline fixture and vs our JAX step.

Tolerances (float32 on CPU; measured values in comments):
* one masked-SGD step, JAX vs PyTorch from identical weights/masks/batch: loss rel 1e-5,
  every param abs 1e-5 * max|param| (measured ~1e-7 relative).
* two steps from the fixture's model_init.pt: losses within 1e-5 (measured 0.0), params
  within 2e-6 abs (measured 3e-7), momentum within 1e-5 (measured 2e-6).
* BatchNorm running_var: PyTorch updates it with the UNBIASED batch variance
  (x n/(n-1), n = N*H*W), Flax with the biased one. After two steps from running_var = 1
  the JAX values differ by 1.2e-5 (bn1, n = 8192) to 2.8e-4 (layer4, n = 128) relative;
  rescaling the accumulated update by n/(n-1) recovers PyTorch's to 1e-6. Eval-mode logits
  of the JAX-trained net then differ from model_final.pt's by ~2e-5 (within 1e-4), and are
  ~3e-8 away with the PyTorch running stats.
"""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from golden_paths import INTEROP_DIR as GOLDEN  # noqa: E402

from widesparse_jax import baseline as B  # noqa: E402
from widesparse_jax import models, optim  # noqa: E402
from widesparse_jax import torch_reference as tr  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
needs_fixture = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"fixture {GOLDEN} not found")


def _g(name):
    return str(GOLDEN / name)


def _leaves(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}/"))
        elif v is not None:
            out[prefix + k] = np.asarray(v)
    return out


def _jax_steps(module, variables, masks, x, y, num_steps, lr, momentum, wd):
    """Our training step: model + optim.make_optimizer (masked SGD, coupled wd)."""
    tx = optim.make_optimizer(learning_rate=lr, momentum=momentum, weight_decay=wd)
    params = variables["params"]
    stats = variables.get("batch_stats") or {}
    opt_state = tx.init(params)
    mutable = ["batch_stats"] if stats else False

    @jax.jit
    def step(params, stats, opt_state):
        def loss_fn(p):
            v = {"params": p, **({"batch_stats": stats} if stats else {})}
            if mutable:
                logits, new = module.apply(v, x, train=True, mutable=mutable)
                new_stats = new["batch_stats"]
            else:
                logits, new_stats = module.apply(v, x, train=True), stats
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params, masks=masks)
        return optax.apply_updates(params, updates), new_stats, opt_state, loss

    losses = []
    for _ in range(num_steps):
        params, stats, opt_state, loss = step(params, stats, opt_state)
        losses.append(float(loss))
    return {"params": params, "batch_stats": stats}, opt_state, losses


@needs_fixture
def test_twin_reproduces_baseline_fixture():
    d = np.load(_g("expected.npz"))
    init = torch.load(_g("model_init.pt"), weights_only=False)
    final = torch.load(_g("model_final.pt"), weights_only=False)
    smask = torch.load(_g("smask.pt"), weights_only=True)
    net = tr.resnet18(int(d["width"]), int(d["num_classes"]))
    net.load_state_dict(init["state_dict"])
    np.testing.assert_allclose(tr.eval_logits(net, d["x_nchw"]), d["logits_init"], atol=1e-6)
    opt = tr.make_sgd(net, float(d["lr"]), float(d["momentum"]), float(d["weight_decay"]))
    losses = tr.train_steps(
        net, opt, smask, torch.tensor(d["x_nchw"]), torch.tensor(d["labels"]), 2
    )
    np.testing.assert_allclose(losses, d["train_losses"], rtol=1e-6)
    for k, v in net.state_dict().items():
        np.testing.assert_allclose(v.numpy(), final["state_dict"][k].numpy(), atol=2e-6, err_msg=k)
    np.testing.assert_allclose(tr.eval_logits(net, d["x_nchw"]), d["logits"], atol=1e-5)
    bufs = tr.momentum_buffers(opt, net)
    for i, (n, _) in enumerate(net.named_parameters()):
        np.testing.assert_allclose(
            bufs[n], final["optimizer"]["state"][i]["momentum_buffer"].numpy(), atol=1e-5, err_msg=n
        )
    for k, m in smask.items():  # frozen weights stayed exactly 0
        if m is not None:
            assert torch.all(net.state_dict()[tr.smask_name_to_param(k)][m] == 0)


@needs_fixture
def test_jax_two_steps_reproduce_baseline_fixture():
    d = np.load(_g("expected.npz"))
    w, c = int(d["width"]), int(d["num_classes"])
    init = B.load_baseline(_g("model_init.pt"), _g("smask.pt"), width=w, num_classes=c)
    final = B.load_baseline(_g("model_final.pt"), _g("smask.pt"), width=w, num_classes=c)
    module = models.ResNet18(width=w, num_classes=c)
    out, opt_state, losses = _jax_steps(
        module,
        init.variables,
        init.masks,
        jnp.asarray(d["x_nhwc"]),
        jnp.asarray(d["labels"]),
        2,
        float(d["lr"]),
        float(d["momentum"]),
        float(d["weight_decay"]),
    )
    np.testing.assert_allclose(losses, d["train_losses"], rtol=1e-5)
    got, ref = _leaves(out["params"]), _leaves(final.variables["params"])
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=2e-6, err_msg=k)
    for k, m in _leaves(init.masks).items():
        assert np.all(got[k][~m] == 0.0), k
    mom, ref_mom = _leaves(B.get_momentum(opt_state)), _leaves(final.momentum)
    for k in ref_mom:
        np.testing.assert_allclose(mom[k], ref_mom[k], atol=1e-5, err_msg=k)

    # Running stats: means agree; variances differ by PyTorch's unbiased update (n/(n-1)).
    gs, rs = _leaves(out["batch_stats"]), _leaves(final.variables["batch_stats"])
    spatial = {
        "bn1": 32 * 32,
        "layer1": 32 * 32,
        "layer2": 16 * 16,
        "layer3": 8 * 8,
        "layer4": 4 * 4,
    }
    worst_raw, worst_fixed = 0.0, 0.0
    for k in rs:
        if k.endswith("mean"):
            np.testing.assert_allclose(gs[k], rs[k], atol=1e-6, err_msg=k)
            continue
        n = 8 * spatial[k.split("/")[0].split("_")[0]]
        # two momentum-0.1 updates from running_var = 1: var2 = 0.81 + (0.09 v1 + 0.1 v2)
        fixed = 0.81 + (gs[k] - 0.81) * n / (n - 1)
        worst_raw = max(worst_raw, float(np.max(np.abs(gs[k] - rs[k]) / rs[k])))
        worst_fixed = max(worst_fixed, float(np.max(np.abs(fixed - rs[k]) / rs[k])))
    assert worst_raw > 1e-4  # the difference is real (measured 2.8e-4 in layer4) ...
    assert worst_fixed < 2e-6  # ... and fully explained by the unbiased-variance update

    logits = B.flax_logits(out, init.layout, d["x_nhwc"])
    np.testing.assert_allclose(logits, d["logits"], atol=1e-4)  # measured ~2e-5
    logits = B.flax_logits(
        {"params": out["params"], "batch_stats": final.variables["batch_stats"]},
        init.layout,
        d["x_nhwc"],
    )
    np.testing.assert_allclose(logits, d["logits"], atol=1e-6)


def _random_smask(net, rng, frac=0.6, layers=("layer3_0_conv2", "layer4_0_shortcut_0", "linear")):
    params = dict(net.named_parameters())
    smask = {name: None for name in tr.layer_order(net)}
    for name in layers:
        shape = params[tr.smask_name_to_param(name)].shape
        smask[name] = torch.from_numpy(rng.random(tuple(shape)) < frac)
    return smask


def test_one_step_jax_matches_pytorch_resnet():
    """Same random weights, masks, batch: one train step in PyTorch and in JAX."""
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    w, c = 4, 5
    net = tr.resnet18(w, c)
    with torch.no_grad():  # non-trivial BN params/stats
        for name, buf in net.named_buffers():
            if "running_mean" in name:
                buf.copy_(torch.randn_like(buf) * 0.1)
            elif "running_var" in name:
                buf.copy_(torch.rand_like(buf) + 0.5)
    smask = _random_smask(net, rng)
    tr.apply_smask(net, smask)
    layout = B.resnet18_layout(w, c)
    variables = B.state_dict_to_variables(net.state_dict(), layout)
    masks = B.smask_to_masks(smask, variables["params"], layout)
    x = rng.normal(size=(6, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, c, size=6)
    lr, mom, wd = 0.05, 0.9, 1e-3

    opt = tr.make_sgd(net, lr, mom, wd)
    t_losses = tr.train_steps(net, opt, smask, torch.tensor(x), torch.tensor(y), 1)
    ref = B.state_dict_to_variables(net.state_dict(), layout)
    out, _, j_losses = _jax_steps(
        models.ResNet18(width=w, num_classes=c),
        variables,
        masks,
        jnp.asarray(x.transpose(0, 2, 3, 1)),
        jnp.asarray(y),
        1,
        lr,
        mom,
        wd,
    )
    np.testing.assert_allclose(j_losses, t_losses, rtol=1e-5)
    got, want = _leaves(out["params"]), _leaves(ref["params"])
    moved = 0
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5 * np.abs(want[k]).max(), err_msg=k)
        moved += int(np.sum(got[k] != _leaves(variables["params"])[k]))
    assert moved > 1000  # the step did change the weights
    gs, ws = _leaves(out["batch_stats"]), _leaves(ref["batch_stats"])
    for k in ws:  # means equal; var differs only by the unbiased update (small here)
        np.testing.assert_allclose(
            gs[k], ws[k], rtol=1e-2 if k.endswith("var") else 1e-5, atol=1e-6, err_msg=k
        )


@pytest.mark.parametrize("ntk", [False, True])
def test_two_steps_jax_matches_pytorch_mlp(ntk):
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    d_in, n, c = 30, 16, 4
    net = tr.mlp(d_in, n, c, ntk=ntk, bias=not ntk)
    smask = {"fc": torch.from_numpy(rng.random((n, d_in)) < 0.7), "cl": None}
    tr.apply_smask(net, smask)
    layout = B.mlp_layout(n, c, d_in, bias=not ntk)
    variables = B.state_dict_to_variables(net.state_dict(), layout)
    masks = B.smask_to_masks(smask, variables["params"], layout)
    x = rng.normal(size=(10, d_in)).astype(np.float32)
    y = rng.integers(0, c, size=10)
    opt = tr.make_sgd(net, 0.1, 0.9, 5e-4)
    t_losses = tr.train_steps(net, opt, smask, torch.tensor(x), torch.tensor(y), 2)
    module = models.MLP(
        width=n, num_classes=c, parametrization="ntk" if ntk else "standard", use_bias=not ntk
    )
    out, _, j_losses = _jax_steps(
        module, variables, masks, jnp.asarray(x), jnp.asarray(y), 2, 0.1, 0.9, 5e-4
    )
    np.testing.assert_allclose(j_losses, t_losses, rtol=1e-5)
    got, want = (
        _leaves(out["params"]),
        _leaves(B.state_dict_to_variables(net.state_dict(), layout)["params"]),
    )
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5 * np.abs(want[k]).max(), err_msg=k)
    assert np.all(got["fc/kernel"][~masks["fc"]["kernel"]] == 0.0)


def test_imagenet_stem_twin_matches_flax():
    torch.manual_seed(0)
    net = tr.resnet18(2, 3, stem="imagenet")
    layout = B.resnet18_layout(2, 3, stem="imagenet")
    variables = B.state_dict_to_variables(net.state_dict(), layout)
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(
        B.flax_logits(variables, layout, x.transpose(0, 2, 3, 1)), tr.eval_logits(net, x), atol=1e-5
    )


def test_bad_stem_raises():
    with pytest.raises(ValueError, match="stem='vit'"):
        tr.resnet18(4, 10, stem="vit")
