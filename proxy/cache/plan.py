"""Whether, and how, a stored answer may serve one request: a pure function of the route, headers and body.

Two kinds of stored answer:

- **keyed**: the client names the generation (``X-Tiergate-Key: dashboard:42:narrative``) and the data it
  was made from (``X-Tiergate-Version``). A stored answer of the same version is a hit; of another
  version it is served stale while one regeneration runs.
- **exact**: a task (or its tier) with ``cache: {ttl_s}`` keeps answers by the request *as sent upstream*
  (provider, model and the rewritten body, canonically encoded), leaving out what does not change the
  answer (``stream``, ``stream_options``, ``user``): a streamed request may be answered from a stored
  non-streamed one and the other way round. Requests whose answers vary (temperature > 0, n > 1) are
  kept only if the policy says ``nondeterministic: true``.

``Cache-Control`` on the request: ``no-cache`` (fetch fresh, store it), ``no-store`` (neither read nor
store), ``max-age=N`` (accept an entry at most N seconds old).

Both kinds are scoped to the client key that asked (``scope``): one app's ``dashboard:42`` is not
another's, and no client learns from a hit what another client asked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy import rewrite
from proxy.router import Hop, Route

KEY_HEADER = "x-tiergate-key"
VERSION_HEADER = "x-tiergate-version"
_IRRELEVANT = ("stream", "stream_options", "user")
MAX_KEY = 256


@dataclass(frozen=True)
class Plan:
    kind: str  # "keyed" | "exact"
    key: str  # the store's key
    scope: str = ""  # the client it belongs to
    name: str | None = None  # keyed: the key as the client named it
    version: str | None = None  # keyed: the data version asked for
    ttl_s: float | None = None  # exact: how long an answer is kept
    read: bool = True  # a stored answer may serve it (not no-cache)
    write: bool = True  # its answer may be stored (not no-store)
    max_age: float | None = None  # Cache-Control max-age

    @property
    def bypass(self) -> bool:
        """Neither read nor written: the response says ``x-tiergate-cache: bypass``."""
        return not self.read and not self.write


def plan(route: Route, headers: Mapping[str, str], body: Mapping[str, Any], scope: str = "") -> Plan | None:
    """The request's cache plan; ``None`` when neither a key nor its task's cache applies. ``scope``: the
    client that asked (its name; empty without client keys)."""
    control = _control(headers.get("cache-control", ""))
    read = "no-cache" not in control and "no-store" not in control
    write = "no-store" not in control
    max_age = _seconds(control.get("max-age"))
    named = headers.get(KEY_HEADER)
    if named:
        version = (headers.get(VERSION_HEADER) or "")[:MAX_KEY] or None
        name = named[:MAX_KEY]
        return Plan("keyed", keyed_key(scope, name), scope, name, version, read=read, write=write, max_age=max_age)
    policy = route.task.cache or route.tier.cache
    if policy is None:
        return None
    hop = route.hops[0]
    sent = rewrite.for_target(dict(body), route.task, hop.target, hop.prompt)
    key = exact_key(scope, hop, sent)
    if not policy.nondeterministic and _varies(sent):
        return Plan("exact", key, scope, ttl_s=policy.ttl_s, read=False, write=False)
    return Plan("exact", key, scope, ttl_s=policy.ttl_s, read=read, write=write, max_age=max_age)


def keyed_key(scope: str, name: str) -> str:
    """The store's key of the generation ``name`` of the client ``scope`` (names are cut to 256 characters)."""
    return f"gen:{scope}:{name[:MAX_KEY]}"


def exact_key(scope: str, hop: Hop, sent: Mapping[str, Any]) -> str:
    """The exact cache's key of a request as sent to ``hop``'s target (``rewrite.for_target``'s body)."""
    kept = {k: v for k, v in sent.items() if k not in _IRRELEVANT}
    canonical = orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
    head = f"{scope}\n{hop.target.key}\n".encode()
    return "x:" + hashlib.sha256(head + canonical).hexdigest()


def _varies(sent: Mapping[str, Any]) -> bool:
    temperature, n = sent.get("temperature"), sent.get("n")
    hot = isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature > 0
    many = isinstance(n, int) and not isinstance(n, bool) and n > 1
    return hot or many


def _control(value: str) -> dict[str, str]:
    out = {}
    for part in value.lower().split(","):
        name, _, argument = part.strip().partition("=")
        if name:
            out[name] = argument.strip().strip('"')
    return out


def _seconds(value: str | None) -> float | None:
    return float(value) if value is not None and value.isdigit() else None
