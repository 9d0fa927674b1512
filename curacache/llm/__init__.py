"""LLM backends: an OpenAI-compatible HTTP client (streaming, retries, load signal), routing by
model, and `curacache fake-llm`, a backend simulator for tests and load tests.

The simulator (`curacache.llm.simulator`, needs aiohttp) is not imported here, so the client
side stays importable without it.
"""

from curacache.llm.client import BackendClient
from curacache.llm.config import BackendConfig
from curacache.llm.errors import (
    BackendError,
    BackendOverloaded,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    UnknownModel,
)
from curacache.llm.router import BackendRouter
from curacache.llm.types import Chunk, Completion, GenerationRequest, Message, ToolCall, Usage

__all__ = [
    "BackendClient",
    "BackendConfig",
    "BackendError",
    "BackendOverloaded",
    "BackendRejected",
    "BackendRouter",
    "BackendTimeout",
    "BackendUnavailable",
    "Chunk",
    "Completion",
    "GenerationRequest",
    "Message",
    "ToolCall",
    "UnknownModel",
    "Usage",
]
