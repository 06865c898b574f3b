"""The one pytree walker: key paths -> layer names, map with path, apply masks.

Works on anything ``jax.tree`` handles (nested dicts / ``FrozenDict`` / Flax NNX ``State``,
lists and tuples, Equinox modules, dataclasses, any registered pytree node), with arrays,
``jax.ShapeDtypeStruct`` or anything with a ``.shape`` as leaves. Pure: imports jax only.

Paths
-----
A leaf's **path** is the tuple of its keys from the root: dict keys, attribute names of
pytree nodes (Equinox / dataclass fields), integer indices of sequences. Its **name** is
``'/'.join(path)``: ``'layer1_0/conv1/kernel'`` (Flax Linen), ``'mlp/~/linear_0/w'`` (Haiku),
``'layers/0/weight'`` (Equinox MLP), ``'fc/kernel'`` (Flax NNX ``nnx.split`` state).

Two rules differ from ``jax.tree_util.tree_flatten_with_path``:

* mappings are walked in their own **insertion order** (Flax Linen ``init`` inserts in
  call order, so the first kernel is the input layer; ``FrozenDict`` keeps its order too);
  JAX's flattening sorts dict keys. NNX ``State`` iterates in JAX's order anyway;
* a **box** node (one child stored under the attribute ``value``, e.g. an NNX ``Variable``)
  adds no key to the path, so NNX names end in ``kernel`` like Linen's.

``None`` is a leaf here (mask trees hold ``None`` for dense layers); JAX treats it as an
empty subtree, so mask trees work with ``jax.tree.map(f, masks)`` and with
``jax.tree.map(f, masks, params, is_leaf=lambda x: x is None)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp

Path = tuple
PyTree = Any

__all__ = [
    "Path",
    "key_name",
    "path_name",
    "as_path",
    "children",
    "walk",
    "leaves_by_path",
    "map_with_path",
    "shape_of",
    "apply_masks",
    "get_dotted",
]

_BOX_KEY = "value"


def key_name(key: Any) -> Any:
    """The plain key of a JAX key-path entry: DictKey -> key, GetAttrKey -> name,
    SequenceKey -> idx, FlattenedIndexKey -> key; anything else unchanged."""
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return getattr(key, attr)
    return key


def path_name(path: Path | str) -> str:
    """``('layer1_0', 'conv1', 'kernel') -> 'layer1_0/conv1/kernel'``; a name passes through."""
    if isinstance(path, str):
        return path
    return "/".join(str(k) for k in path)


def as_path(name: Path | str) -> Path:
    """Inverse of :func:`path_name` for string keys (``'a/b' -> ('a', 'b')``)."""
    return tuple(name.split("/")) if isinstance(name, str) else tuple(name)


def children(node: Any) -> tuple[list[tuple[Any, Any]], Any] | None:
    """One level of ``node``: ``([(key, child), ...], rebuild)`` or None for a leaf.

    ``rebuild(list_of_children)`` makes a node of the same type. Mappings keep their own
    key order: Python dicts, mappings that are not pytree nodes and mapping nodes whose key
    order differs from JAX's (``FrozenDict``) are walked key by key and rebuilt with the
    same order. Every other pytree node (NNX ``State``, tuples, Equinox modules,
    dataclasses...) is opened by JAX's own flattening of one level, ``None`` children kept.
    """
    if node is None:
        return None
    if isinstance(node, dict):
        return _mapping_children(node)
    flat, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda y: y is not node)
    if len(flat) == 1 and flat[0][1] is node:
        # A leaf to JAX (array, ShapeDtypeStruct, scalar, function...), unless a mapping.
        return _mapping_children(node) if isinstance(node, Mapping) else None
    kids = [(kp[0], v) for kp, v in flat]
    if isinstance(node, Mapping) and [key_name(k) for k, _ in kids] != list(node.keys()):
        return _mapping_children(node)  # FrozenDict: JAX sorts its keys
    return kids, treedef.unflatten


def _mapping_children(node: Mapping) -> tuple[list[tuple[Any, Any]], Any]:
    keys = list(node.keys())

    def rebuild(values):
        items = list(zip(keys, values))
        try:
            return type(node)(items)
        except Exception:  # noqa: BLE001 - mapping types without an items constructor
            return dict(items)

    return [(k, node[k]) for k in keys], rebuild


def _child_path(prefix: Path, key: Any, siblings: int) -> Path:
    if siblings == 1 and isinstance(key, jax.tree_util.GetAttrKey) and key.name == _BOX_KEY:
        return prefix  # a box (NNX Variable): transparent in names
    return prefix + (key_name(key),)


def walk(tree: PyTree, prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Yields ``(path, leaf)`` for every leaf (``None`` included), mappings in insertion order."""
    level = children(tree)
    if level is None:
        yield prefix, tree
        return
    kids, _ = level
    for key, child in kids:
        yield from walk(child, _child_path(prefix, key, len(kids)))


