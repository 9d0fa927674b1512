"""A small readers-writer lock (writer preference), so `curator` needs nothing from curacache.

Same semantics as curacache.index.rwlock.RWLock: many concurrent readers (searches) or one
writer, never both; a waiting writer holds back new readers so searches cannot starve it.
Not reentrant.

`read()` / `write()` return prebuilt context-manager objects with plain `__enter__` /
`__exit__` methods rather than generator-based `@contextmanager`s. Why: a single-label grant
costs a few µs in all, and a generator context manager alone added ~1 µs of it.
"""

from __future__ import annotations

import threading


class _Read:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        lk = self._lock
        with lk._mutex:
            while lk._writer or lk._waiting:
                lk._sleep()
            lk._readers += 1

    def __exit__(self, *exc: object) -> None:
        lk = self._lock
        with lk._mutex:
            lk._readers -= 1
            if lk._readers == 0 and lk._sleepers:
                lk._cond.notify_all()


class _Write:
    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        lk = self._lock
        with lk._mutex:
            if not (lk._writer or lk._readers):  # uncontended: no wait, nobody to wake
                lk._writer = True
                return
            lk._waiting += 1
            try:
                while lk._writer or lk._readers:
                    lk._sleep()
            except BaseException:
                lk._waiting -= 1
                lk._cond.notify_all()  # readers held back by us may proceed
                raise
            lk._waiting -= 1
            lk._writer = True

    def __exit__(self, *exc: object) -> None:
        lk = self._lock
        with lk._mutex:
            lk._writer = False
            if lk._sleepers:
                lk._cond.notify_all()


class RWLock:
    __slots__ = ("_mutex", "_cond", "_readers", "_writer", "_waiting", "_sleepers", "_read", "_write")

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # taken directly (C-level `with`) on the fast paths
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._waiting = 0
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

    def read(self) -> _Read:
        """Context manager: shared access."""
        return self._read

    def write(self) -> _Write:
        """Context manager: exclusive access."""
        return self._write
