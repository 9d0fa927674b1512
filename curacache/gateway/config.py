"""Gateway configuration: one frozen dataclass, read once from defaults < TOML file < flags.

```toml
listen = "0.0.0.0:8080"
server = "127.0.0.1:50051"
service_key = "s3cret-gateway"      # the gateway's own key to the service (admin, or all tenants)
max_turns = 32                      # longer conversations pass through uncached
cache_tools = false                 # true: cache requests with `tools` too (tool set in the key)
[[keys]]                            # bearer key -> tenant; none: loopback only, one tenant
key = "sk-acme-1"
tenant = "acme"
```
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_SERVER = "127.0.0.1:50051"


class GatewayConfigError(ValueError):
    """The configuration is wrong; the message names the setting."""


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    listen: str = DEFAULT_LISTEN
    server: str = DEFAULT_SERVER
    service_key: str | None = None
    keys: Mapping[str, str] = field(default_factory=dict)  # bearer key -> tenant
    default_tenant: str = (
        "default"  # every request's tenant when no keys are configured (loopback only)
    )
    max_body_bytes: int = 4 << 20  # larger request bodies get 413
    max_turns: int = 32  # conversations with more messages pass through uncached
    # Cache chat requests that offer `tools` (off: they pass through). Tool definitions and
    # tool_choice are part of the fingerprint; the model's tool_calls are stored and replayed.
    cache_tools: bool = False
    request_timeout_s: float = 600.0  # deadline of one request to the service, generation included
    reconnect_backoff_s: float = 1.0  # longest wait between reconnects to a restarted service

    @property
    def host(self) -> str:
        return split_address(self.listen, "listen")[0]

    @property
    def port(self) -> int:
        return split_address(self.listen, "listen")[1]


def split_address(address: str, name: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise GatewayConfigError(f"{name}: expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_gateway_config(
    *, file: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> GatewayConfig:
    """Defaults, then the TOML file, then `overrides` (flags; None values are ignored)."""
    values: dict[str, Any] = {}
    if file is not None:
        try:
            values.update(tomllib.loads(file.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise GatewayConfigError(f"--config {file}: {exc}") from None
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in fields(GatewayConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise GatewayConfigError(
            f"{unknown[0]}: unknown gateway setting (settings: {', '.join(sorted(known))})"
        )
    values["keys"] = _keys(values.get("keys", []))
    config = replace(GatewayConfig(), **values)
    _check(config)
    return config


def _keys(rows: Any) -> dict[str, str]:
    if isinstance(rows, Mapping):
        return {str(k): str(v) for k, v in rows.items()}
    if not isinstance(rows, list):
        raise GatewayConfigError("keys: expected a list of {key, tenant} tables")
    keys: dict[str, str] = {}
    for i, row in enumerate(rows):
        if (
            not isinstance(row, Mapping)
            or not isinstance(row.get("key"), str)
            or not isinstance(row.get("tenant"), str)
        ):
            raise GatewayConfigError(f'keys[{i}]: expected key = "..." and tenant = "..."')
        if not row["key"] or not row["tenant"]:
            raise GatewayConfigError(f"keys[{i}]: key and tenant must not be empty")
        if row["key"] in keys:
            raise GatewayConfigError(f"keys[{i}]: the same key is listed twice")
        keys[row["key"]] = row["tenant"]
    return keys


def _check(config: GatewayConfig) -> None:
    split_address(config.server, "server")
    if not config.keys and not is_loopback(config.host):
        raise GatewayConfigError(
            f"keys: listening on {config.host} (not loopback) needs bearer keys; without keys every "
            "caller would be the same tenant"
        )
    for name in ("max_body_bytes", "max_turns"):
        if not isinstance(getattr(config, name), int) or getattr(config, name) <= 0:
            raise GatewayConfigError(f"{name}: must be a positive integer")
    for name in ("request_timeout_s", "reconnect_backoff_s"):
        if not isinstance(getattr(config, name), (int, float)) or getattr(config, name) <= 0:
            raise GatewayConfigError(f"{name}: must be a positive number of seconds")
    if not isinstance(config.cache_tools, bool):
        raise GatewayConfigError("cache_tools: must be true or false")
    if not config.default_tenant:
        raise GatewayConfigError("default_tenant: must not be empty")
