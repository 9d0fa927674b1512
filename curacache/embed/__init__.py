"""Embedders behind one Protocol (base.Embedder): offline MiniLM (default), a remote
OpenAI-compatible server, a deterministic hashing embedder for tests, and a dynamic
batcher that wraps any of them."""

from curacache.embed.base import Embedder, HashingEmbedder, l2_normalise
from curacache.embed.batching import BatchingEmbedder
from curacache.embed.errors import EmbeddingError
from curacache.embed.minilm import MiniLMEmbedder, locate_model_files
from curacache.embed.remote import OpenAIEmbedder

__all__ = [
    "BatchingEmbedder",
    "Embedder",
    "EmbeddingError",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "l2_normalise",
    "locate_model_files",
]
