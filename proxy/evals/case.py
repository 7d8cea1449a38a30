"""One golden case: the request to send, and what a good answer must satisfy (``expect``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Case:
    id: str
    messages: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any]  # request fields beside the messages (response_format, tools, ...)
    expect: Mapping[str, Any]  # per-case values the scorers read
    line: int  # in cases.jsonl, for messages that point at it

    def request(self) -> dict[str, Any]:
        """The chat request body for this case (``model: auto``: the registry under test decides)."""
        return {"model": "auto", "messages": [dict(m) for m in self.messages], **self.params}

    def prompt(self) -> str:
        """The last user message's text (what a judge is shown as the task's input)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return content
                if isinstance(content, list):
                    return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return ""
