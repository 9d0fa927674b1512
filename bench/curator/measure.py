"""Measurements: single-thread latency/recall sweeps, 2-thread QPS, RSS, write-op latency."""

from __future__ import annotations

import ctypes
import gc
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faiss
import numpy as np
from tqdm import tqdm

from bench.curator.adapters import Contender
from bench.curator.data import Mix, Workload

RECALL_TARGET = 0.95  # operating point by the mean over (query, tenant) pairs
WORST_TARGET = 0.90  # operating point by the worst tenant's mean
# Tenant-size classes (lower bounds, in ids the tenant sees) for per-class recall.
SIZE_CLASSES = (0, 256, 1000, 5000, 20000)
_PAGE = os.sysconf("SC_PAGE_SIZE")
_LIBC: ctypes.CDLL | None
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # pragma: no cover - non-glibc
    _LIBC = None


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def settle() -> None:
    """Collect garbage and hand free heap back to the OS, so RSS deltas mean something."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def recall_at_k(found: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per pair: |found ∩ exact top-k| / k (k = gt width; -1 entries never match)."""
    k = gt.shape[1]
    out = np.empty(len(gt))
    for i in range(len(gt)):
        truth = gt[i][gt[i] >= 0]
        out[i] = np.isin(found[i], truth).sum() / k
    return out


def latency_point(
    c: Contender,
    wl: Workload,
    mix: Mix,
    param: dict[str, float],
    k: int,
    min_calls: int,
    warmup: int,
) -> dict:
    """One sweep point: every pair once (recall) and >= min_calls timed calls (latency)."""
    P = len(mix.qidx)
    qs = [wl.Q[i : i + 1] for i in mix.qidx]
    ts = mix.tenants
    for j in range(warmup):
        c.search(ts[j % P], qs[j % P], k, param)
    n_calls = max(P, min_calls)
    lat = np.empty(n_calls)
    found = np.full((P, k), -1, dtype=np.int64)
    clock = time.perf_counter
    desc = f"  {c.label} {mix.name} {_fmt(param)}"
    gc_was = gc.isenabled()
    gc.disable()  # no collector pauses inside timed calls
    try:
        with tqdm(total=n_calls, desc=desc, unit="q", leave=False, mininterval=0.5) as bar:
            for j in range(n_calls):
                i = j % P
                t0 = clock()
                labels = c.search(ts[i], qs[i], k, param)
                lat[j] = clock() - t0
                if j < P:
                    n = min(k, len(labels))
                    found[i, :n] = labels[:n]
                if j % 256 == 255:
                    bar.update(256)
    finally:
        if gc_was:
            gc.enable()
    rec = recall_at_k(found, mix.gt)
    ms = lat * 1e3
    by_tenant = tenant_recall(rec, ts)
    worst = min(by_tenant, key=by_tenant.__getitem__) if by_tenant else None
    return {
        "param": param,
        "default": param == c.defaults,
        "recall": float(rec.mean()),
        "recall_min_tenant": by_tenant[worst] if worst else float("nan"),
        "worst_tenant": worst,
        "classes": size_classes(rec, ts, wl.members),
        "avg_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "calls": n_calls,
        "pairs": P,
    }


def tenant_recall(rec: np.ndarray, tenants: list[str]) -> dict[str, float]:
    """Each tenant's mean recall over its pairs."""
    by: dict[str, list[float]] = {}
    for r, t in zip(rec.tolist(), tenants, strict=True):
        by.setdefault(t, []).append(r)
    return {t: float(np.mean(v)) for t, v in by.items()}


def class_name(lo: int, hi: int | None) -> str:
    def n(x: int) -> str:
        return f"{x // 1000}k" if x >= 1000 and x % 1000 == 0 else str(x)

    return f"< {n(hi)}" if lo == 0 and hi else f">= {n(lo)}" if hi is None else f"{n(lo)}-{n(hi)}"


def size_classes(rec: np.ndarray, tenants: list[str], members: dict[str, np.ndarray]) -> list[dict]:
    """Recall per tenant-size class (SIZE_CLASSES): tenants, pairs, mean over the class's
    pairs, min over its tenants' means; classes without queries are left out."""
    by_tenant = tenant_recall(rec, tenants)
    size = np.asarray([len(members[t]) for t in tenants])
    out = []
    bounds = [*SIZE_CLASSES[1:], None]
    for lo, hi in zip(SIZE_CLASSES, bounds, strict=True):
        in_class = (size >= lo) & (size < hi if hi is not None else True)
        if not in_class.any():
            continue
        names = {t for t, m in zip(tenants, in_class.tolist(), strict=True) if m}
        out.append(
            {
                "class": class_name(lo, hi),
                "tenants": len(names),
                "pairs": int(in_class.sum()),
                "mean": float(rec[in_class].mean()),
                "min": min(by_tenant[t] for t in names),
            }
        )
    return out


