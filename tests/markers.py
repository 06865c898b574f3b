"""Shared test markers: where the real Fashion-MNIST IDX files are (one place)."""

import pytest

from widesparse_jax import data

FMNIST_DIR = data.find_idx_dir("fashion_mnist")
needs_fmnist = pytest.mark.skipif(
    FMNIST_DIR is None, reason="Debian package dataset-fashion-mnist not installed"
)
