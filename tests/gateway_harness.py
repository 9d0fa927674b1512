"""Run the gateway on port 0 in a background thread (its own event loop), for tests and benches."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from openai.types.chat import ChatCompletionMessageParam, ChatCompletionUserMessageParam

from curacache.gateway.app import serve
from curacache.gateway.config import GatewayConfig, load_gateway_config
from curacache.llm.simulator import SimConfig

# The backend behind the gateway tests: fast enough that a test's misses cost little.
FAST_SIM = SimConfig(ttft_ms=20, tokens_per_s=2000, max_concurrency=8)


def user(text: str) -> list[ChatCompletionMessageParam]:
    """A one-message conversation (the openai client's typed shape)."""
    return [ChatCompletionUserMessageParam(role="user", content=text)]


class ThreadGateway:
    """`curacache gateway` in-process: `base_url` is what an OpenAI client is pointed at."""

    def __init__(self, server: str, **settings: Any) -> None:
        self.config: GatewayConfig = load_gateway_config(
            overrides={"listen": "127.0.0.1:0", "server": server, **settings}
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._stop = asyncio.Event()
        started: asyncio.Future[int] = asyncio.Future(loop=self._loop)
        self._task = asyncio.run_coroutine_threadsafe(
            serve(self.config, stop=self._stop, ready=lambda port: started.set_result(port)),
            self._loop,
        )
        self.port = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(asyncio.shield(started), 30), self._loop
        ).result(35)
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._task.result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
