"""``tiergate serve --workers 2`` as a user runs it: both workers get connections, a dead one is replaced,
SIGTERM stops them all, and a port already taken is one line.

Which worker holds a connection is read from /proc: the workers' socket inodes against the kernel's TCP
table (established connections to the server's port).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.fakes.openai import FakeOpenAI
from proxy.loopback import serve
from tests.conftest import RULES
from tests.test_ledger import served_by_cli

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc")


def _workers(parent: int) -> set[int]:
    """The supervisor's worker processes (its children running multiprocessing's spawn entry)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == parent and b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            found.add(int(entry))
    return found


def _inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def _served_by(port: int, workers: set[int]) -> dict[int, int]:
    """Established connections to ``port``, counted per worker holding them."""
    owner = {inode: pid for pid in workers for inode in _inodes(pid)}
    counts = dict.fromkeys(workers, 0)
    suffix = f":{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], int(fields[9])
        if local.endswith(suffix) and state == "01" and inode in owner:
            counts[owner[inode]] += 1
    return counts


def _listeners(port: int) -> int:
    """Sockets listening on ``port``: one per worker that is serving (each has its own)."""
    suffix = f":{port:04X}"
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for fields in map(str.split, lines) if fields[1].endswith(suffix) and fields[3] == "0A")


async def _all_listening(port: int, n: int) -> None:
    # /healthz answers as soon as one worker serves; the other may still be starting.
    for _ in range(600):
        if _listeners(port) == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{_listeners(port)} of {n} workers listening on {port}")


async def _hold(port: int, n: int) -> list[asyncio.StreamWriter]:
    """``n`` keep-alive connections, each answered once (so each has been accepted by a worker)."""
    writers = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writers.append(writer)
    return writers


def test_connections_reach_both_workers_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    asyncio.run(_both_workers(tmp_path))


async def _both_workers(tmp_path: Path) -> None:
    async with (
        serve(FakeOpenAI()) as upstream,
        served_by_cli(upstream, tmp_path / "l.db", "--workers", "2") as (
            proc,
            http,
        ),
    ):
        port = http.base_url.port
        assert port is not None
        await _all_listening(port, 2)
        workers = _workers(proc.pid)
        assert len(workers) == 2
        held = await _hold(port, 32)
        # The kernel hashes each connection to one worker's socket: all 32 on one has odds of 2 in 2**32.
        counts = _served_by(port, workers)
        assert sum(counts.values()) >= 32 and min(counts.values()) > 0, counts  # and httpx's own
        for writer in held:
            writer.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_worker_that_dies_is_replaced(tmp_path: Path) -> None:
    asyncio.run(_replaced(tmp_path))


async def _replaced(tmp_path: Path) -> None:
    async with (
        serve(FakeOpenAI()) as upstream,
        served_by_cli(upstream, tmp_path / "l.db", "--workers", "2") as (
            proc,
            http,
        ),
    ):
        port = http.base_url.port
        assert port is not None
        await _all_listening(port, 2)
        victim = min(_workers(proc.pid))
        os.kill(victim, signal.SIGKILL)
        for _ in range(600):  # the supervisor notices within half a second; a new worker takes ~1 s to start
            now = _workers(proc.pid)
            if len(now) == 2 and victim not in now:
                break
            await asyncio.sleep(0.05)
        assert len(now) == 2 and victim not in now
        await _all_listening(port, 2)
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        responses = await asyncio.gather(*(http.post("/v1/chat/completions", json=body) for _ in range(20)))
        assert [r.status_code for r in responses] == [200] * 20


def test_a_port_already_taken_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "proxy.cli", "serve", "--config", str(RULES), "--port", str(port)]
        done = subprocess.run(
            [*argv, "--db", str(tmp_path / "l.db"), "--workers", "2"], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    # (after the start-up warnings about the empty provider keys)
    assert (
        done.stderr.strip().splitlines()[-1] == f"tiergate: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
