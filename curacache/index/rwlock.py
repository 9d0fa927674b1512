"""A small readers-writer lock: many concurrent searches, or one write, never both.

Writer preference: once a writer is waiting, new readers queue behind it, so a steady
stream of searches cannot starve a write. Not reentrant: a thread holding `read()` must not
call `read()` again while a writer may be waiting (it would deadlock), nor `write()`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    """Condition-based readers-writer lock with writer preference."""

    __slots__ = ("_cond", "_readers", "_writer", "_waiting_writers")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0  # threads inside read()
        self._writer = False  # a thread is inside write()
        self._waiting_writers = 0  # threads blocked in write(); readers yield to them

    def acquire_read(self) -> None:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            if self._readers <= 0:
                raise RuntimeError("release_read without acquire_read")
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            except BaseException:
                self._waiting_writers -= 1
                self._cond.notify_all()  # readers held back by us may proceed
                raise
            self._waiting_writers -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._cond:
            if not self._writer:
                raise RuntimeError("release_write without acquire_write")
            self._writer = False
            self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        self.acquire_write()
        try:
            yield
        finally:
            self.release_write()

    @property
    def waiting_writers(self) -> int:
        """Writers blocked right now (for tests and diagnostics; racy by nature)."""
        with self._cond:
            return self._waiting_writers
