"""Typed, bounded index parameters: one validator for build and search params of every kind."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from curacache.errors import InvalidArgument


@dataclass(frozen=True, slots=True)
class Param:
    default: float
    low: float
    high: float
    integer: bool = False
    doc: str = ""


def resolve_params(
    specs: Mapping[str, Param], given: Mapping[str, float], *, field: str
) -> dict[str, float]:
    """Defaults overlaid with `given`; unknown names or out-of-range values name the field."""
    out = {name: spec.default for name, spec in specs.items()}
    for name, value in given.items():
        spec = specs.get(name)
        if spec is None:
            known = ", ".join(sorted(specs)) or "none"
            raise InvalidArgument(f"{field}.{name}", f"unknown parameter (accepted: {known})")
        value = float(value)
        if not math.isfinite(value) or not spec.low <= value <= spec.high:
            raise InvalidArgument(
                f"{field}.{name}", f"must be in [{spec.low:g}, {spec.high:g}], got {value:g}"
            )
        if spec.integer and value != int(value):
            raise InvalidArgument(f"{field}.{name}", f"must be an integer, got {value:g}")
        out[name] = value
    return out
