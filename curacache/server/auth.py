"""API keys -> principals. A key maps to a tenant set, or is an admin key (every tenant)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from curacache.errors import PermissionDenied, Unauthenticated
from curacache.server.config import AuthConfig


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. `tenants` None means any tenant (admin key, or auth off)."""

    tenants: frozenset[str] | None
    admin: bool  # may act on records it does not own, and manage collections
    manage: bool  # may create/delete collections (admin, or auth off on loopback)

    def require_tenant(self, tenant: str, field: str = "tenant") -> None:
        if self.tenants is not None and tenant not in self.tenants:
            raise PermissionDenied(f"{field}: this API key may not act as tenant {tenant!r}")

    def require_manage(self) -> None:
        if not self.manage:
            raise PermissionDenied("managing collections needs an admin API key")


ANONYMOUS = Principal(tenants=None, admin=False, manage=True)


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self._keys = {k.key: k for k in config.keys}
        self.enabled = config.enabled

    def resolve(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        token = None
        for name, value in metadata or ():
            if name == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                if scheme.lower() != "bearer":
                    token = None
        if not token:
            raise Unauthenticated("authorization: expected 'Bearer <api key>'")
        # Compare against every key in constant time so timing does not reveal a prefix.
        found = None
        for key, entry in self._keys.items():
            if hmac.compare_digest(key.encode(), token.strip().encode()):
                found = entry
        if found is None:
            raise Unauthenticated("authorization: unknown API key")
        if found.admin:
            return Principal(tenants=None, admin=True, manage=True)
        return Principal(tenants=found.tenants, admin=False, manage=False)
