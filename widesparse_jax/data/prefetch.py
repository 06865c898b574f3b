"""Background prefetch: run an iterator in a thread, a few items ahead, order unchanged."""

from __future__ import annotations

import queue
import threading
from typing import Iterator

from widesparse_jax.data.spec import check_int

_DONE = object()


def _worker(it: Iterator, q: queue.Queue, stop: threading.Event) -> None:
    """Producer loop. Holds no reference to the Prefetch object, so dropping it stops us."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in it:
            if not put((True, item)):
                return
        put((True, _DONE))
    except BaseException as e:  # noqa: BLE001 - re-raised in the consumer thread.
        put((False, e))


class Prefetch:
    """Runs an iterator in a background thread, ``size`` items ahead. Order is unchanged.

    An exception of the iterator is re-raised by ``next`` after the items before it. The
    worker stops when the consumer is garbage collected or calls ``close()``.
    """

    def __init__(self, it: Iterator, size: int):
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_worker, args=(it, self._queue, self._stop), daemon=True
        )
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        ok, item = self._queue.get()
        if not ok:
            self.close()
            raise item
        if item is _DONE:
            self.close()
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()

    def __del__(self):
        self.close()


def maybe_prefetch(it: Iterator, size: int) -> Iterator:
    """``it`` prefetched ``size`` items ahead in a thread; ``size=0``: ``it`` itself."""
    size = check_int(size, "prefetch", 0)
    return Prefetch(it, size) if size > 0 else it
