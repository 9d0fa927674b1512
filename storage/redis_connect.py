"""Turn a Redis URL into a redis-py client: standalone, Cluster or Sentinel.

- `redis://HOST:PORT[/DB]` (also rediss://, unix://): one server. If that server has
  cluster mode enabled, a `RedisCluster` is built from it (it discovers the other nodes).
- `redis://HOST:PORT,HOST:PORT,...`: several seed nodes of a Redis Cluster.
- `redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`: the master of SERVICE as the
  Sentinels report it; redis-py re-asks them after a failover.

The store is synchronous (its methods run in worker threads), so the sync clients are used.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from redis import exceptions as rexc
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

__all__ = ["connect"]

SENTINEL_SCHEME = "redis+sentinel"


def _nodes(netloc: str, default_port: int, what: str) -> list[tuple[str, int]]:
    nodes = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host:
            host, port = port, str(default_port)
        try:
            nodes.append((host.strip("[]"), int(port)))
        except ValueError:
            raise ValueError(f"{what}: bad HOST:PORT {part!r}") from None
    return nodes


def connect(url: str, *, socket_timeout: float = 30.0) -> Any:
    """A client for `url` (redis.Redis or RedisCluster); ValueError names a malformed URL."""
    timeouts: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": min(socket_timeout, 5.0),
    }
    parts = urlsplit(url)
    if parts.scheme == SENTINEL_SCHEME:
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis_url: a Sentinel URL needs the service name: /SERVICE")
        db = int(path[1]) if len(path) > 1 else 0
        # redis-py leaves Sentinel (before 8) and ClusterNode unannotated.
        sentinel = Sentinel(_nodes(parts.netloc, 26379, "redis_url"), **timeouts)  # type: ignore[no-untyped-call,unused-ignore]
        return sentinel.master_for(path[0], db=db, **timeouts)  # type: ignore[no-untyped-call,unused-ignore]
    if "," in parts.netloc:
        if "@" in parts.netloc:
            raise ValueError("redis_url: credentials with several nodes are not supported")
        seeds = [ClusterNode(h, p) for h, p in _nodes(parts.netloc, 6379, "redis_url")]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=seeds, **timeouts)
    client = redis.Redis.from_url(url, **timeouts)
    try:
        enabled = client.info("cluster").get("cluster_enabled") == 1
    except (rexc.ConnectionError, rexc.TimeoutError, rexc.ResponseError):
        return client  # unreachable now: stay lazy, the first command reports it
    if not enabled:
        return client
    client.close()
    return RedisCluster.from_url(url, **timeouts)
