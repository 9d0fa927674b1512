"""Client: the blocking SDK, a thin wrapper that runs AsyncClient on a private event loop."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

from curacache.client.aio import AsyncClient

P = ParamSpec("P")
R = TypeVar("R")


def _blocking(method: Callable[..., Coroutine[Any, Any, R]]) -> Callable[..., R]:
    """Expose an AsyncClient coroutine method as a blocking method with the same signature."""

    @functools.wraps(method)
    def call(self: Client, *args: Any, **kwargs: Any) -> R:
        return self._run(method(self._async, *args, **kwargs))

    return call


async def _next(agen: AsyncGenerator[R, None]) -> R:
    return await anext(agen)


def _blocking_iter(method: Callable[..., AsyncGenerator[R, None]]) -> Callable[..., Iterator[R]]:
    """Expose an AsyncClient async-generator method as a blocking generator."""

    @functools.wraps(method)
    def call(self: Client, *args: Any, **kwargs: Any) -> Iterator[R]:
        agen = method(self._async, *args, **kwargs)
        try:
            while True:
                try:
                    yield self._run(_next(agen))
                except StopAsyncIteration:
                    return
        finally:
            self._run(agen.aclose())

    return call


class Client:
    """Blocking client; same methods and arguments as AsyncClient. Use as a context manager."""

    def __init__(
        self,
        target: str | Sequence[str] = "127.0.0.1:50051",
        *,
        api_key: str | None = None,
        **options: Any,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="curacache-client", daemon=True
        )
        self._thread.start()

        async def build() -> AsyncClient:
            return AsyncClient(target, api_key=api_key, **options)

        self._async = self._run(build())

    def _run(self, coro: Coroutine[Any, Any, R]) -> R:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def log_position(self, collection: str) -> str:
        """See AsyncClient.log_position."""
        return self._async.log_position(collection)

    def cache_log_position(self) -> str:
        """See AsyncClient.cache_log_position."""
        return self._async.cache_log_position()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    create_collection = _blocking(AsyncClient.create_collection)
    get_collection = _blocking(AsyncClient.get_collection)
    list_collections = _blocking(AsyncClient.list_collections)
    delete_collection = _blocking(AsyncClient.delete_collection)
    stats = _blocking(AsyncClient.stats)
    upsert = _blocking(AsyncClient.upsert)
    get = _blocking(AsyncClient.get)
    delete = _blocking(AsyncClient.delete)
    grant = _blocking(AsyncClient.grant)
    revoke = _blocking(AsyncClient.revoke)
    search = _blocking(AsyncClient.search)
    search_batch = _blocking(AsyncClient.search_batch)
    health = _blocking(AsyncClient.health)
    lookup = _blocking(AsyncClient.lookup)
    store = _blocking(AsyncClient.store)
    generate = _blocking_iter(AsyncClient.generate)
    generate_events = _blocking_iter(AsyncClient.generate_events)
    complete = _blocking(AsyncClient.complete)
    forward = _blocking_iter(AsyncClient.forward)
    models = _blocking(AsyncClient.models)
    invalidate = _blocking(AsyncClient.invalidate)
    feedback = _blocking(AsyncClient.feedback)
    get_policies = _blocking(AsyncClient.get_policies)
    set_policy = _blocking(AsyncClient.set_policy)
    cache_stats = _blocking(AsyncClient.cache_stats)
