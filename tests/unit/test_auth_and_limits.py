from __future__ import annotations

import pytest

from curacache.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from curacache.server.auth import Authenticator
from curacache.server.config import ApiKey, AuthConfig
from curacache.server.ratelimit import TenantRateLimiter

AUTH = AuthConfig(keys=(ApiKey("k1", frozenset({"a", "b"})), ApiKey("root", admin=True)))


def test_key_resolves_to_its_tenants() -> None:
    principal = Authenticator(AUTH).resolve([("authorization", "Bearer k1")])
    principal.require_tenant("a")
    with pytest.raises(PermissionDenied, match="tenant"):
        principal.require_tenant("c")
    with pytest.raises(PermissionDenied, match="admin"):
        principal.require_manage()
    assert not principal.admin


def test_admin_key_acts_for_anyone() -> None:
    principal = Authenticator(AUTH).resolve([("authorization", "bearer root")])
    principal.require_tenant("anyone")
    principal.require_manage()
    assert principal.admin


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("authorization", "k1")],
        [("authorization", "Bearer nope")],
        [("authorization", "Basic k1")],
    ],
)
def test_missing_or_wrong_key(metadata: list[tuple[str, str]]) -> None:
    with pytest.raises(Unauthenticated, match="authorization"):
        Authenticator(AUTH).resolve(metadata)


def test_auth_off_may_manage_but_is_not_admin() -> None:
    principal = Authenticator(AuthConfig()).resolve([])
    principal.require_tenant("x")
    principal.require_manage()
    assert not principal.admin  # owner checks still apply without keys


def test_token_bucket_refills_and_reports_retry_after() -> None:
    now = [0.0]
    limiter = TenantRateLimiter(rate=2.0, burst=3.0, clock=lambda: now[0])
    for _ in range(3):
        limiter.acquire("t")
    with pytest.raises(ResourceExhausted) as info:
        limiter.acquire("t")
    assert info.value.retry_after == pytest.approx(0.5)
    limiter.acquire("other")  # buckets are per tenant
    now[0] = 0.5
    limiter.acquire("t")
    with pytest.raises(ResourceExhausted):
        limiter.acquire("t")


def test_rate_zero_is_unlimited() -> None:
    limiter = TenantRateLimiter(rate=0.0, burst=1.0)
    for _ in range(1000):
        limiter.acquire("t")
