"""bench/placement end to end at a tiny size: files written, figures within their bounds."""

from __future__ import annotations

import json
from pathlib import Path

from bench.placement.run import main, run, zipf_sizes


def test_bench_placement_runs_end_to_end(tmp_path: Path) -> None:
    argv = ["--collections", "300", "--groups", "4", "--seeds", "2", "--exponents", "1.0"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "placement.json").read_text())
    assert "| s | scheme |" in (tmp_path / "placement.md").read_text()
    schemes = {row["scheme"] for row in result["rows"]}
    assert "rendezvous" in schemes and len(schemes) >= 4
    for row in result["rows"]:
        for r in row["runs"]:
            # Whole collections: no placement beats the floor set by the largest one.
            assert r["balance"] >= row["balance_floor"] - 1e-9
            assert 0.0 <= r["moved_join"] <= 1.0
            assert 0.0 < r["moved_leave_mean"] <= r["moved_leave_worst"] <= 1.0


def test_rendezvous_moves_only_the_leaving_groups_share() -> None:
    result = run(collections=200, groups=4, seeds=1, exponents=[1.2], min_bytes=1)
    row = next(r for r in result["rows"] if r["scheme"] == "rendezvous")
    # Over all four possible leavers, rendezvous moves exactly what each held: 1/4 on average.
    assert abs(row["runs"][0]["moved_leave_mean"] - 0.25) < 1e-9


def test_zipf_sizes_follow_the_rank_size_law() -> None:
    sizes = list(zipf_sizes(n=100, exponent=1.0, seed=3, min_bytes=10).values())
    assert sizes[0] == 1000 and sizes[-1] == 10 and sizes[1] == 500
