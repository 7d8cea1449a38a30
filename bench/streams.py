"""Memory per concurrent stream: tiergate's RSS idle, then at its peak while N paced streams are open at once.

    .venv/bin/python bench/streams.py                       # 1,000 streams: 100 ms to first token, 200 chunks 10 ms apart
    .venv/bin/python bench/streams.py -n 10000 --workers 2  # 10,000 at once (see "file descriptors" below)
    .venv/bin/python bench/streams.py --tiergate-ref HEAD~3 # the same for proxy/ as of an older commit
    .venv/bin/python bench/streams.py -n 1000 --profile     # where the memory goes (tracemalloc, in-process)

bench/upstream.py and ``tiergate serve`` run as their own processes (the upstream paced by its CLI flags:
tiergate does not forward the ``x-bench-*`` headers). bench/load.py opens N connections, then sends one
streaming chat completion on each, all at once, and checks that every stream ends with ``[DONE]``. While
they run, this script samples the proxy's process group every 100 ms from /proc: RSS (summed over its
processes) and open file descriptors. "Idle" is the RSS after a warm-up of 16 streams and a second of
quiet, so start-up work (imports, price data, the first connections) is not charged to the streams.

Placement as in bench/run.py: one worker pinned to core 0, the upstream and the load generator on core 1;
with ``--workers 2`` the proxy is not pinned. The pacing is what the upstream offers; on two cores the
proxy cannot relay 1,000 x 200 chunks in 2.1 s, so streams take longer than paced (the report says how
long). Memory is the measurement here, not speed.

File descriptors: each proxied stream holds two sockets in the proxy (client and upstream). The script
raises its soft RLIMIT_NOFILE to the hard limit (the children inherit it) and reports the limit in force.

``--profile`` serves tiergate inside this process instead (the same app and protocol as ``tiergate
serve``, uvloop, one worker) with tracemalloc on, and prints which lines hold the memory at the peak
compared with idle, per stream. tracemalloc sees Python allocations only (not libuv's or the C parsers'
own), and it slows everything down: its RSS is not the figure to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# bench/run.py: this file runs as a script, so its directory is on sys.path
from load import group_rss_bytes
from run import (
    BENCH_DIR,
    CHAT_PATH,
    CLIENT_KEY,
    HOST,
    LOAD_CORE,
    PROXY_CORE,
    UPSTREAM_KEY,
    Service,
    export_tiergate,
    free_port,
    pin,
    wait_listening,
)

SAMPLE_S = 0.1
OPEN_EVERY = 5  # samples
WARMUP_STREAMS = 16


@dataclass(frozen=True)
class Plan:
    """What to run."""

    streams: int
    ttft_ms: float
    chunk_delay_ms: float
    chunks: int
    workers: int
    ledger: bool
    timeout_s: float
    tiergate_ref: str | None
    stall_s: float = 0.0  # each client stops reading for this long after its first byte
    max_connections: int = 0  # tiergate serve --max-connections; 0: its default
    pin: bool = True  # the proxy (every worker) on core 0, the upstream and the load generator on core 1
    ramp_s: float = 0.0  # the streams start over this long, each on its own new connection (0: all at once)


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it); return the limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def group_pids(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except ProcessLookupError:
                continue
    return pids


def group_fds(pids: Sequence[int]) -> int:
    """Open file descriptors of ``pids``, summed."""
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except FileNotFoundError:
            continue
    return total


def established_to(port: int) -> int:
    """TCP connections established to ``port`` on this machine (the proxy's upstream sockets, when ``port``
    is the upstream's): how many streams the proxy has open right now."""
    suffix, count = f":{port:04X}".encode(), 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table, "rb") as handle:
            handle.readline()
            for line in handle:
                fields = line.split(None, 4)  # sl, local address, remote address, state, ...
                if fields[3] == b"01" and fields[2].endswith(suffix):  # 01: ESTABLISHED
                    count += 1
    return count


