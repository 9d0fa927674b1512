"""bench/curator end to end on a tiny slice of the arXiv data: flat + the bench-only baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.curator import data
from bench.curator.run import main

pytestmark = pytest.mark.skipif(
    not (data.DATA_DIR / data.PAPERS).exists(), reason="../shared/data not present"
)


def test_bench_curator_runs_end_to_end(tmp_path: Path) -> None:
    rc = main(
        [
            "--max-papers",
            "2000",
            "--holdout",
            "100",
            "--queries",
            "120",
            "--min-calls",
            "120",
            "--warmup",
            "10",
            "--write-ops",
            "20",
            "--indexes",
            "flat,mf-hnsw,mf-ivf",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    for name in (
        "curator_categories.json",
        "curator_subscribers.json",
        "curator_summary.md",
        "curator_memory.png",
        "curator_categories_recall_latency.png",
        "curator_subscribers_recall_latency.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    for workload in ("categories", "subscribers"):
        result = json.loads((tmp_path / f"curator_{workload}.json").read_text())
        assert result["stats"]["tenants"] > 0 and result["stats"]["share_degree"] >= 1
        assert set(result["indexes"]) == {"flat", "mf-hnsw", "mf-ivf"}
        for name, r in result["indexes"].items():
            assert set(r["writes"]) == {"insert", "grant", "revoke", "delete"}
            assert r["memory"]["beyond_raw"] > 0
            for mix in ("uniform", "proportional"):
                op = r["mixes"][mix]["op"]
                assert op["calls"] >= 120 and op["p99_ms"] >= op["p50_ms"] > 0
                assert r["mixes"][mix]["qps"] > 0
                # flat is exact: the ground truth is its own answer
                assert op["recall"] == pytest.approx(1.0) if name == "flat" else op["recall"] > 0.5
        # targets naming curator/PT-HNSW are n/a when those kinds are not run
        assert all(t["status"] == "n/a" for t in result["targets"])
    assert "| flat |" in (tmp_path / "curator_summary.md").read_text()
