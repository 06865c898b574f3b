"""Sparse execution (widesparse_jax/sparse): compact format, same losses, mode switches."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fashion_mnist_mlp
from tests.markers import needs_fmnist
from widesparse_jax import config as config_lib
from widesparse_jax import data, restore, setup, sparse, train
from widesparse_jax.sparse import step as sstep


def _run(width=256, base_width=5, weight_decay=5e-4, apply="sparse"):
    c = fashion_mnist_mlp.get_config()
    c.model.width, c.model.base_width = width, base_width
    c.optimizer.weight_decay = weight_decay
    c.sparsity.apply = apply
    c.dataset.train_subset = 1000
    cfg = config_lib.resolve_config(c)
    info = data.static_info(train.data_spec(cfg))
    return setup.build_run(cfg, info, axis_name=None)


def _batches(n, seed=0, batch=100):
    rng = np.random.RandomState(seed)
    for _ in range(n):
        yield {
            "image": jnp.asarray(rng.randn(batch, 28, 28, 1).astype(np.float32)),
            "label": jnp.asarray(rng.randint(0, 10, batch).astype(np.int32)),
        }


def _steps(run):
    dense = jax.jit(
        functools.partial(
            train.train_step, model=run.model, tx=run.tx, schedule=run.schedule, axis_name=None
        )
    )
    layout = sparse.mlp_layout(run.masks, run.param_shapes)
    sp = jax.jit(
        functools.partial(
            sstep.sparse_train_step,
            layout=layout,
            tx=run.tx,
            schedule=run.schedule,
            axis_name=None,
        )
    )
    return dense, sp, layout


def test_compact_round_trip_is_exact_and_ordered():
    rng = np.random.RandomState(0)
    mask = rng.rand(7, 5) < 0.3
    kernel = rng.randn(7, 5).astype(np.float32) * mask
    lay = sparse.format.layout_of(mask)
    assert lay.nnz == mask.sum()
    assert np.all(np.diff(lay.cols) >= 0)  # sorted by output unit
    key = lay.cols.astype(np.int64) * 7 + lay.rows
    assert np.all(np.diff(key) > 0)  # then by input row, no duplicates
    values = sparse.from_dense(kernel, lay)
    np.testing.assert_array_equal(np.asarray(sparse.to_dense(values, lay)), kernel)
    with pytest.raises(ValueError, match="2-D bool mask"):
        sparse.format.layout_of(kernel)


def _same_as_dense_masking(run, steps: int, seed: int = 0):
    """``steps`` dense-masked and sparse steps side by side, each loss equal; returns (the
    dense state, the sparse state converted back to the dense form, the layout) with equal
    params."""
    dense, sp, layout = _steps(run)
    s_dense = setup.init_state(run)
    s_sparse = sstep.to_sparse_state(s_dense, layout)
    for batch in _batches(steps, seed=seed):
        s_dense, m_d = dense(s_dense, batch)
        s_sparse, m_s = sp(s_sparse, batch)
        np.testing.assert_allclose(float(m_s["loss"]), float(m_d["loss"]), rtol=2e-5)
    back = sstep.to_dense_state(s_sparse, layout, run.masks)
    for a, b in zip(jax.tree.leaves(back.params), jax.tree.leaves(s_dense.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    return s_dense, back, layout


def test_100_steps_same_losses_and_params_as_dense_masking():
    run = _run(width=1024)
    s_dense, back, layout = _same_as_dense_masking(run, 100)
    assert layout.active.size < run.config.model.width  # some units feed nothing
    for a, b in zip(jax.tree.leaves(back.opt_state), jax.tree.leaves(s_dense.opt_state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    kernel = np.asarray(back.params["fc"]["kernel"])
    assert np.all(kernel[~np.asarray(run.masks["fc"]["kernel"])] == 0)


def test_switch_modes_on_resume_through_the_checkpoint_form():
    """20 dense + 20 sparse + 20 dense steps (checkpoint dicts between) == 60 dense."""
    run = _run(width=128)
    dense, sp, layout = _steps(run)
    ref = setup.init_state(run)
    for batch in _batches(60, seed=3):
        ref, _ = dense(ref, batch)
    state = setup.init_state(run)
    batches = list(_batches(60, seed=3))
    for batch in batches[:20]:
        state, _ = dense(state, batch)
    saved = setup.state_to_dict(state)  # what a checkpoint stores: dense masked
    state = sstep.to_sparse_state(setup.state_from_dict(setup.init_state(run), saved), layout)
    for batch in batches[20:40]:
        state, _ = sp(state, batch)
    saved = setup.state_to_dict(sstep.to_dense_state(state, layout, run.masks))
    state = setup.state_from_dict(setup.init_state(run), saved)
    assert int(state.step) == 40
    for batch in batches[40:]:
        state, _ = dense(state, batch)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_config_apply_and_threshold_are_validated():
    c = fashion_mnist_mlp.get_config()
    c.sparsity.apply = "magic"
    c.sparsity.sparse_below_density = 2.0
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate_config(c)
    assert "sparsity.apply='magic'" in str(e.value) and "'sparse'" in str(e.value)
    assert "sparsity.sparse_below_density=2.0" in str(e.value)


@pytest.mark.slow
@needs_fmnist
def test_training_loop_sparse_mode_matches_dense_masking(tmp_path):
    """main's loop with apply='sparse' (real Fashion-MNIST): same metrics and checkpoint
    (dense masked params) as apply='update'."""
    results = {}
    for apply in ("update", "sparse"):
        c = fashion_mnist_mlp.get_config()
        c.model.width, c.model.base_width = 512, 8
        c.dataset.train_subset = 1000
        c.train.batch_size, c.train.eval_batch_size = 50, 500
        c.train.num_epochs, c.train.log_every_steps = 1, 10
        c.train.checkpoint_every_steps = 20
        c.sparsity.apply = apply
        summary = train.train_and_evaluate(c, str(tmp_path / apply))
        results[apply] = (summary, restore.load_variables(str(tmp_path / apply)))
    (s_u, v_u), (s_s, v_s) = results["update"], results["sparse"]
    assert s_s["kept_weights"] == s_u["kept_weights"] == 784 * 8 + 80
    assert abs(s_s["final_test_accuracy"] - s_u["final_test_accuracy"]) <= 0.2
    for a, b in zip(jax.tree.leaves(v_s[0]["params"]), jax.tree.leaves(v_u[0]["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("width, case", [(256, "padded"), (4096, "no inputs")])
def test_fan_in_buckets_padded_and_empty_units_match_dense_masking(width, case):
    """Padded buckets (fan-in ~190 at width 256) and active units with no input (width 4096),
    base width 64: 3 steps give dense masking's losses and params."""
    run = _run(width=width, base_width=64)
    _, _, layout = _same_as_dense_masking(run, 3, seed=1)
    if case == "padded":  # some tap reads the zero padding weight
        assert any(np.any(b.taps == layout.fc.nnz) for b in layout.fc_buckets)
    else:  # a bucket of active units with fan-in 0
        assert 0 in [b.taps.shape[1] for b in layout.fc_buckets]
