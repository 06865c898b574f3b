"""Training system: config validation, masked training, exact resume, multi-device.

Real data: Fashion-MNIST IDX files of the Debian package (offline), or TFDS mock data.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import default as default_config
from configs import fashion_mnist_mlp
from tests.markers import needs_fmnist
from widesparse_jax import checkpoint as ckpt_lib
from widesparse_jax import config as config_lib
from widesparse_jax import data, optim, restore, setup, train
from widesparse_jax import masks as masks_lib
from widesparse_jax import metrics as metrics_lib

ROOT = Path(__file__).resolve().parents[1]


def small_mlp_config(**train_overrides):
    """Fashion-MNIST MLP, sparse width 64 at the weight count of width 8, few steps."""
    c = fashion_mnist_mlp.get_config()
    c.model.width = 64
    c.model.base_width = 8
    c.dataset.train_subset = 1000
    c.train.batch_size = 50
    c.train.eval_batch_size = 500
    c.train.num_epochs = 2
    c.train.log_every_steps = 10
    c.train.checkpoint_every_steps = 15
    c.optimizer.weight_decay = 5e-4
    for k, v in train_overrides.items():
        setattr(c.train, k, v)
    return c


def run_main(workdir, *flags, devices=None, check=True, timeout=300, env=None):
    env = dict(os.environ if env is None else env)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    cmd = [sys.executable, str(ROOT / "main.py"), f"--workdir={workdir}", *flags]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"main.py failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return p


def _summary(p) -> dict:
    """The summary JSON that main.py prints last."""
    return json.loads(p.stdout[p.stdout.index("{") :])


def _initial(c):
    """``(run, initial state)`` of config ``c`` through the factory."""
    cfg = config_lib.resolve_config(c)
    run = setup.build_run(cfg, data.dataset_info(train.data_spec(cfg)))
    return run, setup.init_state(run)


# ----------------------------------------------------------------------------- config


def test_config_validation_names_every_bad_field():
    c = default_config.get_config()
    c.model.width = 8
    c.model.base_width = 16
    c.sparsity.method = "magnitude"
    c.dataset.name = "cifar11"
    c.optimizer.momentum = 1.5
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate_config(c)
    msg = str(e.value)
    assert "config.model.base_width=16" in msg and "width=8" in msg
    assert "config.sparsity.method='magnitude'" in msg and "'paper'" in msg
    assert "config.dataset.name='cifar11'" in msg and "'cifar10'" in msg
    assert "config.optimizer.momentum=1.5" in msg and "[0, 1)" in msg


def test_all_experiment_configs_are_valid():
    import importlib

    for name in (
        "cifar10",
        "cifar100",
        "svhn",
        "imagenet",
        "mnist_mlp",
        "mnist_mlp_ntk",
        "fashion_mnist_mlp",
        "fashion_mnist_resnet",
    ):
        c = importlib.import_module(f"configs.{name}").get_config()
        config_lib.validate_config(c)


def test_base_width_none_zero_or_equal_is_dense():
    c = default_config.get_config()
    c.model.width = 32
    for bw in (None, 0, 32):
        c.model.base_width = bw
        assert not config_lib.is_sparse(c)
    c.model.base_width = 16
    assert config_lib.is_sparse(c)


def test_ntk_config_resolves_paper_learning_rates():
    from configs import mnist_mlp_ntk

    c = mnist_mlp_ntk.get_config()
    c.model.width, c.model.base_width = 128, 8
    assert config_lib.resolve_config(c).optimizer.lr == 260.0  # sparse table
    c.model.base_width = None
    assert config_lib.resolve_config(c).optimizer.lr == 173.0  # dense table
    c.model.width = 100
    with pytest.raises(config_lib.ConfigError, match="width=100 has no tuned learning rate"):
        config_lib.resolve_config(c)


def test_main_rejects_bad_config_before_writing(tmp_path):
    wd = tmp_path / "run"
    p = run_main(
        wd,
        "--config=configs/fashion_mnist_mlp.py",
        "--config.model.width=4",
        "--config.model.base_width=64",
        check=False,
    )
    assert p.returncode != 0
    assert "config.model.base_width=64" in p.stderr
    assert not wd.exists()


# ----------------------------------------------------------------------------- training


@needs_fmnist
def test_sparse_training_keeps_masked_weights_zero(tmp_path):
    c = small_mlp_config(num_train_steps=40)
    run, state = _initial(c)
    base = 784 * 8 + 8 * 10
    assert masks_lib.count_kept(state.masks, state.params) == base
    # masked before the first forward pass
    assert optim.masked_entries_are_zero(state.params, state.opt_state, state.masks)
    summary = train.train_and_evaluate(c, str(tmp_path))
    variables, masks, _ = restore.load_variables(str(tmp_path))
    params = variables["params"]
    assert summary["kept_weights"] == base
    for path in (("fc", "kernel"), ("cl", "kernel")):
        m = masks[path[0]][path[1]]
        w = params[path[0]][path[1]]
        if m is not None:
            assert np.all(w[~m] == 0.0)
            assert np.count_nonzero(w[m]) == m.sum()  # kept weights trained (nonzero)
    # masks restored from the checkpoint equal a fresh draw (a function of config + seed)
    fresh, _ = _initial(c)
    for a, b in zip(jax.tree.leaves(fresh.masks), jax.tree.leaves(masks)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@needs_fmnist
def test_metrics_files_and_best_accuracy(tmp_path):
    summary = train.train_and_evaluate(small_mlp_config(), str(tmp_path))
    records = metrics_lib.read_metrics(str(tmp_path))
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1.0, 2.0]
    assert all(r["test_count"] == 10000 for r in epochs)
    assert summary["best_test_accuracy"] == max(r["test_accuracy"] for r in epochs)
    assert summary["best_test_accuracy"] > 60.0  # 40 steps of a 64-wide MLP learn something
    # TensorBoard itself reads the event files: the same values as metrics.jsonl
    from tensorboard.backend.event_processing import event_accumulator

    tb = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    tb.Reload()
    for kind, key in (("train", "train_loss"), ("epoch", "test_accuracy")):
        want = [(r["step"], r[key]) for r in records if r["kind"] == kind]
        got = [(e.step, e.value) for e in tb.Scalars(f"{kind}/{key}")]
        assert len(got) == len(want) > 0
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-6)
    assert json.loads((tmp_path / "summary.json").read_text())["step"] == 40
    # starting a finished run again trains nothing and keeps its results
    again = train.train_and_evaluate(small_mlp_config(), str(tmp_path))
    assert again["steps_this_session"] == 0
    assert again["best_test_accuracy"] == summary["best_test_accuracy"]
    assert again["final_test_accuracy"] == summary["final_test_accuracy"]
    assert metrics_lib.read_metrics(str(tmp_path)) == records


@needs_fmnist
def test_checkpoint_of_another_run_is_refused_and_kept(tmp_path):
    train.train_and_evaluate(small_mlp_config(num_train_steps=15), str(tmp_path))
    before = sorted(os.listdir(tmp_path / "checkpoints"))
    c = small_mlp_config(num_train_steps=30)
    c.model.width = 128
    with pytest.raises(
        ckpt_lib.CheckpointMismatchError, match=r"width: checkpoint has 64, this config has 128"
    ):
        train.train_and_evaluate(c, str(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == before
    assert json.loads((tmp_path / "config.json").read_text())["model"]["width"] == 64


@needs_fmnist
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    c = small_mlp_config(num_train_steps=60, checkpoint_every_steps=1, log_every_steps=1)
    c.optimizer.lr = 1e12
    c.optimizer.schedule = "constant"
    with pytest.raises(FloatingPointError, match="non-finite") as e:
        train.train_and_evaluate(c, str(tmp_path))
    assert "holds sane weights" in str(e.value)  # lr=1e12: not even step 1 is sane
    variables, _, _ = restore.load_variables(str(tmp_path))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(variables))


def test_resnet_on_mock_tfds_cifar10(tmp_path):
    c = default_config.get_config()
    c.dataset.name = "cifar10"
    c.dataset.source = "tfds"
    c.model.width, c.model.base_width = 4, 2
    c.train.batch_size = 16
    c.train.eval_batch_size = 16
    c.train.num_train_steps = 3
    c.train.log_every_steps = 1
    with tfds.testing.mock_data(num_examples=40):
        summary = train.train_and_evaluate(c, str(tmp_path))
    assert summary["kept_weights"] == 2724 * 4 + 27 * 2 + 8 * 2 * 10
    assert summary["total_weights"] == 2724 * 16 + 27 * 4 + 8 * 4 * 10
    records = metrics_lib.read_metrics(str(tmp_path))
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert np.isfinite(records[-1]["test_loss"])


# ----------------------------------------------------------------------------- resume


def _final_params(workdir):
    variables, _, _ = restore.load_variables(str(workdir))
    return variables


def _metric_records(workdir):
    drop = ("examples_per_sec", "input_wait_fraction")
    return [
        {k: v for k, v in r.items() if k not in drop}
        for r in metrics_lib.read_metrics(str(workdir))
    ]


@needs_fmnist
def test_exact_resume_after_kill(tmp_path):
    """A run killed with SIGKILL and restarted ends bitwise equal to an uninterrupted run."""
    flags = [
        "--config=configs/fashion_mnist_mlp.py",
        "--config.model.width=1024",
        "--config.model.base_width=32",
        "--config.dataset.train_subset=6000",
        "--config.train.batch_size=60",
        "--config.train.num_epochs=3",
        "--config.train.checkpoint_every_steps=25",
        "--config.train.log_every_steps=10",
        "--config.optimizer.schedule=multistep",
        "--config.optimizer.milestones=(2,)",
        "--config.optimizer.weight_decay=0.0005",
    ]
    ref, run = tmp_path / "ref", tmp_path / "run"
    # One persistent compilation cache, empty at the first launch, for all three launches.
    env = {**os.environ, "WIDESPARSE_JAX_CACHE_DIR": str(tmp_path / "jax_cache")}
    first = _summary(run_main(ref, *flags, env=env))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), f"--workdir={run}", *flags],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        ck = run / "checkpoints"
        steps = [int(d) for d in os.listdir(ck) if d.isdigit()] if ck.exists() else []
        if steps and max(steps) >= 50:
            proc.send_signal(signal.SIGKILL)
            killed_at = max(steps)
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None, "run finished before it could be killed; make it longer"
    assert killed_at < 300

    summary = _summary(run_main(run, *flags, env=env))
    assert 0 < summary["steps_this_session"] < 300  # really resumed, not restarted
    # Start-up accounting: the first launch compiled everything, the resumed one loaded its
    # steps from the persistent cache the earlier launches filled.
    assert first["first_step_compile_cache_hits"] == 0
    assert 0 < first["first_step_compile_s"] < first["first_step_s"]
    assert summary["first_step_compile_cache_hits"] > 0
    assert summary["first_step_compile_s"] < first["first_step_compile_s"]
    a, b = _final_params(ref), _final_params(run)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert _metric_records(ref) == _metric_records(run)


# ----------------------------------------------------------------------------- devices


@needs_fmnist
def test_pmap_8_devices_matches_1_device(tmp_path):
    """ResNet-18 (BatchNorm synced over devices): 8 CPU devices vs 1, same global batch."""
    flags = [
        "--config=configs/fashion_mnist_resnet.py",
        "--config.model.width=4",
        "--config.model.base_width=2",
        "--config.dataset.train_subset=512",
        "--config.train.batch_size=64",
        "--config.train.eval_batch_size=1000",
        "--config.train.num_train_steps=3",
        "--config.train.log_every_steps=1",
        "--config.dataset.augment=none",
    ]
    run_main(tmp_path / "one", *flags, devices=1)
    run_main(tmp_path / "eight", *flags, devices=8)
    a, b = _final_params(tmp_path / "one"), _final_params(tmp_path / "eight")
    # float32 reduction order differs (8 partial sums, BN moments via pmean); measured param
    # differences after 3 steps are <= 2e-4 while the losses agree to ~1e-7 relative. Unsynced
    # BN statistics (8 examples per device instead of 64) would change the losses at once.
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=5e-4)
    # masked weights stay exactly 0 under pmap (invariant 2), kept count exact (invariant 3)
    variables, masks, _ = restore.load_variables(str(tmp_path / "eight"))
    checked = jax.tree.map(
        lambda m, w: None if m is None else bool(np.all(w[~m] == 0.0)),
        masks,
        variables["params"],
        is_leaf=lambda x: x is None,
    )
    assert jax.tree.leaves(checked) and all(jax.tree.leaves(checked))
    assert masks_lib.count_kept(masks, variables["params"]) == 2724 * 4 + 9 * 2 + 8 * 2 * 10
    la = [
        r["train_loss"]
        for r in metrics_lib.read_metrics(str(tmp_path / "one"))
        if r["kind"] == "train"
    ]
    lb = [
        r["train_loss"]
        for r in metrics_lib.read_metrics(str(tmp_path / "eight"))
        if r["kind"] == "train"
    ]
    assert len(la) == 3
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    # (a batch not divisible by the device count: test_bad_input, in a 2-device process)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(workdir, flags, timeout=300):
    """``main.py`` as 2 ``jax.distributed`` processes (2 CPU devices each) on 127.0.0.1.

    Returns ``[(stdout, stderr)]`` of process 0 and 1; fails the test unless both exit 0.
    """
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "main.py"),
                f"--workdir={workdir}",
                *flags,
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=timeout) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    return outs


@needs_fmnist
def test_two_process_run_matches_single_process(tmp_path):
    """jax.distributed on 127.0.0.1: 2 processes x 2 CPU devices == 1 process x 4 devices."""
    flags = [
        "--config=configs/fashion_mnist_mlp.py",
        "--config.model.width=64",
        "--config.model.base_width=8",
        "--config.dataset.train_subset=512",
        "--config.train.batch_size=64",
        "--config.train.num_train_steps=16",
        "--config.train.log_every_steps=4",
        "--config.train.checkpoint_every_steps=8",
        "--config.train.eval_batch_size=1000",
    ]
    wd = tmp_path / "multi"
    outs = run_two_processes(wd, flags)
    assert '"best_test_accuracy"' in outs[0][0] and '"best_test_accuracy"' not in outs[1][0]
    run_main(tmp_path / "single", *flags, devices=4)
    a, b = _final_params(wd), _final_params(tmp_path / "single")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    ra = [r for r in _metric_records(wd) if r["kind"] == "epoch"]
    rb = [r for r in _metric_records(tmp_path / "single") if r["kind"] == "epoch"]
    assert [r["test_count"] for r in ra] == [10000, 10000]
    np.testing.assert_allclose([r["test_accuracy"] for r in ra], [r["test_accuracy"] for r in rb])


@needs_fmnist
def test_mup_wiring(tmp_path):
    """muP equals standard at its base width; at 4x width the readout init shrinks by 1/2."""

    def state_for(width, parametrization, mup_base=None):
        c = small_mlp_config(num_train_steps=5)
        c.model.width, c.model.base_width = width, None
        c.model.parametrization = parametrization
        c.model.mup_base_width = mup_base
        return c, _initial(c)[1]

    _, sp = state_for(64, "standard")
    c_mup, mup = state_for(64, "mup", 64)
    for a, b in zip(jax.tree.leaves(sp.params), jax.tree.leaves(mup.params)):
        np.testing.assert_array_equal(a, b)
    _, sp4 = state_for(256, "standard")
    _, mup4 = state_for(256, "mup", 64)
    np.testing.assert_allclose(
        mup4.params["cl"]["kernel"], sp4.params["cl"]["kernel"] * 0.5, rtol=1e-6
    )
    np.testing.assert_array_equal(mup4.params["fc"]["kernel"], sp4.params["fc"]["kernel"])
    # training at the base width is the standard run, step for step
    c_sp = small_mlp_config(num_train_steps=5)
    c_sp.model.width, c_sp.model.base_width = 64, None
    train.train_and_evaluate(c_sp, str(tmp_path / "sp"))
    train.train_and_evaluate(c_mup, str(tmp_path / "mup"))
    for a, b in zip(
        jax.tree.leaves(_final_params(tmp_path / "sp")),
        jax.tree.leaves(_final_params(tmp_path / "mup")),
    ):
        np.testing.assert_array_equal(a, b)
    c_bad = small_mlp_config()
    c_bad.model.parametrization = "mup"
    with pytest.raises(config_lib.ConfigError, match="config.model.mup_base_width=None"):
        config_lib.validate_config(c_bad)


def test_fast_cpu_flag_respects_user_setting(monkeypatch):
    from widesparse_jax import platform

    user = "--xla_cpu_experimental_ynn_fusion_type=none --xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT --foo"
    monkeypatch.setenv("XLA_FLAGS", user)
    assert platform.enable_fast_cpu_convolutions() is False
    assert os.environ["XLA_FLAGS"] == user
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=none --foo")
    assert platform.enable_fast_cpu_convolutions() is True
    assert os.environ["XLA_FLAGS"] == (
        "--xla_cpu_experimental_ynn_fusion_type=none --foo " + platform.CPU_SCHEDULER_FLAG
    )
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert platform.enable_fast_cpu_convolutions() is True
    assert os.environ["XLA_FLAGS"] == (
        "--xla_force_host_platform_device_count=2 "
        + platform.FAST_CPU_CONV_FLAG
        + " "
        + platform.CPU_SCHEDULER_FLAG
    )


@needs_fmnist
def test_time_blocked_on_input_is_measured(tmp_path, monkeypatch):
    """A train stream that sleeps 0.1 s per batch shows up as time blocked on next()."""
    make = train._train_iterator

    def slow(config, start_step):
        for batch in make(config, start_step):
            time.sleep(0.1)
            yield batch

    monkeypatch.setattr(train, "_train_iterator", slow)
    c = small_mlp_config(num_train_steps=6, log_every_steps=3, checkpoint_every_steps=100)
    summary = train.train_and_evaluate(c, str(tmp_path))
    assert 0.6 <= summary["input_wait_s"] < summary["wall_time_s"]
    # This session's first step compiled its program(s): counted, and part of the launch time.
    assert summary["compilations"] > 0
    assert 0 < summary["first_step_compile_s"] <= summary["compile_s"]
    assert summary["first_step_compile_s"] < summary["first_step_s"]
    waits = [r.get("input_wait_fraction") for r in metrics_lib.read_metrics(str(tmp_path))]
    waits = [w for w in waits if w is not None]
    assert len(waits) == 2 and all(0.0 < w <= 1.0 for w in waits)


def test_train_step_compiles_once():
    """The replicated start state is placed as the pmapped step's outputs are, so the second
    step reuses the first step's program (pmap compiles again for a new input sharding)."""
    from widesparse_jax import compile_cache
    from widesparse_jax import loop as loop_lib

    run, state = _initial(small_mlp_config())
    p_train, _ = train.make_p_steps(run)
    batch = next(train._train_iterator(run.config, 0))
    stats = compile_cache.track()
    replicated = loop_lib.replicate(state)
    replicated, _ = p_train(replicated, batch)
    compiled = stats.compilations
    for _ in range(2):
        replicated, metrics = p_train(replicated, batch)
    jax.block_until_ready(metrics)
    assert stats.compilations == compiled
    leaf = jax.tree.leaves(loop_lib.replicate(state))[0]
    assert leaf.sharding == jax.tree.leaves(replicated)[0].sharding
