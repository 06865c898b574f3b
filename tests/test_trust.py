"""Runs you can trust: resume guard, divergence guard, one run per workdir, clean restarts."""

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

from tests.markers import needs_fmnist
from tests.test_train import small_mlp_config
from widesparse_jax import checkpoint as ckpt_lib
from widesparse_jax import config as config_lib
from widesparse_jax import lock as lock_lib
from widesparse_jax import metrics as metrics_lib
from widesparse_jax import restore, train

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(workdir: Path) -> dict:
    """Bytes of every file under workdir (config.json, checkpoints), by relative path."""
    return {
        str(p.relative_to(workdir)): p.read_bytes()
        for p in sorted(workdir.rglob("*"))
        if p.is_file() and "tensorboard" not in p.parts
    }


@needs_fmnist
def test_trajectory_settings_refused_config_untouched_resume_diverged(tmp_path):
    """Defects 3 and 4: lr/activation/normalization/use_bias changes are refused by name
    before anything is written; --resume_diverged lets only the lr change."""
    train.train_and_evaluate(small_mlp_config(num_train_steps=15), str(tmp_path))
    before = _snapshot(tmp_path)
    for section, field, value, key in (
        ("optimizer", "lr", 0.5, "lr"),
        ("model", "activation", "linear", "activation"),
        ("dataset", "normalization", "none", "normalization"),
        ("model", "use_bias", False, "use_bias"),
    ):
        c = small_mlp_config(num_train_steps=30)
        setattr(c[section], field, value)
        with pytest.raises(ckpt_lib.CheckpointMismatchError, match=rf"{key}: checkpoint has"):
            train.train_and_evaluate(c, str(tmp_path))
        assert _snapshot(tmp_path) == before, field
    assert not (tmp_path / lock_lib.LOCK_FILE).exists()
    restore.load_variables(str(tmp_path))  # the original run still loads
    c = small_mlp_config(num_train_steps=30)
    c.optimizer.lr = 0.01
    summary = train.train_and_evaluate(c, str(tmp_path), resume_diverged=True)
    assert summary["steps_this_session"] == 15


def test_fingerprint_covers_trajectory_settings():
    c = config_lib.resolve_config(small_mlp_config())
    fp = config_lib.run_fingerprint(c)
    for key in ("lr", "momentum", "weight_decay", "schedule", "milestones", "gamma"):
        assert key in fp
    for key in ("activation", "use_bias", "normalization", "augment", "num_epochs", "seed"):
        assert key in fp
    assert "log_every_steps" not in fp and "checkpoint_every_steps" not in fp
    json.dumps(fp)  # JSON-able (stored in the checkpoint meta)


@needs_fmnist
def test_divergence_names_and_resumes_the_newest_sane_checkpoint(tmp_path):
    """Defect 2: lr=1e6 (checkpoint every step) makes finite but huge weights before the
    loss turns non-finite. The error names the newest checkpoint whose weights gave a sane
    loss (not the newest finite one), the newer steps are moved aside, and --resume_diverged
    with a sane lr trains on from it."""
    c = small_mlp_config(num_train_steps=3, checkpoint_every_steps=3, log_every_steps=1)
    c.optimizer.schedule = "constant"
    train.train_and_evaluate(c, str(tmp_path))
    sane, _, _ = restore.load_variables(str(tmp_path))  # step 3
    c.train.num_train_steps, c.train.checkpoint_every_steps, c.optimizer.lr = 15, 1, 1e6
    with pytest.raises(FloatingPointError, match="non-finite") as e:
        train.train_and_evaluate(c, str(tmp_path), resume_diverged=True)
    message = str(e.value)
    assert "newest checkpoint with sane weights is step 3" in message, message
    assert "too large" in message  # the finite checkpoints after step 3 are judged insane
    moved = sorted(int(s) for s in os.listdir(tmp_path / ckpt_lib.DIVERGED_DIR))
    assert moved and min(moved) > 3, moved  # set aside, not deleted (older ones rotated out)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3"]  # kept through the rotation
    variables, _, _ = restore.load_variables(str(tmp_path))  # the newest on disk: step 3
    for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(sane), strict=True):
        np.testing.assert_array_equal(a, b)
    c.train.num_train_steps, c.train.checkpoint_every_steps, c.optimizer.lr = 8, 100, 0.05
    summary = train.train_and_evaluate(c, str(tmp_path), resume_diverged=True)
    assert summary["steps_this_session"] == 5
    losses = [r["train_loss"] for r in metrics_lib.read_metrics(str(tmp_path)) if "train_loss" in r]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


