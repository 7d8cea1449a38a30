"""``tiergate fake-upstream``: the fakes standalone, started as the README says, and tiergate served on them.

The command runs as a subprocess on a free port (``--port 0``; it prints where it listens); the official
openai and anthropic SDKs call it directly, then through a tiergate serving ``examples/rules.fake.yaml``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import pytest_asyncio
import yaml
from openai import AsyncOpenAI

from proxy import rules
from proxy.fakes.embeddings import vector
from tests.conftest import ROOT, ProxyFactory, sdk

FAKE_RULES = ROOT / "examples" / "rules.fake.yaml"
TIERGATE = Path(sys.executable).parent / "tiergate"  # the console script the README runs
ASK: list[Any] = [{"role": "user", "content": "Summarize the retry storm of Monday"}]
_START_S = 30.0  # a loaded machine may take a while to import and bind; nothing here waits longer


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(TIERGATE), "fake-upstream", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


@pytest_asyncio.fixture
async def fake_upstream() -> AsyncIterator[tuple[str, list[str]]]:
    """The running command's base URL and the lines it printed; stopped with SIGTERM afterwards."""
    process = await start("--port", "0")
    assert process.stdout is not None
    try:
        lines = [(await asyncio.wait_for(process.stdout.readline(), _START_S)).decode() for _ in range(4)]
        assert lines[0].startswith("tiergate fake upstreams on http://127.0.0.1:"), lines
        url = lines[0].split()[4]
        yield url, lines
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), _START_S)
    assert code == 0  # SIGTERM is a clean stop


async def test_the_fakes_answer_their_own_sdks(fake_upstream: tuple[str, list[str]]) -> None:
    url, lines = fake_upstream
    assert lines[1].split()[1] == f"{url}/openai/v1" and lines[2].split()[1] == f"{url}/anthropic"
    assert f"FAKE_UPSTREAM_URL={url} .venv/bin/tiergate serve --config examples/rules.fake.yaml" in lines[3]
    async with AsyncOpenAI(base_url=f"{url}/openai/v1", api_key="anything", max_retries=0) as client:
        completion = await client.chat.completions.create(model="gpt-5.4-mini", messages=ASK)
        embedded = await client.embeddings.create(model="text-embedding-3-small", input="retry storm", dimensions=8)
        response = await client.responses.create(model="gpt-5.4-mini", input=ASK[0]["content"])
    assert response.output_text == "Fake reply from gpt-5.4-mini: " + ASK[0]["content"]
    assert completion.choices[0].message.content == "Fake reply from gpt-5.4-mini: " + ASK[0]["content"]
    assert embedded.data[0].embedding == pytest.approx(vector("retry storm", 8), abs=1e-6)
    async with anthropic.AsyncAnthropic(base_url=f"{url}/anthropic", api_key="anything", max_retries=0) as claude:
        message = await claude.messages.create(model="claude-sonnet-5-5", max_tokens=64, messages=ASK)  # type: ignore[arg-type]
    assert message.content[0].type == "text" and message.content[0].text.startswith("Fake Claude reply")
    async with httpx.AsyncClient(base_url=url) as http:
        index = await http.get("/")
        missing = await http.get("/gemini/v1/models")
    assert index.json() == {"openai": f"{url}/openai/v1", "anthropic": f"{url}/anthropic"}
    assert missing.status_code == 404 and f"{url}/openai/v1" in missing.json()["error"]["message"]


async def test_tiergate_serves_the_fake_rules_on_them(
    fake_upstream: tuple[str, list[str]], start_proxy: ProxyFactory
) -> None:
    url, _ = fake_upstream
    registry = rules.load(FAKE_RULES, environ={"FAKE_UPSTREAM_URL": url})
    async with start_proxy(registry) as proxy_url:
        async with sdk(proxy_url, {"X-Task-Type": "summary"}) as client:
            raw = await client.chat.completions.with_raw_response.create(model="auto", messages=ASK)
            claude = await client.chat.completions.with_raw_response.create(
                model="claude-opus-5-5", messages=ASK, extra_headers={"X-Task-Type": "agent"}
            )
            embedded = await client.embeddings.with_raw_response.create(
                model="auto", input=["retry storm"], extra_headers={"X-Task-Type": "retrieval"}
            )
            response = await client.responses.with_raw_response.create(model="auto", input=ASK[0]["content"])
            translated = await client.responses.create(
                model="claude-opus-5-5", input=ASK[0]["content"], extra_headers={"X-Task-Type": "agent"}
            )
    assert (raw.headers["x-tiergate-provider"], raw.headers["x-tiergate-model"]) == ("openai", "gpt-5.4-mini")
    assert raw.parse().choices[0].message.content == "Fake reply from gpt-5.4-mini: " + ASK[0]["content"]
    assert claude.headers["x-tiergate-provider"] == "anthropic"
    assert (claude.parse().choices[0].message.content or "").startswith("Fake Claude reply from claude-opus-5-5")
    assert embedded.headers["x-tiergate-model"] == "text-embedding-3-small"
    assert len(embedded.parse().data[0].embedding) == 1536
    assert response.headers["x-tiergate-model"] == "gpt-5.4-mini"  # natively, at the fake's /responses
    assert response.parse().output_text == "Fake reply from gpt-5.4-mini: " + ASK[0]["content"]
    assert translated.output_text.startswith("Fake Claude reply from claude-opus-5-5")  # translated for Anthropic


async def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = await start("--port", str(taken.getsockname()[1]))
        _, err = await asyncio.wait_for(process.communicate(), _START_S)
    assert process.returncode == 2
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith("tiergate: cannot listen on 127.0.0.1:") and "Traceback" not in err.decode()


def test_the_fake_rules_are_the_shipped_rules_but_for_providers() -> None:
    shipped = yaml.safe_load((ROOT / "rules.yaml").read_text())
    fake = yaml.safe_load(FAKE_RULES.read_text())
    assert {k: v for k, v in fake.items() if k != "providers"} == {
        k: v for k, v in shipped.items() if k != "providers"
    }, "examples/rules.fake.yaml must be rules.yaml with only `providers:` changed: copy the other sections over"
    assert set(fake["providers"]) == set(shipped["providers"])
    assert json.dumps(fake["providers"]).count("FAKE_UPSTREAM_URL") == 2
