"""Shared helpers of the input-pipeline tests: read batches off an iterator, compare streams."""

import numpy as np


def take(it, n: int) -> list:
    """The next ``n`` batches of iterator ``it``, as a list."""
    return [next(it) for _ in range(n)]


def assert_batches_equal(a: list, b: list) -> None:
    """Two lists of batches (dicts of arrays) are equal: same keys, dtypes and values."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype
            np.testing.assert_array_equal(x[k], y[k])
