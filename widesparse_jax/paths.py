"""Workdir paths, local or remote (``gs://``, ``s3://``, ...): the file operations of a run.

Everything the package writes or reads under a workdir goes through :mod:`etils.epath`
(as orbax does): a local path keeps the plain ``os`` behaviour (epath's os backend: ``open``,
``os.replace``, ``os.makedirs``), a URI goes to the store's backend, TensorFlow's
``tf.io.gfile`` (``gs://``) or fsspec (``gcsfs``, ``s3fs``, ...). URIs are never made absolute.

Atomicity: :func:`write_atomic` writes a temp file and renames it over the target. Locally
that is ``os.replace`` (atomic on POSIX; ``fsync`` first where asked). On an object store a
single object upload is already all-or-nothing (a reader sees the old or the new object,
never a part), but a rename is a copy + delete: after a crash the ``.tmp`` object may stay
behind (harmless: readers ignore it), and nothing is fsync'ed (the upload completes on close).
"""

from __future__ import annotations

import os

from etils import epath

_SCHEMES = ("gs", "s3", "az", "hf")  # the URI schemes etils.epath understands


def is_remote(path) -> bool:
    """True for a URI (``gs://...``), False for a local path."""
    return "://" in os.fspath(path)


def scheme(path) -> str:
    return os.fspath(path).split("://", 1)[0]


def path(root, *parts: str) -> epath.Path:
    """``root/parts...`` as an ``epath.Path`` (a local path stays relative if it was)."""
    return epath.Path(root).joinpath(*parts)


def join(root, *parts: str) -> str:
    """``root/parts...`` as a string; a local result is made absolute, a URI is kept as is."""
    joined = os.fspath(path(root, *parts))
    return joined if is_remote(root) else os.path.abspath(joined)


def size(p) -> int:
    """Bytes of the file ``p``."""
    return os.path.getsize(p) if not is_remote(p) else epath.Path(p).stat().length


def write_atomic(target, data: str | bytes, fsync: bool = False) -> None:
    """Writes ``data`` to ``target + '.tmp'`` and renames it over ``target`` (see module doc).

    ``fsync``: flush the temp file to the disk before the rename (local paths only).
    """
    target = epath.Path(target)
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
        if fsync and not is_remote(target):
            f.flush()
            os.fsync(f.fileno())
    tmp.replace(target)


def files_under(directory) -> list[str]:
    """Relative paths (``/``-separated) of every file under ``directory``, sorted."""
    root = epath.Path(directory)
    out = []
    for parent, _, names in root.walk():
        rel = epath.Path(parent).relative_to(root)
        out.extend(os.fspath(rel / n) for n in names)
    return sorted(out)


def backend_problem(uri: str) -> str | None:
    """Why epath cannot reach ``uri``'s store from this process (None: it can), offline.

    Checks that the scheme is one epath knows, that the backend it picks for it is
    installed and serves the scheme (TF's registered file systems, or an fsspec
    implementation such as ``gcsfs``) and, for ``gs://``, that the client orbax needs is
    installed; it does not contact the store.
    """
    name = scheme(uri)
    if name not in _SCHEMES:
        return f"the scheme {name}:// is not supported (etils.epath knows {', '.join(_SCHEMES)})"
    from etils.epath import backend as backend_lib

    backend = epath.Path(uri)._backend  # the one epath will use (TF gfile if TF is installed)
    if backend is backend_lib.tf_backend:
        try:
            registered = backend.gfile.get_registered_schemes()
        except (ImportError, AttributeError) as e:
            return f"TensorFlow's tf.io.gfile is not usable ({e})"
        if name not in registered:
            return (
                f"TensorFlow's tf.io.gfile has no {name}:// file system (it has "
                f"{', '.join(s for s in registered if s) or 'none'}): install the plugin "
                "for it, or set EPATH_USE_TF=false and install the fsspec implementation"
            )
    elif backend is backend_lib.fsspec_backend:
        import fsspec

        try:
            fsspec.get_filesystem_class(name)
        except (ImportError, ValueError) as e:
            return f"fsspec cannot open {name}:// ({e})"
    if name == "gs" and not _importable("google.cloud.storage"):
        # orbax lists a gs:// checkpoint directory's steps after asking the bucket, through
        # this client, whether it has a hierarchical namespace (orbax 0.12.8).
        return "orbax needs the package google-cloud-storage for gs:// checkpoints"
    return None


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
