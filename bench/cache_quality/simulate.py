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
    sim: np.ndarray  # float64 cosine of the nearest entry in the category (-inf if none; 1 for exact)
    entry: np.ndarray  # text index of that entry's prompt (-1 if none)
    nearest_correct: np.ndarray  # bool: that entry is in the lookup's cluster
    has_dup: np.ndarray  # bool: the lookup's cluster contains some stored prompt

    def __len__(self) -> int:
        return int(self.category.shape[0])

    def subset(self, rows: np.ndarray) -> Lookups:
        return Lookups(self.categories, self.category[rows], self.exact[rows], self.sim[rows], self.entry[rows],
                       self.nearest_correct[rows], self.has_dup[rows])

    def thresholds(self, by_category: Mapping[str, float]) -> np.ndarray:
        """Per-category thresholds as an array indexed like `categories`."""
        return np.array([by_category[c] for c in self.categories], dtype=np.float64)


def classify(clf: LinearClassifier, vectors: np.ndarray, known: Sequence[str]) -> list[str]:
    out = []
    for start in range(0, len(vectors), 8192):
        for label, _ in clf.classify_batch(vectors[start:start + 8192]):
            out.append(label if label in known else DEFAULT_CATEGORY)
    return out


def simulate(
    *, texts: Sequence[str], vectors: np.ndarray, cluster: np.ndarray, stored: Sequence[int],
    lookups: Sequence[int], clf: LinearClassifier, categories: Sequence[str], progress: bool = True,
) -> Lookups:
    """`stored`/`lookups`: text indices in store/lookup order; `vectors` unit float32 rows."""
    categories = tuple(categories)
    cat_index = {c: i for i, c in enumerate(categories)}
    # -- the store: one entry per normalised prompt
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for t in stored:
        key = normalise_prompt(texts[t])
        first.setdefault(key, t)
        last[key] = t
    keys = list(first)
    entry_text = np.array([last[k] for k in keys], dtype=np.int64)
    entry_cat = np.array([cat_index[c] for c in classify(clf, vectors[[first[k] for k in keys]], categories)])
    by_key = {k: i for i, k in enumerate(keys)}
    stored_clusters = set(cluster[entry_text].tolist())
    # -- the lookups
    lookups = np.asarray(lookups, dtype=np.int64)
    n = len(lookups)
    exact_entry = np.array([by_key.get(normalise_prompt(texts[t]), -1) for t in lookups.tolist()], dtype=np.int64)
    exact = exact_entry >= 0
    category = np.array([cat_index[c] for c in classify(clf, vectors[lookups], categories)], dtype=np.int64)
    category[exact] = entry_cat[exact_entry[exact]]
    sim = np.full(n, -np.inf)
    sim[exact] = 1.0
    nearest = np.full(n, -1, dtype=np.int64)
    nearest[exact] = exact_entry[exact]
    work = [(c, np.flatnonzero((category == c) & ~exact), np.flatnonzero(entry_cat == c)) for c in range(len(categories))]
    total = sum(-(-len(rows) // CHUNK) for _, rows, ents in work if len(ents))
    with tqdm(total=total, desc="nearest entries", unit="chunk", disable=not progress) as bar:
        for _, rows, ents in work:
            if not len(ents) or not len(rows):
                continue
            matrix = vectors[entry_text[ents]]
            for start in range(0, len(rows), CHUNK):
                part = rows[start:start + CHUNK]
                scores = vectors[lookups[part]] @ matrix.T
                best = scores.argmax(axis=1)
                sim[part] = scores[np.arange(len(part)), best]
                nearest[part] = ents[best]
                bar.update()
    entry = np.where(nearest >= 0, entry_text[np.maximum(nearest, 0)], -1)
    found = entry >= 0
    nearest_correct = found & (cluster[np.maximum(entry, 0)] == cluster[lookups])
    has_dup = np.array([c in stored_clusters for c in cluster[lookups].tolist()], dtype=bool)
    return Lookups(categories, category, exact, sim, entry, nearest_correct, has_dup)


def outcome(look: Lookups, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hit, correct_hit) per lookup under per-category `thresholds` (array like categories)."""
    hit = look.exact | (look.sim >= thresholds[look.category])
    return hit, hit & look.nearest_correct


def metrics(look: Lookups, thresholds: np.ndarray) -> dict[str, float]:
    """DESIGN §9 names: hit rate, precision, recall, false-hit rate, F1 (+ the counts)."""
    hit, correct = outcome(look, thresholds)
    return summarise(hit, correct, look.has_dup)


def summarise(hit: np.ndarray, correct: np.ndarray, has_dup: np.ndarray) -> dict[str, float]:
    n = len(hit)
    hits, good, dup = int(hit.sum()), int(correct.sum()), int(has_dup.sum())
    precision = good / hits if hits else 1.0
    recall = good / dup if dup else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "lookups": n, "with_duplicate": dup, "hits": hits, "correct_hits": good, "false_hits": hits - good,
        "hit_rate": hits / n if n else 0.0, "precision": precision, "recall": recall,
        "false_hit_rate": (hits - good) / n if n else 0.0, "f1": f1,
    }
