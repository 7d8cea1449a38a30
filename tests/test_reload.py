"""Hot reload of rules.yaml: an edit of the file (watched) and SIGHUP swap the registry; a bad file is kept
out and shown by /readyz; a stream in flight finishes on the registry it started with.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.cli import main
from proxy.fakes.openai import Behavior, FakeOpenAI
from proxy.ledger import audit
from tests.conftest import CLOSED_URL, RULES, UPSTREAM_KEY, ProxyFactory, sdk
from tests.test_ledger import rows


def _write(path: Path, **tiers: str) -> None:
    """The shipped rules.yaml without retries, with ``task=tier`` changes, written to ``path``."""
    doc = yaml.safe_load(RULES.read_text())
    doc["policy"] = {"retries": 0}
    for tier in doc["tiers"].values():
        tier.pop("policy", None)
    for task, tier in tiers.items():
        doc["tasks"][task]["tier"] = tier
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture
def env(upstream_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # rules.yaml reads its provider URLs and keys from the environment, on every (re)load
    monkeypatch.setenv("OPENAI_BASE_URL", upstream_url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", CLOSED_URL)


async def _until(check: Callable[[], Awaitable[bool]], what: str, tries: int = 500) -> None:
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def _registry(http: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await http.get("/readyz")).json()["registry"]
    return body


async def _model(url: str, task: str = "summary") -> str:
    client = sdk(url)
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello"}], extra_headers={"X-Task-Type": task}
    )
    await client.close()
    return raw.headers["x-tiergate-model"]


async def test_an_edit_of_the_rules_file_retiers_without_a_restart(
    start_proxy: ProxyFactory, env: None, tmp_path: Path
) -> None:
    config = tmp_path / "rules.yaml"
    _write(config)
    async with (
        start_proxy(None, config=str(config), reload_interval_s=0.02) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        before = await _registry(http)
        assert (await _model(url), before["error"]) == ("gpt-5.4-mini", None)
        _write(config, summary="small")  # the one-line re-tiering

        async def reloaded() -> bool:
            return (await _registry(http))["hash"] != before["hash"]

        await _until(reloaded, "the edit was picked up")
        after = await _registry(http)
        assert await _model(url) == "gpt-5.4-nano"
    assert after["error"] is None and after["loaded_at"] >= before["loaded_at"]


async def test_a_bad_edit_is_kept_out_and_shown_until_fixed(
    start_proxy: ProxyFactory, env: None, tmp_path: Path
) -> None:
    config = tmp_path / "rules.yaml"
    _write(config)
    async with (
        start_proxy(None, config=str(config), reload_interval_s=0.02) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        good = await _registry(http)
        _write(config, summary="no_such_tier")

        async def refused() -> bool:
            return (await _registry(http))["error"] is not None

        await _until(refused, "the bad edit was reported")
        bad = await _registry(http)
        served = await _model(url)  # still the running registry
        _write(config, summary="small")

        async def fixed() -> bool:
            return (await _registry(http))["error"] is None

        await _until(fixed, "the fix was loaded")
        now = await _model(url)
    assert bad["hash"] == good["hash"] and "tasks.summary.tier" in bad["error"] and "\n" not in bad["error"]
    assert (served, now) == ("gpt-5.4-mini", "gpt-5.4-nano")


async def test_a_stream_in_flight_finishes_on_the_registry_it_started_with(
    start_proxy: ProxyFactory, env: None, fake: FakeOpenAI, tmp_path: Path
) -> None:
    config, db = tmp_path / "rules.yaml", tmp_path / "l.db"
    _write(config)
    gate = asyncio.Event()
    fake.push(Behavior(chunk_delay=gate))
    async with (
        start_proxy(None, config=str(config), db=str(db), reload_interval_s=0.02) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        client = sdk(url)
        before = await _registry(http)
        stream = await client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": "a long story"}],
            stream=True,
            extra_headers={"X-Task-Type": "summary"},
        )
        _write(config, summary="small")

        async def reloaded() -> bool:
            return (await _registry(http))["hash"] != before["hash"]

        await _until(reloaded, "the edit was picked up mid-stream")
        gate.set()
        text = "".join([c.choices[0].delta.content or "" async for c in stream.parse() if c.choices])
        after = await _model(url)
        await client.close()
    assert stream.headers["x-tiergate-model"] == "gpt-5.4-mini" and text.startswith("Fake reply from gpt-5.4-mini")
    assert after == "gpt-5.4-nano"
    assert [r["model"] for r in rows(db)] == ["gpt-5.4-mini", "gpt-5.4-nano"]


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_a_running_server(tmp_path: Path, upstream_url: str, workers: int) -> None:
    """One process, or the supervisor of two workers (which passes SIGHUP on to each)."""
    config = tmp_path / "rules.yaml"
    _write(config)
    port = _free_port()
    env = {
        **os.environ,
        "OPENAI_BASE_URL": upstream_url + "/v1",
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "ANTHROPIC_BASE_URL": CLOSED_URL,
        "TIERGATE_RELOAD_INTERVAL_S": "3600",  # the watcher would not see it: only SIGHUP can
        "TIERGATE_LOG_LEVEL": "warning",
    }
    argv = [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--port", str(port),
            "--db", str(tmp_path / "t.db"), "--workers", str(workers)]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = _poll(port, lambda r: r is not None)
        for _ in range(20 * workers):  # every worker up (each answers on its own socket)
            assert _poll(port, lambda r: r is not None)["hash"] == first["hash"]
        _write(config, summary="small")
        proc.send_signal(signal.SIGHUP)
        second = _poll(port, lambda r: r is not None and r["hash"] != first["hash"])
        # each /readyz is a new connection, which the kernel hands to either worker: all say the new hash
        assert all(_poll(port, lambda r: r is not None)["hash"] == second["hash"] for _ in range(20 * workers))
        assert proc.poll() is None
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    # alive after SIGHUP (its default action would have killed it), serving the edited file
    assert second["error"] is None and second["loaded_at"] > first["loaded_at"], err


def _poll(port: int, done: Callable[[dict[str, Any] | None], bool], tries: int = 400) -> dict[str, Any]:
    import time

    for _ in range(tries):
        try:
            registry: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()["registry"]
        except httpx.TransportError:
            registry = None  # type: ignore[assignment]
        if done(registry):
            return registry
        time.sleep(0.05)
    raise AssertionError("the server never reached the expected registry")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_every_row_records_its_registry_and_the_audit_shows_cost_per_registry(
    start_proxy: ProxyFactory, env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, db = tmp_path / "rules.yaml", tmp_path / "l.db"
    _write(config)
    async with (
        start_proxy(None, config=str(config), db=str(db), reload_interval_s=0.02) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        before = await _registry(http)
        assert [await _model(url) for _ in range(3)] == ["gpt-5.4-mini"] * 3
        _write(config, summary="small")

        async def reloaded() -> bool:
            return (await _registry(http))["hash"] != before["hash"]

        await _until(reloaded, "the edit was picked up")
        after = await _registry(http)
        assert await _model(url) == "gpt-5.4-nano"
    assert [(r["model"], r["registry"]) for r in rows(db)] == [("gpt-5.4-mini", before["hash"])] * 3 + [
        ("gpt-5.4-nano", after["hash"])
    ]
    by_registry = {g.key: g for g in audit.summarize(str(db), "registry").groups}
    assert {k: g.calls for k, g in by_registry.items()} == {before["hash"][:12]: 3, after["hash"][:12]: 1}
    mini, nano = by_registry[before["hash"][:12]], by_registry[after["hash"][:12]]
    assert mini.cost_usd is not None and nano.cost_usd is not None and nano.cost_usd < mini.cost_usd / 3
    assert main(["audit", "--db", str(db), "--by", "registry"]) == 0
    out = capsys.readouterr().out
    assert before["hash"][:12] in out and after["hash"][:12] in out
