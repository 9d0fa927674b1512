"""The hit rule for one candidate entry (DESIGN §5 step 6), apart from similarity.

A candidate close enough in embedding space is still refused when it is expired, was made by
another model, follows a different conversation, or was generated with different parameters
(a temperature-0 answer is not served for temperature 1 unless the category caches sampled
answers, in which case only the non-sampling parameters must match).
"""

from __future__ import annotations

from cache.fingerprint import Prepared
from cache.ledger import Ledger
from cache.policy import CategoryPolicy
from cache.types import CacheEntry, LookupResult, Reason


def why_not(
    entry: CacheEntry, prep: Prepared, policy: CategoryPolicy, now: float
) -> tuple[Reason | None, str]:
    """(None, "") when the entry may be served for this request, else (reason, detail)."""
    if entry.expired(now):
        return Reason.EXPIRED, f"entry expired {now - entry.expires_at:.0f}s ago"
    if entry.model != prep.model:
        return Reason.FINGERPRINT_MISMATCH, f"model differs ({entry.model!r} vs {prep.model!r})"
    if entry.context_fp != prep.context_fp:
        return Reason.FINGERPRINT_MISMATCH, "conversation context differs"
    if entry.params_fp != prep.params_fp and not (
        policy.cache_nondeterministic and entry.core_params_fp == prep.core_fp
    ):
        return Reason.FINGERPRINT_MISMATCH, "generation parameters differ"
    return None, ""


def below_threshold(
    found: list[tuple[str, float]], threshold: float, category: str, ledger: Ledger, tenant: str
) -> LookupResult:
    """The miss when no candidate reaches the threshold. The best similarity is reported only
    for an entry the ledger knows to be visible to the tenant, so a repository that returned
    another tenant's entry cannot leak even its similarity."""
    if not found:
        return LookupResult(hit=False, reason=Reason.EMPTY, category=category, threshold=threshold,
                            detail=f"no cached entries for this tenant in {category!r}")
    best = next((s for i, s in found if (m := ledger.get(i)) is not None and m.visible_to(tenant)), None)
    detail = (f"similarity {best:.4f} < threshold {threshold:.4f}" if best is not None
              else f"no entry reaches threshold {threshold:.4f}")
    return LookupResult(hit=False, reason=Reason.BELOW_THRESHOLD, similarity=best, threshold=threshold,
                        category=category, detail=detail)
