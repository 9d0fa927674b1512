"""RWLock: readers share, a writer is exclusive, a waiting writer holds back new readers.

Events order the threads; timeouts only bound a failing test, they never assert speed.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import pytest

from curacache.index.rwlock import RWLock

WAIT = 10.0  # generous bound for something that must happen
NEVER = 0.2  # how long we watch for something that must not happen


def _spawn(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


def _wait_until(pred: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(int(WAIT / 0.005)):
        if pred():
            return
        done.wait(0.005)
    raise AssertionError("condition never became true")


def test_readers_hold_the_lock_together() -> None:
    lock = RWLock()
    inside = [threading.Event() for _ in range(3)]
    release = threading.Event()

    def reader(i: int) -> None:
        with lock.read():
            inside[i].set()
            release.wait(WAIT)

    threads = [_spawn(functools.partial(reader, i)) for i in range(3)]
    # All three are inside at once: with an exclusive lock the 2nd would never get in.
    assert all(ev.wait(WAIT) for ev in inside)
    release.set()
    for t in threads:
        t.join(WAIT)


def test_writer_waits_for_reader_and_excludes_readers() -> None:
    lock = RWLock()
    reader_in, reader_go = threading.Event(), threading.Event()
    writer_in, writer_go = threading.Event(), threading.Event()

    def reader() -> None:
        with lock.read():
            reader_in.set()
            reader_go.wait(WAIT)

    def writer() -> None:
        with lock.write():
            writer_in.set()
            writer_go.wait(WAIT)

    r = _spawn(reader)
    assert reader_in.wait(WAIT)
    w = _spawn(writer)
    _wait_until(lambda: lock.waiting_writers == 1)
    assert not writer_in.wait(NEVER), "writer entered while a reader held the lock"
    reader_go.set()
    assert writer_in.wait(WAIT)

    late_reader_in = threading.Event()

    def late_reader() -> None:
        with lock.read():
            late_reader_in.set()

    lr = _spawn(late_reader)
    assert not late_reader_in.wait(NEVER), "reader entered while the writer held the lock"
    writer_go.set()
    assert late_reader_in.wait(WAIT)
    for t in (r, w, lr):
        t.join(WAIT)


def test_two_writers_are_exclusive() -> None:
    lock = RWLock()
    first_in, first_go, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with lock.write():
            first_in.set()
            first_go.wait(WAIT)

    def second() -> None:
        with lock.write():
            second_in.set()

    a = _spawn(first)
    assert first_in.wait(WAIT)
    b = _spawn(second)  # blocks on the mutex the first writer holds (not counted as waiting)
    assert not second_in.wait(NEVER)
    first_go.set()
    assert second_in.wait(WAIT)
    a.join(WAIT)
    b.join(WAIT)


def test_waiting_writer_goes_before_later_readers() -> None:
    lock = RWLock()
    order: list[str] = []
    order_lock = threading.Lock()
    reader_in, reader_go = threading.Event(), threading.Event()

    def record(name: str) -> None:
        with order_lock:
            order.append(name)

    def first_reader() -> None:
        with lock.read():
            reader_in.set()
            reader_go.wait(WAIT)

    def writer() -> None:
        with lock.write():
            record("writer")

    def later_reader() -> None:
        with lock.read():
            record("reader")

    r = _spawn(first_reader)
    assert reader_in.wait(WAIT)
    w = _spawn(writer)
    _wait_until(lambda: lock.waiting_writers == 1)
    # Writer preference: this reader must queue behind the waiting writer even though
    # only readers hold the lock right now.
    lr = _spawn(later_reader)
    lr.join(NEVER)
    assert lr.is_alive(), "a new reader overtook a waiting writer"
    reader_go.set()
    for t in (r, w, lr):
        t.join(WAIT)
    assert order == ["writer", "reader"]


def test_release_without_acquire_raises() -> None:
    lock = RWLock()
    with pytest.raises(RuntimeError):
        lock.release_read()
    with pytest.raises(RuntimeError):
        lock.release_write()


def test_exception_inside_releases() -> None:
    lock = RWLock()
    with pytest.raises(KeyError), lock.write():
        raise KeyError("x")
    with pytest.raises(KeyError), lock.read():
        raise KeyError("x")
    got = threading.Event()

    def writer() -> None:
        with lock.write():
            got.set()

    t = _spawn(writer)
    assert got.wait(WAIT)
    t.join(WAIT)


def test_try_acquire_read_never_waits_behind_a_writer() -> None:
    lock = RWLock()
    assert lock.try_acquire_read()  # free: shared access at once
    writer_waiting = threading.Event()
    writer_done = threading.Event()

    def writer() -> None:
        writer_waiting.set()
        with lock.write():
            pass
        writer_done.set()

    t = _spawn(writer)
    writer_waiting.wait(WAIT)
    _wait_until(lambda: lock.waiting_writers == 1)
    assert not lock.try_acquire_read()  # a writer waits: no new reader jumps ahead of it
    lock.release_read()
    assert writer_done.wait(WAIT)
    t.join(WAIT)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with lock.write():
            held.set()
            release.wait(WAIT)

    t = _spawn(holder)
    assert held.wait(WAIT)
    assert not lock.try_acquire_read()  # a writer inside
    release.set()
    t.join(WAIT)
    assert lock.try_acquire_read()
    lock.release_read()
