"""bench/cache_quality.selfcal on a tiny slice: the drifting stream runs through the real
SemanticCache, and its accounting adds up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cache_quality.data import PAIRS
from bench.cache_quality.labelled_prompts import DATA_DIR
from bench.cache_quality.selfcal import main

pytestmark = pytest.mark.skipif(
    not (DATA_DIR / PAIRS).exists(), reason="../shared/data not present"
)


def test_selfcal_bench_runs_and_compares_with_fixed_thresholds(tmp_path: Path) -> None:
    assert (
        main(["--pairs", "150", "--grid", "0.90,0.99", "--no-progress", "--out", str(tmp_path)])
        == 0
    )
    r = json.loads((tmp_path / "cache_selfcal.json").read_text())
    assert r["events"] == 300 and set(r["fixed"]) == {"0.90", "0.99"}
    for c, s in r["summary"].items():
        m = r["calibrated"]["per_category"][c]
        assert s["lookups"] == m["lookups"] == sum(w["lookups"] for w in m["windows"])
        assert 0.0 <= s["false_hit_rate"] <= 1.0 and 0.0 <= s["recall"] <= 1.0
        best = s["best_fixed_threshold"]
        assert best is None or r["fixed"][f"{best:.2f}"][c]["false_hit_rate"] <= r["target"]
    assert "| category |" in (tmp_path / "cache_selfcal_summary.md").read_text()
