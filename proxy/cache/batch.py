"""``tiergate precompute FILE.jsonl``: post a batch of generations to a running tiergate.

One JSON object per line::

    {"key": "dashboard:42:narrative", "version": "2026-12-01", "task": "narrative",
     "body": {"model": "auto", "messages": [...]}, "headers": {"X-Other": "..."}}

``body`` is exactly the chat completion request the page will later send; ``key`` (or an
``X-Tiergate-Key`` in ``headers``) names the generation, ``version`` the data it is made from, ``task``
its ``X-Task-Type``. Each line is one ``POST /v1/precompute``; a full queue (429) is waited out as its
``retry-after`` says. ``wait`` then follows each key until it is ready or failed. A bad line is reported
with its number and the rest of the batch still goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import orjson
from tqdm import tqdm

RETRIES_ON_FULL = 8
MAX_RETRY_WAIT_S = 30.0
POLL_S = 0.2
MAX_POLLS = 3000  # 10 minutes of polling one key, then it counts as failed


@dataclass(frozen=True)
class Job:
    line: int
    key: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Outcome:
    posted: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)  # (line, why)
    ready: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (key, error)

    @property
    def ok(self) -> bool:
        return not self.refused and not self.failed


def parse(lines: Iterator[str]) -> tuple[list[Job], list[tuple[int, str]]]:
    """The batch's jobs, and the lines that are not one (line number, why)."""
    jobs, bad = [], []
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            jobs.append(_job(n, orjson.loads(text)))
        except orjson.JSONDecodeError as exc:
            bad.append((n, f"not JSON ({exc})"))
        except ValueError as exc:
            bad.append((n, str(exc)))
    return jobs, bad


def _job(n: int, raw: Any) -> Job:
    if not isinstance(raw, dict):
        raise ValueError("expected a JSON object with a 'body'")
    body, extra = raw.get("body"), raw.get("headers") or {}
    if not isinstance(body, dict):
        raise ValueError("'body' must be the chat completion request (a JSON object)")
    if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
        raise ValueError("'headers' must map names to strings")
    headers = {k.lower(): v for k, v in extra.items()}
    for name, header in (("key", "x-tiergate-key"), ("version", "x-tiergate-version"), ("task", "x-task-type")):
        value = raw.get(name)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise ValueError(f"'{name}' must be a non-empty string")
            headers[header] = value
    if "x-tiergate-key" not in headers:
        raise ValueError("no 'key' (or X-Tiergate-Key header): a precomputed generation needs a name")
    return Job(n, headers["x-tiergate-key"], headers, body)


async def run(
    jobs: list[Job],
    url: str,
    api_key: str | None,
    *,
    concurrency: int = 8,
    wait: bool = False,
    progress: TextIO | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Outcome:
    """Post ``jobs`` to the tiergate at ``url``; with ``wait``, follow them until each is ready or failed."""
    outcome = Outcome()
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0, transport=transport) as http:
        with tqdm(total=len(jobs), desc="posted", unit="gen", file=progress, disable=progress is None) as bar:

            async def post(job: Job) -> None:
                async with limit:
                    why = await _post(http, job, sleep)
                if why is None:
                    outcome.posted += 1
                else:
                    outcome.refused.append((job.line, why))
                bar.update()

            await asyncio.gather(*(post(job) for job in jobs))
        if wait:
            refused = {line for line, _ in outcome.refused}
            keys = list(dict.fromkeys(job.key for job in jobs if job.line not in refused))
            with tqdm(total=len(keys), desc="ready", unit="gen", file=progress, disable=progress is None) as bar:

                async def follow(key: str) -> None:
                    async with limit:
                        status = await _settled(http, key, sleep)
                    if status.get("status") == "ready":
                        outcome.ready += 1
                    else:
                        outcome.failed.append((key, str(status.get("error") or status.get("status"))))
                    bar.update()

                await asyncio.gather(*(follow(key) for key in keys))
    outcome.refused.sort()
    return outcome


async def _post(http: httpx.AsyncClient, job: Job, sleep: Callable[[float], Awaitable[None]]) -> str | None:
    """Post one job; ``None`` when queued, else why not (a full queue is waited out a few times)."""
    for _ in range(RETRIES_ON_FULL):
        try:
            r = await http.post("/v1/precompute", content=orjson.dumps(job.body), headers=job.headers)
        except httpx.HTTPError as exc:
            return f"cannot reach tiergate: {exc}"
        if r.status_code == 202:
            return None
        if r.status_code != 429:
            return f"HTTP {r.status_code}: {_message(r)}"
        await sleep(_retry_after(r))
    return "the generation queue stayed full"


async def _settled(http: httpx.AsyncClient, key: str, sleep: Callable[[float], Awaitable[None]]) -> dict[str, Any]:
    for _ in range(MAX_POLLS):
        r = await http.get(f"/v1/precompute/{key}")
        if r.status_code != 200:
            return {"status": "failed", "error": f"HTTP {r.status_code}: {_message(r)}"}
        status: dict[str, Any] = r.json()
        if status.get("status") in ("ready", "failed"):
            return status
        await sleep(POLL_S)
    return {"status": "failed", "error": f"still not ready after {MAX_POLLS * POLL_S:.0f} s"}


def _retry_after(r: httpx.Response) -> float:
    try:
        return min(max(float(r.headers.get("retry-after", "1")), 0.0), MAX_RETRY_WAIT_S)
    except ValueError:
        return 1.0


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return r.text[:200]


def summary(outcome: Outcome, total: int, url: str, *, waited: bool) -> str:
    lines = [f"posted {outcome.posted} of {total} generations to {url}"]
    lines += [f"  line {line}: {why}" for line, why in outcome.refused]
    if waited:
        lines.append(f"ready {outcome.ready}, failed {len(outcome.failed)}")
        lines += [f"  {key}: {error}" for key, error in outcome.failed]
    return "\n".join(lines) + "\n"
