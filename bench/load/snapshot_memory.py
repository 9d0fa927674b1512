"""RSS before and after index snapshots, with and without the server's malloc settings.

    python -m bench.load.snapshot_memory                          # the server's settings
    python -m bench.load.snapshot_memory --mmap-threshold 0       # glibc's rising threshold

In one process, as `curacache serve` would hold it: a SQLite store and a 20,000-record,
384-d Curator collection over 50 tenants (random vectors, 200-byte payloads). It waits for
the background retrain to finish, then takes four snapshots (one upsert before each, so each
is written) and prints the RSS after each. The settings are applied first, as the CLI does.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from curacache.server.config import ServerConfig
from curacache.server.memory import fix_mmap_threshold, limit_malloc_arenas

BATCH, DIM, TENANTS = 500, 384, 50


def rss_mb() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 // 2**20


def main(argv: list[str] | None = None) -> None:
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arenas", type=int, default=defaults.malloc_arenas)
    parser.add_argument("--mmap-threshold", type=int, default=defaults.malloc_mmap_threshold)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--snapshots", type=int, default=4)
    parser.add_argument("--settle-s", type=float, default=10.0, help="wait for the retrain")
    args = parser.parse_args(argv)
    if args.arenas:
        limit_malloc_arenas(args.arenas)
    if args.mmap_threshold:
        fix_mmap_threshold(args.mmap_threshold)

    # Imported after the settings, as in the CLI: they must precede the big allocations.
    from curacache.server.app import STORES
    from curacache.server.vectordb import VectorDB
    from storage.types import StoredRecord

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = STORES["sqlite"](replace(defaults.storage, data_dir=Path(tmp)))
        try:
            db = VectorDB(store)
            db.load()
            db.create("arxiv", dim=DIM, metric="cosine", index_kind="curator", params={})
            collection = db.get("arxiv")
            for start in range(0, args.records, BATCH):
                vectors = rng.standard_normal((BATCH, DIM)).astype(np.float32)
                records = [
                    StoredRecord(
                        id=f"r{start + i}",
                        vector=vectors[i].tobytes(),
                        owner=f"t{i % TENANTS}",
                        tenants=(f"t{i % TENANTS}",),
                        payload=b"x" * 200,
                    )
                    for i in range(BATCH)
                ]
                collection.upsert("admin", records, admin=True)
            time.sleep(args.settle_s)
            gc.collect()
            print(f"loaded, retrain settled: RSS {rss_mb()} MB", flush=True)
            for i in range(args.snapshots):
                collection.upsert("admin", records[:10], admin=True)
                started = time.perf_counter()
                db.save_snapshots()
                gc.collect()
                print(
                    f"snapshot {i + 1} ({time.perf_counter() - started:.2f} s): RSS {rss_mb()} MB",
                    flush=True,
                )
        finally:
            store.close()


if __name__ == "__main__":
    main()
