"""SGD noise scale and width sweeps (Park, Sohl-Dickstein, Le, Smith, ICML 2019).

Normalized noise scale (PAPERS.md section 2)::

    g_bar = lr / (B * (1 - m) * sigma2_init)

with ``lr`` the learning rate, ``B`` the batch size, ``m`` the momentum and ``sigma2_init``
the *width-independent* weight-initialization variance scale (see
:func:`init_variance_scale` for the convention per parametrization).

Everything here is pure: numbers / records in, numbers / small dataclasses out. Records of a
sweep are mappings (e.g. dicts) with at least the keys::

    width, lr, batch_size, momentum, init_variance, best_test_acc
    sparse (optional, default False), noise_scale (optional, computed when absent)

Results are grouped by ``(width, sparse)`` by default (``group_keys`` changes that).
Plotting helpers build a ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot
global state); pass ``path`` to save it.
"""

from __future__ import annotations

from widesparse_jax.analysis.noise_scale_fit import (  # noqa: F401
    BestBatchSize,
    NoiseScaleCurve,
    OptimalNoiseScale,
    PowerLawFit,
    best_batch_size_per_width,
    best_per_noise_scale,
    fit_power_law,
    optimal_noise_scale_per_width,
    record_noise_scale,
)
from widesparse_jax.analysis.noise_scale_formula import (  # noqa: F401
    DEFAULT_CONFIG_FIELDS,
    PYTORCH_UNIFORM_SIGMA_W2,
    init_variance_scale,
    noise_scale,
    noise_scale_from_config,
)
from widesparse_jax.analysis.noise_scale_report import (  # noqa: F401
    markdown_table,
    optimal_noise_scale_table,
    plot_acc_vs_noise_scale,
    plot_optimal_noise_scale_vs_width,
)

__all__ = [
    "PYTORCH_UNIFORM_SIGMA_W2",
    "DEFAULT_CONFIG_FIELDS",
    "noise_scale",
    "init_variance_scale",
    "noise_scale_from_config",
    "record_noise_scale",
    "NoiseScaleCurve",
    "best_per_noise_scale",
    "OptimalNoiseScale",
    "optimal_noise_scale_per_width",
    "PowerLawFit",
    "fit_power_law",
    "BestBatchSize",
    "best_batch_size_per_width",
    "plot_acc_vs_noise_scale",
    "plot_optimal_noise_scale_vs_width",
    "markdown_table",
    "optimal_noise_scale_table",
]
