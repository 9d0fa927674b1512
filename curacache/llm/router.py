"""`BackendRouter`: picks the backend for a model (DESIGN §7: "the service routes by model")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

from curacache.llm.client import BackendClient
from curacache.llm.config import BackendConfig
from curacache.llm.errors import BackendError, UnknownModel
from curacache.llm.types import Chunk, Completion, ForwardHead, GenerationRequest


class BackendRouter:
    """Routes each request to the least-loaded backend that lists its model.

    Backends that list models are preferred; one with an empty model list is a catch-all used
    only for models nobody lists. No candidate → UnknownModel (raised before any I/O).
    """

    def __init__(self, *, backends: Sequence[BackendClient]) -> None:
        names = [b.name for b in backends]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate backend names: {', '.join(duplicates)}")
        self._backends = tuple(backends)

    @classmethod
    def from_configs(cls, configs: Iterable[BackendConfig]) -> BackendRouter:
        return cls(backends=[BackendClient(config=c) for c in configs])

    @property
    def backends(self) -> tuple[BackendClient, ...]:
        return self._backends

    def models(self) -> tuple[str, ...]:
        """Every model some backend lists, in configuration order."""
        return tuple(dict.fromkeys(m for b in self._backends for m in b.models))

    async def served_models(self) -> dict[str, str]:
        """Every model some backend serves -> the first backend serving it. Catch-all backends
        are asked for their own list; one that cannot be asked must not hide the others'."""
        owners: dict[str, str] = {}
        for backend in self._backends:
            try:
                served = await backend.served_models()
            except BackendError:
                continue
            for model in served:
                owners.setdefault(model, backend.name)
        return owners

    def candidates(self, model: str) -> tuple[BackendClient, ...]:
        listed = tuple(b for b in self._backends if model in b.models)
        return listed or tuple(b for b in self._backends if not b.models)

    def route(self, model: str) -> BackendClient:
        candidates = self.candidates(model)
        if not candidates:
            raise UnknownModel(model, known=self.models())
        return min(candidates, key=lambda b: b.load())  # min() keeps the first of equals

    def load(self, model: str | None = None) -> float:
        """What a miss for `model` would face now: the load of the backend it would be routed to
        (None: of the least-loaded backend overall)."""
        candidates = self._backends if model is None else self.candidates(model)
        if not candidates:
            raise UnknownModel(model if model is not None else "*", known=self.models())
        return min(b.load() for b in candidates)

    async def complete(self, request: GenerationRequest) -> Completion:
        return await self.route(request.model).complete(request)

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Completion]:
        return self.route(request.model).stream(request)

    def forward(self, model: str, path: str, body: bytes) -> AsyncIterator[ForwardHead | bytes]:
        """`BackendClient.forward` on the backend that serves `model`."""
        return self.route(model).forward(path, body)

    async def aclose(self) -> None:
        await asyncio.gather(*(b.aclose() for b in self._backends))

    async def __aenter__(self) -> BackendRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
