"""Redis Sentinel: the service configured with a Sentinel URL follows a failover by itself,
and with WAIT for one replica loses no acknowledged write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curacache.client import Client
from tests.redis_sentinel import RedisSentinel
from tests.server_harness import ThreadServer, make_config, write_through_failover

pytestmark = pytest.mark.redis
DIM = 8


def test_the_service_follows_a_sentinel_failover_without_losing_an_acknowledged_write(
    tmp_path: Path,
) -> None:
    """Upserts through a server on `redis+sentinel://…`: the master is killed, the Sentinel
    promotes the replica, and writes get UNAVAILABLE until the promoted master has a replica
    again (the killed one, restarted, which the Sentinel turns into its replica); then they
    succeed by themselves. Every acknowledged one is there, read through the new master."""
    group = RedisSentinel(tmp_path / "redis")
    server = None
    try:
        first_master = group.master_port()
        assert first_master == group.master.port
        config = make_config(
            "redis", tmp_path / "data", group.url, **{"storage.redis_wait_replicas": 1}
        )
        server = ThreadServer(config)
        with Client(server.target, timeout=10) as c:
            c.create_collection("docs", DIM, index="flat")
            vector = np.ones((1, DIM), dtype=np.float32)
            acked, failed = write_through_failover(
                c,
                "docs",
                vector,
                kill=group.master.kill,
                restart=group.master.start,
                kill_at=100,
                enough=200,
                budget_s=120,
            )
            assert failed > 0  # the failover was seen
            assert group.master_port() == group.replica.port  # the replica was promoted
            found = {r.id for r in c.get("docs", acked, "alice")}
            assert len(found) == len(acked), f"lost {len(acked) - len(found)} acknowledged writes"
            hits = c.search(
                "docs", vector[0], "alice", k=1, min_log_position=c.log_position("docs")
            )
            assert hits
    finally:
        if server is not None:
            server.stop()
        group.stop()
