"""Masks in the forward pass: any Linen module computes with ``where(mask, w, 0)`` weights.

* :func:`masked_call` runs a module method under ``nn.map_variables`` with the ``params``
  collection replaced by ``widesparse_jax.tree.apply_masks(params, masks)``: the params tree
  (names, shapes, checkpoints) is unchanged, the output equals applying the module to the
  masked params, and gradients of masked entries are exactly 0 (``where`` routes none there).
* :class:`Masked` wraps any Linen module: ``Masked(module).apply(variables, *args,
  masks=mask_tree, **kwargs)``; its params tree is identical to the wrapped module's
  (``nn.share_scope``), so the same masks and checkpoints fit both.

``masks`` mirrors the params of the module being called (bool leaf of the weight's shape =
keep, ``None`` leaf = dense); ``masks=None`` is the dense forward pass, bit for bit.
``init(..., masks=mask_tree)`` returns the initial params with the masked entries at 0
(the same as ``apply_masks`` on the dense init).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from widesparse_jax import tree

PyTree = Any

__all__ = ["Masked", "masked_call"]


def _mask_collections(masks: PyTree) -> Callable[[dict], dict]:
    def trans_in(variables: dict) -> dict:
        params = variables.get("params")
        if not params:  # initializing: nothing to mask yet
            return variables
        return {**variables, "params": tree.apply_masks(params, masks)}

    return trans_in


def masked_call(fn: Callable, module: nn.Module, masks: PyTree, *args, **kwargs) -> Any:
    """``fn(module, *args, **kwargs)`` with ``module``'s params masked (None = dense).

    ``fn`` is a method of ``module``'s class (e.g. ``ResNet18.forward``); params keep their
    paths. Other collections (``batch_stats``) pass through and stay mutable as requested.
    """
    if masks is None:
        return fn(module, *args, **kwargs)
    mapped = nn.map_variables(
        fn,
        "params",
        trans_in_fn=_mask_collections(masks),
        init=module.is_initializing(),
        mutable=True,
    )
    return mapped(module, *args, **kwargs)


def _call_wrapped(wrapper: Masked, *args, **kwargs) -> Any:
    return wrapper.module(*args, **kwargs)


class Masked(nn.Module):
    """Any Linen ``module`` with masks applied to its params in the forward pass.

    ``Masked(m).init(key, *args, **kw)`` gives exactly ``m.init``'s variables (same tree,
    same values);
    ``Masked(m).apply(variables, *args, masks=mask_tree, **kw)`` equals
    ``m.apply({**variables, 'params': apply_masks(variables['params'], mask_tree)}, ...)``.
    Build the wrapped module unbound (outside any ``@nn.compact`` method) so it is adopted
    by the wrapper.
    """

    module: nn.Module

    def setup(self) -> None:
        nn.share_scope(self, self.module)

    def __call__(self, *args, masks: PyTree = None, **kwargs) -> Any:
        return masked_call(_call_wrapped, self, masks, *args, **kwargs)
