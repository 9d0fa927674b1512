"""Summary (medians over repeats, ratios to Health.Check at the same load and repeat),
Markdown table, PNG plots."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def _key(rec: dict[str, Any]) -> tuple[str, float]:
    return rec["mode"], rec["offered_rate"] if rec["mode"] == "open" else rec["clients"]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, load): medians over repeats. `ratio_throughput` and
    `ratio_p50` compare with Health.Check at the same load in the same repeat."""
    health = {(*_key(p), p["repeat"]): p for p in points if p["scenario"] == "health"}
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        groups[(p["scenario"], *_key(p))].append(p)
    rows = []
    for (scenario, mode, load), recs in groups.items():
        row: dict[str, Any] = {
            "scenario": scenario,
            "mode": mode,
            "load": load,
            "repeats": len(recs),
            "throughput": _median([r["throughput"] for r in recs]),
            "errors": sum(sum(r["errors"].values()) for r in recs),
            "error_codes": sorted({c for r in recs for c in r["errors"]}),
            "over_1s": sum(r["over_1s"] for r in recs),
            "max_send_lag_ms": max(r["max_send_lag_ms"] for r in recs),
            "loadavg_1m": _median([r["loadavg"][0] for r in recs if r.get("loadavg")]),
        }
        for q in recs[0]["latency_ms"]:
            row[f"{q}_ms"] = _median([r["latency_ms"][q] for r in recs])
        ratios_t, ratios_p50 = [], []
        for r in recs:
            h = health.get((mode, load, r["repeat"]))
            if h is not None and h["throughput"] > 0:
                ratios_t.append(r["throughput"] / h["throughput"])
                ratios_p50.append(r["latency_ms"]["p50"] / max(h["latency_ms"]["p50"], 1e-9))
        row["ratio_throughput"] = _median(ratios_t)
        row["ratio_p50"] = _median(ratios_p50)
        if all("by_kind" in r for r in recs):
            row["by_kind"] = {
                kind: {
                    "count": sum(r["by_kind"].get(kind, {}).get("count", 0) for r in recs),
                    **{
                        f"{q}_ms": _median(
                            [
                                r["by_kind"][kind]["latency_ms"][q]
                                for r in recs
                                if kind in r["by_kind"]
                            ]
                        )
                        for q in recs[0]["by_kind"][kind]["latency_ms"]
                    },
                }
                for kind in sorted({k for r in recs for k in r["by_kind"]})
            }
        row["per_repeat_throughput"] = [round(r["throughput"], 1) for r in recs]
        row["per_repeat_p50_ms"] = [round(r["latency_ms"]["p50"], 3) for r in recs]
        if all("server" in r for r in recs):
            for k in (
                "cpu_ms_per_request",
                "cpu_cores_busy",
                "rss_mb",
                "rss_max_mb",
                "rss_growth_pct",
                "fds",
            ):
                row[f"server_{k}"] = _median([r["server"][k] for r in recs])
        rows.append(row)
    return rows


def _load_label(row: dict[str, Any]) -> str:
    """A summary row's load as the tables show it: "1000/s open" or "16 clients"."""
    return f"{row['load']:g}/s open" if row["mode"] == "open" else f"{row['load']:g} clients"


def _f(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Load test: {report['command']}",
        "",
        f"{report['started']}, {report['machine']['platform']}, {report['machine']['cpus']} CPUs; "
        f"warm-up {report['window']['warmup_s']:g} s, {report['window']['duration_s']:g} s per point, "
        f"medians of {report['repeats']} run(s). Ratios: against Health.Check at the same load "
        "in the same run. Latency in ms (open loop: from the intended send time).",
        "",
        "| scenario | load | req/s | ×health req/s | p50 | ×health p50 | p90 | p99 | p99.9 | max "
        "| errors | server CPU ms/req | server RSS MB | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["summary"]:
        load = _load_label(r)
        errors = str(r["errors"]) + (f" ({', '.join(r['error_codes'])})" if r["errors"] else "")
        lines.append(
            f"| {r['scenario']} | {load} | {r['throughput']:,.0f} | {_f(r['ratio_throughput'], '.2f')} "
            f"| {r['p50_ms']:.2f} | {_f(r['ratio_p50'], '.2f')} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['p99.9_ms']:.2f} | {r['max_ms']:.1f} | {errors} "
            f"| {_f(r.get('server_cpu_ms_per_request'), '.3f')} | {_f(r.get('server_rss_mb'), '.0f')} "
            f"| {_f(r['loadavg_1m'], '.1f')} |"
        )
    kind_rows = [r for r in report["summary"] if "by_kind" in r]
    if kind_rows:
        lines += [
            "",
            "Per request kind (mixed scenarios; medians over repeats, requests summed):",
            "",
            "| scenario | load | kind | requests | p50 | p99 | p99.9 | max |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in kind_rows:
            load = _load_label(r)
            for kind, k in r["by_kind"].items():
                lines.append(
                    f"| {r['scenario']} | {load} | {kind} | {k['count']:,} | {k['p50_ms']:.2f} "
                    f"| {k['p99_ms']:.2f} | {k['p99.9_ms']:.2f} | {k['max_ms']:.1f} |"
                )
    server_rows = [r for r in report["summary"] if "server_rss_growth_pct" in r]
    if server_rows:
        lines += [
            "",
            "Server over each measured window (medians): RSS growth from the window's start to "
            "its peak, open file descriptors at its end, CPU cores busy.",
            "",
            "| scenario | load | RSS growth % | RSS peak MB | fds at end | cores busy |",
            "|---|---|---|---|---|---|",
        ]
        for r in server_rows:
            load = _load_label(r)
            lines.append(
                f"| {r['scenario']} | {load} | {r['server_rss_growth_pct']:.1f} "
                f"| {r['server_rss_max_mb']:.0f} | {r['server_fds']:.0f} "
                f"| {r['server_cpu_cores_busy']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency percentiles vs offered load (open loop); throughput vs clients (closed loop)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["summary"]
    open_rows = [r for r in rows if r["mode"] == "open"]
    closed_rows = [r for r in rows if r["mode"] == "closed"]
    panels = [p for p in (open_rows, closed_rows) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in panel:
            by_scenario[r["scenario"]].append(r)
        for scenario, rs in by_scenario.items():
            rs.sort(key=lambda r: r["load"])
            x = [r["load"] for r in rs]
            if panel is open_rows:
                for q, style in (("p50", "-"), ("p99", "--"), ("p99.9", ":")):
                    ax.plot(
                        x, [r[f"{q}_ms"] for r in rs], style, marker="o", label=f"{scenario} {q}"
                    )
                ax.set_xlabel("offered load (requests/s, Poisson)")
                ax.set_ylabel("latency (ms, from intended send time)")
                ax.set_yscale("log")
            else:
                ax.plot(x, [r["throughput"] for r in rs], marker="o", label=scenario)
                ax.set_xlabel("concurrent clients (closed loop)")
                ax.set_ylabel("throughput (requests/s)")
                ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(report["command"], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    report: dict[str, Any], directory: Path, stem: str, *, with_plot: bool = True
) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / f"{stem}.json", "md": directory / f"{stem}.md"}
    paths["json"].write_text(json.dumps(report, indent=1))
    paths["md"].write_text(markdown(report))
    if with_plot:
        paths["png"] = directory / f"{stem}.png"
        plot(report, paths["png"])
    return paths
