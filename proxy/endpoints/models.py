"""``GET /v1/models`` and ``GET /v1/models/{id}``: what a client may put in ``model``.

``auto`` (the task decides), a ``tier:<name>`` selector, or a task name (listed for discoverability;
the task itself comes from ``X-Task-Type``), as OpenAI model objects.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import NotFound
from proxy.gateway import Gateway
from proxy.router import TIER_PREFIX


async def list_models(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    gateway.keys.authenticate(request.headers)
    return _json({"object": "list", "data": _model_objects(gateway)})


async def get_model(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    gateway.keys.authenticate(request.headers)
    model_id = request.path_params["model_id"]
    for item in _model_objects(gateway):
        if item["id"] == model_id:
            return _json(item)
    raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")


def _model_objects(gateway: Gateway) -> list[dict[str, Any]]:
    registry = gateway.registry
    ids = ["auto", *(TIER_PREFIX + t for t in registry.tiers), *registry.tasks]
    return [{"id": i, "object": "model", "created": gateway.started, "owned_by": "tiergate"} for i in ids]


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")
