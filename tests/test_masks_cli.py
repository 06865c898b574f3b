"""End-to-end tests of ``python -m widesparse_jax.masks`` (real models): in-process through
its ``main``, plus one real subprocess of the entry point (and its error exit code)."""

import contextlib
import io
import json
import subprocess
import sys

import pytest

pytest.importorskip("widesparse_jax.models")

from golden_paths import SPARSITY_JSON as GOLDEN  # noqa: E402

from widesparse_jax.masks import __main__ as cli  # noqa: E402


def run_cli(*args, ok=True, process=False):
    """The CLI's JSON (ok) or its stderr (error). In-process through ``__main__.main`` (the
    code ``python -m`` runs); ``process=True`` spawns the real ``python -m`` entry point."""
    argv = [str(a) for a in args]
    if process:
        proc = subprocess.run(
            [sys.executable, "-m", "widesparse_jax.masks", *argv],
            capture_output=True,
            text=True,
            timeout=120,
        )
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        out_buf, err_buf = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out_buf), contextlib.redirect_stderr(err_buf):
            try:
                code = cli.main(argv)
            except SystemExit as e:  # argparse errors exit 2
                code = e.code
        out, err = out_buf.getvalue(), err_buf.getvalue()
    if ok:
        assert code == 0, err
        return json.loads(out)
    assert code not in (0, None)
    return err


def torch_name(flax_name):
    return flax_name[: -len("/kernel")].replace("/", "_").replace("_", ".") + ".weight"


def cifar_count(w, c):
    return 2724 * w * w + 27 * w + 8 * w * c


@pytest.mark.parametrize("case", json.loads(GOLDEN.read_text())["cases"], ids=lambda c: c["case"])
def test_cli_matches_golden(case):
    w, b, c = case["width"], case["base_width"], case["num_classes"]
    out = run_cli(
        "--model",
        "resnet18",
        "--stem",
        "cifar",
        "--num-classes",
        c,
        "--width",
        w,
        "--base-width",
        b,
    )
    assert out["total_width"] == cifar_count(w, c) == case["dense_total_at_width"]
    assert out["total_base"] == cifar_count(b, c) == case["target_total"]
    assert out["total_keep"] == case["kept_total"]
    assert [torch_name(l["name"]) for l in out["layers"]] == [l["name"] for l in case["layers"]]
    assert [l["keep"] for l in out["layers"]] == [l["kept"] for l in case["layers"]]
    for mine, ref in zip(out["layers"], case["layers"]):
        o = ref["shape"]
        assert tuple(mine["shape"]) == ((o[2], o[3], o[1], o[0]) if len(o) == 4 else (o[1], o[0]))
        assert mine["size"] == ref["total"]


def test_cli_imagenet_dense_and_kernel_draw():
    out = run_cli("--model", "resnet18", "--stem", "imagenet", "--num-classes", 1000, "--width", 16)
    assert (
        out["total_width"]
        == out["total_base"]
        == out["total_keep"]
        == 2724 * 16**2 + 147 * 16 + 8000 * 16
    )
    assert all(l["keep"] == l["size"] for l in out["layers"])
    assert out["layers"][0]["name"] == "conv1/kernel" and out["layers"][0]["shape"] == [7, 7, 3, 16]
    out = run_cli(
        "--model",
        "resnet18",
        "--stem",
        "cifar",
        "--num-classes",
        10,
        "--width",
        24,
        "--base-width",
        10,
        "--granularity",
        "kernel",
        "--draw",
        "--seed",
        3,
    )
    assert out["granularity"] == "kernel"
    assert out["total_keep"] - out["total_base"] == out["difference"]
    assert abs(out["difference"]) <= 4
    assert all(l["kept_drawn"] == l["keep"] for l in out["layers"])


def test_cli_mlp_and_methods():
    out = run_cli(
        "--model",
        "mlp",
        "--input-dim",
        784,
        "--num-classes",
        10,
        "--width",
        640,
        "--base-width",
        5,
        process=True,  # the real entry point, once
    )
    assert [l["name"] for l in out["layers"]] == ["fc/kernel", "cl/kernel"]
    assert [l["shape"] for l in out["layers"]] == [[784, 640], [640, 10]]
    assert out["total_base"] == out["total_keep"] == 5 * 794 and out["total_width"] == 640 * 794
    out = run_cli(
        "--model",
        "mlp",
        "--num-classes",
        10,
        "--width",
        635,
        "--base-width",
        8,
        "--dense-layers",
        "cl/kernel",
        "--method",
        "uniform",
    )
    assert [l["keep"] for l in out["layers"]] == [2, 6350]


def test_cli_errors():
    err = run_cli("--model", "resnet18", "--width", 8, "--base-width", 16, ok=False, process=True)
    assert "--width 8 is below --base-width 16" in err
    err = run_cli(
        "--model", "resnet18", "--width", 16, "--base-width", 8, "--method", "magic", ok=False
    )
    assert "magic" in err and "paper" in err
