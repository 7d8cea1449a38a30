"""Reliability policy: retries, backoff, timeouts, deadline and circuit breaker settings.

A policy is layered: built-in defaults <- rules.yaml ``policy:`` <- the tier's ``policy:`` <- the
task's ``policy:``. Each layer sets only what it names (``timeouts.first_byte_s`` alone is fine). The
result is frozen; the dispatcher reads it per hop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from proxy.errors import ConfigError


@dataclass(frozen=True)
class Policy:
    retries: int = 1  # extra tries of the same target before moving to the next
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 4.0
    backoff_multiplier: float = 2.0
    jitter: float = 0.2  # +/- fraction of each backoff delay
    retry_after_cap_s: float = 10.0  # honour an upstream retry-after up to this; longer -> next target
    connect_s: float = 5.0
    first_byte_s: float = 120.0  # until the response (non-streaming) or the first chunk (streaming)
    idle_s: float = 60.0  # longest silence inside a response body or stream
    deadline_s: float = 300.0  # all attempts of one request together
    breaker_failures: int = 5  # consecutive failures that open a target's breaker
    breaker_cooldown_s: float = 30.0
    context_fallback: bool = False  # a context-length 400 moves on to the next target


DEFAULT = Policy()

# rules.yaml spelling -> Policy field. Nested mappings keep the YAML readable.
_KEYS: Mapping[str, str | Mapping[str, str]] = {
    "retries": "retries",
    "backoff": {
        "initial_s": "backoff_initial_s",
        "max_s": "backoff_max_s",
        "multiplier": "backoff_multiplier",
        "jitter": "jitter",
    },
    "retry_after_cap_s": "retry_after_cap_s",
    "timeouts": {"connect_s": "connect_s", "first_byte_s": "first_byte_s", "idle_s": "idle_s"},
    "deadline_s": "deadline_s",
    "breaker": {"failures": "breaker_failures", "cooldown_s": "breaker_cooldown_s"},
    "context_fallback": "context_fallback",
}
_TYPES = {f.name: type(f.default) for f in fields(Policy)}


def parse_layer(node: Any, path: str) -> dict[str, Any]:
    """One ``policy:`` mapping from rules.yaml -> the Policy fields it sets (validated)."""
    return _walk(node, path, _KEYS)


def _walk(node: Any, path: str, keys: Mapping[str, str | Mapping[str, str]]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise ConfigError(path, f"expected a mapping, got {type(node).__name__}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        spec = keys.get(key) if isinstance(key, str) else None
        here = f"{path}.{key}"
        if spec is None:
            raise ConfigError(here, f"unknown key (allowed: {', '.join(keys)})")
        if isinstance(spec, Mapping):
            out.update(_walk(value, here, spec))
        else:
            out[spec] = _value(value, here, _TYPES[spec])
    return out


def _value(value: Any, path: str, kind: type) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(path, f"expected a finite number, got {value!r}")
    if kind is int:
        if not isinstance(value, int) or value < 0:
            raise ConfigError(path, f"expected a whole number >= 0, got {value!r}")
        return value
    if value < 0 or (path.endswith(("_s", "multiplier")) and value == 0 and not path.endswith("initial_s")):
        raise ConfigError(path, f"expected a positive number, got {value!r}")
    return float(value)


def layered(*layers: Mapping[str, Any]) -> Policy:
    """Defaults with each layer's settings applied in order."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return replace(DEFAULT, **merged)
