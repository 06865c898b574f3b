"""Sane checkpoints: judged by the loss computed with their weights, kept, resumed after a
divergence (real orbax checkpoints of a tiny state; no training)."""

import os

import numpy as np
import pytest

from widesparse_jax import checkpoint as ckpt_lib
from widesparse_jax import config as config_lib
from widesparse_jax import sanity
from widesparse_jax.checkpoint import Checkpointer

_STATE = {"w": np.arange(3, dtype=np.float32)}


def _run(workdir, losses, max_to_keep=2, factor=10.0):
    """A run that checkpoints after every step; ``losses[i]`` is train step i's loss, computed
    with the weights of checkpoint i (step 0: the initial weights, the reference)."""
    ckpt = Checkpointer(str(workdir), {"run": 1}, max_to_keep=max_to_keep, sane_loss_factor=factor)
    kept = []
    for i, loss in enumerate(losses):
        ckpt.health.observe(i, loss)
        ckpt.save(i + 1, _STATE, {})
        kept.append(ckpt.all_steps())
    return ckpt, kept


def test_healthy_run_rotates_exactly_as_max_to_keep(tmp_path):
    _, kept = _run(tmp_path, [2.3, 2.0, 1.8, 1.5, 1.4])
    assert kept == [[1], [1, 2], [2, 3], [3, 4], [4, 5]]


def test_newest_sane_checkpoint_survives_rotation_and_is_resumed(tmp_path):
    """Finite but exploded losses (the lr=1e6 case): step 2 is the newest checkpoint whose
    weights gave a sane loss (2.0 <= 10 x 2.3); it outlives max_to_keep=2, is named, and the
    newer steps are moved aside so that a resume starts from it."""
    ckpt, kept = _run(tmp_path, [2.3, 2.1, 2.0, 5e3, 1e9, 1e21])
    assert kept[-1] == [2, 5, 6]
    assert [ckpt.health.sane(s) for s in (2, 5, 6)] == [True, False, None]
    note = ckpt.set_aside_diverged()
    assert "newest checkpoint with sane weights is step 2" in note
    assert "step 5: loss 1e+21 too large" in note and "--resume_diverged" in note
    assert sorted(os.listdir(tmp_path / ckpt_lib.DIVERGED_DIR)) == ["5", "6"]  # not deleted
    ckpt.close()
    again = Checkpointer(str(tmp_path), {"run": 1}, sane_loss_factor=10.0)
    assert again.intact_step() == 2
    state, meta = again.restore(_STATE)
    np.testing.assert_array_equal(state["w"], _STATE["w"])
    assert again.health.reference == 2.3  # carried in the meta: the resumed run's reference
    assert again.health.sane(1) is True and 2 in again.health.pending
    again.close()


def test_no_sane_checkpoint_is_said_and_nothing_moves(tmp_path):
    ckpt, _ = _run(tmp_path, [2.3, 1e5, float("nan")])
    note = ckpt.set_aside_diverged()
    assert "No checkpoint" in note and "holds sane weights" in note
    assert "step 2: loss nan non-finite" in note and "resume_diverged" not in note
    assert not (tmp_path / ckpt_lib.DIVERGED_DIR).exists()
    assert ckpt.all_steps() == [2, 3]
    ckpt.close()
    empty = Checkpointer(str(tmp_path / "fresh"), {"run": 1})
    assert "No checkpoint was written yet" in empty.set_aside_diverged()
    empty.close()


def test_health_meta_round_trip_keeps_non_finite_losses():
    h = sanity.Health(factor=100.0)
    for i, loss in enumerate([2.0, float("inf"), 3.0]):
        h.watch(i)
        h.observe(i, loss)
    restored = sanity.Health(factor=100.0)
    restored.load(h.to_meta([0, 1, 2]))
    assert restored.reference == 2.0 and restored.losses[1] == float("inf")
    assert [restored.sane(s) for s in (0, 1, 2, 3)] == [True, False, True, None]
    assert restored.newest_sane([0, 1, 2]) == 2


@pytest.mark.parametrize("bad", [1.0, 0.5, float("inf"), float("nan"), True])
def test_sane_loss_factor_is_validated(bad):
    from configs import default

    c = default.get_config()
    c.train.sane_loss_factor = bad
    with pytest.raises(config_lib.ConfigError, match=r"train.sane_loss_factor=.*finite number > 1"):
        config_lib.validate_config(c)
