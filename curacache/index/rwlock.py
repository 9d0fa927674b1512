"""A small readers-writer lock: many concurrent searches, or one write, never both.

Writer preference: once a writer is waiting, new readers queue behind it, so a steady stream
of searches cannot starve a write. Not reentrant: a thread holding `read()` must not call
`read()` again while a writer may be waiting (it would deadlock), nor `write()`.

The collection (`curacache.server.collection`) holds one per collection over its index and
label map; `flat` and `hnsw` also guard themselves with one. Why the fast paths look the way
they do (a single-label grant costs a few µs in all, so the lock's own cost shows; figures in
bench/curator/README.md): `read()` / `write()` return prebuilt context-manager objects with
plain `__enter__` / `__exit__` rather than generator-based `@contextmanager`s, and a writer
keeps the internal mutex for its whole write (released in `release_write`) instead of taking
it twice around a `writer` flag: readers arriving meanwhile block on the mutex, as they would
have blocked on the flag, and the held mutex is the flag (releasing it unheld raises).
"""

from __future__ import annotations

import threading


class _Read:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire_read()

    def __exit__(self, *exc: object) -> None:
        self._lock.release_read()


class _Write:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire_write()

    def __exit__(self, *exc: object) -> None:
        self._lock.release_write()


class RWLock:
    """Condition-based readers-writer lock with writer preference."""

    __slots__ = ("_cond", "_mutex", "_read", "_readers", "_sleepers", "_waiting", "_write")

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # taken directly (C-level `with`) on the fast paths
        self._cond = threading.Condition(self._mutex)
        self._readers = 0  # threads inside read()
        self._waiting = 0  # threads blocked in write(); readers yield to them
        self._sleepers = 0  # threads inside wait(): skip notify_all when there are none
        self._read = _Read(self)
        self._write = _Write(self)

    def _sleep(self) -> None:
        """Wait on the condition (caller holds it), counted so releases know to notify."""
        self._sleepers += 1
        try:
            self._cond.wait()
        finally:
            self._sleepers -= 1

    def acquire_read(self) -> None:
        with self._mutex:  # a writer inside holds the mutex: we queue here
            while self._waiting:
                self._sleep()
            self._readers += 1

    def try_acquire_read(self) -> bool:
        """Shared access if it is free now (no writer inside or waiting); never blocks."""
        if not self._mutex.acquire(blocking=False):  # a writer is inside
            return False
        try:
            if self._waiting:
                return False
            self._readers += 1
            return True
        finally:
            self._mutex.release()

    def release_read(self) -> None:
        with self._mutex:
            if self._readers <= 0:
                raise RuntimeError("release_read without acquire_read")
            self._readers -= 1
            if self._readers == 0 and self._sleepers:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        """Take the mutex and keep it until `release_write` (after waiting out the readers)."""
        self._mutex.acquire()
        if self._readers:
            self._waiting += 1
            try:
                while self._readers:
                    self._sleep()
            except BaseException:
                self._waiting -= 1
                self._cond.notify_all()  # readers held back by us may proceed
                self._mutex.release()
                raise
            self._waiting -= 1

    def release_write(self) -> None:
        """Release a write (RuntimeError, from the mutex, when no write is held)."""
        if self._sleepers:
            self._cond.notify_all()  # readers (or writers) that queued behind a waiting writer
        self._mutex.release()

    def read(self) -> _Read:
        """Context manager: shared access."""
        return self._read

    def write(self) -> _Write:
        """Context manager: exclusive access."""
        return self._write

    @property
    def waiting_writers(self) -> int:
        """Writers waiting for readers to leave (for tests and diagnostics; racy by nature: read
        without the mutex, which a writer inside holds; a writer queued behind another writer
        waits on the mutex and is not counted)."""
        return self._waiting
