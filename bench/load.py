"""A low-overhead load generator for OpenAI-style chat completion endpoints.

Fixed concurrency: each worker owns one HTTP/1.1 keep-alive connection (a raw
:class:`asyncio.Protocol`, uvloop when importable) and sends one request after
another. A run is a warm-up phase (discarded) then a measured phase bounded by a
number of requests AND a duration, whichever comes first; requests in flight at the
deadline are awaited (each has its own timeout).

For each request it records the total latency and, for streams, the time to the
first body byte (the first SSE event). A request counts as an error when the status
is not 200, the connection breaks, it times out, or a stream does not end with
``data: [DONE]``.

Optionally it samples the CPU time (user+sys) and RSS of whole process groups from
``/proc`` right around the measured phase (``--cpu-pgid``), so a benchmark driver
can charge a proxy's CPU to exactly the requests measured.

Loopback only: the target host must be 127.0.0.1.

    python bench/load.py --url http://127.0.0.1:8900/v1/chat/completions -c 16 -n 20000 -d 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

LOOPBACK = "127.0.0.1"
SYSTEM_PROMPT = "You are a concise assistant that summarises support tickets for the on-call engineer."
USER_PROMPT = (
    "Summarise this ticket in two sentences: checkout API returns intermittent 502s "
    "since the 14:05 deploy; retries succeed; p99 latency doubled."
)
DONE_MARKER = b"data: [DONE]"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def chat_body(model: str, stream: bool) -> bytes:
    """A realistic ~300-byte chat completion body (system + user message)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT},
        ],
        "temperature": 0.2,
        "max_tokens": 128,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":")).encode()


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """Serialise one POST request with a Content-Length body."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"host: {host}:{port}",
        "content-type: application/json",
        "accept: application/json",
        f"content-length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# --------------------------------------------------------------------------- /proc


def group_cpu_seconds(pgid: int) -> float:
    """User+sys CPU seconds of every live process in process group ``pgid``."""
    return sum(stat[0] for stat in _group_stats(pgid))


def group_rss_bytes(pgid: int) -> int:
    """Resident set size in bytes of every live process in process group ``pgid``."""
    return sum(stat[1] for stat in _group_stats(pgid))


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent in processes (user, nice, system) or stolen, since boot.

    irq and softirq time is left out: the benchmark's own loopback traffic is processed there
    (about 10% of a core at 20k req/s) and is charged to no process.
    """
    with open("/proc/stat", "rb") as handle:
        fields = [int(value) for value in handle.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields
    return (user + nice + system + steal) / CLK_TCK


def own_cpu_seconds() -> float:
    """User+sys CPU seconds of this process."""
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU counters at one instant: watched process groups, this process, the whole machine."""

    groups: dict[str, float]
    own: float
    machine: float

    @classmethod
    def take(cls, pgids: tuple[int, ...]) -> CpuSnapshot:
        """Read the counters now."""
        return cls({str(pgid): group_cpu_seconds(pgid) for pgid in pgids}, own_cpu_seconds(), machine_busy_seconds())

    def since(self, before: CpuSnapshot) -> CpuSnapshot:
        """The CPU seconds spent between ``before`` and this snapshot."""
        groups = {key: round(value - before.groups[key], 4) for key, value in self.groups.items()}
        return CpuSnapshot(groups, round(self.own - before.own, 4), round(self.machine - before.machine, 4))

    @property
    def foreign(self) -> float:
        """Machine CPU not spent by the watched groups or this process: noise from elsewhere."""
        return round(max(0.0, self.machine - self.own - sum(self.groups.values())), 4)


def _group_stats(pgid: int) -> list[tuple[float, int]]:
    """(cpu seconds, rss bytes) of each process whose process group is ``pgid``."""
    stats = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        # Fields after the parenthesised command name; see proc(5).
        fields = raw[raw.rindex(b")") + 2 :].split()
        if int(fields[2]) != pgid:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        stats.append((cpu, int(fields[21]) * PAGE_SIZE))
    return stats


# --------------------------------------------------------------------------- client


class ResponseError(Exception):
    """A response that cannot count as a success."""


@dataclass
class Response:
    """What the client keeps of one response."""

    status: int = 0
    first_body_at: float | None = None
    body_bytes: int = 0
    tail: bytes = b""
    close: bool = False


class ClientProtocol(asyncio.Protocol):
    """One keep-alive connection that runs one request at a time.

    The response parser is incremental: head, then a Content-Length body, a chunked
    body, or a body delimited by the connection closing.
    """

    def __init__(self, stall_s: float = 0.0) -> None:
        self._stall_s = stall_s  # stop reading for this long after a response's first body byte
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._response = Response()
        self._state = "idle"
        self._remaining = 0
        self._steps: dict[str, Callable[[float], bool]] = {
            "head": self._parse_head,
            "body": self._parse_body,
            "until_close": self._parse_until_close,
            "chunk_size": self._parse_chunk_size,
            "chunk_data": self._parse_chunk_data,
            "chunk_end": self._parse_chunk_end,
            "trailer": self._parse_trailer,
        }

    # asyncio callbacks -----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._state == "until_close":
            self._finish()
        self._fail(ResponseError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            return  # bytes nobody asked for; the connection is about to be dropped
        self._buffer += data
        try:
            self._parse(time.perf_counter())
        except (ValueError, IndexError) as exc:
            self._fail(ResponseError(f"unparseable response: {exc}"))
            self.close()

    # API --------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """Whether another request can be sent on this connection."""
        return self._transport is not None and not self._transport.is_closing()

    def request(self, payload: bytes) -> asyncio.Future[Response]:
        """Send ``payload`` and return a future for its response."""
        assert self._transport is not None and self._waiter is None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._response = Response()
        self._state = "head"
        self._transport.write(payload)
        return self._waiter

    def close(self) -> None:
        """Drop the connection."""
        if self._transport is not None:
            self._transport.close()

    def _resume(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # parsing ----------------------------------------------------------------
    def _parse(self, now: float) -> None:
        while self._waiter is not None and self._steps[self._state](now):
            pass

    def _parse_head(self, now: float) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        del self._buffer[: end + 4]
        self._response.status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        self._response.close = headers.get(b"connection") == b"close"
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            self._state = "chunk_size"
        elif b"content-length" in headers:
            self._remaining = int(headers[b"content-length"])
            self._state = "body"
        else:
            self._state = "until_close"
        return True

    def _take_body(self, now: float, limit: int | None) -> int:
        """Consume up to ``limit`` buffered body bytes; return how many."""
        count = len(self._buffer) if limit is None else min(limit, len(self._buffer))
        if count:
            response = self._response
            if response.first_body_at is None:
                response.first_body_at = now
                if self._stall_s > 0 and self._transport is not None:
                    # A client that stops reading (a slow network): the server's buffers fill up.
                    self._transport.pause_reading()
                    asyncio.get_running_loop().call_later(self._stall_s, self._resume)
            response.body_bytes += count
            response.tail = (response.tail + bytes(self._buffer[max(0, count - 32) : count]))[-32:]
            del self._buffer[:count]
        return count

    def _parse_body(self, now: float) -> bool:
        self._remaining -= self._take_body(now, self._remaining)
        if self._remaining:
            return False
        self._finish()
        return False

    def _parse_until_close(self, now: float) -> bool:
        self._take_body(now, None)
        return False

    def _parse_chunk_size(self, now: float) -> bool:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            return False
        size = int(bytes(self._buffer[:end]).split(b";", 1)[0], 16)
        del self._buffer[: end + 2]
        self._remaining = size
        self._state = "chunk_data" if size else "trailer"
        return True

    def _parse_chunk_data(self, now: float) -> bool:
        self._remaining -= self._take_body(now, self._remaining)
        if self._remaining:
            return False
        self._state = "chunk_end"
        return True

    def _parse_chunk_end(self, now: float) -> bool:
        if len(self._buffer) < 2:
            return False
        del self._buffer[:2]
        self._state = "chunk_size"
        return True

    def _parse_trailer(self, now: float) -> bool:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            return False
        del self._buffer[: end + 2]
        if end == 0:
            self._finish()
        return end != 0

    def _finish(self) -> None:
        waiter, self._waiter = self._waiter, None
        self._state = "idle"
        if waiter is not None and not waiter.done():
            waiter.set_result(self._response)
        if self._response.close:
            self.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self._state = "idle"
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Target:
    """Where and what to send."""

    host: str
    port: int
    payload: bytes
    stream: bool
    timeout_s: float
    stall_s: float = 0.0


@dataclass
class Budget:
    """How many more requests a phase may start, and until when."""

    remaining: int
    deadline: float

    def take(self) -> bool:
        """Claim one request if the phase still allows it."""
        if self.remaining <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.remaining -= 1
        return True


@dataclass
class Samples:
    """Per-request measurements of one phase."""

    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        """Count one failed request."""
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


class Worker:
    """One connection and the loop that keeps it busy."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._conn: ClientProtocol | None = None

    async def connect(self) -> None:
        """(Re)open the connection."""
        loop = asyncio.get_running_loop()
        stall = self._target.stall_s
        _, protocol = await loop.create_connection(lambda: ClientProtocol(stall), self._target.host, self._target.port)
        self._conn = protocol

    def close(self) -> None:
        """Drop the connection."""
        if self._conn is not None:
            self._conn.close()

    async def run(self, budget: Budget, samples: Samples, start_delay_s: float = 0.0) -> None:
        """Send requests while the budget allows, starting after ``start_delay_s``."""
        if start_delay_s > 0:
            await asyncio.sleep(start_delay_s)
        while budget.take():
            await self._one(samples)

    async def _one(self, samples: Samples) -> None:
        started = time.perf_counter()
        try:
            if self._conn is None or not self._conn.usable:
                await self.connect()
            assert self._conn is not None
            response = await asyncio.wait_for(self._conn.request(self._target.payload), self._target.timeout_s)
        except (TimeoutError, OSError, ResponseError) as exc:
            samples.error(type(exc).__name__)
            self.close()
            self._conn = None
            return
        done = time.perf_counter()
        kind = self._check(response)
        if kind:
            samples.error(kind)
            return
        samples.latencies.append(done - started)
        if self._target.stream and response.first_body_at is not None:
            samples.ttfbs.append(response.first_body_at - started)

    def _check(self, response: Response) -> str:
        """An error kind for a response that is not a success, else ''."""
        if response.status != 200:
            return f"http_{response.status}"
        if self._target.stream and DONE_MARKER not in response.tail:
            return "stream_without_done"
        if response.body_bytes == 0:
            return "empty_body"
        return ""


async def run_phase(
    workers: list[Worker], max_requests: int, duration_s: float, stagger_s: float = 0.0
) -> tuple[Samples, float]:
    """Run all workers for one bounded phase; return samples and the elapsed seconds.

    Worker ``i`` starts ``i * stagger_s / len(workers)`` seconds late, so that long
    requests (streams) do not all begin, tick and end in lockstep.
    """
    samples = Samples()
    started = time.perf_counter()
    budget = Budget(max_requests, started + duration_s)
    step = stagger_s / len(workers)
    await asyncio.gather(*(worker.run(budget, samples, i * step) for i, worker in enumerate(workers)))
    return samples, time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float | None:
    """The ``fraction`` quantile (nearest rank) of ``values``, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[rank]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 3)


@dataclass(frozen=True)
class Report:
    """Summary of the measured phase."""

    concurrency: int
    stream: bool
    requests: int
    errors: int
    error_kinds: dict[str, int]
    elapsed_s: float
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    ttfb_p50_ms: float | None
    ttfb_p90_ms: float | None
    ttfb_p99_ms: float | None
    cpu_s: dict[str, float]
    rss_bytes: dict[str, int]
    load_cpu_s: float
    machine_cpu_s: float
    foreign_cpu_s: float

    @classmethod
    def build(
        cls,
        concurrency: int,
        stream: bool,
        samples: Samples,
        elapsed: float,
        cpu: CpuSnapshot,
        rss: dict[str, int],
    ) -> Report:
        """Summarise one phase."""
        lat, ttfb = samples.latencies, samples.ttfbs
        return cls(
            concurrency=concurrency,
            stream=stream,
            requests=len(lat),
            errors=samples.errors,
            error_kinds=samples.error_kinds,
            elapsed_s=round(elapsed, 4),
            rps=round(len(lat) / elapsed, 2) if elapsed > 0 else 0.0,
            p50_ms=_ms(percentile(lat, 0.50)),
            p90_ms=_ms(percentile(lat, 0.90)),
            p99_ms=_ms(percentile(lat, 0.99)),
            mean_ms=_ms(statistics.fmean(lat)) if lat else None,
            ttfb_p50_ms=_ms(percentile(ttfb, 0.50)),
            ttfb_p90_ms=_ms(percentile(ttfb, 0.90)),
            ttfb_p99_ms=_ms(percentile(ttfb, 0.99)),
            cpu_s=cpu.groups,
            rss_bytes=rss,
            load_cpu_s=cpu.own,
            machine_cpu_s=cpu.machine,
            foreign_cpu_s=cpu.foreign,
        )

    def human(self) -> str:
        """A one-screen text summary."""
        text = (
            f"c={self.concurrency} stream={self.stream} requests={self.requests} errors={self.errors} "
            f"rps={self.rps:.1f} p50={self.p50_ms}ms p90={self.p90_ms}ms p99={self.p99_ms}ms"
        )
        if self.stream:
            text += f" ttfb p50={self.ttfb_p50_ms}ms p90={self.ttfb_p90_ms}ms p99={self.ttfb_p99_ms}ms"
        for pgid, cpu in self.cpu_s.items():
            per_req = cpu * 1000.0 / self.requests if self.requests else float("nan")
            text += f"\n  pgid {pgid}: cpu {cpu:.3f}s ({per_req:.3f} ms/req) rss {self.rss_bytes[pgid] / 2**20:.1f} MiB"
        text += (
            f"\n  load generator cpu {self.load_cpu_s:.3f}s; other processes on the machine {self.foreign_cpu_s:.3f}s"
        )
        if self.error_kinds:
            text += f"\n  errors: {self.error_kinds}"
        return text


@dataclass(frozen=True)
class LoadPlan:
    """A whole run: target, concurrency and phase bounds."""

    target: Target
    concurrency: int
    max_requests: int
    duration_s: float
    warmup_s: float
    stagger_s: float
    cpu_pgids: tuple[int, ...]
    ramp_s: float = 0.0  # the measured phase's workers start over this long, each connecting when it starts


async def run_load(plan: LoadPlan) -> Report:
    """Connect the workers, warm up, then measure one bounded phase."""
    workers = [Worker(plan.target) for _ in range(plan.concurrency)]
    try:
        if plan.ramp_s <= 0:
            await asyncio.gather(*(worker.connect() for worker in workers))
        if plan.warmup_s > 0:
            await run_phase(workers, sys.maxsize, plan.warmup_s, min(plan.stagger_s, plan.warmup_s / 2))
        before = CpuSnapshot.take(plan.cpu_pgids)
        samples, elapsed = await run_phase(workers, plan.max_requests, plan.duration_s, plan.ramp_s)
        cpu = CpuSnapshot.take(plan.cpu_pgids).since(before)
        rss = {str(pgid): group_rss_bytes(pgid) for pgid in plan.cpu_pgids}
    finally:
        for worker in workers:
            worker.close()
    return Report.build(plan.concurrency, plan.target.stream, samples, elapsed, cpu, rss)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/v1/chat/completions")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("-n", "--requests", type=int, default=20000, help="max requests in the measured phase")
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="max seconds of the measured phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of discarded warm-up")
    parser.add_argument(
        "--stagger", type=float, default=0.0, help="spread worker starts over this many seconds of the warm-up"
    )
    parser.add_argument(
        "--ramp", type=float, default=0.0,
        help="start the measured phase's workers over this many seconds, each connecting as it starts",
    )  # fmt: skip
    parser.add_argument("--stream", action="store_true", help="ask for SSE streams")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--api-key", default="sk-bench")
    parser.add_argument("--header", action="append", default=[], help="extra 'Name: value' header")
    parser.add_argument("--untagged", action="store_true", help="send no X-Task-Type (default: X-Task-Type: summary)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    parser.add_argument(
        "--stall-s", type=float, default=0.0, help="stop reading a response for this long after its first byte"
    )
    parser.add_argument("--cpu-pgid", type=int, action="append", default=[], help="process group to charge CPU to")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def plan_from_args(args: argparse.Namespace) -> LoadPlan:
    """Validate the CLI arguments and turn them into a plan."""
    url = urlsplit(args.url)
    if url.scheme != "http" or url.hostname != LOOPBACK or url.port is None:
        raise SystemExit(f"--url must be http://{LOOPBACK}:PORT/...; got {args.url}")
    headers = {"authorization": f"Bearer {args.api_key}"}
    if not args.untagged:
        headers["x-task-type"] = "summary"
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep:
            raise SystemExit(f"--header must be 'Name: value'; got {raw!r}")
        headers[name.strip().lower()] = value.strip()
    payload = build_request(LOOPBACK, url.port, url.path or "/", chat_body(args.model, args.stream), headers)
    target = Target(LOOPBACK, url.port, payload, args.stream, args.timeout, max(0.0, args.stall_s))
    return LoadPlan(
        target=target,
        concurrency=max(1, args.concurrency),
        max_requests=max(1, args.requests),
        duration_s=args.duration,
        warmup_s=args.warmup,
        stagger_s=max(0.0, args.stagger),
        cpu_pgids=tuple(args.cpu_pgid),
        ramp_s=max(0.0, args.ramp),
    )


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    args = _parse_args(argv)
    plan = plan_from_args(args)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    report = asyncio.run(run_load(plan))
    print(json.dumps(asdict(report)) if args.json else report.human(), flush=True)


if __name__ == "__main__":
    main()
