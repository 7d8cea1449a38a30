"""Process settings: collected from CLI flags or ``TIERGATE_*`` environment variables, then frozen."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "TIERGATE_"
_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass(frozen=True)
class Settings:
    config: str = "rules.yaml"
    host: str = "127.0.0.1"
    port: int = 4000
    db: str = "tiergate.db"
    ledger: bool = True
    ledger_queue: int = 10_000  # rows waiting for SQLite before new ones are dropped (and counted)
    transport: str = "aiohttp"  # upstream HTTP transport; see proxy.upstream.TRANSPORTS
    log_level: str = "info"
    workers: int = 1  # uvicorn worker processes; they share the ledger file (SQLite WAL)
    # Largest request body accepted (413 beyond): room for base64 images and PDFs, as OpenAI and
    # Anthropic accept (Anthropic's Messages API takes up to 32 MB), and the same bound on an upstream's
    # non-streamed answer.
    # The key of the classifier's feature hashing (TIERGATE_FEATURE_KEY): with it secret and kept apart
    # from the ledger, the ledger's hashed features cannot be tested for a given word.
    feature_key: str = field(default="", repr=False)
    # Background generations (precompute, stale regeneration): at most this many at once, this many queued.
    generation_concurrency: int = 4
    generation_queue: int = 1000
    cache_max_mb: int = 256  # the stored answers' table is pruned, oldest first, to this size
    reload: bool = True  # re-read the rules file when it changes, and on SIGHUP
    reload_interval_s: float = 1.0  # how often the rules file is looked at
    max_body_mb: int = 32
    max_event_mb: int = 8  # largest single event of an upstream stream (upstream_bad_response beyond)
    head_timeout_s: float = 10.0  # a connection's request head must be complete within this (slowloris)
    max_connections: int = 0  # open client connections at most; 0: 10,000 or what the fd limit allows
    # Serve on a non-loopback address without client keys (an open relay of the provider keys) only
    # when this says it is intended (a network boundary in front does the authenticating).
    allow_unauthenticated: bool = False
    # Mark calls that carry ``X-Tiergate-Eval: <run id>`` as eval traffic in the ledger (the audit leaves
    # them out). Only ``tiergate eval``'s in-process server sets it: a production client must not be able
    # to hide its calls from the audit with a header.
    eval_traffic: bool = False
    # Client keys tiergate accepts (comma-separated in TIERGATE_API_KEYS); empty = no client auth.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    # The key GET /metrics wants (TIERGATE_METRICS_KEY); empty: the client keys, when there are any.
    metrics_key: str = field(default="", repr=False)
    # Tune the interpreter for serving (proxy.runtime: the garbage collector, the GIL's switch interval):
    # what ``tiergate serve`` does in its own processes; an app run inside another program leaves it alone.
    tune_runtime: bool = False

    def __post_init__(self) -> None:
        # Checked here so a bad flag or variable is one line from the CLI, not a start-up traceback.
        # (The transport name is checked by the upstream client, which owns the table of transports.)
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port: {self.port} is not a TCP port")
        if self.workers < 1:
            raise ValueError(f"--workers: expected 1 or more, got {self.workers}")
        if not 0 < self.head_timeout_s <= 3600:
            raise ValueError(f"--head-timeout-s: expected seconds in (0, 3600], got {self.head_timeout_s}")
        if self.max_connections < 0:
            raise ValueError(f"--max-connections: expected 0 (automatic) or more, got {self.max_connections}")
        for name in ("generation_concurrency", "generation_queue", "cache_max_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{ENV_PREFIX}{name.upper()}: expected 1 or more, got {getattr(self, name)}")
        if not 0 < self.reload_interval_s <= 3600:
            raise ValueError(f"TIERGATE_RELOAD_INTERVAL_S: expected seconds in (0, 3600], got {self.reload_interval_s}")
        if self.max_event_mb < 1:
            raise ValueError(f"--max-event-mb: expected 1 or more, got {self.max_event_mb}")
        if self.max_body_mb < 1:
            raise ValueError(f"--max-body-mb: expected 1 or more, got {self.max_body_mb}")
        if self.ledger_queue < 1:
            raise ValueError(f"TIERGATE_LEDGER_QUEUE: expected 1 or more, got {self.ledger_queue}")
        if self.log_level.lower() not in _LOG_LEVELS:
            raise ValueError(f"--log-level: {self.log_level!r} is not one of {', '.join(_LOG_LEVELS)}")

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb * 2**20

    def to_env(self) -> dict[str, str]:
        """These settings as ``TIERGATE_*`` variables (what ``from_env`` reads back)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "1" if value else "0"
            out[ENV_PREFIX + f.name.upper()] = str(value)
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``TIERGATE_<FIELD>`` variables, then explicit (non-None) overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _coerce(f.name, raw, f.default)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _coerce(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(k.strip() for k in raw.split(",") if k.strip())
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}: invalid value {raw!r}") from None
    return raw
