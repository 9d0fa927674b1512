"""Categories set policy, not partitions: what one search over every entry changes (issue 13).

Before, a lookup searched only its own category's entries, so a paraphrase the classifier put
in another category than its stored duplicate could never hit. Now one search covers every
entry and a hit needs the stricter of the lookup's and the entry's category thresholds. Both
decisions are evaluated on half B at the same thresholds (the shipped defaults, and the
global thresholds chosen on A): correct hits recovered, and what happens to false hits.
The global thresholds for the single search are chosen on A with the single search itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from bench.cache_quality import calibrate
from bench.cache_quality.simulate import (
    Lookups,
    SingleSearch,
    metrics,
    metrics_single,
    outcome,
    outcome_single,
)


def _compare(
    part: Lookups, single: SingleSearch, thresholds: Mapping[str, float]
) -> dict[str, object]:
    t = part.thresholds(thresholds)
    hit_p, ok_p = outcome(part, t)
    hit_s, ok_s = outcome_single(single, t)
    false_p, false_s = hit_p & ~ok_p, hit_s & ~ok_s
    return {
        "thresholds": dict(thresholds),
        "partitioned": metrics(part, t),
        "single_search": metrics_single(single, t),
        "correct_hits_recovered": int((ok_s & ~ok_p).sum()),
        "correct_hits_lost": int((ok_p & ~ok_s).sum()),
        "false_hits_added": int((false_s & ~false_p).sum()),
        "false_hits_removed": int((false_p & ~false_s).sum()),
    }


def section(
    part: Lookups,
    single: SingleSearch,
    half_a: np.ndarray,
    half_b: np.ndarray,
    shipped: Mapping[str, float],
    target_fhr: float,
    categories: Sequence[str],
) -> dict[str, object]:
    part_b, single_a, single_b = part.subset(half_b), single.subset(half_a), single.subset(half_b)
    sweep_a = calibrate.global_sweep(single_a)
    best, fhr = calibrate.best_f1(sweep_a), calibrate.lowest_within(sweep_a, target_fhr)
    nearest_elsewhere = (~single_b.exact) & (single_b.entry_category[:, 0] != single_b.category)
    return {
        "lookups_B": len(half_b),
        "nearest_entry_in_another_category_B": int(nearest_elsewhere.sum()),
        "nearest_correct_in_another_category_B": int(
            (nearest_elsewhere & single_b.correct[:, 0]).sum()
        ),
        "shipped_defaults": _compare(part_b, single_b, shipped),
        "global_fhr_target": {
            "chosen_on_A": fhr,
            **_compare(part_b, single_b, dict.fromkeys(categories, fhr["threshold"])),
        },
        "global_best_f1": {
            "chosen_on_A": best,
            **_compare(part_b, single_b, dict.fromkeys(categories, best["threshold"])),
        },
        "curve_B": [
            {
                k: r[k]
                for k in ("threshold", "hit_rate", "false_hit_rate", "recall", "precision", "f1")
            }
            for r in calibrate.global_sweep(single_b)
        ],
    }
