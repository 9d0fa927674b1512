"""Redis Cluster master failover under write load: how long writes are unavailable, and how
many acknowledged writes are lost (counted, never assumed).

    python -m bench.replication.failover [--wait-replicas 1] [--seconds-after 10]

Starts a private 3-master + 3-replica cluster (node timeout 2 s), writes single records to
one collection in a loop through RedisStore (the server's store, with `WAIT` for
`--wait-replicas` replicas), SIGKILLs the master owning the collection's slot after 2 s, and
restarts the killed node 3 s later (it rejoins as a replica, which `WAIT 1` needs before
writes can be acknowledged again). Reports the unavailable window (first failed write to the
first acknowledged one after it) and, at the end, reads back every acknowledged id.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from storage.errors import StoreUnavailable  # noqa: E402
from storage.redis import RedisStore  # noqa: E402
from storage.types import CollectionSpec, StoredRecord  # noqa: E402
from tests.redis_cluster import RedisCluster  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--wait-replicas", type=int, default=1)
    p.add_argument("--seconds-after", type=float, default=10.0)
    opts = p.parse_args(argv)
    vector = np.zeros(8, dtype="<f4").tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = RedisCluster(Path(tmp))
        store = RedisStore(
            cluster.url, wait_replicas=opts.wait_replicas, wait_timeout_ms=500, socket_timeout=2.0
        )
        try:
            store.create_collection(CollectionSpec("docs", 8, "l2", "flat"))
            owner = store._client().get_node_from_key("cc:{docs}:spec")
            master = next(n for n in cluster.nodes if n.port == int(owner.port))
            acked: list[str] = []
            failed = 0
            first_fail = resumed = None
            start = time.monotonic()
            killed = restarted = None
            i = 0
            while True:
                now = time.monotonic()
                if killed is None and now - start > 2:
                    master.kill()
                    killed = now
                if killed is not None and restarted is None and now - killed > 3:
                    master.start()
                    restarted = now
                if resumed is not None and now - resumed > opts.seconds_after:
                    break
                if now - start > 120:
                    break
                try:
                    store.put_records("docs", [StoredRecord(f"r{i}", vector, "t", ("t",))])
                    acked.append(f"r{i}")
                    if first_fail is not None and resumed is None:
                        resumed = time.monotonic()
                except StoreUnavailable:
                    failed += 1
                    if first_fail is None:
                        first_fail = time.monotonic()
                    time.sleep(0.01)
                i += 1
            found = store.get_records("docs", acked)
            result = {
                "wait_replicas": opts.wait_replicas,
                "acknowledged_writes": len(acked),
                "acknowledged_lost": len(acked) - len(found),
                "failed_writes": failed,
                "unavailable_s": round(resumed - first_fail, 2) if resumed and first_fail else None,
                "kill_to_resume_s": round(resumed - killed, 2) if resumed and killed else None,
                "restart_after_kill_s": round(restarted - killed, 2)
                if restarted and killed
                else None,
            }
            print(json.dumps(result), flush=True)
        finally:
            store.close()
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
