"""``POST /v1/embeddings``: parse -> route to an embedding tier -> dispatch -> respond -> ledger.

The same edge as chat (``proxy.endpoints.exchange``: one ledger record per authenticated request,
settled however it ends; dispatch's ``Outcome`` -> response headers), the same dispatch (retries,
fallbacks, breakers, deadlines: ``Dispatcher.embed``) and the same ledger row: ``prompt_tokens`` are the
input tokens the upstream reports, ``completion_tokens`` 0, priced on the target that served as chat is
(genai-prices, or rules.yaml's ``prices:``). The upstream's body is relayed as it came (``float`` or
``base64`` vectors, ``dimensions`` honoured by the model).

Routing is by task alone: ``X-Task-Type`` names a task on an embedding tier, else the call runs as
``default_embedding_task``. Neither ``classify:`` rules nor the learned classifier place embeddings: a
query and the documents it is compared with must be embedded by the same model, which is a property of
the call site, not of the text.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from proxy import headers as header_rules
from proxy import wire
from proxy.body import read_body
from proxy.endpoints.calls import route_record
from proxy.endpoints.exchange import Answered, accept, end_user, serve, span_of
from proxy.gateway import Gateway
from proxy.ledger.records import RequestRecord
from proxy.registry import EMBEDDING
from proxy.telemetry.names import EMBEDDINGS


async def embeddings(request: Request) -> Answered:
    return await serve(request, _embed)


async def _embed(request: Request, gateway: Gateway, record: RequestRecord, started: float) -> Answered:
    body = wire.parse_embeddings_request(await read_body(request, gateway.settings.max_body_bytes))
    record.requested_model = body["model"]
    record.end_user = end_user(body)
    span = span_of(request)
    if span is not None:
        span.parsed({"model": body["model"]}, EMBEDDINGS, "/v1/embeddings")  # no messages to capture
    route = gateway.router.resolve(request.headers.get("x-task-type"), body["model"], kind=EMBEDDING)
    route_record(record, route, gateway)
    forwarded = header_rules.forwardable(request.headers.items())
    done = await gateway.dispatcher.embed(route, body, forwarded, span)
    answer, headers = accept(request, record, route, done, body)
    record.usage = answer.usage
    if answer.usage is None:
        # An upstream that reports no usage: the ledger's writer counts the texts' tokens (``estimated``).
        record.messages = [{"role": "user", "content": text} for text in wire.embedding_texts(body["input"])]
    content = answer.raw if answer.raw is not None else orjson.dumps(answer.body)
    return Response(content, media_type="application/json", headers=headers)
