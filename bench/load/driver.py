"""The load loops: open loop (Poisson arrivals) and closed loop, in one or several processes.

A *point* is one (workload, mode, load) measured for `duration` seconds after `warmup`
seconds, optionally stopped early after `count` measured requests. Each client process runs
one asyncio loop over its own gRPC channel and returns an HDR histogram (microseconds) and
counts by status; the parent merges them.

Open loop: each process draws exponential inter-arrival gaps for its share of the rate and
sends at those *intended* times whatever the server is doing; latency is counted from the
intended send time, so a server (or a client) that falls behind shows it in the tail instead
of quietly sending less (no coordinated omission). Closed loop: `clients` workers each send
the next request when the previous one answers.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from bench.load.workloads import Call, Connection, Workload, error_code

# 1 µs .. 10 min at 3 significant digits: covers a Health.Check and a stalled request alike.
HIST_MIN_US, HIST_MAX_US, HIST_DIGITS = 1, 600_000_000, 3
# Open loop: requests still unanswered this long after the window closes count as errors.
DRAIN_S = 30.0


def new_histogram() -> HdrHistogram:
    return HdrHistogram(HIST_MIN_US, HIST_MAX_US, HIST_DIGITS)


@dataclass(frozen=True, slots=True)
class Load:
    """How hard to push: `rate` requests/s over all processes (open loop) or `clients`."""

    mode: str  # "open" | "closed"
    rate: float = 0.0
    clients: int = 0
    procs: int = 1

    def label(self) -> str:
        return f"{self.rate:g}/s" if self.mode == "open" else f"{self.clients} clients"


@dataclass(frozen=True, slots=True)
class Window:
    warmup_s: float
    duration_s: float
    count: int = 0  # stop after this many measured requests (over all processes); 0: no bound


@dataclass(slots=True)
class ProcResult:
    """One client process's share of a point (picklable: the histogram travels encoded)."""

    histogram: str
    by_kind: dict[str, str] = field(default_factory=dict)
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    started: float = 0.0  # wall clock (time.time) of the measured window
    ended: float = 0.0
    max_send_lag_ms: float = 0.0  # open loop: how late the client itself was at worst


@dataclass(slots=True)
class PointResult:
    histogram: HdrHistogram
    by_kind: dict[str, HdrHistogram]  # where the workload names its requests' kinds
    ok: int
    errors: dict[str, int]
    started: float
    ended: float
    max_send_lag_ms: float

    @property
    def elapsed_s(self) -> float:
        return max(self.ended - self.started, 1e-9)

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s


@dataclass(slots=True)
class _Tally:
    """One process's measured requests: all of them, and per kind where the workload's call
    names one (the mixed scenario: which part makes the tail)."""

    histogram: HdrHistogram = field(default_factory=new_histogram)
    by_kind: dict[str, HdrHistogram] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    ok: int = 0

    def record(self, latency_s: float, code: str, kind: str | None) -> None:
        latency_us = max(1, int(latency_s * 1e6))
        self.histogram.record_value(latency_us)
        if kind is not None:
            if kind not in self.by_kind:
                self.by_kind[kind] = new_histogram()
            self.by_kind[kind].record_value(latency_us)
        if code:
            self.errors[code] += 1
        else:
            self.ok += 1


async def _call(call: Call, seq: int) -> tuple[str, str | None]:
    """(error code or "", the kind the call named)."""
    try:
        return "", await call(seq)
    except Exception as exc:
        return error_code(exc), None


async def _closed(
    call: Call, clients: int, window: Window, count: int
) -> tuple[_Tally, float, float, float]:
    tally = _Tally()
    seq = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + window.warmup_s
    stop_at = measure_from + window.duration_s
    measured = 0

    async def worker() -> None:
        nonlocal seq, measured
        while True:
            now = loop.time()
            if now >= stop_at or (count and measured >= count):
                return
            seq += 1
            t0 = time.perf_counter()
            code, kind = await _call(call, seq)
            t1 = time.perf_counter()
            if now >= measure_from:
                measured += 1
                tally.record(t1 - t0, code, kind)

    await asyncio.gather(*(worker() for _ in range(clients)))
    to_wall = time.time() - loop.time()
    return tally, measure_from + to_wall, loop.time() + to_wall, 0.0


