"""Report: JSON per workload, recall-vs-latency and memory PNGs, markdown summary + targets."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.curator.measure import RECALL_TARGET, WORST_TARGET

SHARED = ("mf-hnsw", "mf-ivf")
MB = 1 << 20


def save_json(result: dict, out: Path) -> Path:
    path = out / f"curator_{result['workload']}.json"
    path.write_text(json.dumps(result, indent=1, default=float))
    return path


def plot_recall(result: dict, out: Path) -> Path:
    mixes = result["meta"]["mixes"]
    fig, axes = plt.subplots(2, len(mixes), figsize=(6.5 * len(mixes), 9), squeeze=False)
    for col, mix in enumerate(mixes):
        for row, (stat, title) in enumerate((("avg_ms", "avg"), ("p99_ms", "p99"))):
            ax = axes[row][col]
            for _name, r in result["indexes"].items():
                pts = r["mixes"].get(mix, {}).get("points", [])
                if pts:
                    (line,) = ax.plot(
                        [p[stat] for p in pts],
                        [p["recall"] for p in pts],
                        "o-",
                        label=r["label"],
                        markersize=4,
                    )
                    ax.plot(
                        [p[stat] for p in pts],
                        [p["recall_min_tenant"] for p in pts],
                        "x:",
                        color=line.get_color(),
                        label=f"{r['label']} worst tenant",
                        markersize=4,
                    )
            ax.axhline(RECALL_TARGET, color="grey", ls="--", lw=0.8)
            ax.axhline(WORST_TARGET, color="grey", ls=":", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel(f"{title} latency per query, single thread (ms)")
            ax.set_ylabel("recall@10")
            ax.set_title(f"{result['workload']} / {mix}: recall@10 vs {title} latency")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"curator_{result['workload']}_recall_latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_memory(results: list[dict], out: Path) -> Path:
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.5), squeeze=False)
    for ax, result in zip(axes[0], results):
        names = list(result["indexes"])
        labels = [result["indexes"][n]["label"] for n in names]
        mem = [max(result["indexes"][n]["memory"]["beyond_raw"], 1) / MB for n in names]
        rss = [max(result["indexes"][n]["rss_growth"], 1) / MB for n in names]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], mem, 0.4, label="index memory beyond raw vectors")
        ax.bar([x + 0.2 for x in xs], rss, 0.4, label="process RSS growth at build")
        ax.axhline(
            result["stats"]["raw_vector_bytes"] / MB,
            color="grey",
            ls="--",
            lw=0.8,
            label="raw vectors",
        )
        ax.set_xticks(list(xs), labels)
        ax.set_yscale("log")
        ax.set_ylabel("MiB")
        ax.set_title(f"{result['workload']}: memory")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "curator_memory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _op(result: dict, name: str, mix: str, which: str = "op") -> dict | None:
    """An index's point on a mix: "op" (mean >= 0.95), "op_worst" (worst tenant >= 0.90)
    or "default" (its default search params)."""
    r = result["indexes"].get(name)
    return None if r is None else r["mixes"].get(mix, {}).get(which)


def _ratio_row(
    what: str,
    num: float | None,
    den: float | None,
    limit: float,
    at_most: bool = True,
    why: str = "",
) -> dict:
    if num is None or den is None or den <= 0:
        return {
            "target": what,
            "ratio": None,
            "limit": limit,
            "at_most": at_most,
            "status": "n/a",
            "why": why,
        }
    ratio = num / den
    ok = ratio <= limit if at_most else ratio >= limit
    return {
        "target": what,
        "ratio": ratio,
        "limit": limit,
        "at_most": at_most,
        "status": "PASS" if ok else "FAIL",
        "why": why,
    }


def targets(result: dict) -> list[dict]:
    """The issue's targets as ratios from this run (latencies at the recall>=0.95 point)."""
    rows: list[dict] = []
    mixes = result["meta"]["mixes"]

    def reached(name: str, mix: str) -> dict | None:
        op = _op(result, name, mix)
        return op if op is not None and op["reached"] else None

    def why(*names_mix: tuple[str, str]) -> str:
        missing = []
        for name, mix in names_mix:
            op = _op(result, name, mix)
            if op is None:
                missing.append(f"{name} not run")
            elif not op["reached"]:
                missing.append(f"{name} max recall {op['recall']:.3f} < {RECALL_TARGET}")
        return "; ".join(missing)

    def why_worst(*names_mix: tuple[str, str]) -> str:
        missing = []
        for name, mix in names_mix:
            op = _op(result, name, mix, "op_worst")
            if op is None:
                missing.append(f"{name} not run")
            elif not op["reached"]:
                missing.append(f"{name} best worst tenant {op['recall_min_tenant']:.3f}")
        return "; ".join(missing)

    cur = {m: reached("curator", m) for m in mixes}
    pt = {m: reached("hnsw", m) for m in mixes}
    if "uniform" in mixes:
        shared = [(n, op) for n in SHARED if (op := reached(n, "uniform")) is not None]
        best_name, best = min(shared, key=lambda x: x[1]["avg_ms"]) if shared else (None, None)
        w = (
            why(("curator", "uniform"), *((n, "uniform") for n in SHARED))
            if best is None
            else why(("curator", "uniform"))
        )
        c = cur["uniform"]
        rows.append(
            {
                "mix": "uniform",
                **_ratio_row(
                    f"curator avg / best shared ({best_name or '-'}) avg",
                    c["avg_ms"] if c else None,
                    best["avg_ms"] if best else None,
                    0.5,
                    why=w,
                ),
            }
        )
        rows.append(
            {
                "mix": "uniform",
                **_ratio_row(
                    f"curator p99 / best shared ({best_name or '-'}) p99",
                    c["p99_ms"] if c else None,
                    best["p99_ms"] if best else None,
                    0.2,
                    why=w,
                ),
            }
        )
        rows.append(
            {
                "mix": "uniform",
                **_ratio_row(
                    "curator avg / PT-HNSW avg",
                    c["avg_ms"] if c else None,
                    pt["uniform"]["avg_ms"] if pt["uniform"] else None,
                    3.0,
                    why=why(("curator", "uniform"), ("hnsw", "uniform")),
                ),
            }
        )
    if "proportional" in mixes:
        c, mf = cur["proportional"], reached("mf-hnsw", "proportional")
        rows.append(
            {
                "mix": "proportional",
                **_ratio_row(
                    "curator avg / MF-HNSW avg",
                    c["avg_ms"] if c else None,
                    mf["avg_ms"] if mf else None,
                    1.0,
                    why=why(("curator", "proportional"), ("mf-hnsw", "proportional")),
                ),
            }
        )
        p = pt["proportional"]
        rows.append(
            {
                "mix": "proportional",
                **_ratio_row(
                    "curator avg / PT-HNSW avg",
                    c["avg_ms"] if c else None,
                    p["avg_ms"] if p else None,
                    3.0,
                    why=why(("curator", "proportional"), ("hnsw", "proportional")),
                ),
            }
        )

    for mix in mixes:  # issue 15: every tenant gets its recall
        c, p = _op(result, "curator", mix, "op_worst"), _op(result, "hnsw", mix, "op_worst")
        rows.append(
            {
                "mix": mix,
                **_ratio_row(
                    f"curator avg / PT-HNSW avg, each at worst tenant >= {WORST_TARGET}",
                    c["avg_ms"] if c and c["reached"] else None,
                    p["avg_ms"] if p and p["reached"] else None,
                    1.0,
                    why=why_worst(("curator", mix), ("hnsw", mix)),
                ),
            }
        )
        d = _op(result, "curator", mix, "default")
        rows.append(
            {
                "mix": mix,
                **_ratio_row(
                    "curator at default params: worst tenant's recall",
                    d["recall_min_tenant"] if d else None,
                    1.0,
                    WORST_TARGET,
                    at_most=False,
                    why="" if d else "curator's default point not measured",
                ),
            }
        )
        rows.append(
            {
                "mix": mix,
                **_ratio_row(
                    "curator at default params: lowest size-class mean recall",
                    min(cl["mean"] for cl in d["classes"]) if d else None,
                    1.0,
                    RECALL_TARGET,
                    at_most=False,
                    why="" if d else "curator's default point not measured",
                ),
            }
        )

    def mem(name: str) -> float | None:
        r = result["indexes"].get(name)
        return None if r is None else float(r["memory"]["beyond_raw"])

    def missing(*names: str) -> str:
        return "; ".join(f"{n} not run" for n in names if n not in result["indexes"])

    for n in SHARED:
        rows.append(
            {
                "mix": "-",
                **_ratio_row(
                    f"curator memory / {n} memory",
                    mem("curator"),
                    mem(n),
                    1.2,
                    why=missing("curator", n),
                ),
            }
        )
    rows.append(
        {
            "mix": "-",
            **_ratio_row(
                "curator memory / PT-HNSW memory",
                mem("curator"),
                mem("hnsw"),
                0.2,
                why=missing("curator", "hnsw"),
            ),
        }
    )

    def grant(name: str) -> float | None:
        r = result["indexes"].get(name)
        return (
            None
            if r is None or "grant" not in r.get("writes", {})
            else r["writes"]["grant"]["median_us"]
        )

    rows.append(
        {
            "mix": "-",
            **_ratio_row(
                "PT-HNSW grant / curator grant (speed-up)",
                grant("hnsw"),
                grant("curator"),
                20.0,
                at_most=False,
                why=missing("curator", "hnsw"),
            ),
        }
    )
    return rows


