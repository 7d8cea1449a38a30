"""One Responses call as the dispatcher's operation: per target, native or translated.

``Dispatcher.run`` calls ``prepare`` for each hop's body and ``complete`` / ``stream`` for each try. A
target whose adapter serves the Responses API natively gets the Responses body (``rewrite``) and its
answer is relayed as it came; any other gets the chat translation (``request``), rewritten for it as
any chat call is (``proxy.rewrite``), and its answer translated back (``answer``, ``events``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy import rewrite as chat_rewrite
from proxy.dispatch import primed
from proxy.prompts import PromptVariant
from proxy.providers.base import Call, ChunkStream, Completion, Provider
from proxy.registry import Target, Task
from proxy.responses import rewrite
from proxy.responses.answer import response_body
from proxy.responses.events import TranslatedStream
from proxy.responses.request import chat_request


class ResponsesOperation:
    """The Responses call ``body`` (as the client sent it) over ``providers``."""

    def __init__(self, providers: Mapping[str, Provider], body: Mapping[str, Any]) -> None:
        self._providers = providers
        self._body = body

    def prepare(self, body: dict[str, Any], task: Task, target: Target, prompt: PromptVariant | None) -> dict[str, Any]:
        """The body ``target`` is sent; ``InvalidRequest`` naming a field it cannot honour."""
        if self._providers[target.provider].native_responses:
            return rewrite.for_target(body, task, target, prompt)
        return chat_rewrite.for_target(chat_request(body, target.key), task, target, prompt)

    async def complete(self, call: Call) -> Completion:
        """One non-streaming try: a ``Completion`` whose body is a ``response`` object."""
        provider = self._providers[call.target.provider]
        if provider.native_responses:
            return await provider.respond(call)
        completion = await provider.complete(call)
        body = response_body(self._echo(call.body), completion.body, completion.usage)
        return Completion(body, completion.usage, completion.request_id, completion.headers)

    async def stream(self, call: Call) -> ChunkStream:
        """One streaming try, its first event arrived: Responses events, native or translated."""
        provider = self._providers[call.target.provider]
        if provider.native_responses:
            return await primed(await provider.respond_stream(call))
        return await primed(TranslatedStream(await provider.stream(call), self._echo(call.body)))

    def _echo(self, chat: Mapping[str, Any]) -> dict[str, Any]:
        """The request the answer echoes: the client's, with the budget and sampling that were sent."""
        echo = dict(self._body)
        echo["max_output_tokens"] = chat.get("max_tokens")
        for name in ("temperature", "top_p"):
            echo[name] = chat.get(name)
        return echo
