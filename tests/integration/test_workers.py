"""`curacache serve --workers 2`: two processes on one port, replicas of one store."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cache.types import CacheEntry
from curacache.client import AsyncClient, Client
from curacache.server.cache_ports import COLLECTION
from storage.sqlite import SqliteStore
from tests.server_harness import ProcessServer

DIM = 8
WAIT_S = 120.0


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc: Linux, like SO_REUSEPORT itself)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def workers_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ProcessServer, list[str]]]:
    if request.param == "sqlite":
        args = ["--workers", "2", "--data-dir", str(tmp_path / "data")]
    else:
        url = request.getfixturevalue("redis_url")
        args = ["--workers", "2", "--storage", "redis", "--redis-url", url]
    server = ProcessServer(args, env={"CURACACHE_CACHE__EMBEDDER": "hashing"})
    yield server, args
    if server.proc.poll() is None:
        assert server.terminate() == 0


def test_two_workers_serve_one_store(workers_server: tuple[ProcessServer, list[str]]) -> None:
    server, _ = workers_server
    workers = children(server.proc.pid)
    assert len(workers) == 2
    data = np.random.default_rng(0).standard_normal((20, DIM)).astype(np.float32)
    with Client(server.target) as writer:
        writer.create_collection("docs", DIM, index="flat")
        writer.upsert("docs", [f"r{i}" for i in range(20)], data, owner="alice")
        token = writer.log_position("docs")
    # Fresh connections land on either worker; each must see the writes (read-your-writes).
    for i in range(8):
        with Client(server.target) as reader:
            hits = reader.search("docs", data[i], "alice", k=1, min_log_position=token)
            assert [h.id for h in hits] == [f"r{i}"]

    # kill -9 one worker: the other keeps serving, and the parent starts a new one that
    # catches up from the store.
    os.kill(workers[0], signal.SIGKILL)
    with Client(server.target) as writer:
        deadline = time.monotonic() + WAIT_S
        while True:  # a connection may still reach the dead worker's closed socket once
            try:
                writer.upsert("docs", ["after"], -data[:1], owner="alice")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        token = writer.log_position("docs")
    deadline = time.monotonic() + WAIT_S
    while len(set(children(server.proc.pid)) - {workers[0]}) < 2:
        assert time.monotonic() < deadline, "the killed worker was not restarted"
        time.sleep(0.2)
    time.sleep(0)  # the new worker announces itself once it has loaded the store
    for _ in range(8):
        with Client(server.target, timeout=60) as reader:
            hits = reader.search("docs", -data[0], "alice", k=1, min_log_position=token)
            assert [h.id for h in hits] == ["after"]


def test_each_worker_serves_its_own_metrics(tmp_path: Path) -> None:
    args = ["--workers", "2", "--data-dir", str(tmp_path / "data"), "--metrics-port", "0"]
    server = ProcessServer(args, env={"CURACACHE_CACHE__EMBEDDER": "hashing"})
    try:
        urls = re.findall(r"\[worker \d\] metrics on (\S+)", server.banner)
        assert len(set(urls)) == 2, server.banner
        for url in urls:
            with urllib.request.urlopen(url, timeout=10) as response:
                families = {
                    f.name for f in text_string_to_metric_families(response.read().decode())
                }
            assert "curacache_rpc_duration_seconds" in families
    finally:
        assert server.terminate() == 0


def test_two_workers_keep_a_cache_quota_together(tmp_path: Path) -> None:
    """`--workers 2` on one SQLite file: concurrent stores over 8 connections (the kernel
    spreads them over both processes). A store puts, then evicts: an observer of the store
    may see the quota + 1 in between, never more (two workers admitting at once would)."""
    config = tmp_path / "curacache.toml"
    config.write_text("[cache.policies.knowledge]\nquota_per_tenant = 3\n")
    data = tmp_path / "data"
    server = ProcessServer(
        ["--workers", "2", "--data-dir", str(data), "--config", str(config)],
        env={"CURACACHE_CACHE__EMBEDDER": "hashing"},
    )
    db = SqliteStore(data / "curacache.sqlite3")
    seen: list[int] = []
    done = threading.Event()

    def count() -> int:
        if db.get_collection(COLLECTION) is None:
            return 0
        entries = (CacheEntry.from_bytes(r.payload) for b in db.iter_records(COLLECTION) for r in b)
        return sum(1 for e in entries if e.tenant == "t1" and e.category == "knowledge")

    def observe() -> None:
        while not done.is_set():
            seen.append(count())

    observer = threading.Thread(target=observe)
    try:

        async def main() -> list[bool]:
            clients = [AsyncClient(server.target, timeout=60) for _ in range(8)]
            try:
                await asyncio.gather(*(c.health() for c in clients))  # connected, each
                stores = (
                    clients[i % 8].store(f"question {i} on rivers", f"a{i}", "t1", "knowledge")
                    for i in range(48)
                )
                return [r.stored for r in await asyncio.gather(*stores)]
            finally:
                await asyncio.gather(*(c.close() for c in clients))

        observer.start()
        assert all(asyncio.run(main()))
        done.set()
        observer.join()
        assert count() == 3
        assert max(seen) <= 3 + 1, f"the store held {max(seen)} entries at once"
    finally:
        done.set()
        db.close()
        assert server.terminate() == 0