def leaves_by_path(tree: PyTree) -> dict[Path, Any]:
    """``{path: leaf}`` of every leaf of ``tree`` (insertion order)."""
    return dict(walk(tree))


def map_with_path(fn: Callable[[Path, Any], Any], tree: PyTree, prefix: Path = ()) -> PyTree:
    """``fn(path, leaf)`` over every leaf of ``tree``, keeping the node types (a mask tree
    built from params has the params' structure, with whatever ``fn`` returns as leaves)."""
    level = children(tree)
    if level is None:
        return fn(prefix, tree)
    kids, rebuild = level
    return rebuild(
        [map_with_path(fn, child, _child_path(prefix, key, len(kids))) for key, child in kids]
    )


def shape_of(leaf: Any) -> tuple | None:
    """The leaf's shape as a tuple of ints, or None when it has none."""
    shape = getattr(leaf, "shape", None)
    return None if shape is None else tuple(int(d) for d in shape)


def apply_masks(params: PyTree, masks: PyTree) -> PyTree:
    """Zeroes the removed weights: ``where(mask, w, 0)`` per masked leaf (jit-safe).

    ``masks`` mirrors ``params`` (bool leaf of the weight's shape = keep, ``None`` = dense);
    ``masks=None`` means all dense. Works on arrays and tracers alike; the result has the
    structure of ``params``. A mask with no leaf of its shape at its path in ``params`` is a
    ValueError (it would otherwise be ignored or broadcast).
    """
    if masks is None:
        return params
    by_path = {p: m for p, m in walk(masks) if m is not None}
    leaves = leaves_by_path(params)
    for path, mask in by_path.items():
        if shape_of(leaves.get(path)) != shape_of(mask):
            raise ValueError(
                f"mask at {path_name(path)!r} has shape {shape_of(mask)}, params have "
                f"{shape_of(leaves.get(path)) if path in leaves else 'no such leaf'}"
            )

    def apply(path, leaf):
        mask = by_path.get(path)
        if mask is None:
            return leaf
        return jnp.where(jnp.asarray(mask, bool), leaf, jnp.zeros((), leaf.dtype))

    return map_with_path(apply, params)


_MISSING = object()


def get_dotted(obj: Any, path: str, default: Any = _MISSING) -> Any:
    """``obj.a.b`` for ``path='a.b'`` through attributes or mapping keys (ConfigDicts,
    dicts, namespaces, objects). A missing field raises KeyError naming the whole path,
    unless ``default`` is given."""
    cur = obj
    for part in path.split("."):
        if isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        elif not isinstance(cur, Mapping) and hasattr(cur, part):
            cur = getattr(cur, part)
        else:
            try:  # ConfigDict: both a mapping-like and an attribute container
                cur = cur[part]
            except (KeyError, TypeError, AttributeError):
                if default is not _MISSING:
                    return default
                raise KeyError(f"no field {path!r} (missing {part!r})") from None
    return cur
