"""Orchestrator options and the Stats row (kept apart so service.py stays readable)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cache.stats import BreakEvenConfig, CategoryCounters


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheOptions:
    """Tuning knobs of the orchestrator itself (policies are per category)."""

    search_k: int = 5  # candidates per semantic search: room to skip context/params mismatches
    # Chunk size when a hit is replayed as a stream. A hit's text is all there at once, so
    # small chunks only cost a gRPC message each (bench/gateway/README.md); the bound keeps
    # one message of a very long answer moderate.
    replay_chunk_chars: int = 16_384
    break_even: BreakEvenConfig = field(default_factory=BreakEvenConfig)
    calibration_window: int = 500
    min_feedback: int = 20
    # Labels' worth of the other categories' labels each category's calibration starts from
    # (a shared prior: small or new categories calibrate before they have min_feedback labels
    # of their own; cache/calibration.py). 0: each category on its own labels only.
    calibration_prior: int = 10
    recent_hits: int = 10_000  # (tenant, entry) hits remembered for Feedback
    # Size limits (the server sets them from limits.*): a prompt (a conversation: its message
    # contents together) or a stored response above them is refused naming the field; a
    # generated response above max_response_bytes is delivered but not stored.
    # Self-labelling calibration: a miss whose nearest entry is within `label_band` below the
    # threshold it needed compares the backend's fresh answer with that entry's (free: the miss
    # calls the backend anyway). Equal after normalisation (deterministic requests), else
    # response embeddings at cosine >= `agreement_similarity`, counts as "would have been right".
    label_band: float = 0.03
    agreement_similarity: float = 0.9
    # Exploration: the share of semantic hits (Generate) also sent to the backend to verify
    # them the same way. Each costs a backend call, so it is off by default.
    verify_hits: float = 0.0
    seed: int | None = None  # of the exploration draws (tests, benchmarks)
    # How often a miss waiting on another replica's leader looks for its entry (a get by id).
    lease_poll_s: float = 0.02
    max_prompt_bytes: int = 1 << 20
    max_response_bytes: int = 1 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class CategoryStats:
    """Stats RPC row: counters plus what is in force now."""

    category: str
    counters: CategoryCounters
    entries: int
    threshold: float  # configured or calibrated base threshold
    effective_threshold: float
    effective_ttl_s: float
    load: float
    calibrated: bool
