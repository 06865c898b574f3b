"""Checksums of a written checkpoint: ``STEP_DIR/sha256.json``, written after orbax commits.

orbax does not notice flipped bytes in its array files (flipping 8 bytes in the largest file
of ``checkpoints/<step>/state/`` restores silently with changed weights), so every
checkpoint directory gets a manifest ``{"format": FORMAT, "files": {relpath: {"sha256",
"bytes"}}}`` of every file orbax wrote, written atomically (temp file + rename, fsync'ed
locally; ``widesparse_jax.paths`` says what a remote store gives). :func:`verify` re-hashes
a directory (local or ``gs://...``, through etils.epath) and returns what is wrong, or None.
"""

from __future__ import annotations

import hashlib
import json

from etils import epath

from widesparse_jax import paths

MANIFEST = "sha256.json"
FORMAT = "widesparse_jax.sha256.v1"
_CHUNK = 1 << 22  # bytes read per hash update


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with epath.Path(path).open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files(directory: str) -> list[str]:
    """Relative paths of every file under ``directory`` except the manifest (and its temp)."""
    return [rel for rel in paths.files_under(directory) if rel not in (MANIFEST, MANIFEST + ".tmp")]


def digests(directory: str) -> dict[str, dict]:
    """``{relpath: {'sha256': hex, 'bytes': size}}`` of every file under ``directory``."""
    return {
        rel: {
            "sha256": _sha256(paths.path(directory, rel)),
            "bytes": paths.size(paths.path(directory, rel)),
        }
        for rel in _files(directory)
    }


def write_manifest(directory: str) -> str:
    """Hashes every file under ``directory`` and writes the manifest atomically; its path."""
    path = paths.path(directory, MANIFEST)
    text = json.dumps({"format": FORMAT, "files": digests(directory)}, indent=1, sort_keys=True)
    paths.write_atomic(path, text, fsync=True)
    return str(path)


def read_manifest(directory: str) -> dict | None:
    """The manifest's ``files`` entry; None when there is no manifest. Raises ValueError if bad."""
    path = paths.path(directory, MANIFEST)
    if not path.exists():
        return None
    try:
        with path.open() as f:
            manifest = json.load(f)
        files = manifest["files"]
        assert manifest["format"] == FORMAT and isinstance(files, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
        raise ValueError(f"unreadable checksum manifest {MANIFEST} ({type(e).__name__})") from e
    return files


def compare(expected: dict[str, dict], found: dict[str, dict]) -> str | None:
    """The first difference between a manifest and the directory's digests (None: equal)."""
    for rel in sorted(set(expected) | set(found)):
        if rel not in found:
            return f"file {rel} is missing"
        if rel not in expected:
            return f"file {rel} is not in the checksum manifest"
        want, got = expected[rel], found[rel]
        if want.get("bytes") != got["bytes"]:
            return f"file {rel} has {got['bytes']} bytes, {want.get('bytes')} were written"
        if want.get("sha256") != got["sha256"]:
            return f"file {rel} fails its sha256 checksum"
    return None


def verify(directory: str) -> str | None:
    """What is wrong with the checkpoint in ``directory`` (None: every file is as written).

    Returns ``'no checksum manifest'`` when the manifest is missing (the caller decides
    whether that is an old checkpoint or a damaged one).
    """
    if not epath.Path(directory).is_dir():
        return "directory is missing"
    try:
        expected = read_manifest(directory)
    except ValueError as e:
        return str(e)
    if expected is None:
        return f"no checksum manifest {MANIFEST}"
    return compare(expected, digests(directory))
