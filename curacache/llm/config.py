"""Configuration of one OpenAI-compatible backend (vLLM, SGLang, TGI, llama.cpp server, ...)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """One backend endpoint and how hard we may push it.

    - `base_url`: either the server root (`http://gpu1:8000`) or the OpenAI-style base ending
      in `/v1`; both work.
    - `models`: the model names routed here; empty means "whatever the caller names".
    - `max_concurrency`: requests we keep open against it at once (the rest wait in our queue,
      where waiting is cheaper than in the backend's); also the capacity of the load signal.
    - `timeout_s`: connect timeout, and for streams the longest wait for the first byte and
      between two chunks. A stalled stream fails instead of holding a slot forever.
    - `completion_timeout_s`: the same read limit for non-streaming calls, whose first byte only
      arrives when the whole answer is generated, so it must cover the full generation.
    - `max_retries`: extra attempts after a 429/502/503/504, a refused connection or a drop
      before anything reached the caller. Backoff is exponential from `backoff_s`, capped at
      `max_backoff_s`; a `Retry-After` from the backend replaces it, and one longer than
      `max_retry_wait_s` is not waited for (the caller gets BackendOverloaded at once).
    - `latency_slo_s`, `load_window_s`, `overload_error_rate`: parameters of `load()`,
      see `curacache.llm.load.LoadTracker`.
    """

    name: str
    base_url: str
    models: tuple[str, ...] = ()
    max_concurrency: int = 16
    timeout_s: float = 30.0
    completion_timeout_s: float = 600.0
    api_key: str | None = None
    max_retries: int = 2
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    max_retry_wait_s: float = 10.0
    latency_slo_s: float = 2.0
    load_window_s: float = 30.0
    overload_error_rate: float = 0.25

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("backend name must be set")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"backend {self.name}: base_url must start with http:// or https://")
        object.__setattr__(self, "models", tuple(self.models))
        if self.max_concurrency < 1:
            raise ValueError(f"backend {self.name}: max_concurrency must be >= 1")
        if self.max_retries < 0:
            raise ValueError(f"backend {self.name}: max_retries must be >= 0")
        for attr in (
            "timeout_s",
            "completion_timeout_s",
            "latency_slo_s",
            "load_window_s",
            "overload_error_rate",
        ):
            if getattr(self, attr) <= 0:
                raise ValueError(f"backend {self.name}: {attr} must be > 0")

    @property
    def api_base(self) -> str:
        """The URL that `/chat/completions` and `/completions` are appended to."""
        base = self.base_url.rstrip("/")
        return base if base.endswith("/v1") else base + "/v1"
