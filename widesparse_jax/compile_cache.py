"""JAX's persistent compilation cache, on by default for every launch of main.py.

Location: $WIDESPARSE_JAX_CACHE_DIR if set, else $XDG_CACHE_HOME/widesparse_jax/jax_cache
(~/.cache/widesparse_jax/jax_cache). Set WIDESPARSE_JAX_CACHE_DIR=off (or empty) to disable.
A second launch of the same run then loads its compiled step instead of compiling it again.
"""

from __future__ import annotations

import os
from typing import Optional

ENV = "WIDESPARSE_JAX_CACHE_DIR"
OFF = ("", "off", "none", "0")


def cache_dir(environ: Optional[dict] = None) -> Optional[str]:
    """The cache folder to use, or None when disabled."""
    environ = os.environ if environ is None else environ
    if ENV in environ:
        value = environ[ENV].strip()
        return None if value.lower() in OFF else os.path.expanduser(value)
    base = environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "widesparse_jax", "jax_cache")


def enable(environ: Optional[dict] = None) -> Optional[str]:
    """Point JAX's persistent cache at cache_dir(); returns the folder (None: left off)."""
    import jax

    path = cache_dir(environ)
    if path is None:
        return None
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
