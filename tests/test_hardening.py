"""Hostile clients and odd upstreams against real sockets: every answer is a clean OpenAI-shaped error.

Oversized and over-nested bodies, upstream redirects, an open relay, slow and idle connections, and the
operator's view (the access line, quiet libraries, a warning for an empty key).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from proxy.errors import UpstreamProtocolError
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.sse import iter_events
from tests.conftest import RULES, ProxyFactory, sdk, shipped_registry
from tests.test_ledger import rows

USER = [{"role": "user", "content": "Title for: the cron moved to a queue"}]


async def test_a_body_over_the_cap_is_a_413_declared_or_chunked(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI
) -> None:
    async with start_proxy(shipped_registry(upstream_url), max_body_mb=1) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            padding = "x" * (2**20)
            declared = await http.post(
                "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": padding}]}
            )

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer encoding
                yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
                for _ in range(64):
                    yield b"y" * 32_768
                yield b'"}]}'

            chunked = await http.post("/v1/chat/completions", content=chunks())
            fits = await http.post("/v1/chat/completions", json={"model": "auto", "messages": USER})
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["error"] == {
            "message": "The request body exceeds tiergate's limit of 1 MiB (TIERGATE_MAX_BODY_MB).",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    assert fits.status_code == 200
    assert len(fake.requests) == 1  # nothing over the cap went upstream


async def test_a_body_nested_too_deep_is_a_400_that_says_why(proxy_url: str, fake: FakeOpenAI) -> None:
    nested = b"[" * 1000 + b'"deep"' + b"]" * 1000  # 300 levels already broke the way upstream
    body = b'{"model": "auto", "messages": [{"role": "user", "content": ' + nested + b"}]}"
    async with httpx.AsyncClient(base_url=proxy_url) as http:
        response = await http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The request body is nested deeper than 128 levels."
    assert fake.requests == []


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_an_upstream_redirect_is_a_502_never_relayed_nor_followed(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI, status: int
) -> None:
    fake.default = Behavior(status=status, headers={"location": "http://127.0.0.1:1/elsewhere"}, body=b"")
    async with start_proxy(shipped_registry(upstream_url)) as url:
        client = sdk(url, {"X-Task-Type": "agent"})
        with pytest.raises(openai.InternalServerError) as err:
            await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await client.close()
    assert err.value.status_code == 502 and err.value.code == "upstream_bad_response"
    assert "location" not in err.value.response.headers
    # frontier has two targets (the Anthropic one is unreachable here): the redirecting one was tried once
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"]


async def test_every_request_gets_one_access_line_without_content(
    proxy_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tiergate.access"):
        client = sdk(proxy_url, {"X-Task-Type": "summary"})
        raw = await client.chat.completions.with_raw_response.create(model="auto", messages=USER)  # type: ignore[arg-type]
        stream = await client.chat.completions.create(model="auto", messages=USER, stream=True)  # type: ignore[arg-type]
        async for _ in stream:
            pass
        await client.close()
        async with httpx.AsyncClient(base_url=proxy_url) as http:
            await http.get("/healthz")
    lines = [r.getMessage() for r in caplog.records if r.name == "tiergate.access"]
    assert len(lines) == 3
    first = lines[0]
    assert first.startswith("POST /v1/chat/completions 200 ")
    assert f" {raw.headers['x-request-id']} task=summary tier=mid model=openai::gpt-5.4-mini" in first
    assert lines[2].startswith("GET /healthz 200 ")
    assert not any("cron" in line for line in lines)  # never prompt content


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(RULES), "--no-ledger", *args],
        env={**os.environ, "OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": "sk-ant-x", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_refuses_to_be_an_open_relay() -> None:
    done = _serve("--host", "0.0.0.0", "--port", str(_free_port()))
    out, _ = done.communicate(timeout=60)
    assert done.returncode == 2
    assert out.strip().startswith("tiergate: refusing to serve on 0.0.0.0 without client keys")
    assert "Traceback" not in out


async def _wait_ready(port: int, proc: subprocess.Popen[str]) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(400):
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read() if proc.stdout else "serve exited")
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError("tiergate serve did not become ready")


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closes the connection (EOF or reset)."""
    try:
        return await reader.read(1024) == b""
    except ConnectionError:
        return True


async def test_idle_and_slowloris_connections_are_closed_and_their_number_is_bounded() -> None:
    port = _free_port()
    proc = _serve(
        "--port", str(port), "--head-timeout-s", "0.5", "--max-connections", "40",
        env={"TIERGATE_LOG_LEVEL": "warning"},
    )  # fmt: skip
    try:
        await _wait_ready(port, proc)
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(10)]
        for _, writer in slow:
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
        # Each is closed by the server's own deadline: awaited as events, not timed by the test.
        closed = await asyncio.wait_for(
            asyncio.gather(*(_closed_by_server(reader) for reader, _ in idle + slow)), timeout=30
        )
        assert all(closed)
        # Beyond max_connections a connection is closed as soon as it is accepted.
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
        reader, _ = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(_closed_by_server(reader), timeout=30)
        for _, writer in held:
            writer.close()
        # ... and a well-behaved client is served meanwhile and afterwards.
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        for _, writer in idle + slow:
            writer.close()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    # an empty provider key is said at start-up, once per provider, and no library logs below WARNING
    assert out.count("provider openai has an empty API key") == 1
    assert "Traceback" not in out


