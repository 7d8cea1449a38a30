"""Prompt variants: the same request, worded for the tier that serves it.

A prompt tuned for a frontier model often underperforms verbatim on a small one: smaller models want
more explicit structure. A tier (or a task on a given tier) may carry a variant that rewrites the
messages after routing, so the client's code never changes:

    prompt:
      name: small-v1                       # recorded in the ledger's prompt_variant column
      system: "Answer in one line."        # text of the system message ...
      system_mode: prepend                 # ... prepend (default) | replace | wrap ("{original}")
      append_to_last_user: "Reply with the label only."
      applies_to: [text]                   # only requests of these shapes (default: every request)

It is applied per hop, so a fallback into another tier gets that tier's variant. A request's shape is
``tools`` when it offers tools (and ``tool_choice`` is not ``none``), else its ``response_format`` type:
``json_schema``, ``json_object`` or ``text`` (also without a ``response_format``). Wording meant for a
prose answer ("no preamble, no explanation") has no business in a schema-bound answer or a tool turn:
``applies_to: [text]`` keeps it out of them. A variant that does not apply leaves the messages as the
client sent them, and the ledger's ``prompt_variant`` is then NULL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.errors import ConfigError

_MODES = ("prepend", "replace", "wrap")
_SYSTEM_ROLES = ("system", "developer")
SHAPES = ("text", "json_object", "json_schema", "tools")


@dataclass(frozen=True)
class PromptVariant:
    name: str
    system: str | None = None
    system_mode: str = "prepend"
    append_to_last_user: str | None = None
    applies_to: frozenset[str] | None = None  # request shapes it rewords; None: every request

    def applies(self, body: Mapping[str, Any]) -> bool:
        """Whether this variant rewords ``body`` (the client's request), by its shape."""
        return self.applies_to is None or shape(body) in self.applies_to


def shape(body: Mapping[str, Any]) -> str:
    """``tools`` for a request that offers tools, else its ``response_format`` type (``text`` without one)."""
    tools = body.get("tools")
    if isinstance(tools, list) and tools and body.get("tool_choice") != "none":
        return "tools"
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    return kind if isinstance(kind, str) else "text"


def for_request(variant: PromptVariant | None, body: Mapping[str, Any]) -> PromptVariant | None:
    """The variant that rewords ``body``: ``variant`` when it applies to its shape, else ``None``."""
    return variant if variant is not None and variant.applies(body) else None


def parse(node: Any, path: str, default_name: str) -> PromptVariant:
    """A ``prompt:`` mapping from rules.yaml -> a validated variant."""
    if not isinstance(node, dict):
        raise ConfigError(path, f"expected a mapping, got {type(node).__name__}")
    allowed = {"name", "system", "system_mode", "append_to_last_user", "applies_to"}
    for key in node:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    for key in allowed - {"applies_to"}:
        if key in node and not isinstance(node[key], str):
            raise ConfigError(f"{path}.{key}", f"expected a string, got {type(node[key]).__name__}")
    mode = node.get("system_mode", "prepend")
    if mode not in _MODES:
        raise ConfigError(f"{path}.system_mode", f"{mode!r} is not one of {', '.join(_MODES)}")
    system = node.get("system")
    if mode == "wrap" and system is not None and "{original}" not in system:
        raise ConfigError(f"{path}.system", "system_mode 'wrap' needs an {original} placeholder")
    if system is None and node.get("append_to_last_user") is None:
        raise ConfigError(path, "a prompt variant needs `system` or `append_to_last_user`")
    return PromptVariant(
        name=node.get("name") or default_name,
        system=system,
        system_mode=mode,
        append_to_last_user=node.get("append_to_last_user"),
        applies_to=_shapes(node["applies_to"], f"{path}.applies_to") if "applies_to" in node else None,
    )


def _shapes(node: Any, path: str) -> frozenset[str]:
    """``applies_to``: a shape or a non-empty list of them."""
    items = [node] if isinstance(node, str) else node
    if not isinstance(items, list) or not items:
        raise ConfigError(path, f"expected a request shape or a non-empty list of them ({', '.join(SHAPES)})")
    for i, item in enumerate(items):
        if item not in SHAPES:
            where = path if isinstance(node, str) else f"{path}[{i}]"
            raise ConfigError(where, f"{item!r} is not a request shape ({', '.join(SHAPES)})")
    return frozenset(items)


def apply(messages: list[Any], variant: PromptVariant) -> list[Any]:
    """New messages with ``variant`` applied; the client's list and dicts are not modified."""
    out = list(messages)
    if variant.system is not None:
        out = _apply_system(out, variant)
    if variant.append_to_last_user:
        for i in range(len(out) - 1, -1, -1):
            message = out[i]
            if isinstance(message, dict) and message.get("role") == "user":
                out[i] = {**message, "content": _append(message.get("content"), variant.append_to_last_user)}
                break
    return out


def _apply_system(messages: list[Any], variant: PromptVariant) -> list[Any]:
    assert variant.system is not None
    is_system = [isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES for m in messages]
    if variant.system_mode == "prepend":
        return [{"role": "system", "content": variant.system}, *messages]
    original = "\n".join(_text(m.get("content")) for m, s in zip(messages, is_system, strict=True) if s)
    rest = [m for m, s in zip(messages, is_system, strict=True) if not s]
    text = variant.system if variant.system_mode == "replace" else variant.system.replace("{original}", original)
    return [{"role": "system", "content": text}, *rest]


def _append(content: Any, extra: str) -> Any:
    if isinstance(content, list):
        return [*content, {"type": "text", "text": extra}]
    if isinstance(content, str) and content:
        return f"{content}\n\n{extra}"
    return extra


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""
