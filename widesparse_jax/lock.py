"""One run per workdir: an exclusive lock file ``WORKDIR/run.lock`` holding ``pid host``.

``acquire(workdir)`` creates the file atomically (``O_EXCL``); a second run on the same
workdir gets :class:`WorkdirLockedError` naming the holder. A lock left by a dead process
on this host (kill -9) is detected (``os.kill(pid, 0)``) and taken over. ``release``
removes the file only if this process holds it.

Remote workdirs (``gs://...``, through etils.epath) have no ``O_EXCL``. There the lock is
*create if absent, then read back*: the file gets ``pid host nonce`` (a random nonce), and
after a short settle time (:data:`REMOTE_SETTLE_S`) the process reads it back and holds the
lock only if it finds its own nonce (the last writer wins, the others see its nonce and
stop). Limits: two runs that both find no lock and whose writes land more than the settle
time apart can both believe they hold it (the store offers no create-if-absent through
epath), so it guards against the usual mistake (a second launch on a busy workdir), not
against a simultaneous start. Stale detection is by pid only when the lock's host is this
host; a lock of a dead run on another host stays until removed by hand (the error says so).
"""

from __future__ import annotations

import errno
import os
import socket
import time
import uuid

from etils import epath

from widesparse_jax import paths

LOCK_FILE = "run.lock"
REMOTE_SETTLE_S = 1.0  # wait between writing a remote lock and reading it back


class WorkdirLockedError(RuntimeError):
    """Another live process runs in this workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    return True


def _read(path) -> tuple[int, str, str] | None:
    """``(pid, host, nonce)`` of the lock file (nonce '' in a local lock); None if unreadable."""
    try:
        with epath.Path(path).open() as f:
            pid, host, *nonce = f.read().split()
        if len(nonce) > 1:
            return None
        return int(pid), host, "".join(nonce)
    except (OSError, ValueError):
        return None


def _create_local(path: str) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
    return True


def _create_remote(path: str) -> bool:
    """Create-if-absent + read-back (see the module doc for what it does not guarantee)."""
    lock = epath.Path(path)
    if lock.exists():
        return False
    nonce = uuid.uuid4().hex
    lock.write_text(f"{os.getpid()} {socket.gethostname()} {nonce}\n")
    time.sleep(REMOTE_SETTLE_S)
    holder = _read(path)
    return holder is not None and holder[2] == nonce


def acquire(workdir: str) -> str:
    """Takes the workdir's lock (creating the workdir); returns the lock path."""
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    path = os.fspath(paths.path(workdir, LOCK_FILE))
    create = _create_remote if paths.is_remote(workdir) else _create_local
    for _ in range(3):
        if create(path):
            return path
        holder = _read(path)
        if holder is None:  # being written right now, or garbage: look again
            continue
        pid, host, _ = holder
        if host == socket.gethostname() and not _alive(pid):
            epath.Path(path).unlink(missing_ok=True)  # stale: its process is gone
            continue
        raise WorkdirLockedError(
            f"workdir {workdir!r} is in use by process {pid} on host {host} (lock {path}); "
            "wait for it, or use another --workdir. Remove the lock only if that run is dead."
        )
    raise WorkdirLockedError(f"could not take the lock {path}; remove it if no run is using it")


def release(path: str) -> None:
    """Removes the lock if this process holds it."""
    holder = _read(path)
    if holder is not None and holder[0] == os.getpid() and holder[1] == socket.gethostname():
        epath.Path(path).unlink(missing_ok=True)
