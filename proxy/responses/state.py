"""Provider-bound state: which Responses requests may only be served where their state lives.

A response id, a conversation, a stored prompt, a reasoning item's encrypted content, a file a built-in
tool searches: each resolves only at the provider (and the key) that holds it. Sent anywhere else, the
call fails there or, worse, is answered without that context. So such a request only tries the
targets of its first target's provider; when that provider is down the client gets its error, not an
answer from somewhere that silently lacks the history. ``store: true`` and ``background: true`` bind too:
the client will come back to that provider for the stored or background response. A ``store`` left
out is taken as stateless (the SDKs leave it out), so an everyday call keeps its fallbacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from proxy.router import Route

_BOUND_FIELDS = ("previous_response_id", "conversation", "prompt")
_CLIENT_TOOLS = frozenset({"function", "custom"})  # tools the client runs; every other type the provider runs
_BOUND_ITEMS = frozenset({"item_reference", "reasoning", "compaction"})


def bound_by(body: Mapping[str, Any]) -> str | None:
    """The field that binds ``body`` to its provider (``tools[2]``, ``store``...), or ``None``: stateless."""
    for name in _BOUND_FIELDS:
        if body.get(name):
            return name
    for name in ("store", "background"):
        if body.get(name) is True:
            return name
    tools = body.get("tools")
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind not in _CLIENT_TOOLS:
            return f"tools[{i}]"
    items = body.get("input")
    for i, item in enumerate(items if isinstance(items, list) else ()):
        kind = item.get("type") if isinstance(item, dict) else None
        if isinstance(kind, str) and kind in _BOUND_ITEMS:
            return f"input[{i}]"
    return None


def pinned(route: Route) -> Route:
    """``route`` with only the hops of its first target's provider."""
    provider = route.hops[0].target.provider
    return replace(route, hops=tuple(hop for hop in route.hops if hop.target.provider == provider))
