"""bench/load end to end against a real server it starts on free ports (tiny sizes), and the
open loop's accounting of a client that falls behind (no coordinated omission)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from bench.load.driver import Load, Window, new_histogram, run_point
from bench.load.run import main, over, parse_args
from bench.load.scenarios import DATA
from bench.load.stack import require_loopback
from bench.load.workloads import Call, Connection, Mixed, Workload

needs_data = pytest.mark.skipif(
    not (DATA / "qqp_pairs.jsonl.gz").exists(), reason="../shared/data not present"
)


@needs_data
def test_load_generator_runs_against_a_real_server(tmp_path: Path) -> None:
    rc = main(
        [
            "--scenario",
            "lookup-embedding,search-curator,upsert",
            "--clients",
            "2",
            "--procs",
            "2",
            "--warmup",
            "0.2",
            "--duration",
            "0.5",
            "--small",
            "--embedder",
            "hashing",
            "--results",
            str(tmp_path),
            "--name",
            "smoke",
            "--quiet",
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.md").exists() and (tmp_path / "smoke.png").exists()
    scenarios = {p["scenario"] for p in report["points"]}
    assert scenarios == {"health", "lookup-embedding", "search-curator", "upsert"}
    for point in report["points"]:
        assert point["ok"] > 0 and point["errors"] == {}, point
        assert point["server"]["cpu_ms_per_request"] > 0 and point["server"]["rss_mb"] > 0
    rows = {r["scenario"]: r for r in report["summary"]}
    assert rows["health"]["ratio_throughput"] == pytest.approx(1.0)
    assert rows["lookup-embedding"]["ratio_throughput"] is not None


@needs_data
def test_open_loop_and_generate_with_a_backend(tmp_path: Path) -> None:
    rc = main(
        [
            "--scenario",
            "generate",
            "--rate",
            "50",
            "--warmup",
            "0.2",
            "--duration",
            "0.5",
            "--small",
            "--embedder",
            "hashing",
            "--results",
            str(tmp_path),
            "--name",
            "open",
            "--quiet",
            "--no-plot",
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "open.json").read_text())
    assert {p["mode"] for p in report["points"]} == {"open"}
    assert all(p["errors"] == {} for p in report["points"]), report["points"]


class _BlockingCall(Workload):
    """Holds the client's event loop for `block_s` per request, like an overloaded client."""

    def __init__(self, block_s: float) -> None:
        self.block_s = block_s

    async def connect(self, conn: Connection, proc: int) -> Call:
        async def call(seq: int) -> None:
            time.sleep(self.block_s)  # noqa: ASYNC251 - blocking the loop is the point

        return call


class _NoConnection(Connection):
    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_open_loop_counts_latency_from_the_intended_send_time() -> None:
    # 10 ms of blocking per request caps the client at ~100/s while 1,000/s are offered:
    # requests queue behind each other, and the histogram must show that wait. A generator
    # timing from the actual send would report ~10 ms for every request instead.
    result = run_point(
        _BlockingCall(0.01),
        _NoConnection("127.0.0.1:1"),
        Load("open", rate=1000.0),
        Window(warmup_s=0.0, duration_s=0.3),
    )
    assert result.ok > 0
    assert result.histogram.get_max_value() > 100_000  # µs: far behind the schedule
    assert result.max_send_lag_ms > 100


def test_targets_must_be_loopback() -> None:
    require_loopback("127.0.0.1")
    require_loopback("localhost")
    with pytest.raises(SystemExit, match="not a loopback"):
        require_loopback("8.8.8.8")


def test_closed_loop_is_bounded_by_count() -> None:
    class Instant(Workload):
        async def connect(self, conn: Connection, proc: int) -> Call:
            async def call(seq: int) -> None:
                await asyncio.sleep(0)

            return call

    result = run_point(
        Instant(),
        _NoConnection("127.0.0.1:1"),
        Load("closed", clients=3),
        Window(0.0, 30.0, count=50),
    )
    assert 50 <= result.ok <= 52  # each worker stops at its next turn once 50 are in


class _Sleeps(Workload):
    def __init__(self, name: str, sleep_s: float) -> None:
        self.name, self.sleep_s = name, sleep_s

    async def connect(self, conn: Connection, proc: int) -> Call:
        async def call(seq: int) -> None:
            await asyncio.sleep(self.sleep_s)

        return call


@pytest.mark.parametrize("load", [Load("closed", clients=4), Load("open", rate=400.0)])
def test_a_mixed_workload_is_also_measured_per_kind(load: Load) -> None:
    mixed = Mixed(parts=[(_Sleeps("fast", 0.0), 0.5), (_Sleeps("slow", 0.02), 0.5)])
    result = run_point(mixed, _NoConnection("127.0.0.1:1"), load, Window(0.0, 0.5))
    assert set(result.by_kind) == {"fast", "slow"}
    counts = {k: h.get_total_count() for k, h in result.by_kind.items()}
    assert sum(counts.values()) == result.histogram.get_total_count() == result.ok
    assert min(counts.values()) > 0
    assert result.by_kind["slow"].get_value_at_percentile(50) >= 20_000  # µs
    assert result.by_kind["fast"].get_value_at_percentile(50) < 20_000


def test_requests_over_a_limit_are_counted_from_the_histogram() -> None:
    h = new_histogram()
    for us in (10, 500_000, 999_000, 1_001_000, 1_500_000, 2_000_000):
        h.record_value(us)
    assert over(h, 1_000_000) == 3
    assert over(h, 10_000_000) == 0


def test_server_pid_takes_the_workers_pids_and_names_a_bad_one() -> None:
    assert parse_args(["--server-pid", "12,13"]).server_pid == [12, 13]
    with pytest.raises(SystemExit):
        parse_args(["--server-pid", "12,x"])
