"""The serving process's interpreter set-up (proxy.runtime): start-up objects frozen, young collections
less often, a shorter switch interval, and only in a process tiergate owns. Each case runs in its own
interpreter: tuning this one would change the whole test run's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.runtime import SWITCH_INTERVAL_S, YOUNG_THRESHOLD

REPO = Path(__file__).resolve().parent.parent

_SCRIPT = """
import asyncio, gc, json, sys
from proxy.app import create_app
from proxy.settings import Settings

async def main():
    before = gc.get_threshold()
    app = create_app(Settings(config=sys.argv[1], db=sys.argv[2], tune_runtime=sys.argv[3] == "1", reload=False))
    async with app.router.lifespan_context(app):
        print(json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold(), "before": before,
                          "switch": sys.getswitchinterval()}))

asyncio.run(main())
"""


def _serving_runtime(tmp_path: Path, tuned: bool) -> dict[str, Any]:
    argv = [sys.executable, "-c", _SCRIPT, str(REPO / "examples" / "rules.fake.yaml"), str(tmp_path / "t.db")]
    done = subprocess.run([*argv, "1" if tuned else "0"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("tuned", [True, False])
def test_serving_freezes_start_up_objects_only_when_tiergate_owns_the_process(tmp_path: Path, tuned: bool) -> None:
    seen = _serving_runtime(tmp_path, tuned)
    before, threshold, frozen = seen["before"], seen["threshold"], seen["frozen"]
    assert isinstance(before, list) and isinstance(threshold, list) and isinstance(frozen, int)
    if tuned:
        # what start-up built (modules, the registry, price tables) is out of every collection's walk
        assert frozen > 10_000
        assert threshold == [YOUNG_THRESHOLD, *before[1:]]
        assert seen["switch"] == SWITCH_INTERVAL_S
    else:
        assert frozen == 0
        assert threshold == before
        assert seen["switch"] == 0.005  # CPython's default
