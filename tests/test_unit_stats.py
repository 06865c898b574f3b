"""analysis/unit_stats.py on tiny hand-made masks whose answers are known."""

import numpy as np
import pytest

from widesparse_jax.analysis import unit_stats as us

# 3 inputs -> 4 hidden units -> 2 classes.
# unit 0: inputs 0, 1; unit 1: none; unit 2: input 2; unit 3: all three.
FC_MASK = np.array(
    [
        [1, 0, 0, 1],
        [1, 0, 0, 1],
        [0, 0, 1, 1],
    ],
    bool,
)
# unit 0 -> class 0; unit 1 -> class 1; unit 2 -> nothing; unit 3 -> both.
CL_MASK = np.array([[1, 0], [0, 1], [0, 0], [1, 1]], bool)


def _kernel():
    # unit 0: +1, +1 (active on any positive input); unit 2: +2; unit 3: -1, -1, -1
    k = np.array([[1.0, 0, 0, -1], [1.0, 0, 0, -1], [0, 0, 2.0, -1]], np.float32)
    return k * FC_MASK


def test_fan_in_and_out():
    np.testing.assert_array_equal(us.fan_in(FC_MASK), [2, 0, 1, 3])
    np.testing.assert_array_equal(us.fan_out(CL_MASK), [1, 1, 0, 2])


def test_max_preactivation_hand_values():
    x = np.array([[1.0, 0, 0], [0, 0.5, 3.0]], np.float32)  # two examples, all inputs >= 0
    bias = np.array([0.0, 0.25, -1.0, 0.5], np.float32)
    got = us.max_preactivation(x, _kernel(), bias)
    # unit 0: max(1, 0.5) + 0; unit 1 (no inputs): its bias; unit 2: max(0, 6) - 1;
    # unit 3: max(-1, -3.5) + 0.5
    np.testing.assert_allclose(got, [1.0, 0.25, 5.0, -0.5])


def test_max_preactivation_matches_dense_and_chunking():
    rng = np.random.RandomState(0)
    mask = rng.rand(20, 50) < 0.1
    mask[:, 7] = False  # a unit without inputs
    kernel = (rng.randn(20, 50) * mask).astype(np.float32)
    bias = rng.randn(50).astype(np.float32)
    x = rng.randn(37, 4, 5).astype(np.float32)  # flattened to 20 inputs
    dense = (x.reshape(37, -1) @ kernel + bias).max(axis=0)
    for chunk in (1, 8, 1000):
        got = us.max_preactivation(x, kernel, bias, chunk=chunk)
        np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-5)
    assert got[7] == bias[7]


def test_unit_stats_hand_example():
    x = np.array([[1.0, 0, 0], [0, 0.5, 3.0]], np.float32)
    bias = np.array([0.0, 0.25, -1.0, 0.5], np.float32)
    s = us.unit_stats(FC_MASK, CL_MASK, us.max_preactivation(x, _kernel(), bias))
    assert s["width"] == 4 and s["kept_fc"] == 6 and s["kept_cl"] == 4
    assert s["inputs_per_unit"] == 1.5 and s["outputs_per_unit"] == 1.0
    assert s["frac_no_inputs"] == 0.25  # unit 1
    assert s["frac_no_outputs"] == 0.25  # unit 2
    assert s["frac_dead"] == 0.25  # unit 3 (never positive)
    assert s["frac_dead_with_inputs"] == pytest.approx(1 / 3)
    assert s["frac_connected"] == 0.5  # units 0 and 3
    assert s["frac_dead_connected"] == 0.5  # unit 3
    # useful: unit 0 only (1 has no inputs, 2 no outputs, 3 is dead)
    assert s["useful_units"] == 1 and s["frac_useful"] == 0.25
    assert s["inputs_per_useful_unit"] == 2.0
    assert s["useful_weight_fraction"] == pytest.approx((2 + 1) / 10)


def test_unit_stats_dense_layers_need_shapes():
    max_pre = np.ones(4, np.float32)
    s = us.unit_stats(None, None, max_pre, shapes=((3, 4), (4, 2)))
    assert s["frac_useful"] == 1.0 and s["inputs_per_unit"] == 3.0
    assert s["useful_weight_fraction"] == 1.0
    with pytest.raises(ValueError, match="shapes="):
        us.unit_stats(None, CL_MASK, max_pre)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="width mismatch"):
        us.unit_stats(FC_MASK, CL_MASK, np.ones(3))
    with pytest.raises(ValueError, match="2-D bool"):
        us.fan_in(FC_MASK.astype(np.float32))
    with pytest.raises(ValueError, match="inputs"):
        us.max_preactivation(np.ones((2, 5), np.float32), _kernel())
