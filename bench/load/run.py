"""Load generator for a Curacache server on this machine (loopback only).

    python -m bench.load --scenario lookup-embedding --rate 1000 --duration 60
    python -m bench.load --scenario lookup-embedding,search-curator --clients 1,16 --repeats 3
    python -m bench.load --target 127.0.0.1:50051 --server-pid PID --scenario search-curator ...

Without --target it starts its own stack (fake-llm, `curacache serve` with --metrics-port,
and the gateway when a scenario needs it) in a temporary directory. Every load point of every
scenario is measured next to Health.Check at the same load in the same run (gRPC's own
ceiling here); results are also given as ratios to it, with the server's CPU seconds per
request and RSS when the server's pid is known (local stack or --server-pid).

Open loop (--rate R[,R2...]): Poisson arrivals at R requests/s, latency from each request's
intended send time. Closed loop (--clients N[,N2...]). --procs spreads the clients over
several processes when one cannot drive the load (the report shows the client's send lag).

Writes bench/results/load-<name>.json, .md and .png (name: --name, default the scenarios).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.load.driver import Load, PointResult, Window, run_point
from bench.load.report import RESULTS, summarise, write_report
from bench.load.scenarios import (
    NEEDS_BACKEND,
    NEEDS_EMBEDDER,
    NEEDS_GATEWAY,
    SCENARIOS,
    Data,
    Sizes,
)
from bench.load.stack import LocalStack, ProcSampler, require_loopback
from bench.load.workloads import Connection, HealthCheck, Workload

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def _pids(text: str) -> list[int]:
    """--server-pid: one pid, or several comma-separated (the workers of `serve --workers N`)."""
    try:
        return [int(pid) for pid in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected pids like 123 or 123,124, got {text!r}"
        ) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenario", default="lookup-embedding", help=f"comma list of {sorted(SCENARIOS)}"
    )
    p.add_argument("--target", help="HOST:PORT of a running server (loopback); default: start one")
    p.add_argument(
        "--server-pid",
        type=_pids,
        help="pid(s) of the --target server, comma-separated for `serve --workers N`'s "
        "workers (CPU, RSS, fds: summed)",
    )
    p.add_argument("--gateway", default="", help="http://HOST:PORT of a running gateway")
    p.add_argument("--api-key", help="sent as authorization: Bearer KEY")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--rate", help="open loop: offered requests/s, comma list")
    load.add_argument(
        "--clients", help="closed loop: concurrent clients, comma list (default 1,16)"
    )
    p.add_argument("--procs", type=int, default=1, help="client processes (default 1)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (default 2)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    p.add_argument("--count", type=int, default=0, help="stop a point after N measured requests")
    p.add_argument("--repeats", type=int, default=1, help="runs of every point; reports medians")
    p.add_argument("--no-baseline", action="store_true", help="skip Health.Check (no ratios)")
    p.add_argument("--embedder", default="minilm", help="local stack's embedder (minilm|hashing)")
    p.add_argument(
        "--server-metrics",
        action="store_true",
        help="local stack: serve with --metrics-port (measures with the RPC interceptor on)",
    )
    p.add_argument("--small", action="store_true", help="tiny data sizes (smoke tests)")
    p.add_argument("--hit-ratio", type=float, default=0.8, help="generate: share of hits")
    p.add_argument("--upsert-batch", type=int, default=1, help="upsert: records per request")
    p.add_argument("--name", help="results file stem (default: the scenario names)")
    p.add_argument("--results", type=Path, default=RESULTS, help="results directory")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    unknown = [s for s in args.scenario.split(",") if s not in SCENARIOS]
    if unknown:
        p.error(f"--scenario: unknown {unknown}; choose from {sorted(SCENARIOS)}")
    if args.procs < 1 or args.repeats < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--procs and --repeats must be >= 1, --duration > 0, --warmup >= 0")
    if not (0.0 <= args.hit_ratio <= 1.0):
        p.error("--hit-ratio: must be in [0, 1]")
    return args


def loads_from(args: argparse.Namespace) -> list[Load]:
    if args.rate:
        rates = [float(r) for r in args.rate.split(",")]
        if any(r <= 0 for r in rates):
            raise SystemExit("--rate: every rate must be positive")
        return [Load("open", rate=r, procs=args.procs) for r in rates]
    clients = [int(c) for c in (args.clients or "1,16").split(",")]
    if any(c < 1 for c in clients):
        raise SystemExit("--clients: every count must be >= 1")
    return [Load("closed", clients=c, procs=min(args.procs, c)) for c in clients]


def point_record(
    scenario: str, load: Load, repeat: int, result: PointResult, sampler: ProcSampler | None
) -> dict[str, Any]:
    h = result.histogram
    rec: dict[str, Any] = {
        "scenario": scenario,
        "mode": load.mode,
        "offered_rate": load.rate,
        "clients": load.clients,
        "procs": load.procs,
        "repeat": repeat,
        "ok": result.ok,
        "errors": result.errors,
        "elapsed_s": result.elapsed_s,
        "throughput": result.throughput,
        "latency_ms": {
            **{f"p{p:g}": h.get_value_at_percentile(p) / 1e3 for p in PERCENTILES},
            "max": h.get_max_value() / 1e3,
            "mean": h.get_mean_value() / 1e3,
        },
        "max_send_lag_ms": result.max_send_lag_ms,
        "over_1s": over(h, 1_000_000),
    }
    if result.by_kind:
        rec["by_kind"] = {
            kind: {
                "count": k.get_total_count(),
                "latency_ms": {
                    **{f"p{p:g}": k.get_value_at_percentile(p) / 1e3 for p in PERCENTILES},
                    "max": k.get_max_value() / 1e3,
                },
            }
            for kind, k in sorted(result.by_kind.items())
        }
    if sampler is not None:
        w = sampler.window(result.started, result.ended)
        done = result.ok + sum(result.errors.values())
        rec["server"] = {
            "cpu_ms_per_request": w["cpu_s"] * 1e3 / max(done, 1),
            "cpu_cores_busy": w["cpu_s"] / w["wall_s"],
            "rss_mb": w["rss_bytes"] / 2**20,
            "rss_start_mb": w["rss_start_bytes"] / 2**20,
            "rss_max_mb": w["rss_max_bytes"] / 2**20,
            # Over the measured window (after warm-up): what a soak run checks.
            "rss_growth_pct": 100.0 * (w["rss_max_bytes"] / max(w["rss_start_bytes"], 1) - 1.0),
            "fds_start": w["fds_start"],
            "fds": w["fds"],
        }
    return rec


def over(histogram: Any, limit_us: int) -> int:
    """How many recorded latencies exceed `limit_us` (to the histogram's 3-digit resolution)."""
    return sum(
        item.count_at_value_iterated_to
        for item in histogram.get_recorded_iterator()
        if histogram.get_lowest_equivalent_value(item.value_iterated_to) > limit_us
    )


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def measure(
    args: argparse.Namespace,
    conn: Connection,
    workloads: dict[str, Workload],
    sampler: ProcSampler | None,
) -> list[dict[str, Any]]:
    window = Window(args.warmup, args.duration, args.count)
    runs: list[tuple[str, Workload]] = [] if args.no_baseline else [("health", HealthCheck())]
    runs += list(workloads.items())
    records = []
    for repeat in range(args.repeats):
        for load in loads_from(args):
            for name, workload in runs:
                total = args.warmup + args.duration
                label = f"{name} {load.label()} run {repeat + 1}/{args.repeats}"
                with tqdm(
                    total=round(total, 1), desc=label, unit="s", disable=args.quiet, leave=False
                ) as bar:

                    def tick(elapsed: float, bar: Any = bar, total: float = total) -> None:
                        bar.n = round(min(elapsed, total), 1)
                        bar.refresh()

                    result = run_point(workload, conn, load, window, on_wait=tick)
                rec = point_record(name, load, repeat, result, sampler)
                rec["loadavg"] = load_average()
                records.append(rec)
                lat = rec["latency_ms"]
                errs = sum(rec["errors"].values())
                print(
                    f"  {label}: {rec['throughput']:,.0f}/s p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} "
                    f"p99.9 {lat['p99.9']:.2f} ms, errors {errs}"
                    + (
                        f", server {rec['server']['cpu_ms_per_request']:.3f} CPU ms/req"
                        if "server" in rec
                        else ""
                    ),
                    file=sys.stderr,
                    flush=True,
                )
    return records


async def setup(
    args: argparse.Namespace, conn: Connection, names: list[str], tag: str
) -> dict[str, Workload]:
    sizes = Sizes(hit_ratio=args.hit_ratio, upsert_batch=args.upsert_batch)
    if args.small:
        sizes = Sizes(
            cache_entries=40,
            cache_tenants=2,
            lookups=40,
            search_records=300,
            search_tenants=5,
            search_queries=40,
            gateway_prompts=5,
            generate_prompts=5,
            upsert_batch=args.upsert_batch,
            hit_ratio=args.hit_ratio,
        )
    data = Data()
    out = {}
    async with conn:
        for name in names:
            t0 = time.perf_counter()
            out[name] = await SCENARIOS[name](conn, data, sizes, f"{tag}-{name}")
            print(f"  setup {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.scenario.split(",")
    stack = None
    tmp = tempfile.TemporaryDirectory(prefix="curacache-load-")
    sampler = None
    try:
        if args.target:
            require_loopback(args.target.rsplit(":", 1)[0].strip("[]"))
            conn = Connection(args.target, gateway=args.gateway, api_key=args.api_key)
            server_pids = args.server_pid or []
        else:
            print("  starting a local stack ...", file=sys.stderr, flush=True)
            stack = LocalStack(
                Path(tmp.name),
                embedder=args.embedder if any(n in NEEDS_EMBEDDER for n in names) else "hashing",
                backend=any(n in NEEDS_BACKEND for n in names),
                gateway=any(n in NEEDS_GATEWAY for n in names),
                metrics=args.server_metrics,
            )
            conn = Connection(stack.target, gateway=stack.gateway, api_key=args.api_key)
            server_pids = [stack.server_pid]
        if server_pids:
            sampler = ProcSampler(server_pids)
        tag = f"load{int(time.time())}"
        # Setup may meet a cold server (first requests after an install compile kernels).
        workloads = asyncio.run(setup(args, replace(conn, timeout_s=600.0), names, tag))
        started = time.time()
        records = measure(args, conn, workloads, sampler)
        report = {
            "benchmark": "load",
            "command": " ".join(
                ["python -m bench.load", *(argv if argv is not None else sys.argv[1:])]
            ),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpus": __import__("os").cpu_count(),
            },
            "local_stack": stack is not None,
            "window": {"warmup_s": args.warmup, "duration_s": args.duration, "count": args.count},
            "repeats": args.repeats,
            "points": records,
            "summary": summarise(records),
        }
        if sampler is not None:
            report["server_samples"] = [
                [round(s.t - started, 2), round(s.cpu_s, 2), s.rss_bytes, s.fds]
                for s in sampler.samples[:: max(1, len(sampler.samples) // 2000)]
            ]
        stem = args.name or "load-" + "-".join(names)
        paths = write_report(report, args.results, stem, with_plot=not args.no_plot)
        print(paths["md"].read_text())
        print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    finally:
        if sampler is not None:
            sampler.close()
        if stack is not None:
            stack.stop()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