_HOLDER = """
import sys, time
from widesparse_jax import lock
lock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_refuses_second_process_and_takes_over_stale(tmp_path):
    """Defect 5: a live holder (a real second process) refuses; after kill -9, taken over."""
    p = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(lock_lib.WorkdirLockedError, match=f"in use by process {p.pid}"):
            lock_lib.acquire(str(tmp_path))
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert (tmp_path / lock_lib.LOCK_FILE).exists()  # left behind by the killed process
    path = lock_lib.acquire(str(tmp_path))  # stale: taken over
    assert (tmp_path / lock_lib.LOCK_FILE).read_text().split()[0] == str(os.getpid())
    lock_lib.release(path)
    assert not (tmp_path / lock_lib.LOCK_FILE).exists()


@needs_fmnist
def test_noop_restart_keeps_summary(tmp_path):
    """Defect 6 (summary part): restarting a finished run does not rewrite summary.json."""
    train.train_and_evaluate(small_mlp_config(num_train_steps=5), str(tmp_path))
    before = (tmp_path / "summary.json").read_bytes()
    time.sleep(0.01)
    again = train.train_and_evaluate(small_mlp_config(num_train_steps=5), str(tmp_path))
    assert again["steps_this_session"] == 0
    assert (tmp_path / "summary.json").read_bytes() == before


def test_main_refusal_is_one_message_without_traceback(tmp_path):
    """Defect 7 (part): a refused config prints one message, no traceback; --verbose shows it."""
    cmd = [
        sys.executable,
        str(ROOT / "main.py"),
        f"--workdir={tmp_path / 'run'}",
        "--config=configs/fashion_mnist_mlp.py",
        "--config.optimizer.momentum=1.5",
    ]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "config.optimizer.momentum=1.5" in p.stderr and "[0, 1)" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists()
    p = subprocess.run(cmd + ["--verbose"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback" in p.stderr


@needs_fmnist
def test_resume_after_kill_leaves_each_tensorboard_scalar_once(tmp_path):
    """Defect 6 (TensorBoard part): after a kill past the last checkpoint (its records
    written, the next checkpoint not, the event file cut mid-record) and a resume, every
    (tag, step) is in the event files once, as in metrics.jsonl."""
    from widesparse_jax import metrics as metrics_lib

    c = small_mlp_config(num_train_steps=25, checkpoint_every_steps=10, log_every_steps=5)
    train.train_and_evaluate(c, str(tmp_path))
    (tmp_path / "checkpoints" / "25").rename(tmp_path / "killed_before_25")  # never written
    (event_file,) = (tmp_path / "tensorboard").iterdir()
    with open(event_file, "ab") as f:
        f.write(b"\x20\x00\x00\x00\x00\x00\x00\x00\x01\x02")  # a record cut short
    summary = train.train_and_evaluate(
        small_mlp_config(num_train_steps=30, checkpoint_every_steps=10, log_every_steps=5),
        str(tmp_path),
    )
    assert summary["steps_this_session"] == 10  # resumed from 20
    scalars = metrics_lib.read_event_scalars(str(tmp_path))
    assert ("train/train_loss", 25) in scalars and ("train/train_loss", 30) in scalars
    assert len(scalars) == len(set(scalars))
    records = [(r["kind"], r["step"]) for r in metrics_lib.read_metrics(str(tmp_path))]
    assert len(records) == len(set(records))
