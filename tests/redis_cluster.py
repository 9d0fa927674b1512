"""Start a throw-away Redis Cluster for tests: 3 masters + 3 replicas on free loopback ports,
data in a temp dir, built with `redis-cli --cluster create`; every node stopped afterwards."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.redis_server import RedisProcess, RedisUnavailableError, find_redis_server

NODE_TIMEOUT_MS = 2000  # failure detection: a master is failed over ~2 node timeouts after death
_READY_TIMEOUT_S = 60.0


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """`n` ports whose cluster-bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 29999)
        if port not in ports and _port_free(port) and _port_free(port + 10000):
            ports.append(port)
    return ports


class RedisCluster:
    """Six cluster-enabled redis-server processes joined into one cluster."""

    def __init__(self, tmp_dir: Path) -> None:
        binary = find_redis_server()
        cli = shutil.which("redis-cli") or str(Path(binary).with_name("redis-cli"))
        if not Path(cli).exists():
            raise RedisUnavailableError("redis-cli not found (needed to create a cluster)")
        self.nodes: list[RedisProcess] = []
        for port in _free_ports(6):
            node_dir = tmp_dir / str(port)
            node_dir.mkdir(parents=True)
            extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
            ]
            self.nodes.append(RedisProcess(binary, node_dir, port, extra))
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            subprocess.run(
                [
                    cli,
                    "--cluster",
                    "create",
                    *addresses,
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self.wait_ok()
            self._wait_replicas_online()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """Every node as a seed: `redis://h:p,h:p,...`."""
        return "redis://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def wait_ok(self) -> None:
        """Until every live node reports cluster_state:ok."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            states = []
            for node in self.nodes:
                if node._proc is None:
                    continue
                client = redis.Redis(port=node.port, socket_timeout=1.0)
                try:
                    states.append(client.cluster("info").get("cluster_state"))
                except redis.exceptions.RedisError:
                    states.append("down")
                finally:
                    client.close()
            if states and all(s == "ok" for s in states):
                return
            if time.monotonic() > deadline:
                raise RedisUnavailableError(f"cluster not ok within {_READY_TIMEOUT_S}s: {states}")
            time.sleep(0.1)

    def _wait_replicas_online(self) -> None:
        """Until every master has its replica connected and synced (WAIT counts only those)."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            online = 0
            for node in self.nodes:
                client = redis.Redis(port=node.port, socket_timeout=1.0)
                try:
                    info = client.info("replication")
                except redis.exceptions.RedisError:
                    continue
                finally:
                    client.close()
                if info.get("role") == "master":
                    slave = info.get("slave0")
                    online += isinstance(slave, dict) and slave.get("state") == "online"
            if online == len(self.nodes) // 2:
                return
            if time.monotonic() > deadline:
                raise RedisUnavailableError("cluster replicas did not come online")
            time.sleep(0.1)

    def flush(self) -> None:
        for node in self.nodes:
            client = redis.Redis(port=node.port, socket_timeout=5.0)
            try:
                if client.info("replication").get("role") == "master":
                    client.flushall()
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
