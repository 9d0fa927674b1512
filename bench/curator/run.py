"""bench/curator entry point.

    python -m bench.curator [--workloads categories,subscribers,archives]
        [--mixes uniform,proportional]
        [--indexes curator,hnsw,mf-hnsw,mf-ivf,flat] [--queries 2000] [--max-papers N]
        [--out bench/results]

Per workload: build each index in turn (one alive at a time, so RSS deltas are its own),
sweep its recall knob over both query mixes (single thread; recall per tenant-size class and
the worst tenant at every point), pick its operating points (cheapest mean recall >= 0.95,
cheapest worst tenant >= 0.90), measure 2-thread QPS at the first, then time
insert/grant/revoke/delete. Writes
bench/results/curator_{workload}.json (after every index), PNG plots and curator_summary.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/curator/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import faiss

from bench.curator import adapters, data, measure, report

ALL_INDEXES = "curator,hnsw,mf-hnsw,mf-ivf,flat"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.curator", description=__doc__.split("\n")[0])
    p.add_argument("--workloads", default=",".join(data.WORKLOADS))
    p.add_argument("--mixes", default="uniform,proportional")
    p.add_argument("--indexes", default=ALL_INDEXES)
    p.add_argument(
        "--queries",
        type=int,
        default=2000,
        help="(query, tenant) pairs per mix: proportional sample size; uniform uses "
        "ceil(N / tenants) queries per tenant",
    )
    p.add_argument("--holdout", type=int, default=1500, help="held-out query papers (+ top-up)")
    p.add_argument("--max-papers", type=int, default=None, help="seeded sample of the papers")
    p.add_argument("--min-calls", type=int, default=1000, help="timed calls per sweep point")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--write-ops", type=int, default=200)
    p.add_argument("--qps-threads", type=int, default=2)
    p.add_argument(
        "--stop-recall",
        type=float,
        default=0.999,
        help="stop a sweep after the first point at or above this recall",
    )
    p.add_argument(
        "--max-avg-ms",
        type=float,
        default=50.0,
        help="stop a sweep after a point slower than this on average",
    )
    p.add_argument(
        "--build-params",
        default="",
        help="build params of registered kinds, e.g. curator.train_size=10000,hnsw.M=16",
    )
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=data.DATA_DIR)
    p.add_argument("--out", type=Path, default=data.ROOT / "bench" / "results")
    return p.parse_args(argv)


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def build_params(spec: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for item in _csv(spec):
        key, _, value = item.partition("=")
        kind, _, name = key.partition(".")
        if not (kind and name and value):
            raise SystemExit(f"--build-params: expected KIND.NAME=VALUE, got {item!r}")
        out.setdefault(kind, {})[name] = float(value)
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, faiss {faiss.__version__}, Python {platform.python_version()}"


def run_index(
    name: str, factory, wl: data.Workload, args, mixes: list[str], plan: measure.WritePlan
) -> dict:
    c = factory()
    raw = wl.X.nbytes
    measure.settle()
    rss0 = measure.rss_bytes()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    build = c.build(wl)
    faiss.omp_set_num_threads(1)
    measure.settle()
    rss_growth = measure.rss_bytes() - rss0
    mem = c.memory(raw)
    print(
        f"  {c.label}: build {build.get('build_s', 0):.1f}s, memory beyond raw "
        f"{mem['beyond_raw'] / 2**20:.1f} MiB, RSS +{rss_growth / 2**20:.1f} MiB",
        flush=True,
    )
    out = {
        "label": c.label,
        "build": build,
        "memory": mem,
        "rss_growth": rss_growth,
        "mixes": {},
        "notes": c.notes,
    }
    for mix in mixes:
        m = wl.mixes[mix]
        points = measure.sweep(
            c, wl, m, args.k, args.min_calls, args.warmup, args.stop_recall, args.max_avg_ms
        )
        op = measure.operating_point(points)
        op_worst = measure.operating_point(points, measure.WORST_TARGET, "recall_min_tenant")
        assert op is not None and op_worst is not None  # a sweep always has points
        q = measure.qps(c, wl, m, op["param"], args.k, args.qps_threads, args.min_calls)
        print(
            f"    {c.label:8s} {mix:12s} QPS({args.qps_threads} threads) at "
            f"{op['param'] or '-'}: {q:.0f}",
            flush=True,
        )
        out["mixes"][mix] = {
            "points": points,
            "op": op,
            "op_worst": op_worst,
            "default": measure.default_point(points),
            "qps": q,
        }
    if args.write_ops > 0:
        out["writes"] = measure.write_ops(c, plan)
        print(
            "    writes (median µs): "
            + ", ".join(f"{o} {v['median_us']:.1f}" for o, v in out["writes"].items()),
            flush=True,
        )
    del c
    measure.settle()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    workloads, mixes, names = _csv(args.workloads), _csv(args.mixes), _csv(args.indexes)
    for m in mixes:
        if m not in ("uniform", "proportional"):
            raise SystemExit(f"unknown mix {m!r} (uniform, proportional)")
    factories, notes = adapters.available(names, build_params(args.build_params))
    for n in notes:
        print(f"note: {n}", flush=True)
    if not factories:
        raise SystemExit("no index to run")

    t0 = time.perf_counter()
    corpus = data.load_corpus(args.data, args.max_papers, args.seed)
    indexed, held = data.split_holdout(corpus, args.holdout, seed=args.seed)
    print(
        f"loaded {len(corpus.vectors)} papers in {time.perf_counter() - t0:.1f}s: "
        f"{len(indexed)} to index, {len(held)} held out",
        flush=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for wname in workloads:
        t0 = time.perf_counter()
        wl = data.build_workload(wname, corpus, indexed, held, seed=args.seed)
        data.make_mixes(wl, args.queries, args.k, seed=args.seed)
        wl.stats["raw_vector_bytes"] = wl.X.nbytes
        wl.stats["mixes"] = {
            m: {"pairs": len(wl.mixes[m].qidx), "tenants": len(set(wl.mixes[m].tenants))}
            for m in mixes
        }
        print(
            f"\n== workload {wname}: {wl.stats} (ground truth in {time.perf_counter() - t0:.1f}s)",
            flush=True,
        )
        plan = measure.plan_writes(wl, args.write_ops, seed=args.seed)
        result: dict[str, Any] = {
            "workload": wname,
            "meta": {
                "machine": machine(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                "mixes": mixes,
                "k": args.k,
                "qps_threads": args.qps_threads,
                "write_ops": args.write_ops,
                "recall_target": measure.RECALL_TARGET,
                "worst_target": measure.WORST_TARGET,
                "skipped": notes,
                "args": {k: str(v) for k, v in vars(args).items()},
            },
            "stats": wl.stats,
            "indexes": {},
        }
        for name, factory in factories.items():
            t1 = time.perf_counter()
            result["indexes"][name] = run_index(name, factory, wl, args, mixes, plan)
            result["indexes"][name]["wall_s"] = time.perf_counter() - t1
            report.save_json(result, args.out)  # partial results survive an interrupted run
        results.append(result)
        del wl
    paths = report.write_all(results, args.out)
    print("wrote " + ", ".join(str(p) for p in paths))
    print(f"total {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
