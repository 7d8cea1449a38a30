"""A stored answer, and the two ways to turn an answer into the other shape.

The cache keeps a ``chat.completion`` whatever the call that produced it was: ``Assembler`` builds one from
a stream's chunks as they are relayed (content, refusal and tool-call fragments joined per choice), and
``replay`` turns a stored completion back into the chunks a streaming client expects (a role chunk, the
content, each tool call, the finish chunk, the usage chunk when the client asked for it). So a streamed
request can be answered from a stored non-streamed one and the other way round.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.usage import Usage


@dataclass(frozen=True)
class Answer:
    """One stored generation: the completion and what it cost to make (for the ledger's avoided cost)."""

    body: Mapping[str, Any]  # the chat.completion, as the upstream produced it
    usage: Usage | None
    provider: str  # the target that produced it
    model: str
    tier: str
    created: float = field(default_factory=time.time)  # epoch seconds

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "body": self.body,
                "usage": self.usage.to_openai() if self.usage else None,
                "provider": self.provider,
                "model": self.model,
                "tier": self.tier,
                "created": self.created,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Answer:
        raw = orjson.loads(data)
        return cls(
            body=raw["body"],
            usage=Usage.from_openai(raw.get("usage")),
            provider=str(raw["provider"]),
            model=str(raw["model"]),
            tier=str(raw["tier"]),
            created=float(raw["created"]),
        )


class Assembler:
    """Collects a stream's chunks into the ``chat.completion`` they spell (or ``None`` if it never finished)."""

    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self.usage: Mapping[str, Any] | None = None

    def feed(self, chunk: Mapping[str, Any]) -> None:
        if not self._head:
            self._head = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint", "service_tier")}
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or not isinstance(choice.get("index", 0), int):
                continue
            state = self._choices.setdefault(choice.get("index", 0), {"content": [], "refusal": [], "tools": {}})
            delta: dict[str, Any] = choice["delta"] if isinstance(choice.get("delta"), dict) else {}
            for part in ("content", "refusal"):
                if isinstance(delta.get(part), str):
                    state[part].append(delta[part])
            for call in delta.get("tool_calls") or ():
                if not isinstance(call, dict):
                    continue
                slot = state["tools"].setdefault(call.get("index", 0), {"id": None, "name": "", "arguments": []})
                slot["id"] = call.get("id") or slot["id"]
                function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else {}
                slot["name"] += str(function.get("name") or "")
                slot["arguments"].append(str(function.get("arguments") or ""))
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]

    def completion(self) -> dict[str, Any] | None:
        """The completion, when every choice finished; else ``None`` (a cut stream is not stored)."""
        if not self._choices or any("finish_reason" not in c for c in self._choices.values()):
            return None
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(state["content"]) if state["content"] else None,
                "refusal": "".join(state["refusal"]) if state["refusal"] else None,
            }
            if state["tools"]:
                message["tool_calls"] = [
                    {
                        "id": t["id"],
                        "type": "function",
                        "function": {"name": t["name"], "arguments": "".join(t["arguments"])},
                    }
                    for _, t in sorted(state["tools"].items())
                ]
            choices.append(
                {"index": index, "message": message, "finish_reason": state["finish_reason"], "logprobs": None}
            )
        body = {
            **{k: v for k, v in self._head.items() if v is not None},
            "object": "chat.completion",
            "choices": choices,
        }
        if self.usage is not None:
            body["usage"] = dict(self.usage)
        return body


def replay(body: Mapping[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects that stream ``body``, in order (without ``[DONE]``)."""
    head = {
        "id": body.get("id", ""),
        "object": "chat.completion.chunk",
        "created": body.get("created", int(time.time())),
        "model": body.get("model", ""),
    }
    if body.get("system_fingerprint") is not None:
        head["system_fingerprint"] = body["system_fingerprint"]
    out: list[dict[str, Any]] = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**head, "choices": [choice], **({"usage": None} if include_usage else {})}

    for choice in body.get("choices") or ():
        index, message = choice.get("index", 0), choice.get("message") or {}
        # As OpenAI opens a choice: content "" before text, null before tool calls only.
        opening = "" if isinstance(message.get("content"), str) else None
        out.append(chunk(index, {"role": "assistant", "content": opening}))
        if message.get("content"):
            out.append(chunk(index, {"content": message["content"]}))
        if message.get("refusal"):
            out.append(chunk(index, {"refusal": message["refusal"]}))
        for i, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") or {}
            first = {"index": i, "id": call.get("id"), "type": "function",
                     "function": {"name": function.get("name", ""), "arguments": function.get("arguments", "")}}  # fmt: skip
            out.append(chunk(index, {"tool_calls": [first]}))
        out.append(chunk(index, {}, choice.get("finish_reason") or "stop"))
    if include_usage:
        out.append({**head, "choices": [], "usage": body.get("usage")})
    return out
