"""Measure gateway candidates side by side on this machine, in one run.

    python bench/run.py [--quick] [--repeats N] [--only NAMES] [--skip-litellm]
    python bench/run.py --paired A,B [--slices 16] [--slice-s 2]   # bench/paired.py: a 3% difference

A fake OpenAI upstream (bench/upstream.py) and the load generator (bench/load.py)
are pinned to core 1, each candidate proxy to core 0. For each candidate the cells
are: non-streaming at concurrency 1, 16 and 64, and streaming at 16 and 64 against
a paced upstream (100 ms to first token, 10 ms between 20 chunks). Each cell is a
warm-up then a run bounded by a request count and a duration; the whole sweep is
repeated (candidates interleaved within each repeat) and medians are reported. The
proxy's CPU time (user+sys of its process group, from /proc) over the measured
phase gives CPU ms per request; its RSS is read at the end of each cell.

Tables go to stdout and bench/results.md; raw JSON and process logs go to
bench/results-raw/<timestamp>/. Every process started is killed (by process group)
on exit, failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, Self, TextIO, cast

import load  # bench/load.py: run.py is run as a script, so its directory is on sys.path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
CHAT_PATH = "/v1/chat/completions"
PROXY_CORE = 0
LOAD_CORE = 1
UPSTREAM_PACING = ("--ttft-ms", "100", "--chunk-delay-ms", "10", "--chunks", "20")
STREAM_STAGGER_S = 0.3  # about one paced stream: 100 ms + 20 x 10 ms
CLIENT_KEY = "sk-bench"
UPSTREAM_KEY = "sk-upstream-bench"
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
LITELLM_INSTALLED_MARKER = LITELLM_VENV / ".bench-installed"
LITELLM_INSTALL_TIMEOUT_S = 1200.0
STOP_GRACE_S = 5.0
# A cell during which other processes used more than this share of a core is run again (at most
# NOISY_RETRIES more times) and the quietest attempt is kept: the machine may be shared.
NOISY_SHARE = 0.15
NOISY_RETRIES = 2
QUIET_WAIT_S = 20.0  # before a re-run, wait at most this long for a quiet second
# Bounds over a whole run, so that a busy machine cannot stretch it much.
MAX_RERUNS = 12
MAX_QUIET_WAIT_S = 120.0


class Skip(Exception):
    """A candidate cannot be measured on this machine; the message says why."""


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Cell:
    """One load shape."""

    key: str
    title: str
    stream: bool
    concurrency: int


CELLS: tuple[Cell, ...] = (
    Cell("ns-c1", "non-streaming, concurrency 1", False, 1),
    Cell("ns-c16", "non-streaming, concurrency 16", False, 16),
    Cell("ns-c64", "non-streaming, concurrency 64", False, 64),
    Cell("st-c16", "streaming (100 ms TTFT, 20 chunks x 10 ms), concurrency 16", True, 16),
    Cell("st-c64", "streaming (100 ms TTFT, 20 chunks x 10 ms), concurrency 64", True, 64),
)


@dataclass(frozen=True)
class Settings:
    """What the user asked for."""

    repeats: int
    warmup_s: float
    duration_s: float
    max_requests: int
    only: tuple[str, ...]
    skip_litellm: bool
    tiergate_src: Path | None  # an exported commit of proxy/, else the installed (working tree) package
    tiergate_source: str  # what the report says about the tiergate code measured
    raw_dir: Path
    output: Path
    command: str
    python: str = sys.executable


@dataclass(frozen=True)
class Sidecar:
    """A process a candidate needs beside it (an OTLP sink, a scraper), on the load core, started first."""

    name: str
    argv: list[str]


@dataclass(frozen=True)
class Launch:
    """How to start a candidate proxy and how to know it is up."""

    argv: list[str]
    env: dict[str, str]
    health_path: str
    health_timeout_s: float
    probe: Callable[[int], None] | None = None  # once healthy: raise Skip if it does not serve as intended
    sidecars: tuple[Sidecar, ...] = ()
    # after the proxy has stopped (and flushed), before its sidecars stop: a line for the report
    report: Callable[[], str] | None = None


@dataclass(frozen=True)
class Context:
    """Facts every candidate launcher needs."""

    settings: Settings
    upstream_port: int


@dataclass(frozen=True)
class Candidate:
    """A gateway to measure; ``launch`` is None for the direct baseline."""

    name: str
    description: str
    launch: Callable[[Context, int], Launch] | None
    load_args: tuple[str, ...] = ()  # extra bench/load.py flags for every cell (e.g. --untagged)
    # The proxy, the upstream and the load generator all on every core, none pinned: how a proxy of
    # several worker processes can run on this machine (its 1-worker twin runs the same way).
    shared: bool = False


# --------------------------------------------------------------------------- helpers


def pin(core: int) -> list[str]:
    """A ``taskset`` prefix pinning to ``core``, or nothing when pinning is impossible."""
    if shutil.which("taskset") is None or (os.cpu_count() or 1) <= max(PROXY_CORE, LOAD_CORE):
        return []
    return ["taskset", "-c", str(core)]


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_ok(port: int, path: str, timeout_s: float = 1.0) -> bool:
    """Whether ``GET http://127.0.0.1:port/path`` answers 200."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class Service:
    """A background process in its own session, logging to a file; killed by group on exit."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self._argv = list(argv)
        self._env = env
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None

    def __enter__(self) -> Self:
        self._log = self.log_path.open("w")
        self._proc = subprocess.Popen(
            self._argv,
            env={**os.environ, **self._env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The process id, which is also its process group id."""
        assert self._proc is not None
        return self._proc.pid

    def exit_code(self) -> int | None:
        """The exit code when the process has ended, else None."""
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = 8) -> str:
        """The last lines of the process's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL it after a grace period."""
        if self._proc is not None:
            _kill_group(self._proc, signal.SIGTERM)
            try:
                self._proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _kill_group(self._proc, signal.SIGKILL)
                self._proc.wait(timeout=STOP_GRACE_S)
            _kill_group(self._proc, signal.SIGKILL)  # stragglers the leader left behind
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait_healthy(self, port: int, path: str, timeout_s: float) -> None:
        """Poll ``path`` until it answers 200; raise :class:`Skip` on early exit or timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.exit_code()
            if code is not None:
                raise Skip(f"{self.name} exited with code {code} before becoming healthy:\n{self.log_tail()}")
            if http_ok(port, path):
                return
            time.sleep(0.2)
        raise Skip(f"{self.name} not healthy on GET {path} within {timeout_s:.0f} s:\n{self.log_tail()}")


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


# --------------------------------------------------------------------------- candidates


def _passthrough(client: str) -> Callable[[Context, int], Launch]:
    def launch(ctx: Context, port: int) -> Launch:
        argv = [ctx.settings.python, str(BENCH_DIR / "passthrough.py"), "--client", client]
        argv += ["--port", str(port), "--upstream", f"http://{HOST}:{ctx.upstream_port}/v1"]
        argv += ["--api-key", UPSTREAM_KEY]
        return Launch(argv, {}, "/healthz", 10.0)

    return launch


def _tiergate(*extra: str) -> Callable[[Context, int], Launch]:
    def launch(ctx: Context, port: int) -> Launch:
        return _tiergate_launch(ctx, port, BENCH_DIR / "rules.yaml", extra)

    return launch


def _tiergate_launch(ctx: Context, port: int, rules: Path, extra: Sequence[str]) -> Launch:
    binary = Path(ctx.settings.python).parent / "tiergate"
    if not binary.exists():
        raise Skip(f"tiergate is not installed ({binary} missing; pip install -e . in the dev venv)")
    if not rules.exists():
        raise Skip(f"{rules} does not exist yet")
    argv = [str(binary), "serve", "--config", str(rules), "--host", HOST, "--port", str(port)]
    argv += ["--db", str(ctx.settings.raw_dir / f"tiergate-{port}.db"), "--log-level", "warning", *extra]
    env = {"OPENAI_BASE_URL": f"http://{HOST}:{ctx.upstream_port}/v1", "OPENAI_API_KEY": UPSTREAM_KEY}
    if ctx.settings.tiergate_src is not None:
        env["PYTHONPATH"] = str(ctx.settings.tiergate_src)
    return Launch(argv, env, "/healthz", 10.0)


def _tiergate_workers(workers: int) -> Callable[[Context, int], Launch]:
    def launch(ctx: Context, port: int) -> Launch:
        base = _tiergate_launch(ctx, port, BENCH_DIR / "rules.yaml", ("--workers", str(workers)))
        return replace(base, health_timeout_s=30.0, probe=lambda port: wait_listening(port, workers))

    return launch


def listeners(port: int) -> int:
    """Sockets listening on ``port`` on this machine (tiergate's workers have one each: SO_REUSEPORT)."""
    suffix, count = f":{port:04X}", 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            lines = Path(table).read_text().splitlines()[1:]
            count += sum(1 for fields in map(str.split, lines) if fields[1].endswith(suffix) and fields[3] == "0A")
    return count


def wait_listening(port: int, workers: int, timeout_s: float = 30.0) -> None:
    """Wait until every worker listens: /healthz answers once one does, and the connections a cell opens
    before the others listen would all go to the first (raise Skip when they do not come up)."""
    deadline = time.monotonic() + timeout_s
    while listeners(port) < workers:
        if time.monotonic() > deadline:
            raise Skip(f"{listeners(port)} of {workers} workers listening on {port} after {timeout_s:.0f} s")
        time.sleep(0.1)


def _tiergate_untagged(ctx: Context, port: int) -> Launch:
    """tiergate on bench/rules.yaml plus 20 classify rules (none matching load.py's request) and a classifier
    trained here on generated traffic (bench/classify.py), so an untagged call tries every rule and is then
    classified: summary, the task load.py's tagged calls name."""
    try:
        import classify  # bench/classify.py; imports the working tree's proxy (the dev venv's)
    except ImportError as exc:
        raise Skip(f"bench/classify.py needs tiergate's proxy package importable: {exc}") from None
    model, config = ctx.settings.raw_dir / "classifier-untagged.json", ctx.settings.raw_dir / "rules-untagged.yaml"
    if not config.exists():
        classify.train_model(model)
        config.write_text(classify.untagged_registry(model))
    launch = _tiergate_launch(ctx, port, config, ())
    # The model's features are hashed with the default key: the server must use the same one.
    return replace(launch, env={**launch.env, "TIERGATE_FEATURE_KEY": ""}, probe=_classified_as_summary)


def _classified_as_summary(port: int) -> None:
    """One untagged call of load.py's: it must be decided by the classifier, as summary."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10.0)
    try:
        headers = {"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"}
        conn.request("POST", CHAT_PATH, body=load.chat_body("gpt-4o-mini", False), headers=headers)
        response = conn.getresponse()
        response.read()
        source, task = response.getheader("x-tiergate-task-source"), response.getheader("x-tiergate-task")
    except OSError as exc:
        raise Skip(f"the untagged probe call failed: {exc}") from None
    finally:
        conn.close()
    if response.status != 200 or (source, task) != ("classifier", "summary"):
        raise Skip(f"the untagged probe call was not classified as summary: {response.status} {source} {task}")


# The cache candidates (issue #13). Their registries are bench/rules.yaml plus a cache policy (hits), or a
# tier whose model answers only after ten minutes (stale reads while that regeneration runs).
STALE_KEY = "bench:board"
SLOW_MODEL = "slow-600000"  # bench/upstream.py answers a model of this name after 600 s


def _cache_registry(ctx: Context, name: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    import yaml  # the dev venv has it (a tiergate dependency)

    path = ctx.settings.raw_dir / f"rules-{name}.yaml"
    doc = yaml.safe_load((BENCH_DIR / "rules.yaml").read_text())
    edit(doc)
    path.write_text(f"# generated by bench/run.py for {name}\n" + yaml.safe_dump(doc, sort_keys=False))
    return path


def _tiergate_hit(ctx: Context, port: int) -> Launch:
    """tiergate with the exact cache on the summary task: after the probe's first call, every call is a hit."""

    def edit(doc: dict[str, Any]) -> None:
        # load.py's body has temperature 0.2: the task says its answers may be reused anyway
        doc["tasks"]["summary"]["cache"] = {"ttl_s": 86400, "nondeterministic": True}

    launch = _tiergate_launch(ctx, port, _cache_registry(ctx, "hit", edit), ())
    return replace(launch, probe=_cached_after_one_call)


def _tiergate_stale(ctx: Context, port: int) -> Launch:
    """tiergate serving a keyed generation stale: v1 is precomputed, every call asks for v2, whose one
    regeneration runs on a model that answers after ten minutes, i.e. for the whole measurement."""

    def edit(doc: dict[str, Any]) -> None:
        doc["tiers"]["slow"] = {
            "policy": {"timeouts": {"first_byte_s": 900, "idle_s": 900}, "deadline_s": 900},
            "targets": [{"provider": "openai", "model": SLOW_MODEL}],
        }
        doc["tasks"]["summary_slow"] = {"tier": "slow", "baseline": "mid"}

    launch = _tiergate_launch(ctx, port, _cache_registry(ctx, "stale", edit), ())
    return replace(launch, probe=_precomputed_then_stale)


def _chat(port: int, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10.0)
    try:
        sent = {"content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}", **headers}
        conn.request("POST", CHAT_PATH, body=load.chat_body("gpt-4o-mini", False), headers=sent)
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    except OSError as exc:
        raise Skip(f"the cache probe call failed: {exc}") from None
    finally:
        conn.close()


def _cached_after_one_call(port: int) -> None:
    states = [_chat(port, {"x-task-type": "summary"})[1].get("x-tiergate-cache") for _ in range(2)]
    if states != ["miss", "hit"]:
        raise Skip(f"the exact cache did not answer the second call: {states}")


def _precomputed_then_stale(port: int) -> None:
    keyed = {"x-tiergate-key": STALE_KEY, "content-type": "application/json", "authorization": f"Bearer {CLIENT_KEY}"}
    conn = http.client.HTTPConnection(HOST, port, timeout=10.0)
    try:
        body = load.chat_body("gpt-4o-mini", False)
        conn.request("POST", "/v1/precompute", body=body, headers={**keyed, "x-task-type": "summary",
                                                                    "x-tiergate-version": "v1"})  # fmt: skip
        conn.getresponse().read()
        for _ in range(100):
            conn.request("GET", f"/v1/precompute/{STALE_KEY}", headers=keyed)
            status = json.loads(conn.getresponse().read() or b"{}")
            if status.get("status") in ("ready", "failed"):
                break
            time.sleep(0.05)
    except OSError as exc:
        raise Skip(f"the precompute probe failed: {exc}") from None
    finally:
        conn.close()
    if status.get("status") != "ready":
        raise Skip(f"the precomputed generation did not become ready: {status}")
    _, headers = _chat(port, {"x-task-type": "summary_slow", "x-tiergate-key": STALE_KEY, "x-tiergate-version": "v2"})
    if headers.get("x-tiergate-cache") != "stale":
        raise Skip(f"a v2 read was not served stale: {headers.get('x-tiergate-cache')}")


def _tiergate_traced(ratio: float | None) -> Callable[[Context, int], Launch]:
    def launch(ctx: Context, port: int) -> Launch:
        return _traced_launch(ctx, port, ratio)

    return launch


def _traced_launch(ctx: Context, port: int, ratio: float | None) -> Launch:
    """tiergate exporting spans by OTLP/HTTP (the SDK's default batching) to bench/otlp_sink.py; every
    request's, or (``ratio``) the SDK's parent-based trace-id-ratio sampler's share."""
    sink = free_port()
    launch = _tiergate_launch(ctx, port, BENCH_DIR / "rules.yaml", ())
    env = {**launch.env, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{sink}"}
    if ratio is not None:
        env.update({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": str(ratio)})
    argv = [ctx.settings.python, str(BENCH_DIR / "otlp_sink.py"), "--port", str(sink)]
    db = ctx.settings.raw_dir / f"tiergate-{port}.db"

    def probe(proxy_port: int) -> None:
        before = _sink_spans(sink)
        for _ in range(1 if ratio is None else 100):  # sampled: enough calls that some are kept
            _chat(proxy_port, {"X-Task-Type": "summary"})
        deadline = time.monotonic() + 15.0  # the batch processor exports every 5 s when it is not full
        while _sink_spans(sink) < before + 2:
            if time.monotonic() > deadline:
                raise Skip("tiergate-traced: the sink received no spans within 15 s of a call")
            time.sleep(0.2)

    def report() -> str:
        return _spans_report(_sink_spans(sink), db)

    return replace(launch, env=env, probe=probe, sidecars=(Sidecar("otlp-sink", argv),), report=report)


def _sink_spans(port: int) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/count")
        return int(json.loads(conn.getresponse().read())["spans"])
    finally:
        conn.close()


def _spans_report(spans: int, db: Path) -> str:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        (requests,) = conn.execute("SELECT count(*) FROM requests").fetchone()
        (attempts,) = conn.execute("SELECT count(*) FROM attempts").fetchone()
    expected = requests + attempts
    share = spans / expected if expected else 0.0
    return f"spans received by the sink: {spans} of {expected} ({share:.1%}; {requests} requests, {attempts} attempts)"


def _tiergate_scraped(ctx: Context, port: int) -> Launch:
    """tiergate with metrics on (OTEL_METRICS_EXPORTER=prometheus) and GET /metrics scraped every second."""
    launch = _tiergate_launch(ctx, port, BENCH_DIR / "rules.yaml", ())
    env = {**launch.env, "OTEL_METRICS_EXPORTER": "prometheus"}
    argv = [ctx.settings.python, str(BENCH_DIR / "scraper.py"), "--url", f"http://{HOST}:{port}/metrics"]
    argv += ["--key", CLIENT_KEY, "--interval", "1"]
    return replace(launch, env=env, sidecars=(Sidecar("scraper", argv),))


def _litellm(ctx: Context, port: int) -> Launch:
    if ctx.settings.skip_litellm:
        raise Skip("--skip-litellm given")
    binary = ensure_litellm(ctx.settings.raw_dir)
    config = ctx.settings.raw_dir / "litellm-config.yaml"
    config.write_text(litellm_config(ctx.upstream_port))
    argv = [str(binary), "--config", str(config), "--host", HOST, "--port", str(port), "--num_workers", "1"]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": CLIENT_KEY}
    return Launch(argv, env, "/health/liveliness", 120.0)


def litellm_config(upstream_port: int) -> str:
    """LiteLLM proxy config (JSON is YAML) with one ``openai/`` deployment on the fake upstream."""
    config = {
        "model_list": [
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": f"http://{HOST}:{upstream_port}/v1",
                    "api_key": UPSTREAM_KEY,
                },
            }
        ],
        "general_settings": {"master_key": CLIENT_KEY},
    }
    return json.dumps(config, indent=2) + "\n"


def ensure_litellm(raw_dir: Path) -> Path:
    """Install ``litellm[proxy]`` into bench/.venv-litellm once; return its ``litellm`` binary."""
    binary = LITELLM_VENV / "bin" / "litellm"
    if LITELLM_INSTALLED_MARKER.exists() and binary.exists():
        return binary
    log = raw_dir / "litellm-install.log"
    print(f"installing litellm[proxy] into {LITELLM_VENV} (log: {log}); this can take minutes", flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(LITELLM_VENV)],
        [str(LITELLM_VENV / "bin" / "pip"), "install", "--disable-pip-version-check", "litellm[proxy]"],
    ]
    with log.open("w") as out:
        for step in steps:
            try:
                code = subprocess.run(
                    step, stdout=out, stderr=subprocess.STDOUT, timeout=LITELLM_INSTALL_TIMEOUT_S, check=False
                ).returncode
            except subprocess.TimeoutExpired:
                raise Skip(f"litellm install timed out after {LITELLM_INSTALL_TIMEOUT_S:.0f} s (log: {log})") from None
            if code != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-6:])
                raise Skip(f"litellm install failed ({' '.join(step[-2:])} exited {code}):\n{tail}")
    if not binary.exists():
        raise Skip(f"litellm installed but {binary} is missing")
    LITELLM_INSTALLED_MARKER.write_text(dt.datetime.now(dt.UTC).isoformat() + "\n")
    return binary


