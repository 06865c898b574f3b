"""Counter-based randomness: integers that are pure functions of (seed, epoch, index, stream).

No generator state: any batch of any epoch is reproduced from its coordinates alone, which is
what makes resuming at an arbitrary step exact and O(1).
"""

from __future__ import annotations

import numpy as np

_U64 = np.uint64


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on a uint64 array (wrapping arithmetic); same shape out."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def hash_ints(seed: int, epoch: int, index: np.ndarray, stream: int, high: int) -> np.ndarray:
    """int64 [B] in [0, high), a function of (seed, epoch, index[b], stream) only. index: [B]."""
    with np.errstate(over="ignore"):
        h = mix64(np.full(index.shape, seed, dtype=_U64))
        h = mix64(h ^ _U64(epoch))
        h = mix64(h ^ _U64(stream))
        h = mix64(h ^ index.astype(_U64))
    return (h % _U64(high)).astype(np.int64)
