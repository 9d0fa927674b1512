"""Server configuration: frozen dataclasses read once from defaults < TOML file < env < flags.

Every setting has a dotted name (`storage.redis_url`, `limits.max_k`); the file uses TOML
tables, the environment `CURACACHE_STORAGE__REDIS_URL` style names (top-level ones as
`CURACACHE_PORT`), flags pass a dict of dotted names. Unknown names are errors, so a typo in a
config file does not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast, get_type_hints

from curacache.llm.config import BackendConfig

ENV_PREFIX = "CURACACHE_"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the setting."""


@dataclass(frozen=True, slots=True)
class StorageConfig:
    kind: str = "sqlite"  # "sqlite" | "redis"
    data_dir: Path = Path("data")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "cc"
    # Durability across a Redis failover: acknowledge a write only once this many replicas
    # have it (WAIT); 0 = as soon as the master has it (README "Running more than one").
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_batch: int = 10_000
    max_k: int = 1024
    max_dim: int = 8192
    max_payload_bytes: int = 1 << 20
    max_metadata_bytes: int = 64 << 10
    max_id_bytes: int = 256
    max_tenants_per_record: int = 1024
    max_message_bytes: int = 256 << 20
    max_forward_bytes: int = (
        4 << 20
    )  # body of a request passed through to a backend (Cache.Forward)
    # Semantic cache: a prompt (or a conversation's message contents together) and a response
    # above these are refused with INVALID_ARGUMENT (1 MiB ≈ 250k tokens, past any context window).
    max_prompt_bytes: int = 1 << 20
    max_response_bytes: int = 1 << 20
    tenant_rate: float = 0.0  # requests per second per tenant; 0 = unlimited
    tenant_burst: float = 100.0
    # Calls received but not yet taken up by the server (it is busy): above the first, gRPC
    # drops a growing random share of new ones with CANCELLED; at the second, every new one.
    # (gRPC's own defaults; the SDK raises CancelledByServerError, the gateway answers 503.)
    max_pending_rpcs: int = 1000
    max_pending_rpcs_hard: int = 3000


@dataclass(frozen=True, slots=True)
class ApiKey:
    key: str
    tenants: frozenset[str] = frozenset()
    admin: bool = False