CANDIDATES: tuple[Candidate, ...] = (
    Candidate("direct", "load -> fake upstream, no proxy", None),
    Candidate("pt-httpcore", "Starlette passthrough, httpx + default httpcore pool", _passthrough("httpcore")),
    Candidate(
        "pt-httpx-aiohttp",
        "Starlette passthrough, httpx + httpx_aiohttp.AiohttpTransport",
        _passthrough("httpx-aiohttp"),
    ),
    Candidate("pt-aiohttp", "Starlette passthrough, bare aiohttp.ClientSession", _passthrough("aiohttp")),
    Candidate("tiergate", "tiergate serve (ledger on)", _tiergate()),
    Candidate("tiergate-noledger", "tiergate serve --no-ledger", _tiergate("--no-ledger")),
    Candidate(
        "tiergate-1w",
        "tiergate serve (ledger on), 1 worker; proxy, upstream and load generator share both cores",
        _tiergate(),
        shared=True,
    ),
    Candidate(
        "tiergate-2w",
        "tiergate serve --workers 2 (one ledger file); proxy, upstream and load generator share both cores",
        _tiergate_workers(2),
        shared=True,
    ),
    Candidate(
        "tiergate-untagged",
        "tiergate serve with 20 classify rules and a trained classifier, driven without X-Task-Type",
        _tiergate_untagged,
        ("--untagged",),
    ),
    Candidate(
        "tiergate-hit",
        "tiergate serve, exact cache on: every call answered from the store",
        _tiergate_hit,
    ),
    Candidate(
        "tiergate-stale",
        "tiergate serve, a keyed generation served stale while its regeneration runs",
        _tiergate_stale,
        (
            "--header",
            "X-Task-Type: summary_slow",
            "--header",
            f"X-Tiergate-Key: {STALE_KEY}",
            "--header",
            "X-Tiergate-Version: v2",
        ),
    ),  # fmt: skip
    Candidate(
        "tiergate-traced",
        "tiergate serve, OTEL_TRACES_EXPORTER=otlp to a local OTLP/HTTP sink (bench/otlp_sink.py), every request",
        _tiergate_traced(None),
    ),
    Candidate(
        "tiergate-sampled",
        "tiergate-traced with OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.1",
        _tiergate_traced(0.1),
    ),
    Candidate(
        "tiergate-scraped",
        "tiergate serve, OTEL_METRICS_EXPORTER=prometheus, GET /metrics scraped every second",
        _tiergate_scraped,
    ),
    Candidate("litellm", "LiteLLM proxy, 1 worker, master key, openai/ deployment", _litellm),
)


