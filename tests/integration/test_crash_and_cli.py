"""`curacache serve` as a real process: banner, SIGTERM drain, SIGKILL loses no acknowledged write."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from curacache.client import Client, CuracacheError
from tests.server_harness import ProcessServer

DIM = 32


def _serve_args(storage: str, tmp_path: Path, request: pytest.FixtureRequest) -> list[str]:
    if storage == "redis":
        return ["--storage", "redis", "--redis-url", request.getfixturevalue("redis_url")]
    return ["--data-dir", str(tmp_path / "data")]


def test_banner_and_graceful_shutdown(
    storage: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = ProcessServer(_serve_args(storage, tmp_path, request))
    assert f"listening on 127.0.0.1:{server.port}" in server.banner
    assert f"store: {storage}" in server.banner
    with Client(server.target) as c:
        c.create_collection("c", DIM, index="flat")
    assert server.terminate() == 0


def test_sigkill_mid_stream_loses_no_acknowledged_upsert(
    storage: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    args = _serve_args(storage, tmp_path, request)
    server = ProcessServer(args)
    rng = np.random.default_rng(0)
    acknowledged: list[str] = []
    enough = threading.Event()
    stopped = threading.Event()

    def stream() -> None:
        with Client(server.target, timeout=10) as c:
            c.create_collection("c", DIM, index="flat")
            batch = 0
            try:
                while True:
                    ids = [f"b{batch}-{i}" for i in range(25)]
                    c.upsert("c", ids, rng.standard_normal((25, DIM)), owner=f"t{batch % 3}")
                    acknowledged.extend(ids)  # only after the server acknowledged
                    batch += 1
                    if batch == 40:
                        enough.set()
            except CuracacheError:
                pass  # the server died under us: expected
            finally:
                enough.set()
                stopped.set()

    writer = threading.Thread(target=stream, daemon=True)
    writer.start()
    assert enough.wait(120)
    server.kill()
    assert stopped.wait(60)
    assert len(acknowledged) >= 1000

    restarted = ProcessServer(args)
    try:
        with Client(restarted.target) as c:
            assert c.stats("c").record_count >= len(acknowledged)
            for tenant in ("t0", "t1", "t2"):
                mine = [i for i in acknowledged if int(i.split("-")[0][1:]) % 3 == int(tenant[1])]
                for start in range(0, len(mine), 500):
                    chunk = mine[start : start + 500]
                    assert [r.id for r in c.get("c", chunk, tenant)] == chunk
    finally:
        restarted.terminate()
