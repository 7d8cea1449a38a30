"""``create_app(settings, registry) -> Starlette``: routes, lifespan, and the one error renderer.

Handlers only parse and wire: wire -> router -> dispatch -> (streaming) -> response. Shared objects
(the upstream client, providers, dispatcher) are built in the lifespan and reach handlers through
``request.state``; nothing lives at module level.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy import headers as header_rules
from proxy import pricing, rewrite, router, rules, streaming, wire
from proxy.breaker import Breakers
from proxy.dispatch import Dispatcher
from proxy.errors import InvalidRequest, NotFound, TiergateError, Unauthorized
from proxy.ledger.records import RequestRecord, new_id
from proxy.ledger.writer import LedgerWriter
from proxy.pricing import Pricer
from proxy.providers import provider_class
from proxy.providers.base import Provider
from proxy.registry import Registry
from proxy.settings import Settings
from proxy.upstream import UpstreamClient

log = logging.getLogger("tiergate")
_STARTED = int(time.time())


@dataclass(frozen=True)
class Gateway:
    """Everything a request needs, built once per process in the lifespan."""

    settings: Settings
    registry: Registry
    http: UpstreamClient
    providers: Mapping[str, Provider]
    dispatcher: Dispatcher
    ledger: LedgerWriter | None
    router: router.Router


def create_app(
    settings: Settings,
    registry: Registry | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Starlette:
    """Build the ASGI app. ``registry`` defaults to loading ``settings.config``.

    ``clock`` (breaker cooldowns, deadlines) and ``sleep`` (backoff waits) are the seams through which
    tests drive time instead of waiting for it.
    """
    loaded = registry if registry is not None else rules.load(settings.config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        http = UpstreamClient(settings.transport)
        providers = {name: provider_class(config.type)(config, http) for name, config in loaded.providers.items()}
        dispatcher = Dispatcher(providers, Breakers(clock), sleep=sleep, clock=clock)
        # Price data takes ~0.2 s of CPU to load; pay that before serving, not under the first
        # requests (a thread holding the GIL would stall the event loop).
        await asyncio.to_thread(_warm_up)
        ledger = None
        if settings.ledger:
            pricer = Pricer(loaded.prices, pricing.price_ids(loaded))
            ledger = LedgerWriter(settings.db, pricer, max_queue=settings.ledger_queue)
            await ledger.start()
        gateway = Gateway(settings, loaded, http, providers, dispatcher, ledger, router.Router(loaded))
        log.info("tiergate ready: %d tasks, %d tiers (%s)", len(loaded.tasks), len(loaded.tiers), loaded.source)
        try:
            yield {"gateway": gateway}
        finally:
            # uvicorn has finished in-flight requests by now: drain their rows, then close upstreams.
            if ledger is not None:
                await ledger.close()
            await http.aclose()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={
            TiergateError: render_error,
            HTTPException: render_http_exception,
            Exception: render_crash,
        },
        lifespan=lifespan,
    )


def app_from_env() -> Starlette:
    """The app of one worker process of ``tiergate serve --workers N`` (settings from TIERGATE_*)."""
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(settings)


def _warm_up() -> None:
    pricing.warm_up()


async def chat_completions(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    _authorize(request, gateway.settings)
    record = RequestRecord(
        id=new_id(),
        ts=time.time(),
        task=request.headers.get("x-task-type") or "-",
        task_source="header" if request.headers.get("x-task-type") else "default",
        tier=None,
        requested_model=None,
        stream=False,
        status=0,
        latency_ms=0.0,
    )
    started = time.perf_counter()
    try:
        response = await _chat(request, gateway, record, started)
    except TiergateError as exc:
        # the id the client sees on its error is the one the ledger row keeps
        record.request_id = exc.headers.setdefault("x-request-id", "req_" + new_id())
        _finish(gateway, record, started, exc.status, exc.code or exc.type)
        raise
    except Exception:
        _finish(gateway, record, started, 500, "internal_error")
        raise
    if not isinstance(response, streaming.SSEResponse):
        _finish(gateway, record, started, 200, None)
    return response  # type: ignore[return-value]


async def _chat(
    request: Request, gateway: Gateway, record: RequestRecord, started: float
) -> Response | streaming.SSEResponse:
    body = wire.parse_chat_request(await request.body())
    record.requested_model = body["model"]
    record.stream = bool(body.get("stream"))
    record.messages = body.get("messages")
    user = body.get("user")
    record.client = user if isinstance(user, str) else _key_id(request, gateway.settings)
    route = gateway.router.resolve(request.headers.get("x-task-type"), body["model"])
    record.task, record.task_source, record.tier = route.task.name, route.task_source, route.tier.name
    record.baseline_tier = route.task.baseline
    record.baseline = gateway.registry.tiers[route.task.baseline].targets[0]
    forwarded = header_rules.forwardable(request.headers.items())

    if record.stream:
        chunks = await gateway.dispatcher.stream(route, body, forwarded, record)
        assert record.target is not None
        stats = streaming.StreamStats(started=started)
        relay = streaming.relay(chunks, stats, include_usage=rewrite.client_wants_usage(body))
        headers = {**chunks.headers, **_route_headers(route, record, chunks.request_id)}
        record.request_id = headers["x-request-id"]
        opened = time.perf_counter()

        def on_close(stats: streaming.StreamStats) -> None:
            record.usage = stats.usage
            record.ttft_ms = stats.ttft_ms
            record.produced_output = stats.chunks > 0
            record.streamed_text = stats.text() if stats.usage is None else None
            record.upstream_ms = (record.upstream_ms or 0.0) + (time.perf_counter() - opened) * 1000.0
            if stats.error is not None:
                _finish(gateway, record, started, 200, stats.error.code or stats.error.type)
            elif stats.client_disconnected:
                _finish(gateway, record, started, 499, "client_disconnected")
            else:
                _finish(gateway, record, started, 200, None)

        return streaming.SSEResponse(relay, stats, headers, on_close=on_close)

    completion = await gateway.dispatcher.complete(route, body, forwarded, record)
    assert record.target is not None
    record.usage = completion.usage
    content = completion.raw if completion.raw is not None else orjson.dumps(completion.body)
    headers = {**completion.headers, **_route_headers(route, record, completion.request_id)}
    record.request_id = headers["x-request-id"]
    return Response(content, media_type="application/json", headers=headers)


def _finish(gateway: Gateway, record: RequestRecord, started: float, status: int, error: str | None) -> None:
    """Close the request's ledger record and hand it to the writer (never blocks)."""
    record.status = status
    record.error_type = error
    record.latency_ms = (time.perf_counter() - started) * 1000.0
    if record.usage is not None:
        record.messages = None  # only kept for estimating missing usage
    if gateway.ledger is not None:
        gateway.ledger.submit(record)