# --------------------------------------------------------------------------- measuring


@dataclass
class NoiseBudget:
    """What is left, over the whole run, for re-running disturbed cells."""

    reruns: int = MAX_RERUNS
    wait_s: float = MAX_QUIET_WAIT_S

    def take_rerun(self) -> bool:
        """Claim one re-run, waiting (within the budget) for the machine to be quiet first."""
        if self.reruns <= 0:
            return False
        self.reruns -= 1
        started = time.monotonic()
        wait_for_quiet(min(QUIET_WAIT_S, self.wait_s))
        self.wait_s = max(0.0, self.wait_s - (time.monotonic() - started))
        return True


@dataclass
class Results:
    """Raw reports per candidate and cell, why candidates were skipped, the re-run budget left."""

    reports: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # per candidate, one per repeat (Launch.report)
    noise: NoiseBudget = field(default_factory=NoiseBudget)

    def add(self, candidate: str, cell: Cell, report: dict[str, Any]) -> None:
        """Record one measured cell."""
        self.reports.setdefault(candidate, {}).setdefault(cell.key, []).append(report)


def run_cell(
    settings: Settings,
    cell: Cell,
    port: int,
    pgids: dict[str, int],
    load_args: Sequence[str] = (),
    shared: bool = False,
) -> dict[str, Any]:
    """Run the load generator once against ``port``; return its JSON report."""
    argv = [*([] if shared else pin(LOAD_CORE)), settings.python, str(BENCH_DIR / "load.py")]
    argv += ["--url", f"http://{HOST}:{port}{CHAT_PATH}"]
    argv += load_args
    argv += ["-c", str(cell.concurrency), "-n", str(settings.max_requests), "-d", str(settings.duration_s)]
    argv += ["--warmup", str(settings.warmup_s), "--api-key", CLIENT_KEY, "--json"]
    argv += [arg for pgid in pgids.values() for arg in ("--cpu-pgid", str(pgid))]
    if cell.stream:
        # Spread stream starts over one stream's length so chunks do not arrive in lockstep bursts.
        argv += ["--stream", "--stagger", str(STREAM_STAGGER_S)]
    timeout = settings.warmup_s + settings.duration_s + 90.0
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    report["roles"] = {role: str(pgid) for role, pgid in pgids.items()}
    return report