POINTS = (
    ("default", "default params"),
    ("op", f"mean >= {RECALL_TARGET}"),
    ("op_worst", f"worst >= {WORST_TARGET}"),
)


def _param(op: dict) -> str:
    return ",".join(f"{k}={v:g}" for k, v in op["param"].items()) or "-"


def _classes(result: dict, mix: str) -> list[dict]:
    """The size classes (with tenants per class) of this workload's mix, from any point."""
    for r in result["indexes"].values():
        for p in r["mixes"].get(mix, {}).get("points", []):
            if "classes" in p:
                return [{"class": c["class"], "tenants": c["tenants"]} for c in p["classes"]]
    return []


def _f(x: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


METHOD = """\
Method: recall@10 = |returned ∩ exact top-10 among what the tenant can see| / 10, averaged
over (query, tenant) pairs; "worst tenant" = lowest per-tenant mean recall. Latency = one
single-query `search` call, single thread (FAISS OpenMP pinned to 1), >= 1,000 timed calls
per point after warm-up; each index is shown at three points: its default search params, its
cheapest swept parameter reaching mean recall >= 0.95, and its cheapest one where the worst
tenant reaches 0.90 ("not reached": then its best point by that measure). Size classes group
tenants by how many ids they see; per class: mean over its pairs / min over its tenants. QPS:
2 client threads issuing single-query calls at the mean >= 0.95 point. Memory beyond raw = every byte the index
reports except its one shared vector store (`memory_bytes()` minus the "vectors" component,
whose spare capacity is allocation policy; PT-HNSW and flat keep their per-tenant vector
copies in it); MF-* = serialised FAISS index minus n·d·4, plus the per-tenant IDSelectors
(bitmap, or hash-set batch estimate when smaller). RSS growth = process RSS after build
minus before (after gc + malloc_trim), so it includes the index's own copy of the vectors.
Write ops are timed one call each: insert (new vector, one tenant), grant (existing vector,
one more tenant), revoke (those grants), delete (existing, shared vectors). Targets are
ratios from this one run."""


def markdown(results: list[dict]) -> str:
    lines = ["# bench/curator summary", "", METHOD, ""]
    for result in results:
        s, meta = result["stats"], result["meta"]
        lines += [
            f"## workload `{result['workload']}`",
            "",
            f"{s['indexed']} indexed papers, {s['held_out']} held-out queries, "
            f"{s['tenants']} tenants (size min/p50/max {s['tenant_size']['min']}/"
            f"{s['tenant_size']['p50']}/{s['tenant_size']['max']}), share degree "
            f"{s['share_degree']:.2f}. Machine: {meta['machine']}; run {meta['started']}. "
            f"Latency: single thread, single-query calls; QPS: {meta['qps_threads']} threads.",
            "",
        ]
        for mix in meta["mixes"]:
            m = s["mixes"][mix]
            lines += [
                f"### {mix} mix ({m['pairs']} (query, tenant) pairs, {m['tenants']} tenants)",
                "",
                "| index | point | param | recall@10 | worst tenant | avg ms | p50 ms | p99 ms | "
                "QPS (2 thr) | mem beyond raw MiB | RSS growth MiB | build s |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in result["indexes"].values():
                for which, point in POINTS:
                    op = r["mixes"].get(mix, {}).get(which)
                    if op is None:
                        continue
                    qps = r["mixes"][mix].get("qps") if which == "op" else None
                    lines.append(
                        f"| {r['label']} | {point}{'' if op.get('reached', True) else ' (not reached)'}"
                        f" | {_param(op)} | {op['recall']:.4f} | "
                        f"{op['recall_min_tenant']:.3f} ({op.get('worst_tenant')}) | "
                        f"{op['avg_ms']:.3f} | {op['p50_ms']:.3f} | {op['p99_ms']:.3f} | "
                        f"{_f(qps, '{:.0f}')} | {r['memory']['beyond_raw'] / MB:.1f} | "
                        f"{r['rss_growth'] / MB:.1f} | {r['build'].get('build_s', 0):.1f} |"
                    )
            lines += [
                "",
                f"Recall per tenant-size class (ids the tenant sees), {mix} mix: mean over the "
                "class's pairs / min over its tenants.",
                "",
                "| index | point | param | "
                + " | ".join(
                    f"{c['class']} ({c['tenants']} tenants)" for c in _classes(result, mix)
                )
                + " |",
                "|---|---|---|" + "---|" * len(_classes(result, mix)),
            ]
            for r in result["indexes"].values():
                for which, point in POINTS:
                    op = r["mixes"].get(mix, {}).get(which)
                    if op is None or "classes" not in op:
                        continue
                    by_class = {
                        c["class"]: f"{c['mean']:.3f} / {c['min']:.3f}" for c in op["classes"]
                    }
                    lines.append(
                        f"| {r['label']} | {point} | {_param(op)} | "
                        + " | ".join(by_class.get(c["class"], "-") for c in _classes(result, mix))
                        + " |"
                    )
            lines.append("")
        lines += [
            f"### write ops (median µs over {meta['write_ops']} ops each; p99 in brackets)",
            "",
            "| index | insert | grant | revoke | delete |",
            "|---|---|---|---|---|",
        ]
        for r in result["indexes"].values():
            w = r.get("writes", {})
            cells = [
                f"{w[o]['median_us']:.1f} ({w[o]['p99_us']:.0f})" if o in w else "-"
                for o in ("insert", "grant", "revoke", "delete")
            ]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "### targets",
            "",
            "| mix | target | ratio | limit | status | note |",
            "|---|---|---|---|---|---|",
        ]
        for t in result["targets"]:
            op = "≤" if t["at_most"] else "≥"
            lines.append(
                f"| {t['mix']} | {t['target']} | {_f(t['ratio'])} | {op} {t['limit']:g} "
                f"| {t['status']} | {t['why']} |"
            )
        notes = [f"- {r['label']}: {n}" for r in result["indexes"].values() for n in r["notes"]]
        lines += ["", *(["notes:", "", *notes, ""] if notes else [])]
    return "\n".join(lines) + "\n"


def write_all(results: list[dict], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for result in results:
        result["targets"] = targets(result)
        paths += [save_json(result, out), plot_recall(result, out)]
    if results:
        paths.append(plot_memory(results, out))
    md = markdown(results)
    md_path = out / "curator_summary.md"
    md_path.write_text(md)
    print(md)
    return [*paths, md_path]
