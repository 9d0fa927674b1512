"""bench.curator's issue-15 parts without data files: the archives workload's tenants,
recall per tenant-size class, and operating points chosen by the worst tenant."""

from __future__ import annotations

import numpy as np

from bench.curator import data, measure


def test_archives_tenants_are_the_categories_and_their_archives() -> None:
    cats = [["cs.CV"], ["cs.CV", "math.OC"], ["cs.LG"], ["hep-th"], ["math.OC"]] * 10
    tenants, of_cat = data.tenant_rule("archives", cats)
    assert sorted(tenants) == ["cs", "cs.CV", "cs.LG", "hep-th", "math", "math.OC"]
    assert of_cat["cs.CV"] == ["cs.CV", "cs"] and of_cat["math.OC"] == ["math.OC", "math"]
    assert of_cat["hep-th"] == ["hep-th"]  # an archive without sub-categories: one tenant
    # a paper in two cs categories counts once towards "cs": 5 papers are no tenant
    tenants, _ = data.tenant_rule("archives", [["cs.CV", "cs.LG"]] * 5)
    assert tenants == []


def test_size_classes_report_mean_over_pairs_and_min_over_tenants() -> None:
    members = {"a": np.arange(10), "b": np.arange(20), "big": np.arange(30_000)}
    tenants = ["a", "a", "b", "big", "big"]
    rec = np.array([1.0, 0.5, 1.0, 0.9, 0.7])
    classes = {c["class"]: c for c in measure.size_classes(rec, tenants, members)}
    assert set(classes) == {"< 256", ">= 20k"}
    small = classes["< 256"]
    assert small["tenants"] == 2 and small["pairs"] == 3
    assert small["mean"] == np.mean([1.0, 0.5, 1.0]) and small["min"] == 0.75
    assert classes[">= 20k"]["min"] == classes[">= 20k"]["mean"] == 0.8


def test_operating_point_by_worst_tenant() -> None:
    points = [
        {"avg_ms": 1.0, "recall": 0.96, "recall_min_tenant": 0.6},
        {"avg_ms": 2.0, "recall": 0.98, "recall_min_tenant": 0.91},
        {"avg_ms": 3.0, "recall": 0.99, "recall_min_tenant": 0.95},
    ]
    mean = measure.operating_point(points)
    worst = measure.operating_point(points, measure.WORST_TARGET, "recall_min_tenant")
    low = measure.operating_point(points[:1], measure.WORST_TARGET, "recall_min_tenant")
    assert mean is not None and worst is not None and low is not None
    assert mean["avg_ms"] == 1.0
    assert worst["avg_ms"] == 2.0 and worst["reached"]
    assert not low["reached"] and low["recall_min_tenant"] == 0.6