def other_share(report: dict[str, Any]) -> float:
    """CPU used by processes outside the benchmark during the cell, as a share of one core."""
    elapsed = float(report["elapsed_s"])
    return float(report["foreign_cpu_s"]) / elapsed if elapsed > 0 else 0.0


def wait_for_quiet(max_wait_s: float) -> float:
    """Wait until the machine is idle for one second (or the time is up); return the last busy share."""
    deadline = time.monotonic() + max_wait_s
    busy = 1.0
    while time.monotonic() < deadline:
        before = load.machine_busy_seconds()
        time.sleep(1.0)
        busy = load.machine_busy_seconds() - before
        if busy < NOISY_SHARE:
            break
    return busy


def run_quiet_cell(
    settings: Settings,
    cell: Cell,
    port: int,
    pgids: dict[str, int],
    budget: NoiseBudget,
    load_args: Sequence[str] = (),
    shared: bool = False,
) -> dict[str, Any]:
    """Run a cell, again while other processes disturbed it (within budget); keep the quietest attempt."""
    attempts = [run_cell(settings, cell, port, pgids, load_args, shared)]
    while other_share(attempts[-1]) > NOISY_SHARE and len(attempts) <= NOISY_RETRIES:
        share = other_share(attempts[-1])
        if not budget.take_rerun():
            print(f"    other processes used {share:.0%} of a core; re-run budget spent, keeping it", flush=True)
            break
        print(
            f"    other processes used {share:.0%} of a core; ran {cell.key} again after waiting for quiet", flush=True
        )
        attempts.append(run_cell(settings, cell, port, pgids, load_args, shared))
    best = min(attempts, key=other_share)
    best["attempts"] = len(attempts)
    return best