def group_hwm_mb(pids: Sequence[int]) -> float:
    """Peak RSS (VmHWM) of ``pids``, summed, in MB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total / 1024


def _load_argv(
    port: int, streams: int, timeout_s: float, pgids: Sequence[int] = (), stall_s: float = 0.0, ramp_s: float = 0.0
) -> list[str]:
    argv = [*pin(LOAD_CORE), sys.executable, str(BENCH_DIR / "load.py"), "--url", f"http://{HOST}:{port}{CHAT_PATH}"]
    argv += ["-c", str(streams), "-n", str(streams), "-d", "3600", "--warmup", "0", "--stream"]
    argv += ["--stall-s", str(stall_s), "--ramp", str(ramp_s)]
    # --cpu-pgid: so that load.py's "foreign" CPU is what processes outside the benchmark used
    argv += [arg for pgid in pgids for arg in ("--cpu-pgid", str(pgid))]
    return argv + ["--timeout", str(timeout_s), "--api-key", CLIENT_KEY, "--json"]


def _upstream_argv(plan: Plan, port: int) -> list[str]:
    argv = [*pin(LOAD_CORE), sys.executable, str(BENCH_DIR / "upstream.py"), "--port", str(port)]
    return argv + [
        "--ttft-ms",
        f"{plan.ttft_ms:g}",
        "--chunk-delay-ms",
        f"{plan.chunk_delay_ms:g}",
        "--chunks",
        str(plan.chunks),
    ]


def _serve_flags(plan: Plan, port: int, db: Path) -> list[str]:
    flags = ["--config", str(BENCH_DIR / "rules.yaml"), "--host", HOST, "--port", str(port), "--db", str(db)]
    flags += ["--log-level", "warning"]
    if plan.max_connections:
        flags += ["--max-connections", str(plan.max_connections)]  # else tiergate's own bound, from the fd limit
    if plan.workers > 1:
        flags += ["--workers", str(plan.workers)]
    if not plan.ledger:
        flags.append("--no-ledger")
    return flags


def _upstream_env(up_port: int) -> dict[str, str]:
    return {"OPENAI_BASE_URL": f"http://{HOST}:{up_port}/v1", "OPENAI_API_KEY": UPSTREAM_KEY}


def _run_load(port: int, streams: int, timeout_s: float) -> dict[str, Any]:
    done = subprocess.run(
        _load_argv(port, streams, timeout_s), capture_output=True, text=True, timeout=timeout_s + 120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def measure(plan: Plan) -> dict[str, Any]:
    """Start the upstream and tiergate, warm up, open the streams; RSS and fds idle and at the peak."""
    tiergate = str(Path(sys.executable).parent / "tiergate")
    raw = BENCH_DIR / "results-raw" / ("streams-" + time.strftime("%Y%m%d-%H%M%S"))
    raw.mkdir(parents=True, exist_ok=True)
    env = _upstream_env(0)
    source = "working tree"
    if plan.tiergate_ref:
        src, source = export_tiergate(plan.tiergate_ref, raw)
        env["PYTHONPATH"] = str(src)
    up_port, port = free_port(), free_port()
    env.update(_upstream_env(up_port))
    proxy_argv = [*(pin(PROXY_CORE) if plan.pin else []), tiergate, "serve"]
    proxy_argv += _serve_flags(plan, port, raw / "streams.db")
    with Service("upstream", _upstream_argv(plan, up_port), {}, raw / "upstream.log") as upstream:
        upstream.wait_healthy(up_port, "/healthz", 10.0)
        with Service("tiergate", proxy_argv, env, raw / "tiergate.log") as proxy:
            proxy.wait_healthy(port, "/healthz", 30.0)
            wait_listening(port, plan.workers)
            start_mb = group_rss_bytes(proxy.pid) / 2**20
            warm = _run_load(port, WARMUP_STREAMS, plan.timeout_s)
            if warm["errors"]:
                raise RuntimeError(f"the warm-up failed: {warm['error_kinds']}\n{proxy.log_tail()}")
            time.sleep(1.0)
            pids = group_pids(proxy.pid)
            idle_mb, idle_fds = group_rss_bytes(proxy.pid) / 2**20, group_fds(pids)
            idle_open = established_to(up_port)  # the warm-up's connections, kept alive in the pool
            load = subprocess.Popen(
                _load_argv(port, plan.streams, plan.timeout_s, (proxy.pid, upstream.pid), plan.stall_s, plan.ramp_s),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            peak_mb, peak_fds, peak_open, tick = idle_mb, idle_fds, idle_open, 0
            while load.poll() is None:
                peak_mb = max(peak_mb, group_rss_bytes(proxy.pid) / 2**20)
                peak_fds = max(peak_fds, group_fds(pids))
                if tick % OPEN_EVERY == 0:  # reading the TCP table costs more: less often
                    peak_open = max(peak_open, established_to(up_port))
                tick += 1
                time.sleep(SAMPLE_S)
            out, err = load.communicate()
            if load.returncode != 0:
                raise RuntimeError(f"load generator failed ({load.returncode}): {err.decode()[-800:]}")
            report = json.loads(out)
            cpu = {name: report["cpu_s"][str(s.pid)] for name, s in (("proxy", proxy), ("upstream", upstream))}
            hwm_mb = group_hwm_mb(pids)
            time.sleep(1.0)
            after_mb = group_rss_bytes(proxy.pid) / 2**20
            log_tail = proxy.log_tail(5)
    return {
        "streams": plan.streams,
        "workers": plan.workers,
        "pinned": plan.pin,
        "ledger": plan.ledger,
        "pacing": f"{plan.ttft_ms:g} ms to first token, {plan.chunks} chunks {plan.chunk_delay_ms:g} ms apart"
        + (f"; clients stall {plan.stall_s:g} s after the first byte" if plan.stall_s else ""),
        "tiergate": source,
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "rss_start_mb": round(start_mb, 1),
        "rss_idle_mb": round(idle_mb, 1),
        "rss_peak_mb": round(peak_mb, 1),
        "rss_after_mb": round(after_mb, 1),
        "vmhwm_mb": round(hwm_mb, 1),
        "growth_mb": round(peak_mb - idle_mb, 1),
        "kb_per_stream": round((peak_mb - idle_mb) * 1024 / plan.streams, 1),
        "fds_idle": idle_fds,
        "fds_peak": peak_fds,
        "open_peak": peak_open - idle_open,
        "open_idle": idle_open,
        "cpu_s": {
            **{name: round(value, 2) for name, value in cpu.items()},
            "load": report["load_cpu_s"],
            "other": report["foreign_cpu_s"],
        },
        "completed": report["requests"],
        "errors": report["errors"],
        "error_kinds": report["error_kinds"],
        "elapsed_s": report["elapsed_s"],
        "stream_p50_ms": report["p50_ms"],
        "stream_p99_ms": report["p99_ms"],
        "ttfb_p50_ms": report["ttfb_p50_ms"],
        "ttfb_p99_ms": report["ttfb_p99_ms"],
        "log_tail": log_tail,
        "raw": str(raw),
    }


def human(result: dict[str, Any]) -> str:
    """The report as a few lines."""
    soft, hard = result["nofile"]
    lines = [
        f"{result['streams']} concurrent streams ({result['pacing']}), {result['workers']} worker(s) "
        f"{'on core 0' if result['pinned'] else 'on both cores'}, "
        f"ledger {'on' if result['ledger'] else 'off'}, tiergate {result['tiergate']}; RLIMIT_NOFILE {soft}/{hard}",
        f"RSS: start {result['rss_start_mb']} MB, idle {result['rss_idle_mb']} MB, peak {result['rss_peak_mb']} MB "
        f"(VmHWM {result['vmhwm_mb']} MB), after {result['rss_after_mb']} MB",
        f"growth over idle: {result['growth_mb']} MB = {result['kb_per_stream']} KB per stream",
        f"fds: idle {result['fds_idle']}, peak {result['fds_peak']}; streams open in the proxy at the peak: "
        f"{result['open_peak']} (connections established to the upstream, beyond the {result['open_idle']} idle ones)",
        f"CPU over the streams: proxy {result['cpu_s']['proxy']} s, upstream {result['cpu_s']['upstream']} s, "
        f"load generator {result['cpu_s']['load']} s; other processes on the machine {result['cpu_s']['other']} s",
        f"streams: {result['completed']} completed, {result['errors']} errors {result['error_kinds'] or ''}",
        f"  {result['elapsed_s']:.1f} s in all; per stream p50 {result['stream_p50_ms']} ms, p99 "
        f"{result['stream_p99_ms']} ms; first byte p50 {result['ttfb_p50_ms']} ms, p99 {result['ttfb_p99_ms']} ms",
        f"logs: {result['raw']}",
    ]
    if result["errors"]:
        lines += ["tiergate's log ends:", result["log_tail"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- --profile


def _group(filename: str) -> str:
    """A traced allocation's owner: the package (aiohttp, uvicorn, proxy, ...) or the stdlib module."""
    parts = Path(filename).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if "proxy" in parts:
        return "proxy/" + "/".join(parts[parts.index("proxy") + 1 :])
    return Path(filename).name


