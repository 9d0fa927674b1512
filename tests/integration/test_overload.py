"""An overloaded server sheds its backlog with gRPC's CANCELLED (limits.max_pending_rpcs); the SDK
names it, and sends an idempotent read that met it to another replica."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from curacache.client import AsyncClient, CancelledByServerError
from tests.server_harness import ThreadServer, make_config

BURST = 500  # lookups sent at once: far more than the tiny backlog below lets wait
DIM = 384


@pytest.fixture
def tiny_backlog(tmp_path: Path) -> Iterator[ThreadServer]:
    # soft 0, hard 1: any call that has to wait to be taken up is dropped (gRPC's own test of
    # this limit uses the same pair for a deterministic overflow).
    config = make_config(
        "sqlite",
        tmp_path / "tiny",
        None,
        **{"limits.max_pending_rpcs": 0, "limits.max_pending_rpcs_hard": 1},
    )
    server = ThreadServer(config)
    yield server
    server.stop()


async def _burst(client: AsyncClient) -> Counter[str]:
    vector = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)

    async def one(i: int) -> str:
        try:
            await client.lookup(f"question {i}", "t0", model="m", embedding=vector)
        except CancelledByServerError as exc:
            assert "overloaded" in str(exc) and "limits.max_pending_rpcs" in str(exc)
            return "cancelled"
        return "ok"

    return Counter(await asyncio.gather(*(one(i) for i in range(BURST))))


def test_backlog_over_the_limit_is_cancelled_by_the_server(tiny_backlog: ThreadServer) -> None:
    async def run() -> tuple[Counter[str], Counter[str]]:
        async with AsyncClient(tiny_backlog.target) as client:
            burst = await _burst(client)
            calm: Counter[str] = Counter()
            for i in range(5):  # one at a time: nothing waits, nothing is dropped
                calm[(await client.lookup(f"calm {i}", "t0", model="m")).reason] += 1
            return burst, calm

    burst, calm = asyncio.run(run())
    assert burst["cancelled"] > 0 and burst["ok"] > 0, burst
    assert sum(calm.values()) == 5


def test_a_read_dropped_by_one_replica_is_answered_by_another(
    tiny_backlog: ThreadServer, tmp_path: Path
) -> None:
    roomy = ThreadServer(make_config("sqlite", tmp_path / "roomy", None))
    try:

        async def run() -> Counter[str]:
            async with AsyncClient([tiny_backlog.target, roomy.target]) as client:
                return await _burst(client)

        assert asyncio.run(run()) == Counter(ok=BURST)
    finally:
        roomy.stop()
