"""Admission: which responses may enter the cache (DESIGN §5).

The top complaint about semantic caches is errors replayed as successes, so admission is
conservative: only a finished, non-empty answer to a cacheable request is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from cache.policy import CategoryPolicy
from cache.types import CachedResponse, StoreReason

GOOD_FINISH = frozenset({"stop", "eos", "end_turn", "stop_sequence", "tool_calls"})
"""Finish reasons of a complete answer. Anything else (error, content_filter, cancelled,
tool_calls with empty text, unknown values) is refused; `length` only if the policy allows."""


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8 (what a size limit counts)."""
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, kw_only=True, slots=True)
class Admission:
    admitted: bool
    reason: StoreReason
    detail: str = ""


def admit(
    *,
    response: CachedResponse,
    policy: CategoryPolicy,
    deterministic: bool,
    no_store: bool,
    max_bytes: int | None = None,
) -> Admission:
    """Admit or refuse, with the reason a user can see in StoreResult / FinalResult.
    `max_bytes`: the largest response text (UTF-8) that may be stored."""
    if not policy.enabled:
        return Admission(admitted=False, reason=StoreReason.DISABLED, detail="category disabled")
    if no_store:
        return Admission(
            admitted=False, reason=StoreReason.NO_STORE, detail="request marked no-store"
        )
    if not deterministic and not policy.cache_nondeterministic:
        return Admission(
            admitted=False,
            reason=StoreReason.NONDETERMINISTIC,
            detail="temperature > 0 without seed; the category does not cache sampled answers",
        )
    finish = response.finish_reason
    if finish == "length":
        if not policy.allow_truncated:
            return Admission(
                admitted=False, reason=StoreReason.TRUNCATED, detail="finish_reason=length"
            )
    elif finish not in GOOD_FINISH:
        return Admission(
            admitted=False, reason=StoreReason.ERROR, detail=f"finish_reason={finish!r}"
        )
    if not response.text.strip() and not response.tool_calls:
        return Admission(admitted=False, reason=StoreReason.EMPTY, detail="empty response text")
    if max_bytes is not None and (size := utf8_size(response.text)) > max_bytes:
        return Admission(
            admitted=False,
            reason=StoreReason.TOO_LARGE,
            detail=f"response is {size} bytes, above max_response_bytes {max_bytes}",
        )
    return Admission(admitted=True, reason=StoreReason.STORED)
