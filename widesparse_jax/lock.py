"""One run per workdir: an exclusive lock file ``WORKDIR/run.lock`` holding ``pid host``.

``acquire(workdir)`` creates the file atomically (``O_EXCL``); a second run on the same
workdir gets :class:`WorkdirLockedError` naming the holder. A lock left by a dead process
on this host (kill -9) is detected (``os.kill(pid, 0)``) and taken over. ``release``
removes the file only if this process holds it.
"""

from __future__ import annotations

import errno
import os
import socket

LOCK_FILE = "run.lock"


class WorkdirLockedError(RuntimeError):
    """Another live process runs in this workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def _read(path: str) -> tuple[int, str] | None:
    try:
        with open(path) as f:
            pid, host = f.read().split()
        return int(pid), host
    except (OSError, ValueError):
        return None


def _create(path: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
    return True


def acquire(workdir: str) -> str:
    """Takes the workdir's lock (creating the workdir); returns the lock path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    for _ in range(3):
        if _create(path):
            return path
        holder = _read(path)
        if holder is None:  # being written right now, or garbage: look again
            continue
        pid, host = holder
        if host == socket.gethostname() and not _alive(pid):
            os.remove(path)  # stale: its process is gone
            continue
        raise WorkdirLockedError(
            f"workdir {workdir!r} is in use by process {pid} on host {host} (lock {path}); "
            "wait for it, or use another --workdir. Remove the lock only if that run is dead."
        )
    raise WorkdirLockedError(f"could not take the lock {path}; remove it if no run is using it")


def release(path: str) -> None:
    """Removes the lock if this process holds it."""
    holder = _read(path)
    if holder is not None and holder[0] == os.getpid():
        os.remove(path)
