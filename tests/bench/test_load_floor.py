"""bench.load.floor: the canned server answers like the real one's API; the in-process
measurement runs over the server's own wiring."""

from __future__ import annotations

import asyncio
import re

import pytest

from bench.load.floor import inproc, start_canned
from bench.load.scenarios import DATA
from curacache.client import AsyncClient


def test_canned_server_answers_lookups_and_health() -> None:
    async def run() -> tuple[str, str]:
        server, port = await start_canned(0)
        try:
            async with AsyncClient(f"127.0.0.1:{port}") as client:
                result = await client.lookup("q", "t", model="m", embedding=[1.0, 0.0])
                return await client.health(), result.reason
        finally:
            await server.stop(None)

    assert asyncio.run(run()) == ("SERVING", "below_threshold")


@pytest.mark.skipif(not (DATA / "qqp_pairs.jsonl.gz").exists(), reason="no ../shared/data")
def test_inproc_measures_the_servicer(capsys: pytest.CaptureFixture[str]) -> None:
    cpu_ms = asyncio.run(inproc(50))
    assert cpu_ms > 0
    assert "50 lookups, hit rate" in capsys.readouterr().out


def test_snapshot_memory_reports_rss_after_each_snapshot(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench.load.snapshot_memory import main

    # Settings 0: leave this test process's malloc as it is.
    main(
        [
            "--records",
            "1000",
            "--snapshots",
            "2",
            "--settle-s",
            "0",
            "--arenas",
            "0",
            "--mmap-threshold",
            "0",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"loaded, retrain settled: RSS \d+ MB", lines[0])
    for n, line in enumerate(lines[1:], start=1):
        assert re.fullmatch(rf"snapshot {n} \([\d.]+ s\): RSS \d+ MB", line)