def sweep(
    c: Contender,
    wl: Workload,
    mix: Mix,
    k: int,
    min_calls: int,
    warmup: int,
    stop_recall: float,
    max_avg_ms: float,
) -> list[dict]:
    """Sweep the contender's params in order; stop once recall >= stop_recall or too slow,
    but not before the contender's default point (reported on its own)."""
    points = []
    params = c.sweep()
    for j, param in enumerate(params):
        pt = latency_point(c, wl, mix, param, k, min_calls, warmup)
        points.append(pt)
        tqdm.write(
            f"    {c.label:8s} {mix.name:12s} {_fmt(param):22s} recall={pt['recall']:.4f} "
            f"worst={pt['recall_min_tenant']:.3f} ({pt['worst_tenant']}) "
            f"avg={pt['avg_ms']:.3f}ms p50={pt['p50_ms']:.3f} p99={pt['p99_ms']:.3f}",
        )
        done = pt["recall"] >= stop_recall or pt["avg_ms"] > max_avg_ms
        if done and c.defaults not in params[j + 1 :]:
            break
    return points


def operating_point(
    points: list[dict], target: float = RECALL_TARGET, stat: str = "recall"
) -> dict | None:
    """Cheapest (lowest avg latency) point whose `stat` ("recall": the mean over pairs, or
    "recall_min_tenant": the worst tenant's) reaches `target`, else the point best at it."""
    if not points:
        return None
    ok = [p for p in points if p[stat] >= target]
    if ok:
        return {**min(ok, key=lambda p: p["avg_ms"]), "reached": True}
    return {**max(points, key=lambda p: p[stat]), "reached": False}


def default_point(points: list[dict]) -> dict | None:
    """The point measured at the contender's default search params, if any."""
    return next((p for p in points if p["default"]), None)


def qps(
    c: Contender,
    wl: Workload,
    mix: Mix,
    param: dict[str, float],
    k: int,
    threads: int,
    min_calls: int,
) -> float:
    """Throughput with `threads` client threads, each issuing single-query calls."""
    P = len(mix.qidx)
    n = max(P, min_calls)
    qs = [wl.Q[i : i + 1] for i in mix.qidx]
    ts = mix.tenants
    chunks = [list(range(t, n, threads)) for t in range(threads)]

    def work(idx: list[int]) -> None:
        # OpenMP thread counts are per calling thread: pin each client thread to one, as the
        # main thread is, so a client never fans out (or spin-waits) on extra cores
        faiss.omp_set_num_threads(1)
        for j in idx:
            c.search(ts[j % P], qs[j % P], k, param)

    work(chunks[0][: min(200, len(chunks[0]))])  # warm-up
    with ThreadPoolExecutor(threads) as ex:
        t0 = time.perf_counter()
        list(ex.map(work, chunks))
        wall = time.perf_counter() - t0
    return n / wall


@dataclass
class WritePlan:
    inserts: list[tuple[int, np.ndarray, str]]  # (new label, (1, d) vector, tenant)
    grants: list[tuple[int, str]]  # (existing label, tenant that does not see it)
    deletes: list[int]  # existing labels (shared as in the data)


def plan_writes(wl: Workload, n_ops: int, seed: int = 0) -> WritePlan:
    rng = np.random.default_rng(seed + 4)
    n = len(wl.X)
    tenants = wl.tenants
    inserts = []
    for i in range(n_ops):
        q = wl.Q[i % len(wl.Q)]
        v = q + rng.normal(0, 0.01, size=q.shape).astype(np.float32)
        v /= np.linalg.norm(v)
        inserts.append((n + i, v[None, :].astype(np.float32), tenants[rng.integers(len(tenants))]))
    grants: list[tuple[int, str]] = []
    seen = set()
    while len(grants) < n_ops:
        label, t = int(rng.integers(n)), tenants[rng.integers(len(tenants))]
        if t not in wl.access[label] and (label, t) not in seen:
            seen.add((label, t))
            grants.append((label, t))
    deletes = [int(x) for x in rng.choice(n, min(n_ops, n), replace=False)]
    return WritePlan(inserts, grants, deletes)


def write_ops(c: Contender, plan: WritePlan) -> dict:
    """insert -> grant -> revoke (the granted pairs) -> delete; per-op latency stats in µs."""
    clock = time.perf_counter
    out: dict[str, dict] = {}

    def timed(op: str, calls: list) -> None:
        lat = np.empty(len(calls))
        for i, (fn, args) in enumerate(tqdm(calls, desc=f"  {c.label} {op}", leave=False)):
            t0 = clock()
            fn(*args)
            lat[i] = clock() - t0
        us = lat * 1e6
        out[op] = {
            "median_us": float(np.median(us)),
            "avg_us": float(us.mean()),
            "p99_us": float(np.percentile(us, 99)),
            "ops": len(calls),
        }

    timed("insert", [(c.insert, ins) for ins in plan.inserts])
    timed("grant", [(c.grant, g) for g in plan.grants])
    timed("revoke", [(c.revoke, g) for g in plan.grants[::-1]])
    timed("delete", [(c.delete, (d,)) for d in plan.deletes])
    return out


def _fmt(param: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in param.items()) or "-"
