"""Bad input (issue 12, defect 7): each case exits non-zero with ONE short line naming the
field, the value and what is allowed, before anything is written.

Run in-process through ``main.run`` (the ``python main.py`` entry without a new process);
two cases spawn ``main.py`` where the process itself is the point (exit code, no traceback).
"""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import main
from tests.markers import FMNIST_DIR, needs_fmnist

ROOT = Path(__file__).resolve().parents[1]
MLP = "--config=configs/fashion_mnist_mlp.py"
RESNET = "--config=configs/fashion_mnist_resnet.py"


def _c(**kw) -> list[str]:
    return [f"--config.{k.replace('__', '.')}={v}" for k, v in kw.items()]


# (id, flags after --workdir, substrings the one error line must hold). {tmp}: a tmp folder.
CASES = [
    ("width_negative", [MLP, *_c(model__width=-1)], ["model.width=-1", "integer >= 1"]),
    ("width_zero", [MLP, *_c(model__width=0)], ["model.width=0", "integer >= 1"]),
    ("width_fraction", [MLP, *_c(model__width=1.5)], ["model.width=1.5", "int"]),
    ("base_width_negative", [MLP, *_c(model__base_width=-3)], ["base_width=-3", ">= 1"]),
    ("base_width_fraction", [MLP, *_c(model__base_width=2.5)], ["base_width=2.5", "int"]),
    ("base_width_gt_width", [MLP, *_c(model__base_width=1024)], ["base_width=1024", "<= width"]),
    ("model_name", [MLP, *_c(model__name="resnet99")], ["model.name='resnet99'", "'mlp'"]),
    ("dataset_name", [MLP, *_c(dataset__name="cifar11")], ["dataset.name='cifar11'", "'mnist'"]),
    ("method", [MLP, *_c(sparsity__method="random")], ["method='random'", "'paper'"]),
    ("schedule", [MLP, *_c(optimizer__schedule="linear")], ["schedule='linear'", "'cosine'"]),
    ("augment", [RESNET, *_c(dataset__augment="rotate")], ["augment='rotate'", "'crop'"]),
    ("activation", [MLP, *_c(model__activation="tanh")], ["activation='tanh'", "'relu'"]),
    ("normalization", [MLP, *_c(dataset__normalization="z")], ["normalization='z'", "'pixel'"]),
    ("granularity", [MLP, *_c(sparsity__granularity="block")], ["granularity='block'", "kernel"]),
    ("dtype", [MLP, *_c(model__dtype="float16")], ["dtype='float16'", "'bfloat16'"]),
    ("source", [MLP, *_c(dataset__source="ftp")], ["source='ftp'", "'idx'"]),
    ("lr_negative", [MLP, *_c(optimizer__lr=-0.1)], ["lr=-0.1", "finite number > 0"]),
    ("lr_zero", [MLP, *_c(optimizer__lr=0.0)], ["lr=0.0", "finite number > 0"]),
    ("lr_inf", [MLP, *_c(optimizer__lr="inf")], ["lr=inf", "finite number > 0"]),
    ("lr_nan", [MLP, *_c(optimizer__lr="nan")], ["lr=nan", "finite number > 0"]),
    ("momentum_high", [MLP, *_c(optimizer__momentum=1.5)], ["momentum=1.5", "[0, 1)"]),
    ("momentum_negative", [MLP, *_c(optimizer__momentum=-0.1)], ["momentum=-0.1", "[0, 1)"]),
    ("gamma_zero", [RESNET, *_c(optimizer__gamma=0.0)], ["gamma=0.0", "(0, 1]"]),
    ("gamma_high", [RESNET, *_c(optimizer__gamma=2.0)], ["gamma=2.0", "(0, 1]"]),
    ("weight_decay", [MLP, *_c(optimizer__weight_decay=-1.0)], ["weight_decay=-1.0", ">= 0"]),
    ("batch_zero", [MLP, *_c(train__batch_size=0)], ["batch_size=0", "integer >= 1"]),
    ("batch_negative", [MLP, *_c(train__batch_size=-8)], ["batch_size=-8", "integer >= 1"]),
    ("eval_batch_zero", [MLP, *_c(train__eval_batch_size=0)], ["eval_batch_size=0", ">= 1"]),
    ("epochs_zero", [MLP, *_c(train__num_epochs=0)], ["num_epochs=0", "integer >= 1"]),
    ("epochs_negative", [MLP, *_c(train__num_epochs=-1)], ["num_epochs=-1", "integer >= 1"]),
    ("seed_negative", [MLP, *_c(train__seed=-1)], ["seed=-1", "integer >= 0"]),
    ("log_every_zero", [MLP, *_c(train__log_every_steps=0)], ["log_every_steps=0", ">= 1"]),
    ("keep_zero", [MLP, *_c(train__max_checkpoints_to_keep=0)], ["keep=0", ">= 1"]),
    (
        "milestones_decreasing",
        [RESNET, *_c(optimizer__milestones="(5,3)")],
        ["milestones=(5, 3)", "strictly increasing"],
    ),
    (
        "milestones_beyond_run",
        [RESNET, *_c(optimizer__milestones="(3,8)")],
        ["milestones=(3, 8)", "num_epochs=6", "[8]"],
    ),
    ("warmup_negative", [MLP, *_c(optimizer__warmup_epochs=-1)], ["warmup_epochs=-1", ">= 0"]),
    (
        "warmup_longer_than_run",
        [MLP, *_c(optimizer__warmup_epochs=20)],
        ["warmup_epochs=20", "fewer than train.num_epochs=10"],
    ),
    (
        "subset_seed_without_subset",
        [MLP, *_c(dataset__subset_seed=3)],
        ["subset_seed", "train_subset is None"],
    ),
    ("image_size_fmnist", [MLP, *_c(dataset__image_size=64)], ["image_size=64", "fashion_mnist"]),
    (
        "train_subset_too_large",
        [MLP, *_c(dataset__train_subset=100000)],
        ["train_subset=100000", "60000 training examples"],
    ),
    (
        "batch_larger_than_dataset",
        [MLP, *_c(dataset__train_subset=500, train__batch_size=1000)],
        ["batch_size=1000", "500 training examples"],
    ),
    (
        "dense_layers_no_layer",
        [MLP, "--config.sparsity.dense_layers=('nope',)"],
        ["nope", "config.sparsity"],
    ),
    (
        "idx_dir_missing",
        [MLP, *_c(dataset__idx_dir="{tmp}/nowhere")],
        ["idx_dir=", "nowhere", "does not exist"],
    ),
    (
        "idx_dir_empty",
        [MLP, *_c(dataset__idx_dir="{tmp}/empty")],
        ["idx_dir=", "empty", "lacks some of the IDX files"],
    ),
    (
        "idx_dir_without_test_files",
        [MLP, *_c(dataset__source="idx", dataset__idx_dir="{tmp}/train_only")],
        ["idx_dir=", "train_only", "lacks some", "t10k"],
    ),
    (
        "data_dir_missing_tfds",
        [MLP, *_c(dataset__source="tfds", dataset__data_dir="{tmp}/no_tfds")],
        ["data_dir=", "no_tfds", "does not exist"],
    ),
    (
        "data_dir_missing_auto",
        [MLP, *_c(dataset__data_dir="{tmp}/no_tfds")],
        ["data_dir=", "no_tfds", "does not exist"],
    ),
    (
        "resnet_too_large",
        [RESNET, *_c(model__width=100000, model__base_width=8)],
        ["model.width=100000", "GiB", "smaller model.width"],
    ),
    ("typo_field", [MLP, "--config.train.num_epoch=3"], ["num_epoch", "did you mean num_epochs"]),
    ("missing_config_file", ["--config=configs/nope.py"], ["configs/nope.py", "cannot load"]),
    ("config_syntax_error", ["--config={tmp}/broken.py"], ["broken.py line 1", "syntax"]),
]


