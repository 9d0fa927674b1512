"""The categories in force: their policies, calibrated thresholds and the backend's load.

One place answers "what threshold and TTL does this category have now" (DESIGN §5 step 6):
the configured policy, its calibrated threshold (unless strict) and the load adaptation.
The lookup, store and labelling paths share one instance, so a `set_policy` is seen by all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace

from cache.calibration import FeedbackBook
from cache.errors import InvalidPolicy, InvalidRequest
from cache.policy import CategoryPolicy, effective
from cache.ports import Backend

DEFAULT_CATEGORY = "default"
_CATEGORY_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


class Categories:
    """The policies by category name, with the calibration (`feedback`) that moves them."""

    def __init__(
        self,
        policies: Mapping[str, CategoryPolicy],
        *,
        feedback: FeedbackBook,
        backend: Backend,
    ) -> None:
        if DEFAULT_CATEGORY not in policies:
            raise InvalidPolicy("policies", f"must include {DEFAULT_CATEGORY!r}")
        for name, policy in policies.items():
            check_category_name(name)
            if not isinstance(policy, CategoryPolicy):
                raise InvalidPolicy(name, "not a CategoryPolicy")
        self.policies = dict(policies)
        self.feedback = feedback
        self._backend = backend

    def policy(self, category: str) -> CategoryPolicy:
        """The category's policy; an unknown category is the caller's error."""
        policy = self.policies.get(category)
        if policy is None:
            raise InvalidRequest(
                "category", f"unknown category {category!r}; known: {sorted(self.policies)}"
            )
        return policy

    def set_policy(
        self, category: str, *, create: bool, changes: dict[str, object]
    ) -> CategoryPolicy:
        """See `SemanticCache.set_policy`."""
        check_category_name(category)
        if not isinstance(create, bool):
            raise InvalidRequest("create", "must be a boolean")
        if category not in self.policies and not create:
            raise InvalidRequest(
                "category",
                f"unknown category {category!r} (known: {sorted(self.policies)}); "
                "set create to add a new category",
            )
        base = self.policies.get(category, self.policies[DEFAULT_CATEGORY])
        policy = base.with_changes(changes)
        self.policies[category] = policy
        if "threshold" in changes or policy.strict:
            self.feedback.reset(category)
        return policy

    def calibrated_policy(self, category: str) -> CategoryPolicy:
        policy = self.policies[category]
        calibrated = self.feedback.threshold(category)
        if calibrated is None or policy.strict:
            return policy
        return replace(policy, threshold=calibrated)

    def calibrated(self, category: str) -> bool:
        """Whether calibration has moved this category's threshold (never a strict one's)."""
        return self.feedback.threshold(category) is not None and not self.policies[category].strict

    def load(self, model: str | None) -> float:
        """The backend's load for `model`, clamped to [0, 1] (not finite: 0)."""
        load = float(self._backend.load(model))
        return min(1.0, max(0.0, load)) if math.isfinite(load) else 0.0

    def effective(self, category: str, model: str | None) -> tuple[float, float]:
        """(threshold, TTL) in force now for `category` under `model`'s load."""
        return effective(self.calibrated_policy(category), self.load(model))

    def threshold(self, category: str, load: float) -> float:
        """Effective threshold of an entry's category (one no longer configured: `default`'s)."""
        if category not in self.policies:
            category = DEFAULT_CATEGORY
        return effective(self.calibrated_policy(category), load)[0]


def check_category_name(name: object) -> None:
    if not isinstance(name, str) or not _CATEGORY_NAME.match(name):
        raise InvalidRequest("category", "must match [a-z0-9][a-z0-9_-]{0,63}")
