"""Checkpoint integrity: checksums, damaged checkpoints skipped, resume bitwise equal."""

import json
import logging
import os
from pathlib import Path

import jax
import numpy as np
import pytest

import main
from tests.markers import needs_fmnist
from tests.test_train import run_two_processes, small_mlp_config
from widesparse_jax import checkpoint as ckpt_lib
from widesparse_jax import integrity, restore, train


def _largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip(path: Path, n: int = 8) -> None:
    """Inverts ``n`` bytes in the middle of ``path`` (size unchanged)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n] = bytes(b ^ 0xFF for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    """Replaces the content with random bytes of the same length."""
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda d: _flip(d / "b" / "big.bin"), "b/big.bin fails its sha256"),
        (lambda d: _truncate(d / "b" / "big.bin"), "b/big.bin has 500 bytes, 1000 were"),
        (lambda d: _garbage(d / "a.json"), "a.json fails its sha256"),
        (lambda d: (d / "b" / "big.bin").unlink(), "b/big.bin is missing"),
        (lambda d: (d / "extra").write_text("x"), "extra is not in the checksum manifest"),
        (lambda d: (d / integrity.MANIFEST).unlink(), "no checksum manifest"),
        (lambda d: _garbage(d / integrity.MANIFEST), "unreadable checksum manifest"),
    ],
)
def test_verify_names_each_kind_of_damage(tmp_path, damage, expected):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.json").write_text(json.dumps({"k": 1}))
    (tmp_path / "b" / "big.bin").write_bytes(bytes(range(250)) * 4)
    integrity.write_manifest(str(tmp_path))
    assert integrity.verify(str(tmp_path)) is None
    damage(tmp_path)
    assert expected in integrity.verify(str(tmp_path))


def _config(steps=6):
    return small_mlp_config(
        num_train_steps=steps,
        checkpoint_every_steps=2,
        log_every_steps=2,
        max_checkpoints_to_keep=5,
    )


def _params(workdir: Path) -> list:
    variables, _, _ = restore.load_variables(str(workdir))
    return jax.tree.leaves(variables)


def _resume(workdir: Path, caplog) -> tuple[dict, list[str]]:
    """Resumes the run; returns its summary and the log lines naming a damaged checkpoint."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        summary = train.train_and_evaluate(_config(), str(workdir))
    return summary, [r.getMessage() for r in caplog.records if "fails verification" in r.message]


