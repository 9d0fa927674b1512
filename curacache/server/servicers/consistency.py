"""Read-your-writes for every servicer: wait until this replica has applied a log position."""

from __future__ import annotations

import grpc

from curacache.errors import Unavailable
from curacache.server.replica import Replica

# Without a client deadline, how long a read-your-writes read waits for its position.
READ_YOUR_WRITES_WAIT_S = 10.0
# What a replica that has not caught up keeps back of the read's remaining deadline to answer
# UNAVAILABLE in time: a fifth, at least 50 ms. A fixed 50 ms was too little on a loaded
# machine: the answer came after the deadline, as DEADLINE_EXCEEDED, which the SDK does not
# try on another replica.
ANSWER_SHARE, ANSWER_MIN_S = 0.2, 0.05


async def caught_up(replica: Replica | None, token: str, context: grpc.aio.ServicerContext) -> None:
    """Wait (within the deadline) until this replica has applied the log up to `token`;
    UNAVAILABLE if it has not, so the client may try another replica."""
    if not token or replica is None:
        return
    remaining = context.time_remaining()
    if remaining is None:
        timeout = READ_YOUR_WRITES_WAIT_S
    else:
        timeout = max(remaining - max(ANSWER_SHARE * remaining, ANSWER_MIN_S), 0.0)
    if not await replica.wait_for(token, timeout):
        raise Unavailable(f"this replica has not yet applied log position {token}")
