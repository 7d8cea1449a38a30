"""Shared by the client programs of bench/clients: where tiergate listens, and one JSON line per cell.

Each program runs its capabilities in order and prints ``{"client", "cap", "status", "error"}`` per
capability; run.py collects them into the matrix. A capability that raises is a FAIL with its one-line error.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

BASE = os.environ["TIERGATE_URL"] + "/v1"  # tiergate serve, e.g. http://127.0.0.1:40123/v1
KEY = "anything"  # tiergate on the fakes takes any key
ASK = "Summarize: cron jobs move to a queue"


class Ticket(BaseModel):
    """The structured-output answer every client is asked for."""

    title: str
    priority: int
    urgent: bool


WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
TICKET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "priority": {"type": "integer"}, "urgent": {"type": "boolean"}},
    "required": ["title", "priority", "urgent"],
    "additionalProperties": False,
}


def headers(task: str) -> dict[str, str]:
    return {"X-Task-Type": task}


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def fake_text(text: str | None, model: str = "") -> None:
    """The fakes answer text that starts 'Fake reply from MODEL:' (or 'Fake Claude reply from')."""
    expect(bool(text) and "Fake" in (text or "") and model in (text or ""), f"unexpected text {text!r}")


def run(client: str, cells: list[tuple[str, Callable[[], None]]]) -> None:
    for cap, body in cells:
        try:
            body()
            status, error = "ok", ""
        except Exception as exc:  # noqa: BLE001 - every failure is a cell's FAIL
            status = "FAIL"
            error = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
            if os.environ.get("BENCH_TRACE"):
                traceback.print_exc()
        print(json.dumps({"client": client, "cap": cap, "status": status, "error": error}), flush=True)
    sys.stdout.flush()
