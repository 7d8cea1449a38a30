"""A Responses API request as a chat request: strictly for a translated target, leniently for the rest.

``chat_request`` is what a target without the Responses API is sent (before the chat rewrite applies the
tier's params): ``instructions`` and ``input`` (a string, or items: messages with text, image and file
parts, function calls and their outputs) become ``messages``; function ``tools``, ``tool_choice``,
``parallel_tool_calls``, ``text.format``, ``reasoning.effort``, ``max_output_tokens``, the sampling params
and the end-user ids keep their chat meaning. Anything else a chat call cannot honour is an
``InvalidRequest`` naming the field (``Unsupported``): built-in tools, conversation state, stored
prompts, reasoning items, ``include`` entries, non-default values of fields chat has no notion of.

``chat_view`` is the same translation made leniently (what cannot be translated is left out, nothing
raises): the chat-shaped view that the classifier, the ledger's token estimate and the telemetry read,
whichever target serves the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.errors import InvalidRequest

# Fields read below; each keeps its meaning in the chat request (or, ``metadata``, in the answer).
_TRANSLATED = frozenset(
    {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "reasoning",
     "max_output_tokens", "temperature", "top_p", "metadata", "stream", "user", "safety_identifier"}
)  # fmt: skip
# Hints that change no answer: caching keys (no such cache on a translated target) and stream padding.
_NO_EFFECT = frozenset({"stream_options", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options"})
# Fields accepted at their default only: a stateless chat call behaves so already.
_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "store": (False, None),
    "background": (False, None),
    "truncation": ("disabled", None),
    "service_tier": ("auto", "default", None),
    "top_logprobs": (0, None),
    "include": ((), None),
}
# Why a field cannot be honoured through chat; a field neither here nor above is unknown to tiergate.
_STATE = "it refers to state kept by the provider that made it"
_REASONS = {
    "previous_response_id": _STATE,
    "conversation": _STATE,
    "prompt": "stored prompts live at the provider that stores them",
    "store": "nothing stores a translated response",
    "background": "a translated call runs in its request",
    "include": "chat completions return none of those extra outputs",
    "max_tool_calls": "it limits built-in tools, which chat completions do not have",
    "context_management": "chat completions do not manage context",
}
_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})


class Unsupported(InvalidRequest):
    """400: a field of the request that a translated target cannot honour."""

    code = "unsupported_parameter"


def chat_request(body: Mapping[str, Any], target: str) -> dict[str, Any]:
    """The chat request for ``body`` on ``target`` (a ``provider::model`` key, for the messages); raises
    ``InvalidRequest`` naming the first field it cannot translate."""
    return _Translation(body, target).chat()


def chat_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """The chat-shaped view of ``body`` (untranslatable parts left out); never raises."""
    return _Translation(body, None).chat()


class _Translation:
    """One request's translation; strict when it has a target (``refuse`` raises), lenient without."""

    def __init__(self, body: Mapping[str, Any], target: str | None) -> None:
        self.body = body
        self.target = target

    def refuse(self, param: str, why: str) -> None:
        if self.target is not None:
            raise Unsupported(
                f"Unsupported parameter: '{param}' on {self.target}, which tiergate serves by translating the "
                f"Responses API to chat completions ({why}).",
                param=param,
            )

    def chat(self) -> dict[str, Any]:
        body = self.body
        self._check_fields()
        out: dict[str, Any] = {"model": body.get("model"), "messages": self._messages()}
        for name in ("temperature", "top_p", "parallel_tool_calls", "stream", "user", "safety_identifier"):
            if body.get(name) is not None:
                out[name] = body[name]
        if body.get("max_output_tokens") is not None:
            out["max_tokens"] = body["max_output_tokens"]
        tools = self._tools()
        if tools:
            out["tools"] = tools
        choice = self._tool_choice(body.get("tool_choice"))
        if choice is not None:
            out["tool_choice"] = choice
        response_format = self._text(body.get("text"))
        if response_format is not None:
            out["response_format"] = response_format
        effort = self._reasoning(body.get("reasoning"))
        if effort is not None:
            out["reasoning_effort"] = effort
        return out

    # --- top-level fields ---------------------------------------------------------------------------

    def _check_fields(self) -> None:
        for name, value in self.body.items():
            if name in _TRANSLATED or name in _NO_EFFECT or value is None:
                continue
            defaults = _DEFAULTS.get(name)
            if defaults is not None and (value in defaults or (isinstance(value, list) and not value)):
                continue
            if defaults is not None or name in _REASONS:
                self.refuse(name, _REASONS.get(name, "chat completions only have its default"))
            else:
                self.refuse(name, "tiergate does not know this field")

    def _text(self, text: Any) -> dict[str, Any] | None:
        if not isinstance(text, dict):
            return None
        if text.get("verbosity") not in (None, "medium"):
            self.refuse("text.verbosity", "chat completions have no verbosity on every target")
        fmt = text.get("format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind is None or kind == "text":
            return None
        if kind == "json_object":
            return {"type": "json_object"}
        if kind == "json_schema" and isinstance(fmt, dict):
            spec = {k: fmt[k] for k in ("name", "description", "schema", "strict") if fmt.get(k) is not None}
            return {"type": "json_schema", "json_schema": spec}
        self.refuse("text.format.type", f"no chat response format is {kind!r}")
        return None

    def _reasoning(self, reasoning: Any) -> str | None:
        if not isinstance(reasoning, dict):
            return None
        for key, value in reasoning.items():
            if key != "effort" and value is not None:
                self.refuse(f"reasoning.{key}", "chat completions take a reasoning effort only")
        effort = reasoning.get("effort")
        return effort if isinstance(effort, str) and effort in _EFFORTS else None

    def _tools(self) -> list[dict[str, Any]]:
        tools = self.body.get("tools")
        out: list[dict[str, Any]] = []
        for i, tool in enumerate(tools if isinstance(tools, list) else ()):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function" or not isinstance(tool, dict):
                self.refuse(f"tools[{i}]", f"{kind!r} is a tool the provider runs; only function tools translate")
                continue
            for key in ("defer_loading", "allowed_callers", "namespace"):
                if tool.get(key):
                    self.refuse(f"tools[{i}].{key}", "it belongs to built-in tool search")
            function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
            out.append({"type": "function", "function": function})
        return out

    def _tool_choice(self, choice: Any) -> Any:
        if choice is None or choice in ("none", "auto", "required"):
            return choice
        if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
            return {"type": "function", "function": {"name": choice["name"]}}
        kind = choice.get("type") if isinstance(choice, dict) else choice
        self.refuse("tool_choice", f"a tool choice of type {kind!r} does not translate")
        return None

    # --- instructions and input -------------------------------------------------------------------------

    def _messages(self) -> list[dict[str, Any]]:
        body = self.body
        messages: list[dict[str, Any]] = []
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            messages.append({"role": "system", "content": instructions})
        items = body.get("input")
        if isinstance(items, str):
            messages.append({"role": "user", "content": items})
            return messages
        for i, item in enumerate(items if isinstance(items, list) else ()):
            self._item(item, f"input[{i}]", messages)
        return messages

    def _item(self, item: Any, at: str, messages: list[dict[str, Any]]) -> None:
        if not isinstance(item, dict):
            self.refuse(at, "an input item is an object")
            return
        kind = item.get("type", "message")
        if kind == "message":
            message = self._message(item, at)
            if message is not None:
                messages.append(message)
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
            }
            last = messages[-1] if messages else None
            # Calls made in one turn are one assistant message with its text, as chat has it.
            if last is not None and last.get("role") == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else self._parts(output, f"{at}.output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": content})
        elif kind in ("reasoning", "item_reference", "compaction"):
            self.refuse(at, f"a {kind} item is state of the provider that made it")
        else:
            self.refuse(at, f"a {kind!r} item belongs to a tool the provider runs")

    def _message(self, item: Mapping[str, Any], at: str) -> dict[str, Any] | None:
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            self.refuse(f"{at}.role", f"no chat role is {role!r}")
            return None
        content = item.get("content")
        if isinstance(content, str):
            return {"role": role, "content": content}
        parts = self._parts(content, f"{at}.content")
        if role == "assistant":
            # An earlier answer passed back: chat keeps an assistant's text (and refusal) as a string.
            texts = [p["text"] for p in parts if p.get("type") == "text"]
            refusals = [p["refusal"] for p in parts if p.get("type") == "refusal"]
            message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
            if refusals:
                message["refusal"] = "".join(refusals)
            return message
        return {"role": role, "content": parts}

    def _parts(self, parts: Any, at: str) -> list[dict[str, Any]]:
        if not isinstance(parts, list):
            self.refuse(at, "expected a string or an array of content parts")
            return []
        out: list[dict[str, Any]] = []
        for j, part in enumerate(parts):
            where = f"{at}[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if not isinstance(part, dict):
                self.refuse(where, "a content part is an object")
            elif kind in ("input_text", "output_text"):
                out.append({"type": "text", "text": str(part.get("text") or "")})
            elif kind == "refusal":
                out.append({"type": "refusal", "refusal": str(part.get("refusal") or "")})
            elif kind == "input_image":
                if part.get("file_id") or not isinstance(part.get("image_url"), str):
                    self.refuse(f"{where}.file_id", "file ids live at the provider that stores the file")
                    continue
                image = {"url": part["image_url"], **({"detail": part["detail"]} if part.get("detail") else {})}
                out.append({"type": "image_url", "image_url": image})
            elif kind == "input_file":
                if part.get("file_id") or part.get("file_url") or not isinstance(part.get("file_data"), str):
                    self.refuse(where, "a file is translated only inline, as file_data")
                    continue
                file = {k: part[k] for k in ("file_data", "filename") if isinstance(part.get(k), str)}
                out.append({"type": "file", "file": file})
            else:
                self.refuse(where, f"no chat content part is {kind!r}")
        return out