@needs_fmnist
def test_damaged_checkpoints_are_skipped_and_resume_is_bitwise_equal(tmp_path, caplog, capsys):
    """Defect 1: byte flip, truncation, garbage -> reported by path, skipped, set aside;
    the resumed run ends bitwise equal to the uninterrupted one; none intact -> one error
    (main: one line, exit 2), nothing changed."""
    ckpts = tmp_path / "checkpoints"
    train.train_and_evaluate(_config(), str(tmp_path))
    reference = _params(tmp_path)

    _flip(_largest_file(ckpts / "6" / "state"))
    with pytest.raises(ckpt_lib.CheckpointCorruptError, match=r"checkpoints/6 fails.*step=4"):
        restore.load_variables(str(tmp_path))
    summary, lines = _resume(tmp_path, caplog)
    assert summary["steps_this_session"] == 2
    assert len(lines) == 1 and str(ckpts / "6") in lines[0]
    assert (tmp_path / ckpt_lib.CORRUPT_DIR / "6").is_dir()  # moved aside, not deleted
    for a, b in zip(_params(tmp_path), reference, strict=True):
        np.testing.assert_array_equal(a, b)

    _truncate(_largest_file(ckpts / "6" / "state"))
    _garbage(ckpts / "4" / "meta" / "metadata")
    summary, lines = _resume(tmp_path, caplog)
    assert summary["steps_this_session"] == 4
    assert [str(ckpts / "6") in lines[0], str(ckpts / "4") in lines[1]] == [True, True]
    assert sorted(os.listdir(tmp_path / ckpt_lib.CORRUPT_DIR)) == ["4", "6", "6.1"]
    for a, b in zip(_params(tmp_path), reference, strict=True):
        np.testing.assert_array_equal(a, b)

    (ckpts / "6" / integrity.MANIFEST).unlink()  # written by this version: must have one
    _flip(_largest_file(ckpts / "4" / "state"))
    _garbage(ckpts / "2" / integrity.MANIFEST)
    before = _snapshot(tmp_path)
    with pytest.raises(ckpt_lib.CheckpointCorruptError, match="no intact checkpoint") as e:
        train.train_and_evaluate(_config(), str(tmp_path))
    assert all(str(ckpts / s) in str(e.value) for s in ("2", "4", "6"))
    assert _snapshot(tmp_path) == before  # nothing moved, written or deleted
    capsys.readouterr()
    assert main.run(["main.py", f"--workdir={tmp_path}", *_MAIN_FLAGS]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: no intact checkpoint in")
    assert _snapshot(tmp_path) == before


# The flags of _config() on main's command line (same run fingerprint).
_MAIN_FLAGS = [
    "--config=configs/fashion_mnist_mlp.py",
    *(
        f"--config.{k}={v}"
        for k, v in {
            "model.width": 64,
            "model.base_width": 8,
            "dataset.train_subset": 1000,
            "train.batch_size": 50,
            "train.eval_batch_size": 500,
            "train.num_epochs": 2,
            "train.num_train_steps": 6,
            "train.checkpoint_every_steps": 2,
            "train.log_every_steps": 2,
            "train.max_checkpoints_to_keep": 5,
            "optimizer.weight_decay": 5e-4,
        }.items()
    ),
]


# Two processes, checkpoints 4, 8, 12 (every step's global batch split over 4 devices).
_TWO_PROCESS_FLAGS = [
    "--config=configs/fashion_mnist_mlp.py",
    "--config.model.width=64",
    "--config.model.base_width=8",
    "--config.dataset.train_subset=512",
    "--config.train.batch_size=64",
    "--config.train.num_train_steps=12",
    "--config.train.log_every_steps=4",
    "--config.train.checkpoint_every_steps=4",
    "--config.train.max_checkpoints_to_keep=5",
    "--config.train.eval_batch_size=1000",
]


def _none_intact():
    raise ckpt_lib.CheckpointCorruptError("no intact checkpoint in /w/checkpoints")


def _never():
    raise AssertionError("only process 0 verifies")


@pytest.mark.parametrize("verdict", [lambda: 12, lambda: None, _none_intact])
def test_every_process_gets_process_0s_resume_step(verdict):
    """The decision of Checkpointer.intact_step, with the broadcast as a channel between a
    process 0 and a process 1 (that never verifies, so cannot disagree)."""
    sent = []

    def outcome(local_verdict, is_primary, broadcast):
        try:
            return ckpt_lib.agree(local_verdict, is_primary, broadcast)
        except ckpt_lib.CheckpointCorruptError as e:
            return f"error: {e}"

    on_0 = outcome(verdict, True, lambda code: sent.append(code) or code)
    on_1 = outcome(_never, False, lambda code: sent[0])
    assert len(sent) == 1  # process 0 sends its verdict even when it then raises
    assert on_0 == outcome(verdict, True, None)  # a single process: the same, no broadcast
    assert (on_1 == on_0) if not str(on_0).startswith("error") else on_1.startswith("error")
    if verdict is _none_intact:
        assert "no intact checkpoint in /w" in on_0 and "process 0 found no intact" in on_1


@pytest.mark.slow  # two 2-process runs: about 50 s on a quiet machine, 150 s on a busy one
@needs_fmnist
def test_two_processes_resume_from_the_same_intact_step(tmp_path):
    """Multi-host: the newest step is damaged; both processes resume from the same intact
    step (process 0 decides), only process 0 moves the damaged step aside, and the run ends
    bitwise equal to the uninterrupted one."""
    run_two_processes(tmp_path, _TWO_PROCESS_FLAGS)
    reference = _params(tmp_path)
    _flip(_largest_file(tmp_path / "checkpoints" / "12" / "state"))
    outs = run_two_processes(tmp_path, _TWO_PROCESS_FLAGS)
    for _, err in outs:
        assert "resumed from step 8" in err, err[-3000:]
    assert "moved damaged checkpoint" in outs[0][1]
    assert "moved damaged checkpoint" not in outs[1][1]
    assert "fails verification" not in outs[1][1]  # process 1 trusts process 0's verdict
    assert os.listdir(tmp_path / ckpt_lib.CORRUPT_DIR) == ["12"]
    summary = json.loads(outs[0][0][outs[0][0].index("{") :])
    assert summary["steps_this_session"] == 4 and summary["step"] == 12
    for a, b in zip(_params(tmp_path), reference, strict=True):
        np.testing.assert_array_equal(a, b)
