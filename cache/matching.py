"""The hit rule for one candidate entry (DESIGN §5 step 6), apart from similarity.

A candidate close enough in embedding space is still refused when it is expired, was made by
another model, follows a different conversation, or was generated with different parameters
(a temperature-0 answer is not served for temperature 1 unless the category caches sampled
answers, in which case only the non-sampling parameters must match).
"""

from __future__ import annotations

from collections.abc import Callable

from cache.fingerprint import Prepared
from cache.ledger import EntryMeta
from cache.types import CacheEntry, LookupResult, Reason


def why_not(
    entry: CacheEntry, prep: Prepared, now: float, *, nondeterministic: bool
) -> tuple[Reason | None, str]:
    """(None, "") when the entry may be served for this request, else (reason, detail).
    `nondeterministic`: sampled answers may be served (both categories cache them), so only
    the non-sampling parameters must match."""
    if entry.expired(now):
        return Reason.EXPIRED, f"entry expired {now - entry.expires_at:.0f}s ago"
    if entry.model != prep.model:
        return Reason.FINGERPRINT_MISMATCH, f"model differs ({entry.model!r} vs {prep.model!r})"
    if entry.context_fp != prep.context_fp:
        return Reason.FINGERPRINT_MISMATCH, "conversation context differs"
    if entry.params_fp != prep.params_fp and not (
        nondeterministic and entry.core_params_fp == prep.core_fp
    ):
        return Reason.FINGERPRINT_MISMATCH, "generation parameters differ"
    return None, ""


def below_threshold(
    found: list[tuple[str, float]],
    category: str,
    threshold: float,
    need: Callable[[str | None], float],
    meta: Callable[[str], EntryMeta | None],
    tenant: str,
) -> LookupResult:
    """The miss when no candidate reaches the threshold it needs (`need(entry's category)`:
    the stricter of the lookup's and the entry's). The best candidate is reported only when
    the ledger knows it to be visible to the tenant, so a repository that returned another
    tenant's entry cannot leak even its similarity."""
    if not found:
        return LookupResult(
            hit=False,
            reason=Reason.EMPTY,
            category=category,
            threshold=threshold,
            detail="no cached entries for this tenant",
        )
    for entry_id, similarity in found:
        m = meta(entry_id)
        if m is None or not m.visible_to(tenant):
            continue
        required = need(m.category)
        stricter = f" (entry's category {m.category!r} is stricter)" if required > threshold else ""
        return LookupResult(
            hit=False,
            reason=Reason.BELOW_THRESHOLD,
            similarity=similarity,
            threshold=required,
            category=category,
            entry_id=entry_id,
            detail=f"similarity {similarity:.4f} < threshold {required:.4f}{stricter}",
        )
    return LookupResult(
        hit=False,
        reason=Reason.BELOW_THRESHOLD,
        threshold=threshold,
        category=category,
        detail=f"no entry reaches threshold {threshold:.4f}",
    )