def _where(filename: str) -> str:
    """A traced allocation's file, from its package down (``aiohttp/streams.py``)."""
    parts = Path(filename).parts
    for root in ("site-packages", "python3.11"):
        if root in parts:
            return "/".join(parts[parts.index(root) + 1 :])
    if "proxy" in parts:
        return "/".join(parts[parts.index("proxy") :])
    return Path(filename).name


def _top(
    baseline: tracemalloc.Snapshot, peak: tracemalloc.Snapshot, streams: int, limit: int, frames: int
) -> list[str]:
    lines = []
    diffs = peak.compare_to(baseline, "lineno")
    by_group: dict[str, int] = {}
    for stat in diffs:
        key = _group(stat.traceback[0].filename)
        by_group[key] = by_group.get(key, 0) + stat.size_diff
    total = sum(stat.size_diff for stat in diffs)
    lines.append(
        f"traced Python memory at the peak over idle: {total / 2**20:.1f} MB = {total / streams:.0f} B per stream"
    )
    lines.append("by owner (bytes per stream):")
    for key, size in sorted(by_group.items(), key=lambda item: -item[1])[:limit]:
        lines.append(f"  {size / streams:8.0f}  {key}")
    lines.append("by line (bytes per stream, objects per stream):")
    for stat in diffs[:limit]:
        frame = stat.traceback[0]
        where = f"{_where(frame.filename)}:{frame.lineno}"
        lines.append(f"  {stat.size_diff / streams:8.0f}  {stat.count_diff / streams:6.1f}  {where}")
    if frames > 1:
        lines.append(f"by traceback ({frames} frames, innermost last):")
        for stat in peak.compare_to(baseline, "traceback")[:limit]:
            lines.append(f"  {stat.size_diff / streams:8.0f}  {stat.count_diff / streams:6.1f}")
            lines += [f"      {_where(f.filename)}:{f.lineno}" for f in stat.traceback]
    return lines


