"""What hostile traffic costs tiergate: CPU for a huge stream event, memory under oversized uploads and
under thousands of idle connections.

    .venv/bin/python bench/hostile.py            # all three, about a minute
    .venv/bin/python bench/hostile.py --only sse,bodies

- ``sse``: one 16 MB SSE event relayed (``--max-event-mb 32`` so it fits), and the same event refused
  under the default 8 MB cap: tiergate's CPU seconds for each (from /proc, exactly around the request),
  and the slowest ``/healthz`` answer while it ran (the event loop's stall).
- ``bodies``: four 100 MB chunked uploads at once against the 32 MB body cap: tiergate's peak RSS
  (VmHWM) before and after, and the statuses.
- ``idle``: 10,000 connections that never send a request: tiergate's open file descriptors and RSS
  before and while they are held (``--head-timeout-s 120`` so they stay for the measurement).

``--legacy`` passes none of the flags above (for a tiergate that predates them: with
``PYTHONPATH=<an older proxy/'s parent>``, the same numbers for the code before the hardening).

tiergate runs as ``tiergate serve`` in its own process, pinned to core 0; the upstream and the clients
share core 1 (as in bench/run.py). Everything is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

# bench/run.py: this file runs as a script, so its directory is on sys.path
from run import BENCH_DIR, HOST, LOAD_CORE, PROXY_CORE, free_port, pin

CHAT = "/v1/chat/completions"
EVENT_MB = 16


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB -> MB
    return float("nan")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A raw OpenAI-shaped upstream whose one answer is a stream with a single 16 MB event."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        await reader.readexactly(length)
        if head.startswith(b"GET"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            return
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "x" * (EVENT_MB * 2**20)},
                              "finish_reason": None}]}  # fmt: skip
        usage = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                 "usage": {"prompt_tokens": 5, "completion_tokens": 4_000_000, "total_tokens": 4_000_005}}  # fmt: skip
        body = b"data: " + json.dumps(chunk).encode() + b"\n\ndata: " + json.dumps(usage).encode()
        body += b"\n\ndata: [DONE]\n\n"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        for i in range(0, len(body), 65536):
            writer.write(body[i : i + 65536])
            await writer.drain()
    except ConnectionError:
        pass  # tiergate refused the event and hung up: that is the point of the second case
    finally:
        writer.close()


def _serve(port: int, upstream_port: int, *extra: str) -> subprocess.Popen[bytes]:
    tiergate = str(Path(sys.executable).parent / "tiergate")
    argv = [*pin(PROXY_CORE), tiergate, "serve", "--config", str(BENCH_DIR / "rules.yaml"), "--host", HOST]
    argv += ["--port", str(port), "--no-ledger", "--log-level", "warning", *extra]
    env = {**os.environ, "OPENAI_BASE_URL": f"http://{HOST}:{upstream_port}/v1", "OPENAI_API_KEY": "sk-bench"}
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _ready(port: int) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                if (await http.get(f"http://{HOST}:{port}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("tiergate did not start")


async def _health_watch(port: int, stop: asyncio.Event) -> float:
    """The slowest /healthz answer, in seconds, until ``stop``."""
    worst = 0.0
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=60) as http:
        while not stop.is_set():
            started = time.perf_counter()
            await http.get("/healthz")
            worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(0.05)
    return worst


async def bench_sse(legacy: bool) -> list[dict[str, Any]]:
    server = await asyncio.start_server(_upstream, HOST, 0)
    upstream_port = server.sockets[0].getsockname()[1]
    rows = []
    cases = [("relayed (cap 32 MB)", ("--max-event-mb", "32")), ("refused (cap 8 MB)", ())]
    for label, extra in [("relayed (no cap)", ())] if legacy else cases:
        port = free_port()
        proc = _serve(port, upstream_port, *extra)
        try:
            await _ready(port)
            stop = asyncio.Event()
            watch = asyncio.create_task(_health_watch(port, stop))
            before = _cpu_seconds(proc.pid)
            received = 0
            async with httpx.AsyncClient(timeout=300) as http:
                body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": True}
                async with http.stream("POST", f"http://{HOST}:{port}{CHAT}", json=body) as response:
                    async for piece in response.aiter_bytes():
                        received += len(piece)
            cpu = _cpu_seconds(proc.pid) - before
            stop.set()
            worst = await watch
            rows.append({"case": label, "cpu_s": cpu, "bytes_to_client": received, "worst_healthz_s": worst})
        finally:
            proc.terminate()
            proc.wait(30)
    server.close()
    return rows


async def _upload(port: int, mb: int) -> int:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        piece = b"y" * 2**20
        for _ in range(mb):
            yield piece
        yield b'"}]}'

    async with httpx.AsyncClient(timeout=300) as http:
        try:
            return (await http.post(f"http://{HOST}:{port}{CHAT}", content=chunks())).status_code
        except httpx.TransportError:
            return -1  # the server answered 413 and closed while the upload went on


async def bench_bodies() -> dict[str, Any]:
    port = free_port()
    proc = _serve(port, free_port())
    try:
        await _ready(port)
        before = _status(proc.pid, "VmHWM")
        statuses = await asyncio.gather(*(_upload(port, 100) for _ in range(4)))
        return {"uploads": "4 x 100 MB, chunked", "peak_rss_before_mb": before,
                "peak_rss_after_mb": _status(proc.pid, "VmHWM"), "statuses": statuses}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)


async def bench_idle(count: int, legacy: bool) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 512)), hard))
    port = free_port()
    bounds = () if legacy else ("--head-timeout-s", "120", "--max-connections", str(count + 100))
    proc = _serve(port, free_port(), *bounds)
    try:
        await _ready(port)
        await asyncio.sleep(0.5)
        fds_before, rss_before = _fds(proc.pid), _status(proc.pid, "VmRSS")
        held = []
        for _ in range(count):
            held.append(await asyncio.open_connection(HOST, port))
        await asyncio.sleep(1.0)  # let the server accept the backlog
        fds, rss = _fds(proc.pid), _status(proc.pid, "VmRSS")
        for _, writer in held:
            writer.close()
        return {"connections": count, "fds_before": fds_before, "fds_held": fds, "rss_before_mb": rss_before,
                "rss_held_mb": rss, "kb_per_connection": (rss - rss_before) * 1024 / count}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="sse,bodies,idle", help="comma-separated: sse, bodies, idle")
    parser.add_argument("--connections", type=int, default=10_000, help="idle connections to hold")
    parser.add_argument("--legacy", action="store_true", help="pass no hardening flag (measure older code)")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {LOAD_CORE})
    only = set(args.only.split(","))
    results: dict[str, Any] = {}
    if "sse" in only:
        results["sse"] = asyncio.run(bench_sse(args.legacy))
    if "bodies" in only:
        results["bodies"] = asyncio.run(bench_bodies())
    if "idle" in only:
        results["idle"] = asyncio.run(bench_idle(args.connections, args.legacy))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