def _prepare(tmp: Path) -> None:
    (tmp / "empty").mkdir()
    (tmp / "broken.py").write_text("def get_config(:\n")
    (tmp / "train_only").mkdir()
    if FMNIST_DIR is not None:
        for name in os.listdir(FMNIST_DIR):
            if name.startswith("train"):
                os.symlink(os.path.join(FMNIST_DIR, name), tmp / "train_only" / name)


def _run_main(argv: list[str], capsys) -> tuple[int, list[str]]:
    """``main.run(argv)``; its exit code and the stderr lines that start with 'error:'."""
    capsys.readouterr()
    code = main.run(["main.py", *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.startswith("error:")]


@needs_fmnist
@pytest.mark.parametrize("flags, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_one_line_before_anything_is_written(tmp_path, capsys, flags, expected):
    _prepare(tmp_path)
    workdir = tmp_path / "run"
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    code, errors = _run_main([f"--workdir={workdir}", *flags], capsys)
    assert code == 2
    assert len(errors) == 1, errors
    assert len(errors[0]) < 400, errors[0]
    for text in expected:
        assert text in errors[0], (text, errors[0])
    assert not workdir.exists()


def _workdir_refused(workdir: str, watch: Path, expected: str, capsys) -> None:
    before = sorted(watch.rglob("*"))
    code, errors = _run_main([f"--workdir={workdir}", MLP, *_c(train__num_train_steps=1)], capsys)
    assert code == 2 and len(errors) == 1 and expected in errors[0], errors
    assert sorted(watch.rglob("*")) == before


@needs_fmnist
def test_workdir_that_is_a_file_or_unwritable(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    _workdir_refused(str(tmp_path / "afile"), tmp_path, "is a file", capsys)
    assert (tmp_path / "afile").read_text() == "x"
    _workdir_refused(str(tmp_path / "afile" / "run"), tmp_path, "under the file", capsys)
    # /proc/1 refuses new entries even to root (os.access says so before any write)
    _workdir_refused("/proc/1/widesparse_run", tmp_path, "not writable", capsys)


@needs_fmnist
def test_dense_when_base_width_equals_width_is_logged(tmp_path, caplog):
    flags = [MLP, *_c(model__width=16, model__base_width=16, train__num_train_steps=1)]
    flags += _c(dataset__train_subset=100, train__eval_batch_size=100)
    with caplog.at_level(logging.INFO):
        code = main.run(["main.py", f"--workdir={tmp_path}", *flags])
    assert code == 0
    assert "model.base_width == model.width (16): training the dense net" in caplog.text


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--config=configs/nope.py"], "cannot load the config file"),
        ([MLP, "--config.train.num_epoch=3"], "did you mean num_epochs"),
    ],
)
def test_flag_errors_exit_2_without_traceback_in_a_process(tmp_path, flags, expected):
    cmd = [sys.executable, str(ROOT / "main.py"), f"--workdir={tmp_path / 'run'}", *flags]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [p.stderr.strip()]  # one line
    assert expected in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists()


@needs_fmnist
def test_batch_not_divisible_by_device_count_in_a_process(tmp_path):
    """Two (forced) CPU devices: a batch of 51 is refused before the workdir exists."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    cmd = [sys.executable, str(ROOT / "main.py"), f"--workdir={tmp_path / 'run'}", MLP]
    cmd += _c(train__batch_size=51)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: config.train.batch_size=51 is not divisible by the 2 devices; use a multiple of 2"
    ]
    assert "Traceback" not in p.stderr and not (tmp_path / "run").exists()


def test_imagenet_without_a_compiler_is_refused_up_front(tmp_path, monkeypatch):
    """The streaming path's resize op is built on first use; no compiler: one ConfigError."""
    from widesparse_jax import preflight
    from widesparse_jax.config import ConfigError
    from widesparse_jax.data import pil_resize

    monkeypatch.setattr(pil_resize, "_LOADED", {})  # as in a process that has not loaded it
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    monkeypatch.setenv(pil_resize.ENV, str(tmp_path / "ops"))
    with pytest.raises(ConfigError) as e:
        preflight.check_resize_op("imagenet2012")
    message = str(e.value)
    assert "config.dataset.name='imagenet2012'" in message and "no-such-compiler-xyz" in message
    assert "\n" not in message and len(message) < 400
