"""Pillow's BILINEAR resize, bit for bit, as a TensorFlow op: the resize of the ImageNet path.

The baseline resizes with torchvision on PIL images, i.e. with Pillow's resample: a triangle
filter widened by the downscale factor (antialiased), 22-bit fixed-point taps, two 1-D passes
with the intermediate rounded to uint8. TensorFlow's antialiased resize (``ScaleAndTranslate``)
computes in float and differs from it by ~0.17 per pixel on average, and costs ~1.7 ms per
224 x 224 train crop on one core; this op gives Pillow's exact bytes in ~0.35 ms
(``pil_resize.cc`` has the algorithm; docs/performance.md the measurements).

    resized = pil_resize.resize(tf, image, [224, 224])   # uint8 [h, w, c] -> uint8 [224, 224, c]

The C++ source (``pil_resize.cc``, beside this file) is compiled once per TensorFlow version
and source, on first use, by ``$CXX`` (default ``g++``) with ``tf.sysconfig``'s flags (~10 s),
into ``$WIDESPARSE_JAX_OPS_DIR`` (default ``~/.cache/widesparse_jax/ops``). The build writes a
temporary file and renames it, so processes building at the same time do not clash.
``python -m widesparse_jax.data.pil_resize`` builds it ahead of time (``scripts/setup.sh``
does). Without a C++ compiler the ImageNet path refuses to start, naming the compiler.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Optional

from widesparse_jax import compile_cache

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pil_resize.cc")
ENV = "WIDESPARSE_JAX_OPS_DIR"
_LOCK = threading.Lock()
_LOADED: dict = {}


class BuildError(RuntimeError):
    """The op could not be compiled or loaded; the message says why in one line."""


def ops_dir(environ: Optional[dict] = None) -> str:
    """Where built op libraries are kept: $WIDESPARSE_JAX_OPS_DIR, else <cache home>/ops."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV, "").strip():
        return os.path.expanduser(environ[ENV].strip())
    return os.path.join(compile_cache.cache_home(environ), "ops")


def _compiler(environ: dict) -> str:
    return environ.get("CXX", "").strip() or "g++"


def _flags(tf) -> list:
    return list(tf.sysconfig.get_compile_flags()) + list(tf.sysconfig.get_link_flags())


def library_path(tf, environ: Optional[dict] = None) -> str:
    """The library's file: keyed by TF version, compiler, flags and the source's bytes."""
    environ = os.environ if environ is None else environ
    digest = hashlib.sha256()
    with open(SOURCE, "rb") as f:
        digest.update(f.read())
    digest.update(" ".join([_compiler(environ), *_flags(tf)]).encode())
    return os.path.join(
        ops_dir(environ), f"pil_resize-tf{tf.__version__}-{digest.hexdigest()[:16]}.so"
    )


def build(tf, environ: Optional[dict] = None) -> str:
    """Compile the op unless its library exists; returns the library's path. BuildError."""
    environ = os.environ if environ is None else environ
    path = library_path(tf, environ)
    if os.path.isfile(path):
        return path
    cxx = _compiler(environ)
    if shutil.which(cxx) is None:
        raise BuildError(
            f"the ImageNet preprocessing compiles a small TensorFlow op once and needs a C++ "
            f"compiler: {cxx!r} was not found (install g++, or set CXX to a C++17 compiler)"
        )
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=folder)
        os.close(fd)
    except OSError as e:
        raise BuildError(f"cannot write the op library to {folder!r} (set {ENV}): {e}") from None
    cmd = [cxx, "-O3", "-shared", "-fPIC", "-w", SOURCE, "-o", tmp, *_flags(tf)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise BuildError(f"compiling {SOURCE} with {cxx!r} failed: {tail}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load(tf):
    """The op module (built first if needed), loaded once per process."""
    with _LOCK:
        if "module" not in _LOADED:
            path = build(tf)
            try:
                _LOADED["module"] = tf.load_op_library(path)
            except Exception as e:  # noqa: BLE001 - a broken library: one clear line.
                raise BuildError(f"cannot load {path} (delete it to rebuild): {e}") from None
        return _LOADED["module"]


def resize(tf, image, size, legacy_pass_order: bool = False):
    """Pillow's ``Image.resize((w, h), BILINEAR)`` of uint8 [H, W, C]: uint8 [h, w, C].

    size: int32 (h, w). ``legacy_pass_order``: Pillow < 13's pass order (horizontal pass
    always first); by default Pillow >= 13's (vertical first when the height shrinks by more
    than twice as many pixels as the width). The orders differ by at most 1 in some pixels.
    """
    op = load(tf)
    return op.widesparse_pil_resize(image, size, legacy_pass_order=legacy_pass_order)


def main() -> int:
    from widesparse_jax.data import sources

    try:
        print(build(sources.import_tf()[0]))
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
