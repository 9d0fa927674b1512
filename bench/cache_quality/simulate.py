"""The cache's lookup decision computed offline, exactly as `cache.service.SemanticCache` makes it.

Store: an entry per distinct normalised prompt (a repeat overwrites the entry's prompt and vector
but keeps the category it was first filed under: the service's route table), filed under the
classifier's category of its own embedding (confidence below the floor, or a label without a
policy -> `default`).
Lookup: exact normalised-text match -> always a hit on that entry; otherwise the lookup's own
classifier category is searched for its nearest entry (exact cosine), a hit iff cosine >= that
category's threshold. The nearest entry does not depend on the thresholds, so one pass gives
every per-lookup fact and any threshold setting is then evaluated in microseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from cache.classifier import DEFAULT_CATEGORY, LinearClassifier
from cache.fingerprint import normalise_prompt

CHUNK = 2048


@dataclass(frozen=True, slots=True)
class Lookups:
    """Threshold-independent facts, one row per lookup."""

    categories: tuple[str, ...]
    category: np.ndarray  # int index into `categories` (for exact hits: the entry's)
    exact: np.ndarray  # bool: exact normalised-text hit
    sim: (
        np.ndarray
    )  # float64 cosine of the nearest entry in the category (-inf if none; 1 for exact)
    entry: np.ndarray  # text index of that entry's prompt (-1 if none)
    nearest_correct: np.ndarray  # bool: that entry is in the lookup's cluster
    has_dup: np.ndarray  # bool: the lookup's cluster contains some stored prompt

    def __len__(self) -> int:
        return int(self.category.shape[0])

    def subset(self, rows: np.ndarray) -> Lookups:
        return Lookups(
            self.categories,
            self.category[rows],
            self.exact[rows],
            self.sim[rows],
            self.entry[rows],
            self.nearest_correct[rows],
            self.has_dup[rows],
        )

    def thresholds(self, by_category: Mapping[str, float]) -> np.ndarray:
        """Per-category thresholds as an array indexed like `categories`."""
        return np.array([by_category[c] for c in self.categories], dtype=np.float64)

    def outcome(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return outcome(self, thresholds)


def classify(clf: LinearClassifier, vectors: np.ndarray, known: Sequence[str]) -> list[str]:
    out = []
    for start in range(0, len(vectors), 8192):
        for label, _ in clf.classify_batch(vectors[start : start + 8192]):
            out.append(label if label in known else DEFAULT_CATEGORY)
    return out


def simulate(
    *,
    texts: Sequence[str],
    vectors: np.ndarray,
    cluster: np.ndarray,
    stored: Sequence[int],
    lookups: Sequence[int],
    clf: LinearClassifier,
    categories: Sequence[str],
    progress: bool = True,
) -> Lookups:
    """`stored`/`lookups`: text indices in store/lookup order; `vectors` unit float32 rows."""
    categories = tuple(categories)
    entry_text, entry_cat, lookup_text, exact_entry, category, has_dup = _store_and_classify(
        texts, vectors, cluster, stored, lookups, clf, categories
    )
    n = len(lookup_text)
    exact = exact_entry >= 0
    sim = np.full(n, -np.inf)
    sim[exact] = 1.0
    nearest = np.full(n, -1, dtype=np.int64)
    nearest[exact] = exact_entry[exact]
    work = [
        (c, np.flatnonzero((category == c) & ~exact), np.flatnonzero(entry_cat == c))
        for c in range(len(categories))
    ]
    total = sum(-(-len(rows) // CHUNK) for _, rows, ents in work if len(ents))
    with tqdm(total=total, desc="nearest entries", unit="chunk", disable=not progress) as bar:
        for _, rows, ents in work:
            if not len(ents) or not len(rows):
                continue
            matrix = vectors[entry_text[ents]]
            for start in range(0, len(rows), CHUNK):
                part = rows[start : start + CHUNK]
                scores = vectors[lookup_text[part]] @ matrix.T
                best = scores.argmax(axis=1)
                sim[part] = scores[np.arange(len(part)), best]
                nearest[part] = ents[best]
                bar.update()
    entry = np.where(nearest >= 0, entry_text[np.maximum(nearest, 0)], -1)
    found = entry >= 0
    nearest_correct = found & (cluster[np.maximum(entry, 0)] == cluster[lookup_text])
    return Lookups(categories, category, exact, sim, entry, nearest_correct, has_dup)


def _store_and_classify(
    texts: Sequence[str],
    vectors: np.ndarray,
    cluster: np.ndarray,
    stored: Sequence[int],
    lookups: Sequence[int],
    clf: LinearClassifier,
    categories: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The store (an entry per normalised prompt: the last text stored under it, filed under
    the first one's category) and the threshold-independent facts of each lookup: (entry_text,
    entry_category, lookups, exact entry index or -1, lookup category, cluster has an entry)."""
    cat_index = {c: i for i, c in enumerate(categories)}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for t in stored:
        key = normalise_prompt(texts[t])
        first.setdefault(key, t)
        last[key] = t
    keys = list(first)
    entry_text = np.array([last[k] for k in keys], dtype=np.int64)
    entry_cat = np.array(
        [cat_index[c] for c in classify(clf, vectors[[first[k] for k in keys]], categories)]
    )
    by_key = {k: i for i, k in enumerate(keys)}
    stored_clusters = set(cluster[entry_text].tolist())
    look = np.asarray(lookups, dtype=np.int64)
    exact_entry = np.array(
        [by_key.get(normalise_prompt(texts[t]), -1) for t in look.tolist()], dtype=np.int64
    )
    exact = exact_entry >= 0
    category = np.array(
        [cat_index[c] for c in classify(clf, vectors[look], categories)], dtype=np.int64
    )
    category[exact] = entry_cat[exact_entry[exact]]
    has_dup = np.array([c in stored_clusters for c in cluster[look].tolist()], dtype=bool)
    return entry_text, entry_cat, look, exact_entry, category, has_dup


