"""Time `tiergate audit` on a big ledger: every grouping, --since, --what-if, --recommend, --classifier.

    .venv/bin/python bench/ledger_gen.py --rows 10000000 --db /tmp/ledger-10m.db
    flock /tmp/tiergate-bench.lock .venv/bin/python bench/audit.py --db /tmp/ledger-10m.db
    .venv/bin/python bench/audit.py --db /tmp/ledger-1m.db --ref 582a6f7 --only by-task,what-if   # the old audit

Each command is the real CLI (``python -m proxy.cli audit ...``) in its own process, run ``--repeats``
times; it reports the median wall-clock seconds and the largest peak RSS (``ru_maxrss`` of that child,
from ``os.wait4``), and checks the command exited 0. The first run of each command is as warm or cold
as the page cache happens to be; the ledger is read once beforehand (``cat > /dev/null``) so that every
command starts with the file in the page cache, as on a machine that has been serving it.

``--ref`` runs ``proxy/`` as of a git commit instead of the working tree (exported with ``git archive``
and put first on PYTHONPATH): the way to time the audit as it was before it moved into SQL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RULES = BENCH / "ledger_rules.yaml"


def commands(db: str, candidate: str, last_day: str, week_ago: str) -> dict[str, list[str]]:
    """Name -> the audit's arguments, for the ledger ``db``."""
    base = ["audit", "--db", db]
    return {
        **{f"by-{by}": [*base, "--by", by] for by in ("task", "tier", "model", "provider", "day")},
        "by-task-json": [*base, "--format", "json"],
        "since-1d": [*base, "--since", last_day],
        "since-7d": [*base, "--since", week_ago],
        "include-eval": [*base, "--include-eval"],
        "what-if": [*base, "--what-if", candidate],
        "recommend": [*base, "--recommend", "--config", str(RULES)],
        "classifier": [*base, "--classifier"],
    }


def run_once(argv: list[str], pythonpath: str | None, cwd: str) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one ``python -m proxy.cli`` run of ``argv``, in ``cwd`` (not the
    repository: ``-m`` puts the current directory first on sys.path, ahead of PYTHONPATH)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd
    )
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode() if child.stderr else ""
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {child.returncode}: {err.strip()}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def export(ref: str, into: Path) -> str:
    """``proxy/`` as of ``ref``, unpacked into ``into``; returns the directory to put on PYTHONPATH."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref, "proxy"], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"--ref {ref}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return str(into)


def candidate_file(into: Path) -> str:
    """bench/ledger_rules.yaml with summary moved from mid to small and agent from frontier to mid."""
    text = (
        RULES.read_text()
        .replace("summary: {tier: mid,", "summary: {tier: small,")
        .replace("  agent: frontier", "  agent: mid")
    )
    path = into / "candidate.yaml"
    path.write_text(text)
    return str(path)


def ledger_days(db: str) -> tuple[str, str, int]:
    """The last day's start, the start of the week before it, and the number of requests rows."""
    conn = sqlite3.connect(Path(db).absolute().as_uri() + "?mode=ro", uri=True)
    try:
        (last,) = conn.execute("SELECT max(ts) FROM requests").fetchone()
        (rows,) = conn.execute("SELECT count(*) FROM requests").fetchone()
    finally:
        conn.close()
    day = dt.date.fromisoformat(str(last)[:10])
    return day.isoformat(), (day - dt.timedelta(days=7)).isoformat(), int(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", help="comma-separated command names (default: all)")
    parser.add_argument("--ref", help="time proxy/ as of this git commit instead of the working tree")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pythonpath = export(args.ref, Path(tmp)) if args.ref else None
        db = str(Path(args.db).absolute())
        last_day, week_ago, rows = ledger_days(db)
        todo = commands(db, candidate_file(Path(tmp)), last_day, week_ago)
        if args.only:
            todo = {name: todo[name] for name in args.only.split(",")}
        subprocess.run(f"cat {args.db}* > /dev/null", shell=True, check=True)  # into the page cache
        size = sum(p.stat().st_size for p in Path(args.db).parent.glob(Path(args.db).name + "*")) / 2**30
        print(f"{rows:,} requests rows, {size:.2f} GiB; proxy/ from {args.ref or 'the working tree'}")
        print(f"{'command':<14} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS MiB':>13}")
        results = {}
        for name, argv_ in todo.items():
            times, peaks = zip(*(run_once(argv_, pythonpath, tmp) for _ in range(args.repeats)), strict=True)
            results[name] = {"seconds": statistics.median(times), "min": min(times), "max": max(times),
                             "peak_rss_mib": max(peaks), "argv": argv_}  # fmt: skip
            print(
                f"{name:<14} {statistics.median(times):>9.2f} {min(times):>7.2f} {max(times):>7.2f} {max(peaks):>13.0f}"
            )
    if args.json:
        print(json.dumps({"rows": rows, "ref": args.ref, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
