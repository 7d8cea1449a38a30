"""Rewrite a client's chat body for one target: model, prompt variant, params, max-tokens cap, usage.

Precedence for a param: the client's value, else the task's, else the target's (tier params are merged
into each target at load). ``max_tokens`` is then capped by the tightest of the task's and the target's
``max_tokens_cap``. Every field tiergate does not own is forwarded untouched.
"""

from __future__ import annotations

from typing import Any

from proxy import prompts
from proxy.prompts import PromptVariant
from proxy.registry import Target, Task

_MAX_TOKENS_FIELDS = ("max_completion_tokens", "max_tokens")


def for_target(body: dict[str, Any], task: Task, target: Target, prompt: PromptVariant | None = None) -> dict[str, Any]:
    """A new body for ``target`` (worded per ``prompt``); ``body`` itself is left as the client sent it."""
    out = dict(body)
    out["model"] = target.model
    prompt = prompts.for_request(prompt, body)  # a variant rewords only the request shapes it names
    if prompt is not None and isinstance(out.get("messages"), list):
        out["messages"] = prompts.apply(out["messages"], prompt)

    # One spelling inside tiergate ("max_tokens"); the provider writes the field its API wants.
    client_max = None
    for name in _MAX_TOKENS_FIELDS:
        value = out.pop(name, None)
        if client_max is None and value is not None:
            client_max = value

    for source in (task.params, target.params):
        for key, value in source.items():
            if key == "max_tokens":
                if client_max is None:
                    client_max = value
            elif key not in out:
                out[key] = value

    caps = [c for c in (task.max_tokens_cap, target.max_tokens_cap) if c is not None]
    if caps:
        client_max = min([client_max, *caps]) if client_max is not None else min(caps)
    if client_max is not None:
        out["max_tokens"] = client_max

    if out.get("stream"):
        # Always ask for the usage chunk: the ledger needs exact tokens for streams too. The relay
        # drops that chunk again when the client did not ask for it.
        options = dict(out.get("stream_options") or {})
        options["include_usage"] = True
        out["stream_options"] = options
    return out


def client_wants_usage(body: dict[str, Any]) -> bool:
    """Whether the client itself asked for the final usage chunk of a stream."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