async def profile(plan: Plan, limit: int, frames: int) -> list[str]:
    """Serve tiergate in this process with tracemalloc on; snapshot idle and at the traced peak."""
    import uvicorn

    from proxy.app import create_app
    from proxy.connections import PROTOCOL
    from proxy.settings import Settings

    with tempfile.TemporaryDirectory(prefix="tiergate-streams-") as tmp:
        up_port, port = free_port(), free_port()
        os.environ.update(_upstream_env(up_port))
        settings = Settings.from_env(
            config=str(BENCH_DIR / "rules.yaml"),
            host=HOST,
            port=port,
            db=str(Path(tmp) / "streams.db"),
            ledger=plan.ledger,
            log_level="warning",
            max_connections=plan.max_connections,
        )
        config = uvicorn.Config(
            create_app(settings), host=HOST, port=port, log_level="warning", access_log=False, http=PROTOCOL
        )
        server = uvicorn.Server(config)
        with Service("upstream", _upstream_argv(plan, up_port), {}, Path(tmp) / "upstream.log") as upstream:
            upstream.wait_healthy(up_port, "/healthz", 10.0)
            serving = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.05)
            warm = await asyncio.create_subprocess_exec(*_load_argv(port, WARMUP_STREAMS, plan.timeout_s))
            await warm.wait()
            await asyncio.sleep(1.0)
            tracemalloc.start(frames)
            baseline = tracemalloc.take_snapshot()
            load = await asyncio.create_subprocess_exec(
                *_load_argv(port, plan.streams, plan.timeout_s, stall_s=plan.stall_s), stdout=subprocess.PIPE
            )
            peak, best, taken_at = None, 0, 0.0
            while load.returncode is None:
                current, _ = tracemalloc.get_traced_memory()
                # A snapshot stops the loop for a while: take one only when the peak has grown.
                if current > best * 1.03 and time.monotonic() - taken_at > 1.0:
                    best, peak, taken_at = current, tracemalloc.take_snapshot(), time.monotonic()
                try:
                    await asyncio.wait_for(load.wait(), 0.2)
                except TimeoutError:
                    pass
            out = json.loads((await load.communicate())[0])
            tracemalloc.stop()
            server.should_exit = True
            await serving
    lines = [f"{plan.streams} streams: {out['requests']} completed, {out['errors']} errors {out['error_kinds'] or ''}"]
    if peak is not None:
        lines += _top(baseline, peak, plan.streams, limit, frames)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--streams", type=int, default=1000, help="concurrent streams (default 1000)")
    parser.add_argument("--ttft-ms", type=float, default=100.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=10.0)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="tiergate serve --workers (default 1)")
    parser.add_argument("--no-ledger", dest="ledger", action="store_false")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a stream may take (default 600)")
    parser.add_argument(
        "--stall-s", type=float, default=0.0, help="each client stops reading for this long after its first byte"
    )
    parser.add_argument(
        "--max-connections", type=int, default=0, help="tiergate serve --max-connections (default: its own)"
    )
    parser.add_argument(
        "--ramp-s", type=float, default=0.0, help="start the streams over this many seconds (default: all at once)"
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let the proxy's workers use both cores")
    parser.add_argument("--tiergate-ref", help="measure proxy/ as of this git commit instead of the working tree")
    parser.add_argument("--profile", action="store_true", help="tracemalloc, tiergate in this process")
    parser.add_argument("--top", type=int, default=25, help="--profile: lines to show")
    parser.add_argument("--frames", type=int, default=1, help="--profile: traceback depth (> 1 lists tracebacks too)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    plan = Plan(
        args.streams, args.ttft_ms, args.chunk_delay_ms, args.chunks, args.workers, args.ledger, args.timeout,
        args.tiergate_ref, args.stall_s, args.max_connections, args.pin, args.ramp_s,
    )  # fmt: skip
    raise_nofile()
    if args.profile:
        import uvloop

        os.sched_setaffinity(0, {PROXY_CORE})
        print("\n".join(uvloop.run(profile(plan, args.top, args.frames))))
        return 0
    os.sched_setaffinity(0, {LOAD_CORE})
    result = measure(plan)
    print(json.dumps(result, indent=1) if args.json else human(result))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
