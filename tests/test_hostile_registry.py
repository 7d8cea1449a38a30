"""Broken and hostile registries: each is one line naming where it is wrong, quickly and in bounded memory.

``tiergate check`` runs as a subprocess (the console entry point a user types), so a traceback, a hang
or a blown recursion limit would show here as they would for the user. Resource use is bounded with
``resource.setrlimit`` in the child (address space and CPU seconds), not measured with a clock.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RULES

_BOMB = "\n".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]"] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
)


def _limits() -> None:
    # 1 s of CPU (2 s hard) and 400 MB of address space (the interpreter and its imports take ~250 MB):
    # "within 1 s and 100 MB" of work beyond start-up, enforced by the kernel.
    resource.setrlimit(resource.RLIMIT_CPU, (2, 3))
    resource.setrlimit(resource.RLIMIT_AS, (400 * 2**20, 400 * 2**20))


def _check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limits,
    )


_VALID = RULES.read_text()


def _line_of(text: str) -> int:
    """The 1-based line of rules.yaml that holds ``text``."""
    return next(i for i, line in enumerate(_VALID.splitlines(), 1) if text in line)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_BOMB, "tiergate: l5[0]: expands to more than 100,000 values (aliases nested in aliases?)"),
        ("x: " + "[" * 5000 + "]" * 5000, "tiergate: x[0][0][0][0][0][0][0]...: nested deeper than 32 levels"),
        ("a: &a [*a]\n", "tiergate: a[0]: an alias refers to the value that contains it"),
        (
            _VALID + "\nversion: 1\n",
            f"tiergate: version: duplicate key (line {len(_VALID.splitlines()) + 2}): each key may appear once",
        ),
        (
            _VALID.replace("  retries: 1 ", "  retries: 1\n  retries: 2\n  "),
            f"tiergate: policy.retries: duplicate key (line {_line_of('  retries: 1 ') + 1}): each key may appear once",
        ),
        (
            _VALID.replace("${OPENAI_API_KEY:-}", "${OPENAI_API_KEY"),
            "tiergate: providers.openai.api_key: a '${' with no matching '}' or a bad variable name"
            " (write ${NAME} or ${NAME:-default})",
        ),
        (_VALID.replace("deadline_s: 180", "deadline_s: .nan"), "tiergate: policy.deadline_s: expected a finite number"),
        (_VALID.replace("deadline_s: 180", "deadline_s: .inf"), "tiergate: policy.deadline_s: expected a finite number"),
        (_VALID.replace("deadline_s: 180", "deadline_s: -1"), "tiergate: policy.deadline_s: expected a positive number"),
        (
            _VALID.replace("first_byte_s: 60,", "first_byte_s: -.inf,"),
            "tiergate: policy.timeouts.first_byte_s: expected a finite number",
        ),
        (_VALID + "prices: {gpt-4o: {input: .nan, output: 1}}\n", "tiergate: prices.gpt-4o.input: expected a finite"),
        (_VALID + "prices: {gpt-4o: {input: 1.0e+999, output: 1}}\n", "tiergate: prices.gpt-4o.input: expected a finite"),
    ],
    ids=["alias-bomb", "deep-nesting", "self-alias", "dup-top", "dup-nested", "unclosed-env", "nan", "inf",
         "negative", "neg-inf", "nan-price", "huge-price"],
)  # fmt: skip
def test_a_hostile_registry_is_one_line_naming_the_path(tmp_path: Path, text: str, expected: str) -> None:
    done = _check(tmp_path, text)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(expected), line
