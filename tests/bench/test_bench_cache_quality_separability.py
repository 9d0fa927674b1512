"""The separability probe's split and sweep (pure, no data files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.cache_quality.data import PAIRS, Qqp
from bench.cache_quality.labelled_prompts import DATA_DIR
from bench.cache_quality.separability import component_halves, main, reachable


def _qqp(a: list[int], b: list[int], n_texts: int) -> Qqp:
    return Qqp(
        texts=[f"t{i}" for i in range(n_texts)],
        vectors=np.zeros((n_texts, 2), np.float32),
        a=np.array(a),
        b=np.array(b),
        duplicate=np.zeros(len(a), bool),
        cluster=np.arange(n_texts),
    )


def test_component_halves_never_split_a_text_across_halves() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 400, 300).tolist(), rng.integers(0, 400, 300).tolist()
    qqp = _qqp(a, b, 400)
    in_a = component_halves(qqp, seed=0)
    texts_a = set(qqp.a[in_a].tolist()) | set(qqp.b[in_a].tolist())
    texts_b = set(qqp.a[~in_a].tolist()) | set(qqp.b[~in_a].tolist())
    assert texts_a and texts_b
    assert not texts_a & texts_b
    assert (component_halves(qqp, seed=0) == in_a).all()


def test_reachable_takes_the_most_hits_within_the_false_hit_budget() -> None:
    # 10 lookups, 8 with a duplicate stored; one exact hit; scores rank 3 correct, then a wrong one.
    score = np.array([0.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    correct = np.array([True, True, True, True, False, True, False, False, True, False])
    exact = np.zeros(10, bool)
    exact[0] = True
    has_dup = np.array([True] * 8 + [False] * 2)
    r = reachable(score, correct, exact, has_dup, target_fhr=0.1)  # one false hit allowed
    assert r["recall_at_target"] == 5 / 8  # exact + 0.9, 0.8, 0.7 + 0.5 (0.6 is the false one)
    assert r["false_hit_rate"] == 0.1
    assert reachable(score, correct, exact, has_dup, target_fhr=0.0)["recall_at_target"] == 4 / 8


@pytest.mark.skipif(not (DATA_DIR / PAIRS).exists(), reason="../shared/data not present")
def test_separability_probe_runs_on_a_slice(tmp_path: Path) -> None:
    assert main(["--max-pairs", "2000", "--candidates", "3", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "separability.json").read_text())
    assert r["pairs"]["A"] + r["pairs"]["B"] == 2000 and r["pairs"]["A"] > 0 and r["pairs"]["B"] > 0
    for name in ("cosine", "lexical_gbm", "pair_logreg"):
        assert 0.0 <= r[name]["false_hit_rate"] <= r["target_fhr"]
        assert 0.0 < r[name]["recall_at_target"] <= 1.0 and 0.0 < r[name]["best_f1"] <= 1.0