@dataclass(frozen=True, slots=True)
class AuthConfig:
    keys: tuple[ApiKey, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.keys)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The semantic cache (DESIGN §5). `policies` overrides shipped per-category policies:
    TOML `[cache.policies.code] threshold = 0.92`; an unknown category is created from `default`."""

    enabled: bool = True
    embedder: str = "minilm"  # minilm | hashing | remote (see curacache.server.cache_wiring)
    embedder_url: str = ""  # remote: an OpenAI-compatible server's base URL
    embedder_model: str = ""
    index_kind: str = "curator"  # index of the cache's collection (every category in one)
    # Curator trains its tree once a collection holds train_size entries; below that search is
    # exact. Cache lookups sit on the miss path, so cache collections train early.
    index_params: Mapping[str, float] = field(default_factory=lambda: {"train_size": 2048})
    confidence_floor: float | None = None  # None: the classifier's trained floor
    sweep_interval_s: float = 30.0  # expired-entry sweeper period
    default_model: str = ""  # backend model for requests that name none
    backends: tuple[BackendConfig, ...] = ()  # every knob of curacache.llm.config.BackendConfig
    policies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Self-labelling calibration (cache.options.CacheOptions): misses within label_band below
    # their threshold compare the backend's answer with the nearest entry's; verify_hits is the
    # share of semantic hits also sent to the backend to check them (each costs a backend call).
    label_band: float = 0.03
    verify_hits: float = 0.0
    # Replicas of one store share a lease per miss, so equivalent misses on different replicas
    # make one backend call; a leader that dies holds it at most this long.
    miss_lease_s: float = 60.0
    # How often a replica shares the hits it served (a note on the change log), so every
    # replica's LRU/LFU eviction order counts them; 0 = never (each orders by its own hits).
    hit_share_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    default_index_kind: str = ""  # empty: the registry's default
    grace_seconds: float = 5.0
    snapshot_interval_s: float = (
        300.0  # index snapshots of changed collections; 0 = only at shutdown
    )
    # Scale-out (README "Running more than one"): processes sharing the port (SO_REUSEPORT),
    # how often each replica polls the store's change log, and how long the log is kept.
    workers: int = 1
    # Threads for blocking store calls and index work (the event loop's default executor).
    # More than asyncio's default (cores + 4): an upsert waits in one for its group commit,
    # and with 6 the groups stayed small (bench/replication/README.md).
    io_threads: int = 32
    # glibc malloc arenas per process (curacache.server.memory); 0 = glibc's default.
    malloc_arenas: int = 2
    # Allocations of at least this many bytes are mapped, and unmapped when freed
    # (curacache.server.memory); 0 = glibc's default (a threshold that rises, up to 32 MiB).
    malloc_mmap_threshold: int = 4 * 2**20
    # Placement (README "Running more than one"): the replica group this server belongs to;
    # it then serves only the collections the store's placement map gives that group.
    group: str = ""
    replica_poll_interval_s: float = 0.005
    log_retention_s: float = 3600.0
    # Prometheus text at http://host:metrics_port/metrics; None = off, 0 = any free port.
    metrics_port: int | None = None
    access_log: bool = (
        False  # one log line per RPC (logger curacache.access): method, tenant, status, ms
    )
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def load_config(
    *,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Build the config; `env` defaults to os.environ, `overrides` are flags by dotted name."""
    env = os.environ if env is None else env
    layers: dict[str, Any] = {}
    if file is not None:
        try:
            with open(file, "rb") as fh:
                _flatten(tomllib.load(fh), "", layers)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {file}: {exc}") from exc
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "CONFIG":
            layers[name[len(ENV_PREFIX) :].lower().replace("__", ".")] = value
    layers.update({k: v for k, v in (overrides or {}).items() if v is not None})
    config = _build(ServerConfig, layers, "")
    _check(config)
    return config


# Settings whose value is itself a table (kept whole instead of flattened into dotted names).
_TABLE_VALUED = ("cache.policies", "cache.index_params")


def _flatten(table: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in _TABLE_VALUED:
            _flatten(value, name + ".", out)
        else:
            out[name] = value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(cast(type, hint), values, name + ".")
        elif name in values:
            kwargs[f.name] = _convert(name, hint, values.pop(name))
    if not prefix and values:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(values))}")
    return cls(**kwargs)