async def _open(
    call: Call, rate: float, window: Window, count: int, seed: int
) -> tuple[_Tally, float, float, float]:
    tally = _Tally()
    rng = random.Random(seed)
    max_lag = 0.0
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + window.warmup_s
    stop_at = measure_from + window.duration_s
    pending: set[asyncio.Task[None]] = set()
    sent_measured = 0

    async def one(seq: int, intended: float, measured: bool) -> None:
        code, kind = await _call(call, seq)
        if measured:
            # From the intended send time, not the actual one: lateness is latency.
            tally.record(loop.time() - intended, code, kind)

    intended = start
    seq = 0
    while True:
        intended += rng.expovariate(rate)
        if intended >= stop_at or (count and sent_measured >= count):
            break
        delay = intended - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            max_lag = max(max_lag, -delay)
        seq += 1
        measured = intended >= measure_from
        sent_measured += measured
        task = loop.create_task(one(seq, intended, measured))
        pending.add(task)
        task.add_done_callback(pending.discard)
    ended_loop = min(loop.time(), stop_at)
    if pending:
        _, late = await asyncio.wait(pending, timeout=DRAIN_S)
        for task in late:
            task.cancel()
        if late:
            tally.errors["CLIENT_DRAIN_TIMEOUT"] += len(late)
    to_wall = time.time() - loop.time()
    return tally, measure_from + to_wall, ended_loop + to_wall, max_lag * 1e3


async def _run_proc(
    workload: Workload, conn: Connection, load: Load, window: Window, proc: int, barrier: Any
) -> ProcResult:
    async with conn:
        call = await workload.connect(conn, proc)
        if barrier is not None:
            # Every process starts its window together (waiting blocks this process only).
            barrier.wait()
        share_count = -(-window.count // load.procs) if window.count else 0
        if load.mode == "open":
            out = await _open(call, load.rate / load.procs, window, share_count, seed=proc)
        else:
            clients = load.clients // load.procs + (proc < load.clients % load.procs)
            out = await _closed(call, max(clients, 1), window, share_count)
    tally, started, ended, lag = out
    return ProcResult(
        histogram=tally.histogram.encode().decode(),
        by_kind={k: h.encode().decode() for k, h in tally.by_kind.items()},
        ok=tally.ok,
        errors=dict(tally.errors),
        started=started,
        ended=ended,
        max_send_lag_ms=lag,
    )


def _proc_main(
    workload: Workload,
    conn: Connection,
    load: Load,
    window: Window,
    proc: int,
    barrier: Any,
    q: Any,
) -> None:
    try:
        q.put((proc, asyncio.run(_run_proc(workload, conn, load, window, proc, barrier))))
    except BaseException as exc:  # the parent reports it; a child must not die silently
        q.put((proc, f"{type(exc).__name__}: {exc}"))


def merge(results: list[ProcResult]) -> PointResult:
    hist = new_histogram()
    by_kind: dict[str, HdrHistogram] = {}
    errors: Counter[str] = Counter()
    for r in results:
        hist.add(HdrHistogram.decode(r.histogram.encode()))
        for kind, encoded in r.by_kind.items():
            by_kind.setdefault(kind, new_histogram()).add(HdrHistogram.decode(encoded.encode()))
        errors.update(r.errors)
    return PointResult(
        histogram=hist,
        by_kind=by_kind,
        ok=sum(r.ok for r in results),
        errors=dict(errors),
        started=min(r.started for r in results),
        ended=max(r.ended for r in results),
        max_send_lag_ms=max(r.max_send_lag_ms for r in results),
    )


def run_point(
    workload: Workload, conn: Connection, load: Load, window: Window, on_wait: Any = None
) -> PointResult:
    """Measure one point; `procs` > 1 runs that many client processes (spawned, one loop each).

    `on_wait(elapsed_s)` is called about every 0.2 s while the point runs (progress bars).
    """
    if load.procs == 1:
        # One process: run here (no spawn cost), the progress callback from a side task.
        async def here() -> ProcResult:
            task = asyncio.create_task(_run_proc(workload, conn, load, window, 0, None))
            t0 = time.monotonic()
            while not task.done():
                await asyncio.sleep(0.2)
                if on_wait is not None:
                    on_wait(time.monotonic() - t0)
            return task.result()

        return merge([asyncio.run(here())])
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(load.procs)
    queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_proc_main, args=(workload, conn, load, window, i, barrier, queue), daemon=True
        )
        for i in range(load.procs)
    ]
    for p in procs:
        p.start()
    results: dict[int, ProcResult | str] = {}
    t0 = time.monotonic()
    try:
        while len(results) < load.procs:
            try:
                proc, result = queue.get(timeout=0.2)
                results[proc] = result
            except Exception:  # queue.Empty: just a tick
                if on_wait is not None:
                    on_wait(time.monotonic() - t0)
                if any(not p.is_alive() and p.exitcode not in (0, None) for p in procs):
                    dead = [i for i, p in enumerate(procs) if p.exitcode not in (0, None)]
                    raise RuntimeError(f"client process(es) {dead} died") from None
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    failures = [r for r in results.values() if isinstance(r, str)]
    if failures:
        raise RuntimeError(f"client process failed: {failures[0]}")
    return merge([r for r in results.values() if not isinstance(r, str)])
