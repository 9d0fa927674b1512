"""Read-your-writes for every servicer: wait until this replica has applied a log position."""

from __future__ import annotations

import grpc

from curacache.errors import Unavailable
from curacache.server.replica import Replica

# Without a client deadline, how long a read-your-writes read waits for its position.
READ_YOUR_WRITES_WAIT_S = 10.0


async def caught_up(replica: Replica | None, token: str, context: grpc.aio.ServicerContext) -> None:
    """Wait (within the deadline) until this replica has applied the log up to `token`;
    UNAVAILABLE if it has not, so the client may try another replica."""
    if not token or replica is None:
        return
    remaining = context.time_remaining()
    timeout = READ_YOUR_WRITES_WAIT_S if remaining is None else max(remaining - 0.05, 0.0)
    if not await replica.wait_for(token, timeout):
        raise Unavailable(f"this replica has not yet applied log position {token}")
