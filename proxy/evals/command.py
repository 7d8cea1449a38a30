"""``tiergate eval TASK`` and ``tiergate eval --gate CANDIDATE.yaml``: load, build, run, render.

A user mistake (a bad flag, an unknown task, tier or provider, a bad golden set, an unusable ledger
file) raises ``ValueError`` or ``ConfigError``: one line and exit code 2 from the CLI. Otherwise the exit
code is the verdict's: 0 pass, 1 fail.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from proxy import rules
from proxy.errors import ConfigError
from proxy.evals import candidates, golden
from proxy.evals.gate import gate
from proxy.evals.report import table
from proxy.evals.runner import Options, Progress, evaluate
from proxy.loopback import ServerStartError

T = TypeVar("T")

FORMATS = ("table", "json")


def run_eval(
    task: str | None,
    *,
    config: str,
    evals: str,
    db: str,
    tier: str | None = None,
    model: str | None = None,
    concurrency: int = 4,
    limit: int | None = None,
    repeats: int | None = None,
    fresh: bool = False,
    fmt: str = "table",
) -> tuple[int, str]:
    """Run one task's eval as the CLI does; ``(exit code, what to print on stdout)``."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if not task:
        raise ValueError("eval: name the TASK whose golden set to run (tiergate eval TASK)")
    if tier is not None and model is not None:
        raise ValueError("--tier and --model name two candidates: give one")
    options = Options(concurrency=concurrency, limit=limit, repeats=repeats, fresh=fresh)
    current = rules.load(config)
    if task not in current.tasks:
        raise ValueError(f"{task!r} is not a task of {config} (tasks: {', '.join(current.tasks)})")
    folder = Path(evals) / task
    if not folder.is_dir():
        raise ConfigError(str(folder), f"no golden set for {task!r} (write {golden.EVAL_FILE} and {golden.CASES_FILE})")
    cases = golden.load(folder)
    candidate = current
    if tier is not None:
        candidate = candidates.with_tier(current, task, tier)
    elif model is not None:
        candidate = candidates.with_model(current, task, model)
    with _progress_bar() as progress:
        run = evaluate(cases, candidate, current_registry=current, db=db, options=options, progress=progress)
        report = asyncio.run(_guarded(run, db))
    text = json.dumps(report.to_json(), indent=2) + "\n" if fmt == "json" else table(report)
    return report.exit_code, text


def run_gate(
    candidate_path: str,
    *,
    config: str,
    evals: str,
    db: str,
    concurrency: int = 4,
    limit: int | None = None,
    repeats: int | None = None,
    fresh: bool = False,
    fmt: str = "table",
) -> tuple[int, str]:
    """The gate as the CLI runs it: every task ``candidate_path`` changes against ``config``, evaluated."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    options = Options(concurrency=concurrency, limit=limit, repeats=repeats, fresh=fresh)
    current, candidate = rules.load(config), rules.load(candidate_path)
    with _progress_bar() as progress:
        checked = asyncio.run(_guarded(gate(current, candidate, evals, db=db, options=options, progress=progress), db))
    text = json.dumps(checked.to_json(), indent=2) + "\n" if fmt == "json" else checked.table()
    return checked.exit_code, text


async def _guarded(run: Awaitable[T], db: str) -> T:
    """``run``, with its environment's failures (the ledger file, the in-process server) as one-line errors."""
    try:
        return await run
    except sqlite3.Error as exc:
        raise ValueError(f"--db: cannot use the ledger {db}: {exc}") from None
    except ServerStartError as exc:
        raise ValueError(f"cannot start tiergate in-process for the eval: {exc}") from None


@contextmanager
def _progress_bar() -> Iterator[Progress]:
    """A tqdm bar on stderr (only on a terminal: logs and pipes get none), fed cases x repeats x sides."""
    from tqdm import tqdm

    bar = tqdm(file=sys.stderr, unit="answer", desc="eval", disable=None, leave=False)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        bar.close()
