"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can serve: registry loaded, ledger writing)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.gateway import Gateway
from proxy.reload import LIVE_KEY


async def healthz(request: Request) -> Response:
    return Response(orjson.dumps({"status": "ok"}), media_type="application/json")


async def readyz(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    body: dict[str, Any] = {
        "status": "ready",
        "tasks": len(gateway.registry.tasks),
        "tiers": len(gateway.registry.tiers),
        "ledger": gateway.ledger.health() if gateway.ledger is not None else None,
        "registry": _registry(request, gateway),
    }
    # A ledger whose writer has stopped is not written: not ready, so an orchestrator takes it out.
    ready = body["ledger"] is None or body["ledger"]["ok"]
    if not ready:
        body["status"] = "not ready: the ledger writer has stopped"
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")


def _registry(request: Request, gateway: Gateway) -> dict[str, Any]:
    """The registry serving now, when it was loaded, and the last reload's error (a bad file kept out)."""
    live = getattr(request.state, LIVE_KEY, None)
    if live is None:
        return {"hash": gateway.registry.content_hash, "loaded_at": None, "error": None}
    loaded = live.loaded
    return {"hash": loaded.hash, "loaded_at": loaded.loaded_at, "error": loaded.error}
