"""bench/cache_quality end to end on a tiny slice of QQP (real server and MiniLM included)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cache_quality.data import PAIRS
from bench.cache_quality.labelled_prompts import DATA_DIR
from bench.cache_quality.run import main

pytestmark = pytest.mark.skipif(
    not (DATA_DIR / PAIRS).exists(), reason="../shared/data not present"
)


def test_bench_cache_quality_runs_end_to_end(tmp_path: Path) -> None:
    rc = main(
        [
            "--max-pairs",
            "1000",
            "--latency-calls",
            "50",
            "--warmup",
            "10",
            "--embed-calls",
            "10",
            "--e2e-pairs",
            "12",
            "--classifier-max",
            "40",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    for name in (
        "cache_quality.json",
        "cache_quality_summary.md",
        "cache_quality_hit_vs_false_hit.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    r = json.loads((tmp_path / "cache_quality.json").read_text())
    assert r["pairs"]["A"] + r["pairs"]["B"] == 1000
    for key in (
        "global_best_f1",
        "global_fhr_target",
        "per_category_fhr_target",
        "shipped_defaults",
    ):
        m = r[key]["B"]
        assert 0.0 <= m["false_hit_rate"] <= m["hit_rate"] <= 1.0
        assert 0.0 <= m["precision"] <= 1.0 and 0.0 <= m["recall"] <= 1.0
        assert m["correct_hits"] + m["false_hits"] == m["hits"]
    one = r["single_search"]["shipped_defaults"]
    assert one["single_search"]["correct_hits"] - one["partitioned"]["correct_hits"] == (
        one["correct_hits_recovered"] - one["correct_hits_lost"]
    )
    assert one["single_search"]["lookups"] == r["pairs"]["B"]
    # exact repeats always hit, so even the strictest policy has some hits
    assert r["global_fhr_target"]["B"]["hits"] >= r["pairs"]["exact_hits_B"]
    assert r["miss_path"]["miss"]["steps"]["total"]["calls"] >= 40
    steps = r["miss_path"]["miss"]["steps"]
    assert steps["total_cpu"]["calls"] == steps["total"]["calls"]  # CPU time of the same lookups
    assert r["classifier"]["accuracy"]["all"] > 0.5
    # the real server with its own embedder agrees with the offline computation
    assert r["e2e"]["pairs"] == 12 and r["e2e"]["hit_agreement"] >= 0.9
    assert (
        len(r["targets"]) == 6
        and "| (iii) shipped defaults (load 0) |"
        in (tmp_path / "cache_quality_summary.md").read_text()
    )
