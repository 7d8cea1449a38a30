"""``POST /v1/precompute`` and ``GET /v1/precompute/{key}``: generations made before anyone asks.

The app calls ``POST /v1/precompute`` when fresh data lands, with exactly the chat request its page will
later send (body and headers, ``X-Tiergate-Key`` and ``X-Tiergate-Version`` included). tiergate answers
202 at once and generates in the background through the normal dispatch; the page's later request is a
``hit``. ``GET /v1/precompute/{key}`` says where a key stands: queued, running, ready or failed (with the
error; a failed regeneration keeps serving the last good answer).
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy import headers as header_rules
from proxy import wire
from proxy.body import read_body
from proxy.cache.plan import KEY_HEADER, MAX_KEY, keyed_key
from proxy.cache.plan import plan as cache_plan
from proxy.endpoints import generation
from proxy.errors import InvalidRequest, NotFound, QueueFull
from proxy.gateway import Gateway

RETRY_AFTER_S = 5  # a full queue drains in seconds: the SDKs wait this long, then try again


async def submit(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    client = gateway.keys.authenticate(request.headers)
    body = wire.parse_chat_request(await read_body(request, gateway.settings.max_body_bytes))
    if not request.headers.get(KEY_HEADER):
        raise InvalidRequest(
            "A precompute request names its generation: send X-Tiergate-Key (and X-Tiergate-Version).",
            param="X-Tiergate-Key",
            code="missing_required_parameter",
        )
    decision = gateway.classifier.decide(request.headers, body)
    route = gateway.router.resolve(decision.task, body["model"], decision.source)
    plan = cache_plan(route, request.headers, body, client or "")
    assert plan is not None and plan.kind == "keyed"  # a key makes a keyed plan
    forwarded = header_rules.forwardable(request.headers.items())
    if not generation.precompute(gateway, plan, route, body, forwarded):
        raise QueueFull(
            "The background generation queue is full; try again shortly.",
            headers={"retry-after": str(RETRY_AFTER_S)},
        )
    answer = {"key": generation.client_key(plan), "version": plan.version, "status": "queued"}
    return Response(orjson.dumps(answer), status_code=202, media_type="application/json")


async def status(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    client = gateway.keys.authenticate(request.headers)
    key = request.path_params["key"][:MAX_KEY]
    found = await gateway.cache.status(keyed_key(client or "", key))
    if found is None:
        raise NotFound(f"No generation is known for the key {key!r}.", param="key", code="generation_not_found")
    answer = {
        "key": key,
        "version": found.version,
        "status": found.status,
        "updated_at": found.updated_at,
        "error": found.error,
    }
    return Response(orjson.dumps(answer), media_type="application/json")
