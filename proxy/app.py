"""``create_app(settings, registry) -> Starlette``: routes, lifespan, and the one error renderer.

Endpoints (``proxy.endpoints``) only parse and wire: wire -> router -> dispatch -> (streaming) ->
response. Shared objects (the upstream client, providers, dispatcher, ledger writer) are built in the
lifespan as one ``Gateway`` and reach endpoints through ``request.state``; nothing lives at module level.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy import logs, pricing, rules, runtime
from proxy.access import AccessLog
from proxy.auth import ClientKeys
from proxy.breaker import Breakers
from proxy.cache.service import CacheService
from proxy.cache.store import SQLiteCacheStore
from proxy.classify.decide import Classifier
from proxy.classify.features import seed_of
from proxy.connections import LIMITS_KEY, ConnectionLimits, default_max_connections, upstream_connections
from proxy.dispatch import Dispatcher
from proxy.endpoints import precompute
from proxy.endpoints.chat import chat_completions
from proxy.endpoints.embeddings import embeddings
from proxy.endpoints.health import healthz, readyz
from proxy.endpoints.metrics import metrics
from proxy.endpoints.models import get_model, list_models
from proxy.endpoints.responses import responses
from proxy.errors import InvalidRequest, NotFound, TiergateError
from proxy.gateway import Gateway
from proxy.ledger.materialize import Materializer
from proxy.ledger.records import new_id
from proxy.ledger.retention import Retention
from proxy.ledger.writer import LedgerWriter
from proxy.pricing import Pricer
from proxy.providers import provider_class
from proxy.providers.base import Provider
from proxy.redact import Redactor
from proxy.registry import Registry
from proxy.reload import LIVE_KEY, CurrentGateway, Live
from proxy.router import Router
from proxy.settings import Settings
from proxy.telemetry.config import TelemetryConfig
from proxy.telemetry.service import Telemetry
from proxy.upstream import UpstreamClient

log = logging.getLogger("tiergate")


def create_app(
    settings: Settings,
    registry: Registry | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    wall_clock: Callable[[], float] = time.time,
    telemetry: TelemetryConfig | None = None,
) -> Starlette:
    """Build the ASGI app. ``registry`` defaults to loading ``settings.config``.

    ``clock`` (breaker cooldowns, deadlines) and ``sleep`` (backoff waits) are the seams through which
    tests drive time instead of waiting for it; ``wall_clock`` (epoch seconds) is the cache's: when an
    answer was made, when it expires. ``telemetry`` defaults to what the OTEL_* variables say (read
    here, so a mistake in them stops ``tiergate serve`` before it listens).
    """
    loaded = registry if registry is not None else rules.load(settings.config)
    observability = telemetry if telemetry is not None else TelemetryConfig.from_env(os.environ)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # Every resource is closed on the way out, in reverse order, whatever fails or is cancelled
        # (in start-up or in teardown): the exit stack runs each callback even when an earlier one raised.
        async with AsyncExitStack() as resources:
            max_connections = settings.max_connections or default_max_connections()
            http = UpstreamClient(
                settings.transport,
                max_connections=upstream_connections(max_connections, settings.generation_concurrency),
                max_body=settings.max_body_bytes,
                max_event=settings.max_event_mb * 2**20,
            )
            resources.push_async_callback(http.aclose)
            breakers = Breakers(clock)  # outlives reloads: a target that still exists keeps its state

            def redactor_for(registry: Registry) -> Redactor:
                return Redactor([*(p.api_key for p in registry.providers.values()), *settings.api_keys,
                                 settings.metrics_key])  # fmt: skip

            def providers_for(registry: Registry, redactor: Redactor) -> dict[str, Provider]:
                return {n: provider_class(c.type)(c, http, redactor) for n, c in registry.providers.items()}

            redactor = redactor_for(loaded)
            providers = providers_for(loaded, redactor)
            # Price data takes ~0.2 s of CPU to load; pay that before serving, not under the first
            # requests (a thread holding the GIL would stall the event loop).
            await asyncio.to_thread(pricing.warm_up)
            pricer = Pricer(loaded.prices, pricing.price_ids(loaded))
            ledger = None
            if settings.ledger:
                ledger = LedgerWriter(settings.db, pricer, max_queue=settings.ledger_queue)
                await ledger.start()
                # uvicorn has finished in-flight requests by the time this runs: their rows are queued.
                resources.push_async_callback(ledger.close)
                runs = Materializer(ledger)  # the audit's sums, kept up as rows arrive
                runs.start()
                resources.push_async_callback(runs.close)  # stopped before the writer closes
                if loaded.ledger.retain_days is not None:
                    retention = Retention(ledger, loaded.ledger.retain_days)
                    retention.start()
                    resources.push_async_callback(retention.close)  # stopped before the writer closes
            observer = Telemetry.start(
                observability,
                registry=loaded,
                providers=providers,
                breakers=breakers,
                ledger=ledger,
                pricer=pricer,
                redactor=redactor,
            )
            if observer is not None:
                # Flushed after the cache has closed (its background generations end spans too).
                resources.push_async_callback(observer.aclose)
            keys = ClientKeys(settings.api_keys)
            cache = CacheService(
                SQLiteCacheStore(settings.db, max_bytes=settings.cache_max_mb * 2**20),
                concurrency=settings.generation_concurrency,
                max_queue=settings.generation_queue,
                clock=wall_clock,
            )
            cache.start()
            # Closed before the ledger (its background generations still write rows) and the upstream pool.
            resources.push_async_callback(cache.aclose)
            started = int(time.time())
            metrics_keys = ClientKeys((settings.metrics_key,)) if settings.metrics_key else keys

            def build(registry: Registry) -> Gateway:
                # What depends on the registry, built anew on a reload; the rest is shared.
                shown = redactor if registry is loaded else redactor_for(registry)
                serving = providers if registry is loaded else providers_for(registry, shown)
                return Gateway(
                    settings=settings,
                    registry=registry,
                    router=Router(registry),
                    keys=keys,
                    http=http,
                    providers=serving,
                    dispatcher=Dispatcher(serving, breakers, sleep=sleep, clock=clock),
                    ledger=ledger,
                    classifier=Classifier(registry, seed_of(settings.feature_key), clock=clock),
                    cache=cache,
                    started=started,
                    metrics_keys=metrics_keys,
                    telemetry=observer,
                )

            # Only a registry read from the configured file can be re-read (an in-memory one cannot).
            watched = settings.config if settings.reload and loaded.source == settings.config else None
            live = Live(build(loaded), build, watched)
            if watched is not None:
                watcher = asyncio.create_task(live.watch(settings.reload_interval_s), name="tiergate-rules-watch")
                resources.push_async_callback(_cancelled, watcher)
                resources.enter_context(_on_sighup(live.reload))
            limits = ConnectionLimits(settings.head_timeout_s, max_connections)
            if settings.tune_runtime:
                runtime.settle()  # last: what start-up built is frozen, not walked by every collection
            log.info("tiergate ready: %d tasks, %d tiers (%s)", len(loaded.tasks), len(loaded.tiers), loaded.source)
            yield {LIVE_KEY: live, "gateway": live.current, LIMITS_KEY: limits}

    return Starlette(
        middleware=[Middleware(AccessLog), Middleware(CurrentGateway)],
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/responses", responses, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/embeddings", embeddings, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/v1/precompute", precompute.submit, methods=["POST"]),
            Route("/v1/precompute/{key:path}", precompute.status, methods=["GET"]),
        ],
        exception_handlers={
            TiergateError: render_error,
            HTTPException: render_http_exception,
            Exception: render_crash,
        },
        lifespan=lifespan,
    )


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@contextmanager
def _on_sighup(handler: Callable[[], object]) -> Iterator[None]:
    """``SIGHUP`` calls ``handler`` while the app runs (where the loop can take signal handlers)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, handler)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no such signal
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def app_from_env() -> Starlette:
    """The app of one worker process of ``tiergate serve --workers N`` (settings from TIERGATE_*)."""
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    return create_app(settings)


# --- the one error renderer ---------------------------------------------------------------------


async def render_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TiergateError)
    if exc.status >= 500:
        log.warning("%s %s -> %d %s: %s", request.method, request.url.path, exc.status, exc.code, exc.message)
    headers = dict(exc.headers)
    headers.setdefault("x-request-id", _request_id(request))
    return _json(exc.body(), exc.status, headers)


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
    # Starlette's own headers (a 405's Allow) are part of the answer.
    err.headers.update(exc.headers or {})
    return await render_error(request, err)


async def render_crash(request: Request, exc: Exception) -> Response:
    # A bug: the details go to the log, the client gets a generic OpenAI-shaped 500 whose request id
    # is the one its ledger row keeps.
    request_id = _request_id(request)
    log.exception("unhandled error on %s %s (%s)", request.method, request.url.path, request_id)
    err = TiergateError("tiergate hit an internal error; it has been logged.", code="internal_error")
    return _json(err.body(), 500, {"x-request-id": request_id})


def _request_id(request: Request) -> str:
    # An endpoint that writes a ledger row sets its id early; other routes get a fresh one.
    request_id: str | None = getattr(request.state, "request_id", None)
    return request_id or "req_" + new_id()


def _json(content: Any, status: int, headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)
