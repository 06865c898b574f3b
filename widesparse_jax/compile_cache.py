"""JAX's persistent compilation cache, on by default for every launch of main.py, and the
start-up accounting that shows what it saves.

Location: $WIDESPARSE_JAX_CACHE_DIR if set, else $XDG_CACHE_HOME/widesparse_jax/jax_cache
(~/.cache/widesparse_jax/jax_cache). Set WIDESPARSE_JAX_CACHE_DIR=off (or empty) to disable.
A second launch of the same run then loads its compiled step instead of compiling it again.

:func:`track` counts, for this process, the seconds XLA spent compiling (JAX's
``/jax/core/compile/backend_compile_duration`` events: on a persistent-cache hit that is the
time to load the executable) and the cache's hits and misses; :func:`process_start_time` is
when this process was launched. The train loop reports both at its first step.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from typing import Optional

_IMPORTED_AT = time.time()
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_CACHE_MISS = "/jax/compilation_cache/cache_misses"

ENV = "WIDESPARSE_JAX_CACHE_DIR"
OFF = ("", "off", "none", "0")


def cache_home(environ: Optional[dict] = None) -> str:
    """This package's folder of user caches: $XDG_CACHE_HOME/widesparse_jax (~/.cache/...)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "widesparse_jax")


def cache_dir(environ: Optional[dict] = None) -> Optional[str]:
    """The cache folder to use, or None when disabled."""
    environ = os.environ if environ is None else environ
    if ENV in environ:
        value = environ[ENV].strip()
        return None if value.lower() in OFF else os.path.expanduser(value)
    return os.path.join(cache_home(environ), "jax_cache")


def enable(environ: Optional[dict] = None) -> Optional[str]:
    """Point JAX's persistent cache at cache_dir(); returns the folder (None: left off)."""
    import jax

    environ = os.environ if environ is None else environ
    path = cache_dir(environ)
    if path is None:
        return None
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    # Store every program, also the ~40 small ones (init, eager ops) that compile in < 0.5 s
    # each: a second CIFAR ResNet-18 launch then compiles for 8 % of the first launch's time,
    # not 16 % (benchmarks/startup.py). JAX's own env var overrides it.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


@dataclasses.dataclass
class CompileStats:
    """XLA compilations of this process: their seconds, and persistent-cache hits / misses."""

    seconds: float = 0.0
    compilations: int = 0
    cache_hits: int = 0
    cache_misses: int = 0

    def since(self, before: CompileStats) -> CompileStats:
        """What was counted after ``before`` (an earlier :meth:`copy`)."""
        return CompileStats(
            self.seconds - before.seconds,
            self.compilations - before.compilations,
            self.cache_hits - before.cache_hits,
            self.cache_misses - before.cache_misses,
        )

    def copy(self) -> CompileStats:
        return dataclasses.replace(self)

    def as_dict(self) -> dict:
        """``{'compile_s', 'compilations', 'compile_cache_hits', 'compile_cache_misses'}``."""
        return {
            "compile_s": self.seconds,
            "compilations": self.compilations,
            "compile_cache_hits": self.cache_hits,
            "compile_cache_misses": self.cache_misses,
        }


_STATS: Optional[CompileStats] = None
_STATS_LOCK = threading.Lock()


def track() -> CompileStats:
    """This process's :class:`CompileStats`, counting from the first call (listeners are
    registered once; later calls return the same object)."""
    global _STATS
    with _STATS_LOCK:
        if _STATS is not None:
            return _STATS
        import jax

        stats = CompileStats()

        def on_duration(event: str, duration: float, **kwargs) -> None:
            del kwargs
            if event == _BACKEND_COMPILE:
                stats.seconds += duration
                stats.compilations += 1

        def on_event(event: str, **kwargs) -> None:
            del kwargs
            if event == _CACHE_HIT:
                stats.cache_hits += 1
            elif event == _CACHE_MISS:
                stats.cache_misses += 1

        jax.monitoring.register_event_duration_secs_listener(on_duration)
        jax.monitoring.register_event_listener(on_event)
        _STATS = stats
        return stats


def process_start_time() -> float:
    """Unix time at which this process was launched (Linux ``/proc``; elsewhere the time
    this module was first imported)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        return time.time() - uptime + started_after_boot
    except (OSError, ValueError, IndexError):
        return _IMPORTED_AT