def _convert(name: str, hint: Any, value: Any) -> Any:
    try:
        if name == "auth.keys":
            return _api_keys(value)
        if name == "cache.backends":
            return _backends(value)
        if name == "cache.index_params":
            if not isinstance(value, Mapping):
                raise ConfigError("cache.index_params: expected a table [cache.index_params]")
            return {str(k): float(v) for k, v in value.items()}
        if name == "cache.policies":
            if not isinstance(value, Mapping) or not all(
                isinstance(v, Mapping) for v in value.values()
            ):
                raise ConfigError("cache.policies: expected tables [cache.policies.<category>]")
            return {str(k): dict(v) for k, v in value.items()}
        if hint == int | None:
            return None if value in (None, "") else int(value)
        if hint == float | None:
            return None if value in (None, "") else float(value)
        if hint is bool:
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if hint in (int, float, str):
            return hint(value)
        if hint in (Path, Path | None):
            return None if value in (None, "") else Path(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from exc
    raise ConfigError(f"{name}: cannot be set from {type(value).__name__}")


def _api_keys(value: Any) -> tuple[ApiKey, ...]:
    """From TOML: a list of {key, tenants, admin}; from env: 'key=t1,t2;key2=*' (* = admin)."""
    if isinstance(value, str):
        entries = []
        for part in filter(None, value.split(";")):
            key, _, tenants = part.partition("=")
            admin = tenants.strip() == "*"
            names = [] if admin else [t for t in tenants.split(",") if t]
            entries.append({"key": key.strip(), "tenants": names, "admin": admin})
        value = entries
    keys = []
    for i, entry in enumerate(value):
        unknown = set(entry) - {"key", "tenants", "admin"}
        if unknown or not entry.get("key"):
            raise ConfigError(f"auth.keys[{i}]: needs 'key', accepts 'tenants' and 'admin'")
        keys.append(
            ApiKey(str(entry["key"]), frozenset(entry.get("tenants", ())), bool(entry.get("admin")))
        )
    return tuple(keys)


def _backends(value: Any) -> tuple[BackendConfig, ...]:
    """From TOML: [[cache.backends]] tables; from env/flags: 'name=url;name2=url2'."""
    if isinstance(value, str):
        value = [
            {"name": n.strip(), "base_url": u.strip()}
            for n, _, u in (part.partition("=") for part in value.split(";") if part)
        ]
    names = {f.name for f in dataclasses.fields(BackendConfig)}
    out = []
    for i, entry in enumerate(value):
        unknown = set(entry) - names
        if unknown or not entry.get("name") or not entry.get("base_url"):
            raise ConfigError(
                f"cache.backends[{i}]: needs 'name' and 'base_url'; unknown {sorted(unknown)}"
            )
        try:
            out.append(BackendConfig(**{**entry, "models": tuple(entry.get("models", ()))}))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cache.backends[{i}]: {exc}") from None
    return tuple(out)


def _check(config: ServerConfig) -> None:
    if config.storage.kind not in ("sqlite", "redis"):
        raise ConfigError(f"storage.kind: must be 'sqlite' or 'redis', got {config.storage.kind!r}")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port: must be in [0, 65535], got {config.port}")
    if config.group and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", config.group):
        raise ConfigError(f"group: 1-64 of [A-Za-z0-9_.-], got {config.group!r}")
    if config.workers < 1:
        raise ConfigError(f"workers: must be >= 1, got {config.workers}")
    if config.io_threads < 1:
        raise ConfigError(f"io_threads: must be >= 1, got {config.io_threads}")
    if config.malloc_arenas < 0:
        raise ConfigError(f"malloc_arenas: must be >= 0, got {config.malloc_arenas}")
    if config.malloc_mmap_threshold < 0:
        raise ConfigError(
            f"malloc_mmap_threshold: must be >= 0, got {config.malloc_mmap_threshold}"
        )
    if config.replica_poll_interval_s <= 0 or config.log_retention_s <= 0:
        raise ConfigError("replica_poll_interval_s and log_retention_s: must be positive")
    if config.storage.redis_wait_replicas < 0 or config.storage.redis_wait_timeout_ms < 0:
        raise ConfigError("storage.redis_wait_replicas and redis_wait_timeout_ms: must be >= 0")
    if config.metrics_port is not None and not 0 <= config.metrics_port <= 65535:
        raise ConfigError(f"metrics_port: must be in [0, 65535], got {config.metrics_port}")
    if not config.auth.enabled and not config.loopback:
        raise ConfigError(
            f"auth.keys: serving on {config.host} without API keys is refused; "
            "configure auth.keys or bind to a loopback address"
        )
    if (config.tls.cert_file is None) != (config.tls.key_file is None):
        raise ConfigError("tls: set both tls.cert_file and tls.key_file, or neither")
    for name in (
        "max_batch",
        "max_k",
        "max_dim",
        "max_payload_bytes",
        "max_id_bytes",
        "max_prompt_bytes",
        "max_response_bytes",
        "max_forward_bytes",
        "max_pending_rpcs_hard",
    ):
        if getattr(config.limits, name) <= 0:
            raise ConfigError(f"limits.{name}: must be positive")
    if not 0 <= config.limits.max_pending_rpcs <= config.limits.max_pending_rpcs_hard:
        raise ConfigError(
            "limits.max_pending_rpcs: must be in [0, limits.max_pending_rpcs_hard], got "
            f"{config.limits.max_pending_rpcs} (hard limit {config.limits.max_pending_rpcs_hard})"
        )