def describe(report: dict[str, Any]) -> str:
    """One progress line for a cell run."""
    text = f"rps={report['rps']:.0f} p50={report['p50_ms']}ms errors={report['errors']}"
    proxy = report["roles"].get("proxy")
    if proxy is not None and report["requests"]:
        text += f" cpu={report['cpu_s'][proxy] * 1000 / report['requests']:.3f}ms/req"
    if report["stream"]:
        text += f" ttfb_p50={report['ttfb_p50_ms']}ms"
    return text + f" other={other_share(report):.0%}"


def start_candidate(
    ctx: Context, candidate: Candidate, stack: contextlib.ExitStack, repeat: int, pgids: dict[str, int]
) -> tuple[int, Service, Launch]:
    """Start a proxy candidate pinned to the proxy core (its sidecars first, on the load core, their
    process groups added to ``pgids``) and wait until it is healthy."""
    assert candidate.launch is not None
    port = free_port()
    launch = candidate.launch(ctx, port)
    for sidecar in launch.sidecars:
        log = ctx.settings.raw_dir / f"{candidate.name}-{sidecar.name}-r{repeat}.log"
        side = stack.enter_context(Service(sidecar.name, [*pin(LOAD_CORE), *sidecar.argv], {}, log))
        pgids[sidecar.name] = side.pid
    log = ctx.settings.raw_dir / f"{candidate.name}-r{repeat}.log"
    placement = [] if candidate.shared else pin(PROXY_CORE)
    service = stack.enter_context(Service(candidate.name, [*placement, *launch.argv], launch.env, log))
    service.wait_healthy(port, launch.health_path, launch.health_timeout_s)
    if launch.probe is not None:
        launch.probe(port)
    return port, service, launch


def measure_candidate(ctx: Context, candidate: Candidate, upstream: Service, results: Results, repeat: int) -> None:
    """Start a candidate (unless direct), run every cell against it, stop it."""
    pgids = {"upstream": upstream.pid}
    with contextlib.ExitStack() as stack:
        if candidate.shared:
            stack.enter_context(upstream_on_every_core(upstream.pid))
        port, service, launch = ctx.upstream_port, None, None
        if candidate.launch is not None:
            port, service, launch = start_candidate(ctx, candidate, stack, repeat, pgids)
            pgids["proxy"] = service.pid
        for cell in CELLS:
            report = run_quiet_cell(
                ctx.settings, cell, port, pgids, results.noise, candidate.load_args, candidate.shared
            )
            results.add(candidate.name, cell, report)
            print(f"  [{repeat + 1}] {candidate.name:<18} {cell.key:<7} {describe(report)}", flush=True)
            if report["errors"] and not report["requests"]:
                tail = f"\n{service.log_tail()}" if service is not None else ""
                raise Skip(f"every request failed in {cell.key}: {report['error_kinds']}{tail}")
        if service is not None and launch is not None and launch.report is not None:
            service.stop()  # SIGTERM: it flushes what it buffered before its sidecars stop
            note = launch.report()
            results.notes.setdefault(candidate.name, []).append(note)
            print(f"  [{repeat + 1}] {candidate.name:<18} {note}", flush=True)


@contextlib.contextmanager
def upstream_on_every_core(pid: int) -> Iterator[None]:
    """The upstream (pinned to the load core) allowed on every core for a while, then pinned back."""
    pinned = os.sched_getaffinity(pid)
    os.sched_setaffinity(pid, set(range(os.cpu_count() or 1)))
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(pid, pinned)


def measure_all(ctx: Context, candidates: Sequence[Candidate], upstream: Service) -> Results:
    """Every repeat runs every candidate that has not been skipped yet."""
    results = Results()
    for repeat in range(ctx.settings.repeats):
        print(f"repeat {repeat + 1}/{ctx.settings.repeats}", flush=True)
        for candidate in candidates:
            if candidate.name in results.skipped:
                continue
            try:
                measure_candidate(ctx, candidate, upstream, results, repeat)
            except Skip as exc:
                results.skipped[candidate.name] = str(exc)
                print(f"  skipping {candidate.name}: {exc}", flush=True)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                results.skipped[candidate.name] = f"stopped after a failed cell: {exc}"
                print(f"  giving up on {candidate.name}: {exc}", flush=True)
    return results


# --------------------------------------------------------------------------- summarising


@dataclass(frozen=True)
class Row:
    """Medians over repeats for one candidate in one cell."""

    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    errors: int
    cpu_ms_per_req: float | None
    ttfb_p50_ms: float | None
    rss_mb: float | None
    other_pct: float
    runs: int


