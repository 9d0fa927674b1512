"""kill -9 one replica while another takes writes: the writer never notices, and the killed
replica, started again, catches up from the store (DESIGN §6). Real `curacache serve`
processes on one store (SQLite file or a private Redis)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from curacache.client import Client
from tests.server_harness import ProcessServer

DIM = 8


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store_args(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "sqlite":
        return ["--data-dir", str(tmp_path / "data")]
    return ["--storage", "redis", "--redis-url", request.getfixturevalue("redis_url")]


@pytest.fixture
def start(store_args: list[str]) -> Iterator[Callable[[], ProcessServer]]:
    started: list[ProcessServer] = []

    def one() -> ProcessServer:
        server = ProcessServer(store_args, env={"CURACACHE_CACHE__EMBEDDER": "hashing"})
        started.append(server)
        return server

    yield one
    for server in started:
        if server.proc.poll() is None:
            server.kill()


def test_a_replica_killed_under_write_load_catches_up_and_the_other_is_unaffected(
    start: Callable[[], ProcessServer],
) -> None:
    a, b = start(), start()
    rng = np.random.default_rng(0)
    with Client(a.target) as ca:
        ca.create_collection("docs", DIM, index="flat")
    written: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def write() -> None:  # one writer on A, as fast as A acknowledges (bounded by `stop`)
        try:
            with Client(a.target, timeout=30) as c:
                while not stop.is_set() and len(written) < 5000:
                    rid = f"r{len(written)}"
                    c.upsert("docs", [rid], rng.standard_normal((1, DIM)), owner="alice")
                    written.append(rid)
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(written) < 50 and writer.is_alive():
            stop.wait(0.01)
        b.kill()  # kill -9 mid-load
        before = len(written)
        while len(written) < before + 50 and writer.is_alive():
            stop.wait(0.01)
    finally:
        stop.set()
        writer.join(60)
    assert not errors, errors  # A took every write while B died
    with Client(a.target) as ca:
        ca.upsert("docs", ["last"], np.ones((1, DIM)), owner="alice")
        token = ca.log_position("docs")
        assert ca.stats("docs").record_count == len(written) + 1
    again = start()  # B again, on the same store: it loads, then tails from there
    with Client(again.target, timeout=60) as cb:
        hits = cb.search("docs", np.ones(DIM), "alice", k=1, min_log_position=token)
        assert [h.id for h in hits] == ["last"]
        assert cb.stats("docs").record_count == len(written) + 1
        assert {r.id for r in cb.get("docs", written, "alice")} == set(written)
