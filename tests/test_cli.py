"""The console script as a user runs it: `tiergate serve` (flags and TIERGATE_* env) and `tiergate demo`."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from proxy.demo import WORKLOAD, run_demo
from tests.conftest import RULES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_demo_runs_the_workload_through_the_sdk() -> None:
    out = io.StringIO()
    assert await run_demo(str(RULES), out=out) == 0
    text = out.getvalue()
    # the first table only: one line per call, between the rule under its header and the blank line
    table = text.split("\ntiergate on ", 1)[1].split("-----\n", 1)[1].split("\n\n", 1)[0]
    lines = table.splitlines()
    assert len(lines) == len(WORKLOAD)
    assert any(line.startswith("agent") and " default " in line for line in lines)  # nothing recognised it
    # the classifier was trained on the simulated app's tagged traffic, then placed untagged calls
    assert "$ tiergate classifier train" in text and "5-fold accuracy" in text
    placed = [line.split()[0] for line in lines if line.split()[1] == "classifier"]
    assert placed == ["summary", "ad_copy", "relevance"]
    assert any(line.startswith("summary") and " rule:summaries " in line for line in lines)
    assert "$ tiergate audit --classifier" in text and "Shadow agreement" in text
    # a precomputed answer: served from the store, stale while regenerating, then the exact cache
    act = text.split("Generation off the request path", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    states = [next(w for w in line.split() if w in ("202", "ready", "hit", "stale", "miss")) for line in act]
    assert states == ["202", "ready", "hit", "stale", "ready", "hit", "miss", "hit"]
    assert any(" yes " in line for line in lines)  # the streamed call
    # the ticket the lookup table labels never reaches a model; the outage call falls over to Anthropic
    assert any("local::proxy.handlers.ticket_labels:classify" in line for line in lines)
    outage = next(line for line in lines if "anthropic::" in line)
    assert outage.startswith("summary") and outage.split()[5] == "3"  # openai twice, then anthropic
    assert "openai::gpt-5.4-nano" in text and "openai::gpt-5.5" in text
    # two Responses API calls: natively on OpenAI, and in the outage translated for Anthropic
    native, translated = (line.split() for line in lines if line.endswith(" responses"))
    assert (native[0], native[3], native[5]) == ("extraction", "openai::gpt-5.4-nano", "1")
    assert (translated[0], translated[3], translated[5]) == ("summary", "anthropic::claude-sonnet-5-5", "3")
    # an embeddings call, on the embedding tier's model: input tokens only
    embedded = next(line.split() for line in lines if line.endswith(" embeddings"))
    assert (embedded[0], embedded[2], embedded[3], embedded[7]) == (
        "retrieval",
        "embedding",
        "openai::text-embedding-3-small",
        "0",
    )
    assert int(embedded[6]) > 0


def test_serve_reads_tiergate_env_and_flags(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "TIERGATE_CONFIG": str(RULES), "TIERGATE_HOST": "127.0.0.1", "TIERGATE_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--port", str(port), "--db", str(tmp_path / "t.db")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "tiergate serve did not come up"
                time.sleep(0.1)
        assert response.json() == {"status": "ok"}
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
        assert models["data"][0]["id"] == "auto"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the captured SIGTERM
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in stderr


def test_serve_with_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "rules.yaml"
    bad.write_text(RULES.read_text().replace("default_task: agent", "default_task: agnet"))
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "tiergate: default_task: 'agnet' is not a defined task (defined: agent, narrative, ad_copy, summary, "
        "title_generation, classification, extraction, relevance, retrieval, eval_judge)"
    ]


def test_bad_serve_flags_are_one_line_and_exit_2() -> None:
    for flags, message in (
        (["--transport", "curl"], "tiergate: --transport: 'curl' is not one of aiohttp, httpcore"),
        (["--workers", "0"], "tiergate: --workers: expected 1 or more, got 0"),
        (["--log-level", "loud"], "tiergate: --log-level: 'loud' is not one of"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "serve", *flags], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2
        assert done.stderr.strip().startswith(message) and "\n" not in done.stderr.strip()
