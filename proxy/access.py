"""One access line per request, logged when its response has ended (a stream's too).

``POST /v1/chat/completions 200 812.4ms req_ab12 task=summary tier=mid model=openai::gpt-5.4-mini``:
method, path, status, time, request id, and what the endpoint noted under ``request.state.access``
(task, tier, ``provider::model``). Never a prompt, never a key: endpoints note only route facts.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("tiergate.access")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            state: dict[str, Any] = scope.get("state", {})
            facts = "".join(f" {k}={v}" for k, v in (state.get("access") or {}).items() if v is not None)
            log.info(
                "%s %s %d %.1fms %s%s",
                scope["method"],
                scope["path"],
                status or 500,
                (time.perf_counter() - started) * 1000.0,
                state.get("request_id", "-"),
                facts,
            )
