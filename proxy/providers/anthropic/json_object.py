"""``response_format: json_object`` on the Messages API: an instruction on the way in, a check on the way out.

The Messages API has a JSON mode only with a schema (``output_config.format``); ``json_object`` asks for
any JSON object, which OpenAI guarantees and the client's code relies on (it parses the content). So:

- in: ``INSTRUCTION`` is appended to the hoisted ``system`` text (``request.messages_request``);
- out: the answer's text must parse as a JSON object, else the attempt fails with ``NotAJSONObject``
  (502 ``invalid_json_output``). It is retryable, so dispatch samples the target again (``retries``)
  and then moves on to the next target (an OpenAI one has a native JSON mode); it does not feed the
  target's breaker (a model that strayed once is not an outage). When every try strays, the client
  gets that 502 with a message saying so, never prose where it expected JSON.

Nothing is repaired (no code fences stripped): a stream's text has reached the client before its end
shows whether it was JSON, so a streamed answer is checked when it finishes and a stray one ends with an
error event instead of its finish chunk; both paths then fail alike. An answer cut by ``max_tokens``
(``finish_reason: length``) or a tool call is passed on unchecked, as OpenAI's JSON mode passes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy.errors import UpstreamError

INSTRUCTION = "Respond with a single valid JSON object and nothing else: no prose, no code fences."


class NotAJSONObject(UpstreamError):
    status = 502
    code = "invalid_json_output"
    counts_against_target = False  # the model strayed from the format; the provider is up
    upstream_status = 200  # the provider answered; its answer was not what was asked


def asked(body: Mapping[str, Any]) -> bool:
    """Whether the OpenAI body asks for a JSON object (``response_format: {type: json_object}``)."""
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") == "json_object"


def check_completion(body: Mapping[str, Any]) -> None:
    """Raise ``NotAJSONObject`` unless the ``chat.completion``'s answer is a JSON object (or exempt)."""
    for choice in body.get("choices") or ():
        message = choice.get("message") or {}
        _check(message.get("content"), choice.get("finish_reason"), bool(message.get("tool_calls")))


class StreamCheck:
    """Follows a stream's chunks; at the finish chunk, raises ``NotAJSONObject`` for a stray answer."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._tools = False

    def see(self, chunk: Mapping[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self._text.append(str(delta["content"]))
            self._tools = self._tools or bool(delta.get("tool_calls"))
            finish = choice.get("finish_reason")
            if finish is not None:
                _check("".join(self._text), finish, self._tools)


def _check(content: Any, finish_reason: Any, tool_calls: bool) -> None:
    if tool_calls or finish_reason == "length":
        return
    try:
        parsed = orjson.loads(content) if isinstance(content, str) else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise NotAJSONObject(
            "The model did not answer with the JSON object response_format json_object asks for (this tier's "
            "model, Anthropic, has no JSON mode without a schema: tiergate asked for one in the system prompt)."
        )