def outcome(look: Lookups, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hit, correct_hit) per lookup under per-category `thresholds` (array like categories)."""
    hit = look.exact | (look.sim >= thresholds[look.category])
    return hit, hit & look.nearest_correct


def metrics(look: Decision, thresholds: np.ndarray) -> dict[str, float]:
    """DESIGN §9 names: hit rate, precision, recall, false-hit rate, F1 (+ the counts), under
    either decision (partitioned `Lookups` or `SingleSearch`)."""
    hit, correct = look.outcome(thresholds)
    return summarise(hit, correct, look.has_dup)


def summarise(hit: np.ndarray, correct: np.ndarray, has_dup: np.ndarray) -> dict[str, float]:
    n = len(hit)
    hits, good, dup = int(hit.sum()), int(correct.sum()), int(has_dup.sum())
    precision = good / hits if hits else 1.0
    recall = good / dup if dup else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "lookups": n,
        "with_duplicate": dup,
        "hits": hits,
        "correct_hits": good,
        "false_hits": hits - good,
        "hit_rate": hits / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "false_hit_rate": (hits - good) / n if n else 0.0,
        "f1": f1,
    }


@dataclass(frozen=True, slots=True)
class SingleSearch:
    """The lookup decision since categories set policy, not partitions (DESIGN §5 steps 5-6):
    one search over every entry, top `k`; the first candidate (most similar first) whose
    similarity reaches the stricter of the lookup's and its own category's threshold is the
    hit. Threshold-independent facts, one row per lookup (exact hits as in `Lookups`)."""

    categories: tuple[str, ...]
    category: np.ndarray  # (n,) the lookup's category index
    exact: np.ndarray  # (n,) bool
    exact_correct: np.ndarray  # (n,) bool: the exact entry is in the lookup's cluster
    sim: np.ndarray  # (n, k) float64, best first (-inf where fewer than k entries)
    entry: np.ndarray  # (n, k) text index of each candidate's prompt
    exact_entry: np.ndarray  # (n,) text index of the exact entry's prompt (-1 if none)
    entry_category: np.ndarray  # (n, k) category index of each candidate
    correct: np.ndarray  # (n, k) bool: candidate in the lookup's cluster
    has_dup: np.ndarray  # (n,) bool

    def subset(self, rows: np.ndarray) -> SingleSearch:
        return SingleSearch(
            self.categories,
            self.category[rows],
            self.exact[rows],
            self.exact_correct[rows],
            self.sim[rows],
            self.entry[rows],
            self.exact_entry[rows],
            self.entry_category[rows],
            self.correct[rows],
            self.has_dup[rows],
        )

    def __len__(self) -> int:
        return int(self.category.shape[0])

    def thresholds(self, by_category: Mapping[str, float]) -> np.ndarray:
        return np.array([by_category[c] for c in self.categories], dtype=np.float64)

    def outcome(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return outcome_single(self, thresholds)


def simulate_single(
    *,
    texts: Sequence[str],
    vectors: np.ndarray,
    cluster: np.ndarray,
    stored: Sequence[int],
    lookups: Sequence[int],
    clf: LinearClassifier,
    categories: Sequence[str],
    k: int = 5,
    progress: bool = True,
) -> SingleSearch:
    """Same store and lookups as `simulate`, but one search over all entries (top `k`)."""
    categories = tuple(categories)
    entry_text, entry_cat, lookup_text, exact_entry, category, has_dup = _store_and_classify(
        texts, vectors, cluster, stored, lookups, clf, categories
    )
    n = len(lookup_text)
    exact = exact_entry >= 0
    k = min(k, len(entry_text))
    sim = np.full((n, k), -np.inf)
    nearest = np.zeros((n, k), dtype=np.int64)
    matrix = vectors[entry_text]
    with tqdm(
        total=-(-n // CHUNK),
        desc="nearest entries (one search)",
        unit="chunk",
        disable=not progress,
    ) as bar:
        for start in range(0, n, CHUNK):
            scores = vectors[lookup_text[start : start + CHUNK]] @ matrix.T
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            nearest[start : start + CHUNK] = np.take_along_axis(top, order, axis=1)
            sim[start : start + CHUNK] = np.take_along_axis(top_scores, order, axis=1)
            bar.update()
    correct = cluster[entry_text[nearest]] == cluster[lookup_text][:, None]
    exact_correct = exact & (
        cluster[entry_text[np.maximum(exact_entry, 0)]] == cluster[lookup_text]
    )
    exact_text = np.where(exact, entry_text[np.maximum(exact_entry, 0)], -1)
    return SingleSearch(
        categories,
        category,
        exact,
        exact_correct,
        sim,
        entry_text[nearest],
        exact_text,
        entry_cat[nearest],
        correct,
        has_dup,
    )


def served_single(
    look: SingleSearch, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(hit, correct_hit, served entry's text index or -1, its similarity) per lookup: the first
    candidate reaching max(lookup's, its own category's threshold) is served (exact hits always)."""
    need = np.maximum(thresholds[look.category][:, None], thresholds[look.entry_category])
    ok = look.sim >= need
    any_ok = ok.any(axis=1)
    rows, first = np.arange(len(ok)), ok.argmax(axis=1)
    hit = look.exact | any_ok
    correct = np.where(look.exact, look.exact_correct, any_ok & look.correct[rows, first])
    entry = np.where(look.exact, look.exact_entry, np.where(any_ok, look.entry[rows, first], -1))
    sim = np.where(look.exact, 1.0, np.where(any_ok, look.sim[rows, first], -np.inf))
    return hit, correct, entry, sim


def outcome_single(look: SingleSearch, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hit, correct_hit) per lookup under the single search (see `served_single`)."""
    hit, correct, _, _ = served_single(look, thresholds)
    return hit, correct


def metrics_single(look: SingleSearch, thresholds: np.ndarray) -> dict[str, float]:
    return metrics(look, thresholds)


Decision = Lookups | SingleSearch
"""Threshold-independent facts of either lookup decision: both give `outcome(thresholds)`."""
