"""Baseline interop (widesparse_jax.baseline) on the fixture made by the baseline's own code.

Fixture: ../shared/golden/interop beside the repository (see shared/golden/README.md).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from golden_paths import INTEROP_DIR as GOLDEN  # noqa: E402

from widesparse_jax import baseline as B  # noqa: E402
from widesparse_jax import torch_reference as tr  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"fixture {GOLDEN} not found")

W, C = 6, 10


def _g(name):
    return str(GOLDEN / name)


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(_g("expected.npz")))


@pytest.fixture(scope="module")
def final():
    return B.load_baseline(_g("model_final.pt"), _g("smask.pt"), width=W, num_classes=C)


def _leaves(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = v
    return out


def _raw(name):
    return torch.load(_g(name), weights_only=False)


def test_layout_matches_baseline_names_and_parameter_order():
    sd = _raw("model_init.pt")["state_dict"]
    layout = B.resnet18_layout(W, C)
    net = tr.resnet18(W, C)
    assert list(
        B.variables_to_state_dict(B.state_dict_to_variables(sd, layout), layout).keys()
    ) == list(sd.keys())
    assert layout.param_keys() == [n for n, _ in net.named_parameters()]
    assert [l.smask_key for l in layout.weight_layers()] == list(tr.layer_order(net))


@pytest.mark.parametrize(
    "fname,key", [("model_init.pt", "logits_init"), ("model_final.pt", "logits")]
)
def test_eval_logits_match_baseline(expected, fname, key):
    y = B.baseline_logits(_g(fname), _g("smask.pt"), expected["x_nhwc"], width=W, num_classes=C)
    assert y.dtype == np.float32 and y.shape == (8, C)
    np.testing.assert_allclose(y, expected[key], atol=1e-4, rtol=0)


def test_conversion_layouts_and_values(final):
    raw = _raw("model_final.pt")["state_dict"]
    p, s = final.variables["params"], final.variables["batch_stats"]
    np.testing.assert_array_equal(
        p["layer2_0"]["shortcut_0"]["kernel"],
        raw["layer2.0.shortcut.0.weight"].numpy().transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(p["linear"]["kernel"], raw["linear.weight"].numpy().T)
    np.testing.assert_array_equal(p["layer3_1"]["bn2"]["scale"], raw["layer3.1.bn2.weight"].numpy())
    np.testing.assert_array_equal(
        s["layer4_0"]["shortcut_1"]["var"], raw["layer4.0.shortcut.1.running_var"].numpy()
    )
    assert p["conv1"]["kernel"].shape == (3, 3, 3, W)
    assert final.args["width"] == W and final.epoch == -1


def test_kept_counts_and_masked_weights_zero(expected, final):
    kept = B.count_kept(final.masks, final.variables["params"], final.layout)
    assert [kept[k] for k in expected["smask_keys"]] == expected["mask_kept"].tolist()
    smask = torch.load(_g("smask.pt"), weights_only=True)
    leaves = _leaves(final.variables["params"])
    masks = _leaves(final.masks)
    n_masked = 0
    for path, m in masks.items():
        if m is None:
            continue
        assert m.dtype == np.bool_ and m.shape == leaves[path].shape
        assert np.all(leaves[path][~m] == 0.0)
        n_masked += int((~m).sum())
        # polarity: keep-mask is the transposed negation of the frozen smask
        key = path.rsplit("/", 1)[0].replace("/", "_")
        np.testing.assert_array_equal(m, ~smask[key].numpy().transpose(2, 3, 1, 0))
    assert n_masked == int(expected["mask_frozen"].sum())
    # dense layers are None, uncounted leaves (BN, biases) are None
    assert final.masks["conv1"]["kernel"] is None and final.masks["bn1"]["scale"] is None
    assert final.masks["linear"]["bias"] is None


def test_momentum_import(final):
    opt = _raw("model_final.pt")["optimizer"]
    assert final.momentum is not None
    # index 0 = conv1.weight, 61 = linear.bias (model.parameters() order)
    np.testing.assert_array_equal(
        final.momentum["conv1"]["kernel"],
        opt["state"][0]["momentum_buffer"].numpy().transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        final.momentum["linear"]["bias"], opt["state"][61]["momentum_buffer"].numpy()
    )
    init = B.load_baseline(_g("model_init.pt"), _g("smask.pt"), width=W, num_classes=C)
    assert init.momentum is None  # torch SGD state is empty before the first step


def test_export_load_round_trip_bit_exact(final, tmp_path):
    mpath, spath = B.export_baseline(
        final.variables,
        final.masks,
        str(tmp_path),
        width=W,
        num_classes=C,
        base_width=3,
        momentum=final.momentum,
        epoch=-1,
        num_batches_tracked=2,
        args={"seed": 1, "mbs": 8},
    )
    back = B.load_baseline(mpath, spath, width=W, num_classes=C)
    for a, b in ((final.variables, back.variables), (final.momentum, back.momentum)):
        la, lb = _leaves(a), _leaves(b)
        assert la.keys() == lb.keys()
        for k in la:
            assert la[k].dtype == lb[k].dtype and np.array_equal(la[k], lb[k]), k
    ma, mb = _leaves(final.masks), _leaves(back.masks)
    assert ma.keys() == mb.keys()
    for k in ma:
        assert (ma[k] is None) == (mb[k] is None) and (
            ma[k] is None or np.array_equal(ma[k], mb[k])
        )

    # Same file format as the baseline's: keys, dtypes, shapes, smask keys/order/values.
    ref, new = _raw("model_final.pt"), torch.load(mpath, weights_only=False)
    assert set(new) == set(ref)
    assert list(new["state_dict"]) == list(ref["state_dict"])
    for k, v in ref["state_dict"].items():
        assert new["state_dict"][k].dtype == v.dtype and new["state_dict"][k].shape == v.shape, k
        assert torch.equal(new["state_dict"][k], v), k  # incl. num_batches_tracked == 2
    assert isinstance(new["args"], argparse.Namespace)
    assert (new["args"].width, new["args"].base_width, new["args"].num_classes) == (W, 3, C)
    ref_s, new_s = (
        torch.load(_g("smask.pt"), weights_only=True),
        torch.load(spath, weights_only=True),
    )
    assert list(new_s) == list(ref_s)
    for k in ref_s:
        assert (ref_s[k] is None and new_s[k] is None) or (
            new_s[k].dtype == torch.bool and torch.equal(new_s[k], ref_s[k])
        ), k

    # The baseline's resume path accepts it: model / SGD / MultiStepLR load_state_dict.
    net = tr.resnet18(W, C)
    net.load_state_dict(new["state_dict"])
    opt = tr.make_sgd(net, 0.1, 0.9, 5e-4)
    opt.load_state_dict(new["optimizer"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[50, 120, 200], gamma=0.1)
    sched.load_state_dict(new["scheduler"])
    for i, (n, p) in enumerate(net.named_parameters()):
        assert torch.equal(
            opt.state[p]["momentum_buffer"], ref["optimizer"]["state"][i]["momentum_buffer"]
        ), n


def test_mismatched_sizes_raise_clear_errors(tmp_path):
    with pytest.raises(
        ValueError, match=r"'conv1.weight' has shape \(6, 3, 3, 3\), expected \(8, 3, 3, 3\)"
    ):
        B.load_baseline(_g("model_init.pt"), _g("smask.pt"), width=8, num_classes=C)
    with pytest.raises(
        ValueError, match=r"'linear.weight' has shape \(10, 48\), expected \(100, 48\)"
    ):
        B.load_baseline(_g("model_init.pt"), None, width=W, num_classes=100)
    bad = torch.load(_g("smask.pt"), weights_only=True)
    bad["layer4_0_conv2"] = torch.zeros(48, 48, 1, 1, dtype=torch.bool)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(
        ValueError,
        match=r"mask file: key 'layer4_0_conv2' has shape \(48, 48, 1, 1\), "
        r"expected \(48, 48, 3, 3\)",
    ):
        B.load_baseline(_g("model_init.pt"), str(tmp_path / "bad.pt"), width=W, num_classes=C)
    bad = {"layer9_0_conv1": None}
    torch.save(bad, tmp_path / "bad2.pt")
    with pytest.raises(ValueError, match="unknown layer key"):
        B.load_baseline(_g("model_init.pt"), str(tmp_path / "bad2.pt"), width=W, num_classes=C)
    with pytest.raises(ValueError, match="no such file"):
        B.load_baseline(str(tmp_path / "nope.pt"), None, width=W, num_classes=C)


def test_io_only_mask_is_broadcast_over_the_kernel():
    layout = B.resnet18_layout(2, 3)
    params = B.state_dict_to_variables(tr.resnet18(2, 3).state_dict(), layout)["params"]
    frozen = torch.zeros(16, 16, dtype=torch.bool)
    frozen[3, 5] = True
    masks = B.smask_to_masks({"layer4_1_conv1": frozen}, params, layout)
    m = masks["layer4_1"]["conv1"]["kernel"]
    assert m.shape == (3, 3, 16, 16) and (~m).sum() == 9 and not m[:, :, 5, 3].any()


def test_read_stats():
    s = B.read_stats(_g("stats.pt"))
    assert s["epochs"].tolist() == [0]
    np.testing.assert_allclose(s["train_loss"], [2.247942328453064])
    np.testing.assert_allclose(s["test_loss"], [2.29895281791687])
    assert s["train_acc1"].tolist() == [25.0] and s["test_acc1"].tolist() == [12.5]


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_checkpoint(tmp_path, batch_norm):
    """A baseline-format MLP .ckpt (mask = weight == 0, as MLP/main.py) -> our MLP, same logits."""
    torch.manual_seed(0)
    net = tr.mlp(20, 7, 4, batch_norm=batch_norm)
    if batch_norm:
        with torch.no_grad():
            net.layers["bn"].running_mean.uniform_(-1, 1)
            net.layers["bn"].running_var.uniform_(0.5, 2)
    frozen = torch.rand(7, 20) < 0.5
    tr.apply_smask(net, {"fc": frozen})
    args = argparse.Namespace(width=7, base_width=4, NTK_style=False, make_linear=False)
    torch.save(
        {
            "epoch": 3,
            "state_dict": net.state_dict(),
            "optimizer": torch.optim.SGD(net.parameters(), lr=0.1).state_dict(),
            "args": args,
        },
        tmp_path / "m.ckpt",
    )
    bm = B.load_baseline(str(tmp_path / "m.ckpt"), None, width=7, num_classes=4)
    assert bm.layout.model == "mlp"
    np.testing.assert_array_equal(bm.masks["fc"]["kernel"], ~frozen.numpy().T)
    assert bm.variables["params"]["cl"]["kernel"].shape == (7, 4)
    x = np.random.default_rng(0).normal(size=(5, 20)).astype(np.float32)
    y = B.flax_logits(bm.variables, bm.layout, x)
    np.testing.assert_allclose(y, tr.eval_logits(net, x), atol=1e-5)


def test_npz_round_trip(final, tmp_path):
    B.save_npz(str(tmp_path / "v.npz"), final.variables, final.masks, final.momentum, {"width": W})
    v, m, mom, meta = B.load_npz(str(tmp_path / "v.npz"))
    assert meta == {"width": W}
    for a, b in ((final.variables, v), (final.momentum, mom)):
        la, lb = _leaves(a), _leaves(b)
        assert la.keys() == lb.keys() and all(np.array_equal(la[k], lb[k]) for k in la)
    assert m["conv1"]["kernel"] is None and np.array_equal(
        m["layer4_0"]["conv2"]["kernel"], final.masks["layer4_0"]["conv2"]["kernel"]
    )


def test_cli_convert_export_and_errors(tmp_path, capsys):
    npz = str(tmp_path / "v.npz")
    assert (
        B.main(
            [
                "convert",
                "--model-file",
                _g("model_final.pt"),
                "--mask-file",
                _g("smask.pt"),
                "--width",
                "6",
                "--num-classes",
                "10",
                "--output",
                npz,
            ]
        )
        == 0
    )
    out = str(tmp_path / "exp")
    assert B.main(["export", "--input", npz, "--out-dir", out, "--epoch", "-1"]) == 0
    ref, new = (
        _raw("model_final.pt")["state_dict"],
        torch.load(os.path.join(out, "model_final.pt"), weights_only=False),
    )
    assert new["args"].base_width == 3  # carried through the npz metadata
    for k, v in ref.items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(new["state_dict"][k], v), k
    assert (
        B.main(
            [
                "convert",
                "--model-file",
                _g("model_final.pt"),
                "--width",
                "5",
                "--num-classes",
                "10",
                "--output",
                npz,
            ]
        )
        == 2
    )
    assert "'conv1.weight' has shape (6, 3, 3, 3), expected (5, 3, 3, 3)" in capsys.readouterr().err


def test_cli_logits_subprocess(expected, tmp_path, capsys):
    x = tmp_path / "x.npy"
    y = tmp_path / "y.npy"
    np.save(x, expected["x_nhwc"])
    cmd = [
        sys.executable,
        "-m",
        "widesparse_jax.baseline",
        "logits",
        "--model-file",
        _g("model_final.pt"),
        "--mask-file",
        _g("smask.pt"),
        "--width",
        "6",
        "--num-classes",
        "10",
        "--input",
        str(x),
        "--output",
        str(y),
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = np.load(y)
    assert out.dtype == np.float32 and out.shape == (8, 10)
    np.testing.assert_allclose(out, expected["logits"], atol=1e-4, rtol=0)
    # the error path in-process (same main; exit code 2, the message names the shapes)
    argv = cmd[cmd.index("logits") :]
    argv[argv.index("--width") + 1] = "8"
    assert B.main(argv) == 2
    assert "expected (8, 3, 3, 3)" in capsys.readouterr().err


@pytest.mark.slow
def test_export_from_checkpoint_workdir(tmp_path):
    """A real run workdir (config + orbax checkpoint at step 0) -> baseline files -> same weights.

    Slow (~30-80 s: TFDS mock data, model init twice, orbax restore).
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    import jax

    from configs import default
    from widesparse_jax import checkpoint, data, setup
    from widesparse_jax import config as cfglib

    c = default.get_config()
    c.model.width, c.model.base_width = 4, 2
    c.train.seed, c.train.batch_size = 3, 4
    c.dataset.source = "tfds"
    wd = str(tmp_path / "run")
    with tfds.testing.mock_data(num_examples=8):
        c = cfglib.resolve_config(c)
        checkpoint.write_config(wd, c.to_dict())
        info = data.dataset_info(data.DataSpec.from_config(c.dataset))
        st = setup.init_state(setup.build_run(c, info))
        ck = checkpoint.Checkpointer(wd, cfglib.run_fingerprint(c))
        ck.save(0, setup.state_to_dict(st), {})
        ck.close()
        mpath, spath = B.export_from(wd, str(tmp_path / "out"))
    bm = B.load_baseline(mpath, spath, width=4, num_classes=10)
    assert (bm.args["base_width"], bm.args["mbs"], bm.args["seed"]) == (2, 4, 3)
    ours = _leaves(jax.device_get(st.params))
    back = _leaves(bm.variables["params"])
    assert ours.keys() == back.keys() and all(np.array_equal(ours[k], back[k]) for k in ours)
    m_ours = {k: v for k, v in _leaves(jax.device_get(st.masks)).items() if v is not None}
    m_back = {k: v for k, v in _leaves(bm.masks).items() if v is not None}
    assert m_ours.keys() == m_back.keys() and len(m_ours) > 0
    assert all(np.array_equal(np.asarray(m_ours[k]), m_back[k]) for k in m_ours)