def test_the_connection_bound_leaves_a_descriptor_for_each_upstream_connection() -> None:
    # In a child whose soft limit is 1,000 (the limits are the process's): every client connection may
    # hold an upstream one, so half of what is left after the reserve; raising the soft limit to the
    # hard one lifts the bound, which then stops at its cap.
    code = (
        "import resource; from proxy.connections import default_max_connections, raise_fd_limit;"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1];"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1000, hard));"
        "low = default_max_connections(); soft, _ = raise_fd_limit();"
        "print(low, soft == hard, default_max_connections(cap=min(hard // 4, 10_000)) == min(hard // 4, 10_000))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str((1000 - 256) // 2), "True", "True"]


def test_libraries_stay_quiet_at_debug_unless_trace() -> None:
    code = (
        "import logging; from proxy import logs; logs.configure('{}');"
        "print(logging.getLogger('aiosqlite').getEffectiveLevel(), logging.getLogger('tiergate').getEffectiveLevel())"
    )
    debug = subprocess.run([sys.executable, "-c", code.format("debug")], capture_output=True, text=True, check=True)
    trace = subprocess.run([sys.executable, "-c", code.format("trace")], capture_output=True, text=True, check=True)
    assert debug.stdout.split() == ["30", "10"] and trace.stdout.split() == ["10", "10"]


def test_serve_flags_are_checked_in_one_line(tmp_path: Path) -> None:
    for args, message in (
        (["--head-timeout-s", "0"], "tiergate: --head-timeout-s: expected seconds in (0, 3600], got 0.0"),
        (["--max-body-mb", "0"], "tiergate: --max-body-mb: expected 1 or more, got 0"),
        (["--max-connections", "-1"], "tiergate: --max-connections: expected 0 (automatic) or more, got -1"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "serve", *args], capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stderr.strip()) == (2, message)


async def _events(pieces: list[bytes], max_event: int = 64) -> list[tuple[str, bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    return [event async for event in iter_events(chunks(), max_event)]


async def test_sse_framing_reads_crlf_and_lone_cr_even_split_across_chunks() -> None:
    assert await _events([b"data: a\r", b"\n\r\ndata: b\r\rdata: c\n", b"\n"]) == [
        ("", b"a"),
        ("", b"b"),
        ("", b"c"),
    ]
    assert await _events([b"event: x\ndata: 1\n", b"data: 2\n\n: ping\n\n"]) == [("x", b"1\n2")]
    assert await _events([b"data: a\n", b"\ndata: tail"]) == [("", b"a"), ("", b"tail")]


async def test_an_sse_event_over_the_cap_or_one_that_never_ends_is_a_bad_response() -> None:
    with pytest.raises(UpstreamProtocolError):
        await _events([b"data: " + b"x" * 40, b"y" * 40 + b"\n\n"])
    with pytest.raises(UpstreamProtocolError):
        await _events([b"data: x\n"] * 20)  # data lines that never end an event
    assert await _events([b"data: " + b"x" * 50 + b"\n\n"] * 3) == [("", b"x" * 50)] * 3  # each fits


async def test_an_upstream_answer_over_the_cap_is_a_502_not_read_whole(
    start_proxy: ProxyFactory, upstream_url: str, fake: FakeOpenAI
) -> None:
    message = {"role": "assistant", "content": "word " * 300_000}  # about 1.5 MB of JSON
    huge = {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [{"message": message}]}
    fake.push(Behavior(body=orjson.dumps(huge)))
    async with start_proxy(shipped_registry(upstream_url), max_body_mb=1) as url:
        client = sdk(url, {"X-Task-Type": "summary"})
        with pytest.raises(openai.InternalServerError) as err:
            await client.chat.completions.create(model="auto", messages=USER)  # type: ignore[arg-type]
        await client.close()
    assert err.value.status_code == 502 and err.value.code == "upstream_bad_response"
    assert "exceeds 1 MiB" in err.value.message


async def test_identity_comes_from_the_key_and_the_body_user_is_kept_apart_and_bounded(
    start_proxy: ProxyFactory, upstream_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "l.db"
    async with start_proxy(shipped_registry(upstream_url), db=str(db), api_keys=("tg-key-alpha-000",)) as url:
        async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer tg-key-alpha-000"}) as http:
            for user in ("key:8382bbf37e9b", "u" * 5_000_000):
                body = {"model": "auto", "messages": USER, "user": user}
                assert (await http.post("/v1/chat/completions", json=body)).status_code == 200
    got = rows(db)
    alpha = "key:" + hashlib.sha256(b"tg-key-alpha-000").hexdigest()[:12]
    assert [r["client"] for r in got] == [alpha, alpha]  # a body's user impersonates nobody
    assert [r["end_user"] for r in got] == ["key:8382bbf37e9b", "u" * 64]
    assert db.stat().st_size < 1_000_000