def _median(values: Sequence[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(statistics.median(present)) if present else None


def cpu_per_request(report: dict[str, Any]) -> float | None:
    """The proxy's CPU ms per measured request of one load.py report, or None without a proxy."""
    proxy = report["roles"].get("proxy")
    if proxy is None or not report["requests"]:
        return None
    return float(report["cpu_s"][proxy]) * 1000.0 / int(report["requests"])


def _rss_mb(report: dict[str, Any]) -> float | None:
    proxy = report["roles"].get("proxy")
    return None if proxy is None else int(report["rss_bytes"][proxy]) / 2**20


def summarise(reports: Sequence[dict[str, Any]]) -> Row:
    """Median of each figure over repeats; errors are summed."""
    return Row(
        rps=_median([r["rps"] for r in reports]) or 0.0,
        p50_ms=_median([r["p50_ms"] for r in reports]),
        p90_ms=_median([r["p90_ms"] for r in reports]),
        p99_ms=_median([r["p99_ms"] for r in reports]),
        errors=sum(r["errors"] for r in reports),
        cpu_ms_per_req=_median([cpu_per_request(r) for r in reports]),
        ttfb_p50_ms=_median([r["ttfb_p50_ms"] for r in reports]),
        rss_mb=_median([_rss_mb(r) for r in reports]),
        other_pct=max(other_share(r) for r in reports) * 100.0,
        runs=len(reports),
    )


def rows_by_cell(results: Results) -> dict[str, dict[str, Row]]:
    """cell key -> candidate -> row, in candidate order."""
    table: dict[str, dict[str, Row]] = {cell.key: {} for cell in CELLS}
    for candidate, cells in results.reports.items():
        for key, reports in cells.items():
            table[key][candidate] = summarise(reports)
    return table


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def cell_table(cell: Cell, rows: dict[str, Row]) -> list[str]:
    """A markdown table for one cell."""
    ttfb = ["TTFB p50 ms"] if cell.stream else []
    header = ["candidate", "RPS", "p50 ms", "p90 ms", "p99 ms", "errors", "CPU ms/req", *ttfb, "RSS MB", "other CPU %"]
    lines = [f"### {cell.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in rows.items():
        ttfb_cell = [_fmt(row.ttfb_p50_ms)] if cell.stream else []
        cells = [name, f"{row.rps:.0f}", _fmt(row.p50_ms), _fmt(row.p90_ms), _fmt(row.p99_ms), str(row.errors)]
        cells += [_fmt(row.cpu_ms_per_req, 3), *ttfb_cell, _fmt(row.rss_mb, 0), f"{row.other_pct:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


@dataclass(frozen=True)
class Target:
    """One of issue #4's targets, computed from the medians."""

    label: str
    value: str
    goal: str
    verdict: str


def _ratio_target(label: str, num: float | None, den: float | None, goal: float, as_times: bool) -> Target:
    if num is None or den is None or den == 0:
        return Target(label, "n/a", f"≥ {goal:g}×" if as_times else f"≥ {goal:.0%}", "n/a")
    ratio = num / den
    value = f"{ratio:.1f}×" if as_times else f"{ratio:.0%}"
    goal_text = f"≥ {goal:g}×" if as_times else f"≥ {goal:.0%}"
    return Target(label, value, goal_text, "pass" if ratio >= goal else "FAIL")


def _delta_target(label: str, a: float | None, b: float | None, goal_ms: float) -> Target:
    if a is None or b is None:
        return Target(label, "n/a", f"≤ {goal_ms:g} ms", "n/a")
    delta = a - b
    return Target(label, f"{delta:+.2f} ms", f"≤ {goal_ms:g} ms", "pass" if delta <= goal_ms else "FAIL")


Table = dict[str, dict[str, Row]]


def _figure(table: Table, cell: str, name: str | None, attr: str) -> float | None:
    """One median figure, or None when the candidate has no row in that cell."""
    row = table.get(cell, {}).get(name or "")
    return None if row is None else cast(float | None, getattr(row, attr))


def peer_targets(table: Table, subject: str) -> list[Target]:
    """Issue #4's throughput targets: ``subject`` against LiteLLM and the passthroughs."""
    passthroughs = [name for name in table["ns-c64"] if name.startswith("pt-")]
    best = max(passthroughs, key=lambda n: table["ns-c64"][n].rps, default=None)
    rps64 = _figure(table, "ns-c64", subject, "rps")
    return [
        _ratio_target(
            f"{subject} / litellm RPS, non-stream c=64", rps64, _figure(table, "ns-c64", "litellm", "rps"), 20.0, True
        ),
        _ratio_target(
            f"{subject} / pt-httpx-aiohttp (same stack) RPS, non-stream c=64",
            rps64,
            _figure(table, "ns-c64", "pt-httpx-aiohttp", "rps"),
            0.70,
            False,
        ),
        _ratio_target(
            f"{subject} / best passthrough ({best or 'n/a'}) RPS, non-stream c=64",
            rps64,
            _figure(table, "ns-c64", best, "rps"),
            0.70,
            False,
        ),
    ]


def direct_targets(table: Table, subject: str) -> list[Target]:
    """Issue #4's latency targets: what ``subject`` adds over calling the upstream directly."""
    return [
        _delta_target(
            f"{subject} p50 − direct p50, non-stream c=1",
            _figure(table, "ns-c1", subject, "p50_ms"),
            _figure(table, "ns-c1", "direct", "p50_ms"),
            1.0,
        ),
        _delta_target(
            f"{subject} TTFB p50 − direct TTFB p50, stream c=64",
            _figure(table, "st-c64", subject, "ttfb_p50_ms"),
            _figure(table, "st-c64", "direct", "ttfb_p50_ms"),
            2.0,
        ),
        _ratio_target(
            f"{subject} / direct RPS, stream c=64",
            _figure(table, "st-c64", subject, "rps"),
            _figure(table, "st-c64", "direct", "rps"),
            0.95,
            False,
        ),
    ]


def untagged_targets(table: Table) -> list[Target]:
    """Issue #12's: untagged calls (20 rules tried, then the classifier) against tiergate's tagged ones."""
    untagged, tagged = (_figure(table, "ns-c64", name, "cpu_ms_per_req") for name in ("tiergate-untagged", "tiergate"))
    extra = "n/a" if untagged is None or tagged is None else f"{(untagged - tagged) * 1000:+.0f} µs"
    return [
        _ratio_target(
            "tiergate-untagged / tiergate (tagged) RPS, non-stream c=64",
            _figure(table, "ns-c64", "tiergate-untagged", "rps"),
            _figure(table, "ns-c64", "tiergate", "rps"),
            0.95,
            False,
        ),
        Target("tiergate-untagged − tiergate CPU per request, non-stream c=64", extra, "(for reading)", "—"),
    ]


def cache_targets(table: Table) -> list[Target]:
    """Issue #13's: a hit against a plain passthrough and against tiergate's misses; stale against hits."""
    return [
        _delta_target(
            "tiergate-hit p50 − pt-httpx-aiohttp p50, non-stream c=1",
            _figure(table, "ns-c1", "tiergate-hit", "p50_ms"),
            _figure(table, "ns-c1", "pt-httpx-aiohttp", "p50_ms"),
            0.5,
        ),
        _ratio_target(
            "tiergate-hit / tiergate (every call to the upstream) RPS, non-stream c=64",
            _figure(table, "ns-c64", "tiergate-hit", "rps"),
            _figure(table, "ns-c64", "tiergate", "rps"),
            2.0,
            True,
        ),
        _delta_target(
            "tiergate-stale p50 − tiergate-hit p50, non-stream c=1",
            _figure(table, "ns-c1", "tiergate-stale", "p50_ms"),
            _figure(table, "ns-c1", "tiergate-hit", "p50_ms"),
            0.1,
        ),
        _ratio_target(
            "tiergate-stale / tiergate-hit RPS, non-stream c=64",
            _figure(table, "ns-c64", "tiergate-stale", "rps"),
            _figure(table, "ns-c64", "tiergate-hit", "rps"),
            0.95,
            False,
        ),
    ]


def observability_targets(table: Table) -> list[Target]:
    """Issue #15's: what tracing to a local collector and metrics scraped every second cost tiergate."""
    targets = []
    for name in ("tiergate-traced", "tiergate-sampled", "tiergate-scraped"):
        for cell in ("ns-c64", "st-c64"):
            targets.append(
                _ratio_target(
                    f"{name} / tiergate RPS, {'non-stream' if cell == 'ns-c64' else 'stream'} c=64",
                    _figure(table, cell, name, "rps"),
                    _figure(table, cell, "tiergate", "rps"),
                    0.90,
                    False,
                )
            )
        on, off = (_figure(table, "ns-c64", n, "cpu_ms_per_req") for n in (name, "tiergate"))
        extra = "n/a" if on is None or off is None else f"{(on - off) * 1000:+.0f} µs"
        targets.append(Target(f"{name} − tiergate CPU per request, non-stream c=64", extra, "(for reading)", "—"))
    return targets


def workers_targets(table: Table) -> list[Target]:
    """Issue #14's: two worker processes against one, placed alike (everything shares both cores)."""
    two, one = (_figure(table, "ns-c64", name, "rps") for name in ("tiergate-2w", "tiergate-1w"))
    label = "tiergate-2w / tiergate-1w RPS, non-stream c=64 (both cores shared with upstream and load)"
    if two is None or one is None or one == 0:
        return [Target(label, "n/a", "≥ 1.7×", "n/a")]
    return [Target(label, f"{two / one:.2f}×", "≥ 1.7×", "pass" if two / one >= 1.7 else "FAIL")]


def target_rows(targets: Sequence[Target]) -> list[str]:
    """Markdown rows of a | target | measured | goal | verdict | table."""
    return [f"| {t.label} | {t.value} | {t.goal} | {t.verdict} |" for t in targets]


def targets_section(table: Table) -> list[str]:
    """The markdown 'targets' section, with the passthroughs' own figures as the floor."""
    header = ["| target | measured | goal | verdict |", "|---|---|---|---|"]
    lines = ["## targets", "", *header]
    for subject in ("tiergate", "tiergate-noledger"):
        lines += target_rows(peer_targets(table, subject) + direct_targets(table, subject))
    lines += target_rows(untagged_targets(table))
    lines += target_rows(cache_targets(table))
    lines += target_rows(observability_targets(table))
    lines += target_rows(workers_targets(table))
    lines += [
        "",
        (
            "The floor: the same latency targets for the bare passthroughs, i.e. what the web "
            "framework and HTTP client alone cost on this machine."
        ),
        "",
        *header,
    ]
    for subject in (name for name in table["ns-c1"] if name.startswith("pt-")):
        lines += target_rows(direct_targets(table, subject))
    return lines + [""]


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def package_versions(names: Sequence[str]) -> str:
    """``name version`` pairs of installed packages of the dev venv."""
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def _git(*args: str) -> str:
    """Output of a git command in the repo, or '' when it fails."""
    done = subprocess.run(["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def working_tree_state() -> str:
    """The repo's HEAD commit and whether the proxy's sources differ from it."""
    head = _git("rev-parse", "--short", "HEAD") or "no commit"
    dirty = _git("status", "--porcelain", "--", "proxy", "pyproject.toml")
    return f"working tree at {head}{' + uncommitted changes in proxy/' if dirty else ''}"


def export_tiergate(ref: str, raw_dir: Path) -> tuple[Path, str]:
    """Export ``proxy/`` at git ``ref`` into the raw directory; return it and a description."""
    sha = _git("rev-parse", "--short", f"{ref}^{{commit}}")
    if not sha:
        raise SystemExit(f"--tiergate-ref {ref!r} is not a commit of {REPO_DIR}")
    target = raw_dir / f"tiergate-{sha}"
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_DIR), "archive", "--format=tar", sha, "proxy"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    changed = _git("log", "-1", "--format=%h", sha, "--", "proxy") or "?"
    return target, f"proxy/ as of commit {changed} (--tiergate-ref {ref}; working tree not used)"


def litellm_version() -> str | None:
    """The litellm version in bench/.venv-litellm, if installed."""
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout.strip() or None


def machine_facts(settings: Settings, started: dt.datetime, elapsed_s: float) -> list[str]:
    """The report's first list items, whatever the mode: date, machine, versions, source, command."""
    versions = package_versions(
        ["starlette", "uvicorn", "uvloop", "httptools", "httpx", "httpcore", "httpx-aiohttp", "aiohttp", "tiergate"]
    )
    return [
        f"- date: {started.strftime('%Y-%m-%d %H:%M UTC')} (run took {elapsed_s / 60:.1f} min)",
        f"- machine: nproc {os.cpu_count()}, CPU {cpu_model()}, kernel {platform.release()}",
        f"- Python {platform.python_version()}; {versions}",
        f"- tiergate source: {settings.tiergate_source}",
        f"- command: `{settings.command}`",
    ]


def pinning() -> str:
    """Whether the processes are pinned to their cores, for the report."""
    return "yes (taskset)" if pin(PROXY_CORE) else "no (taskset missing or < 2 CPUs)"


def machine_section(settings: Settings, started: dt.datetime, elapsed_s: float, used_litellm: bool) -> list[str]:
    """The markdown header: machine, command, settings, versions."""
    lines = [
        "# tiergate gateway benchmark",
        "",
        *machine_facts(settings, started, elapsed_s),
        f"- pinning: {pinning()}; proxy on core {PROXY_CORE}, upstream + load generator on core {LOAD_CORE}, "
        "except for the candidates marked 'share both cores' (none pinned while they run)",
        (
            f"- each cell: {settings.warmup_s:g} s warm-up, then min({settings.max_requests} requests, {settings.duration_s:g} s); "
            f"{settings.repeats} repeat(s), medians shown (errors summed over repeats)"
        ),
        "- streaming upstream pacing: 100 ms to first token, 20 content chunks 10 ms apart, usage chunk, [DONE]",
    ]
    version = litellm_version() if used_litellm else None
    if version:
        lines.append(f"- litellm {version} (bench/.venv-litellm), 1 worker, LITELLM_LOCAL_MODEL_COST_MAP=True")
    return lines + [""]


def candidate_status(results: Results, name: str) -> str:
    """'measured', or why the candidate was skipped or stopped early."""
    if name not in results.skipped:
        return "measured"
    verb = "stopped early" if name in results.reports else "skipped"
    return f"{verb}: {results.skipped[name].splitlines()[0]}"


def render(
    settings: Settings, results: Results, started: dt.datetime, elapsed_s: float, candidates: Sequence[Candidate]
) -> str:
    """The whole results.md."""
    table = rows_by_cell(results)
    lines = machine_section(settings, started, elapsed_s, "litellm" in results.reports)
    lines += ["## candidates", ""]
    for candidate in candidates:
        status = candidate_status(results, candidate.name)
        lines.append(f"- `{candidate.name}`: {candidate.description} — {status}")
        lines += [f"  - {note}" for note in results.notes.get(candidate.name, [])]
    lines += [
        "",
        "## results",
        "",
        (
            "CPU ms/req and RSS are the proxy process group's (user+sys over the measured phase / requests); "
            "`direct` has no proxy. Latencies are client-side, end of response. "
            "'other CPU %' is the worst, over repeats, CPU that processes outside the benchmark used during the "
            f"measured phase, in % of one core; a cell above {NOISY_SHARE:.0%} is re-run up to {NOISY_RETRIES} "
            "times and the quietest attempt kept."
        ),
        "",
    ]
    for cell in CELLS:
        lines += cell_table(cell, table[cell.key])
    lines += targets_section(table)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, shorter cells")
    parser.add_argument("--repeats", type=int, help="repeats per cell (default 3, --quick 1)")
    parser.add_argument("--only", help="comma-separated candidate names: " + ",".join(c.name for c in CANDIDATES))
    parser.add_argument("--skip-litellm", action="store_true", help="do not install or run LiteLLM")
    parser.add_argument(
        "--tiergate-ref", help="measure tiergate's proxy/ at this git commit instead of the working tree"
    )
    parser.add_argument("--duration", type=float, help="max seconds of each measured cell (default 5, --quick 2.5)")
    parser.add_argument("--requests", type=int, help="max requests of each measured cell (default 20000)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 1, --quick 0.5)")
    parser.add_argument(
        "--output", help="markdown report path (default bench/results.md, with --paired bench/results-paired.md)"
    )
    parser.add_argument(
        "--paired", metavar="A,B", help="paired mode (bench/paired.py): two candidates, ABBA slices of c=64 load"
    )
    parser.add_argument("--slices", type=int, default=16, help="paired mode: measured slices (even; default 16)")
    parser.add_argument("--slice-s", type=float, default=2.0, help="paired mode: seconds of each slice (default 2)")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace, argv: Sequence[str]) -> Settings:
    """Resolve defaults and create the raw output directory."""
    names = (
        tuple(n.strip() for n in args.only.split(",") if n.strip()) if args.only else tuple(c.name for c in CANDIDATES)
    )
    unknown = set(names) - {c.name for c in CANDIDATES}
    if unknown:
        raise SystemExit(f"unknown candidates: {', '.join(sorted(unknown))}")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    raw_dir = BENCH_DIR / "results-raw" / stamp
    raw_dir.mkdir(parents=True, exist_ok=True)
    tiergate_src, tiergate_source = (
        export_tiergate(args.tiergate_ref, raw_dir) if args.tiergate_ref else (None, working_tree_state())
    )
    return Settings(
        repeats=max(1, args.repeats or (1 if args.quick else 3)),
        warmup_s=args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0),
        duration_s=args.duration if args.duration is not None else (2.5 if args.quick else 5.0),
        max_requests=args.requests or (10000 if args.quick else 20000),
        only=names,
        skip_litellm=args.skip_litellm,
        tiergate_src=tiergate_src,
        tiergate_source=tiergate_source,
        raw_dir=raw_dir,
        output=Path(args.output or BENCH_DIR / ("results-paired.md" if args.paired else "results.md")),
        command=" ".join(["python bench/run.py", *argv]),
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def upstream_service(settings: Settings) -> Iterator[tuple[Service, int]]:
    """The fake upstream, pinned to the load core, healthy."""
    port = free_port()
    argv = [*pin(LOAD_CORE), settings.python, str(BENCH_DIR / "upstream.py"), "--port", str(port), *UPSTREAM_PACING]
    with Service("upstream", argv, {}, settings.raw_dir / "upstream.log") as service:
        service.wait_healthy(port, "/healthz", 10.0)
        yield service, port


def main(argv: Sequence[str] | None = None) -> int:
    """Run the whole benchmark; return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    if args.paired:
        # bench/paired.py builds on this module, so it is imported once this one is complete
        import paired

        pair = paired.candidates(args.paired, args.slices)  # a mistake exits before the raw directory is made
    settings = settings_from_args(args, argv)
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job may start with it ignored
        signal.signal(signum, _raise_interrupt)
    if args.paired:
        return paired.main(settings, pair, args.slices, args.slice_s)
    candidates = [c for c in CANDIDATES if c.name in settings.only]
    started = dt.datetime.now(dt.UTC)
    clock = time.monotonic()
    print(f"raw output: {settings.raw_dir}", flush=True)
    try:
        with upstream_service(settings) as (upstream, port):
            results = measure_all(Context(settings, port), candidates, upstream)
    except KeyboardInterrupt:
        print("interrupted; all processes stopped", file=sys.stderr)
        return 130
    markdown = render(settings, results, started, time.monotonic() - clock, candidates)
    (settings.raw_dir / "results.json").write_text(
        json.dumps({"reports": results.reports, "skipped": results.skipped}, indent=1)
    )
    settings.output.write_text(markdown)
    print("\n" + markdown)
    return 0


if __name__ == "__main__":
    # bench/paired.py imports this module as `run`: let that be this very module, not a second copy of it
    sys.modules.setdefault("run", sys.modules[__name__])
    raise SystemExit(main())
