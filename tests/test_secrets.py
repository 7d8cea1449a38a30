"""No secret leaves: an upstream that echoes tiergate's provider key (in its error's every field, its
headers, its request id, its stream) gets it masked before the client, the log or the ledger sees it.

The provider key here has no ``sk-`` shape on purpose: exact secrets are masked whatever they look like.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.headers import passed_on
from proxy.redact import Redactor
from tests.conftest import ProxyFactory, sdk, shipped_registry

SHAPELESS_KEY = "ZZupstream0secret0without0any0known0shapeZZ"
CLIENT = "tg-client-key-0123456789"
USER = [{"role": "user", "content": "Summarise: the queue drained overnight"}]


def _dump(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.mark.parametrize("status", [400, 429, 500, 503])
async def test_an_echoed_key_is_masked_in_the_error_headers_request_id_log_and_ledger(
    start_proxy: ProxyFactory,
    upstream_url: str,
    fake: FakeOpenAI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    echo = {
        "error": {
            "message": f"Invalid header Authorization: Bearer {SHAPELESS_KEY}; also sk-proj-abcdefghijklmnop",
            "type": SHAPELESS_KEY,
            "param": f"auth.{SHAPELESS_KEY}",
            "code": SHAPELESS_KEY,
        }
    }
    headers = {
        "x-request-id": SHAPELESS_KEY,
        "x-ratelimit-remaining-requests": SHAPELESS_KEY,
        "x-ratelimit-limit-tokens": "30000",
        "retry-after": "-5",
        "retry-after-ms": "nan",
    }
    fake.default = Behavior(status=status, body=orjson.dumps(echo), headers=headers)
    db = tmp_path / "l.db"
    registry = shipped_registry(upstream_url, OPENAI_API_KEY=SHAPELESS_KEY)
    with caplog.at_level(logging.DEBUG):
        async with start_proxy(registry, db=str(db), api_keys=(CLIENT,)) as url:
            async with httpx.AsyncClient(base_url=url) as http:
                response = await http.post(
                    "/v1/chat/completions",
                    json={"model": "auto", "messages": USER},
                    headers={"authorization": f"Bearer {CLIENT}", "x-task-type": "summary"},
                )
    assert fake.requests[0].headers["authorization"] == f"Bearer {SHAPELESS_KEY}"  # it did hold the key
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] in ("invalid_request_error", "upstream_error")  # the echoed type was not an identifier
    assert error["code"] is None and error["param"] is None
    assert "Bearer ***" in error["message"] and "sk-proj" not in error["message"]
    assert response.headers["x-request-id"].startswith("req_")  # the echoing id was refused: tiergate's own
    assert response.headers["x-ratelimit-limit-tokens"] == "30000"
    for dropped in ("x-ratelimit-remaining-requests", "retry-after", "retry-after-ms"):
        assert dropped not in response.headers
    everything = response.text + str(response.headers) + caplog.text
    assert SHAPELESS_KEY not in everything and CLIENT not in everything
    ledger = _dump(db)
    assert ledger and SHAPELESS_KEY.encode() not in ledger and CLIENT.encode() not in ledger


async def test_an_echoed_key_inside_a_stream_error_is_masked(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, tmp_path: Path
) -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]}  # fmt: skip
    error = {"error": {"message": f"key {SHAPELESS_KEY} revoked", "type": "server_error", "code": SHAPELESS_KEY}}
    stream = b"data: " + orjson.dumps(chunk) + b"\n\ndata: " + orjson.dumps(error) + b"\n\n"
    fake.push(Behavior(body=stream, headers={"content-type": "text/event-stream"}))
    db = tmp_path / "l.db"
    async with start_proxy(shipped_registry(upstream_url, OPENAI_API_KEY=SHAPELESS_KEY), db=str(db)) as url:
        client = sdk(url, {"X-Task-Type": "summary"})
        with pytest.raises(openai.APIError) as err:
            async for _ in await client.chat.completions.create(model="auto", messages=USER, stream=True):  # type: ignore[arg-type]
                pass
        await client.close()
    assert SHAPELESS_KEY not in str(err.value.body) and "***" in str(err.value.body)
    assert SHAPELESS_KEY.encode() not in _dump(db)


@pytest.mark.parametrize(
    ("name", "value", "kept"),
    [
        ("retry-after", "3", True),
        ("retry-after", "2.5", True),
        ("retry-after", "-5", False),
        ("retry-after", "1e9", False),
        ("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT", False),  # long past
        ("retry-after-ms", "150", True),
        ("retry-after-ms", "nan", False),
        ("retry-after-ms", "inf", False),
        ("x-should-retry", "true", True),
        ("x-should-retry", "maybe", False),
        ("x-ratelimit-remaining-tokens", "149984", True),
        ("x-ratelimit-remaining-tokens", "-1", False),
        ("x-ratelimit-reset-requests", "6m0s", True),
        ("x-ratelimit-reset-tokens", "12ms", True),
        ("x-ratelimit-reset-tokens", "soon", False),
        ("x-ratelimit-anything-else", "1", False),
        ("anthropic-ratelimit-requests-remaining", "99", True),
        ("set-cookie", "a=b", False),
        ("x-ratelimit-limit-requests", "1" * 40, False),
    ],
)
def test_passed_on_headers_are_an_allow_list_with_checked_values(name: str, value: str, kept: bool) -> None:
    assert (name in passed_on({name: value}, Redactor())) is kept


def test_the_redactor_masks_exact_secrets_and_key_shapes_but_not_prose() -> None:
    redactor = Redactor(["a-very-private-value-42", "short"])
    text = redactor.text(
        "a-very-private-value-42 sk-ant-api03-abcdefgh AIzaSyA1234567890abcdefghijklmn ghp_abcdefghijklmnopqrstuv"
        " eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig Bearer abc.def-ghi short task-queue sk-learn"
    )
    assert text == "*** *** *** *** *** Bearer *** short task-queue sk-learn"
    assert redactor.identifier("rate_limit_exceeded") == "rate_limit_exceeded"
    assert redactor.identifier("a-very-private-value-42") is None
    assert redactor.identifier("has spaces") is None and redactor.identifier(3) is None
    assert len(redactor.text("x" * 5000)) == 1000
