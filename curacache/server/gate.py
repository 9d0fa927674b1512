"""What every RPC does before its own work: authenticate, authorise the tenant, rate-limit."""

from __future__ import annotations

import grpc

from curacache.server import validate
from curacache.server.auth import Authenticator, Principal
from curacache.server.ratelimit import TenantRateLimiter


class Gate:
    def __init__(self, auth: Authenticator, limiter: TenantRateLimiter) -> None:
        self._auth = auth
        self._limiter = limiter

    def principal(self, context: grpc.aio.ServicerContext) -> Principal:
        return self._auth.resolve(context.invocation_metadata())

    def tenant(
        self, context: grpc.aio.ServicerContext, tenant: str, field: str = "tenant"
    ) -> Principal:
        """Authenticate, check the key may act as `tenant`, and charge its rate bucket."""
        principal = self.principal(context)
        validate.tenant(tenant, field)
        principal.require_tenant(tenant, field)
        self._limiter.acquire(tenant)
        return principal