def _route_headers(route: router.Route, record: RequestRecord, request_id: str | None) -> dict[str, str]:
    target = record.target
    assert target is not None
    return {
        "x-tiergate-attempts": str(len(record.attempts)),
        "x-tiergate-fallback": "true" if record.fallback else "false",
        "x-tiergate-task": route.task.name,
        "x-tiergate-tier": record.tier or route.tier.name,
        "x-tiergate-model": target.model,
        "x-tiergate-provider": target.provider,
        "x-request-id": request_id or "req_" + new_id(),
    }


async def list_models(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    _authorize(request, gateway.settings)
    return _json({"object": "list", "data": _model_objects(gateway.registry)})


async def get_model(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    _authorize(request, gateway.settings)
    model_id = request.path_params["model_id"]
    for item in _model_objects(gateway.registry):
        if item["id"] == model_id:
            return _json(item)
    raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")


def _model_objects(registry: Registry) -> list[dict[str, Any]]:
    # What a client may put in `model`: auto (the task decides), a tier selector, or a task name
    # listed for discoverability (the task itself comes from X-Task-Type).
    ids = ["auto", *(router.TIER_PREFIX + t for t in registry.tiers), *registry.tasks]
    return [{"id": i, "object": "model", "created": _STARTED, "owned_by": "tiergate"} for i in ids]


async def healthz(request: Request) -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    body: dict[str, Any] = {
        "status": "ready",
        "tasks": len(gateway.registry.tasks),
        "tiers": len(gateway.registry.tiers),
        "ledger": gateway.ledger.health() if gateway.ledger is not None else None,
    }
    return _json(body)


def _authorize(request: Request, settings: Settings) -> None:
    if not settings.api_keys:
        return
    auth = request.headers.get("authorization", "")
    key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("api-key", "")
    if key not in settings.api_keys:
        raise Unauthorized("Invalid or missing API key for tiergate. Send it as 'Authorization: Bearer <key>'.")


def _key_id(request: Request, settings: Settings) -> str | None:
    """A stable, non-secret id for the client key (a hash prefix), when client keys are in use."""
    if not settings.api_keys:
        return None
    auth = request.headers.get("authorization", "")
    key = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("api-key", "")
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _json(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


# --- the one error renderer ---------------------------------------------------------------------


async def render_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TiergateError)
    if exc.status >= 500:
        log.warning("%s %s -> %d %s: %s", request.method, request.url.path, exc.status, exc.code, exc.message)
    headers = dict(exc.headers)
    headers.setdefault("x-request-id", "req_" + new_id())
    return _json(exc.body(), status=exc.status, headers=headers)


async def render_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err: TiergateError = NotFound(f"Unknown route: {request.method} {request.url.path}.", code="unknown_url")
    elif exc.status_code == 405:
        err = InvalidRequest(
            f"Method {request.method} is not allowed on {request.url.path}.", code="method_not_allowed", status=405
        )
    else:
        err = InvalidRequest(str(exc.detail), status=exc.status_code)
    return await render_error(request, err)


async def render_crash(request: Request, exc: Exception) -> Response:
    # A bug: the details go to the log, the client gets a generic OpenAI-shaped 500.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    err = TiergateError("tiergate hit an internal error; it has been logged.", code="internal_error")
    return _json(err.body(), status=500)
