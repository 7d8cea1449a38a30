"""A client's Responses body for one native target: model, prompt variant, params, max-output cap.

As for chat (``proxy.rewrite``): a param applies where the client set none, the task's before the
target's; ``max_tokens`` (the registry's one spelling) becomes ``max_output_tokens``, capped by the
tightest ``max_tokens_cap``. Registry params are written in chat's names, so each is sent under its
Responses name (``reasoning_effort`` -> ``reasoning.effort``, ``verbosity`` -> ``text.verbosity``); a chat
param the Responses API does not take (``stop``, ``seed``, penalties...) is left out, since the upstream
would reject the whole call. Every field of the client's body is forwarded untouched.

A prompt variant rewrites ``instructions`` (the Responses API's system message) and the last user
message of ``input``, as ``proxy.prompts`` does to chat messages, and only the request shapes its
``applies_to`` names (read from the request's chat view: function ``tools``, ``text.format``).
"""

from __future__ import annotations

import logging
from typing import Any

from proxy import prompts
from proxy.prompts import PromptVariant
from proxy.registry import Target, Task
from proxy.responses.request import chat_view
from proxy.responses.wire import MIN_OUTPUT_TOKENS

log = logging.getLogger("tiergate.responses")

# Registry params the Responses API takes under the same name.
_SAME_NAME = frozenset(
    {"temperature", "top_p", "parallel_tool_calls", "service_tier", "store", "metadata", "user",
     "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "top_logprobs", "truncation"}
)  # fmt: skip
# Registry params that are a field of an object there: (object, field).
_NESTED = {"reasoning_effort": ("reasoning", "effort"), "verbosity": ("text", "verbosity")}
_SYSTEM_ROLES = ("system", "developer")


def for_target(body: dict[str, Any], task: Task, target: Target, prompt: PromptVariant | None = None) -> dict[str, Any]:
    """A new body for ``target``; ``body`` itself is left as the client sent it."""
    out = dict(body)
    out["model"] = target.model
    prompt = prompts.for_request(prompt, chat_view(body)) if prompt is not None else None
    if prompt is not None:
        _apply_prompt(out, prompt)
    client_max = out.pop("max_output_tokens", None)
    budget = None
    for source in (task.params, target.params):
        for key, value in source.items():
            if key == "max_tokens":
                budget = value if budget is None else budget
            elif key in _NESTED:
                parent, name = _NESTED[key]
                inner = out.get(parent)
                inner = dict(inner) if isinstance(inner, dict) else {}
                if inner.get(name) is None:
                    out[parent] = {**inner, name: value}
            elif key in _SAME_NAME:
                out.setdefault(key, value)
            else:
                log.debug("param %s of %s has no Responses API equivalent; not sent", key, target.key)
    # The Responses API refuses a max_output_tokens below 16; a tier's smaller budget (written for chat,
    # where 8 tokens is a valid yes/no) is raised to it rather than failing every call.
    limit = client_max if client_max is not None else budget
    bounds = [b for b in (limit, task.max_tokens_cap, target.max_tokens_cap) if b is not None]
    if bounds:
        out["max_output_tokens"] = max(min(bounds), MIN_OUTPUT_TOKENS)
    return out


def _apply_prompt(out: dict[str, Any], variant: PromptVariant) -> None:
    if variant.system is not None:
        instructions = out.get("instructions") if isinstance(out.get("instructions"), str) else None
        if variant.system_mode == "prepend":
            out["instructions"] = f"{variant.system}\n\n{instructions}" if instructions else variant.system
        else:
            items = out.get("input")
            is_system = [_is_system(item) for item in items] if isinstance(items, list) else []
            originals = [instructions] if instructions else []
            if isinstance(items, list):
                originals += [_text(item.get("content")) for item, s in zip(items, is_system, strict=True) if s]
                out["input"] = [item for item, s in zip(items, is_system, strict=True) if not s]
            original = "\n".join(originals)
            out["instructions"] = (
                variant.system if variant.system_mode == "replace" else variant.system.replace("{original}", original)
            )
    if variant.append_to_last_user:
        out["input"] = _append_to_last_user(out.get("input"), variant.append_to_last_user)


def _append_to_last_user(items: Any, extra: str) -> Any:
    if isinstance(items, str):
        return f"{items}\n\n{extra}" if items else extra
    if not isinstance(items, list):
        return items
    out = list(items)
    for i in range(len(out) - 1, -1, -1):
        item = out[i]
        if isinstance(item, dict) and item.get("type", "message") == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, list):
                content = [*content, {"type": "input_text", "text": extra}]
            else:
                content = f"{content}\n\n{extra}" if isinstance(content, str) and content else extra
            out[i] = {**item, "content": content}
            break
    return out


def _is_system(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type", "message") == "message" and item.get("role") in _SYSTEM_ROLES


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "input_text"
        )
    return ""
