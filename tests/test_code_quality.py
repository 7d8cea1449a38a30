"""The code stays typed and tidy: mypy --strict on proxy/, ruff's lint and format rules everywhere, and
the import graph keeps the contracts in pyproject.toml (lint-imports).

Run as tests so `.ci/run` (the README's one test command) enforces them like any other behaviour.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it is part of the test extra (pip install -e '.[test]')")
    return found


def test_mypy_strict_is_clean() -> None:
    done = subprocess.run([_tool("mypy"), "proxy"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(args: list[str]) -> None:
    done = subprocess.run([_tool("ruff"), *args, "proxy", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_graph_keeps_its_contracts() -> None:
    # pyproject.toml [tool.importlinter]: no cycles, no dispatch -> ledger, no config -> adapters, ...
    done = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
