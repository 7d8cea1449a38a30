"""Memory over a long run: tiergate's RSS before, and after each of N runs of M requests.

    .venv/bin/python bench/soak.py                      # 2 runs x 50,000 requests, c=64, ledger on
    .venv/bin/python bench/soak.py --runs 3 --requests 20000 --no-ledger

One tiergate process serves every run (the question is whether its memory grows with traffic), pinned
like bench/run.py: proxy on core 0, the fake upstream and the load generator on core 1. At the end it
checks the ledger holds one row per request.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# bench/run.py: this file runs as a script, so its directory is on sys.path
from run import BENCH_DIR, CHAT_PATH, HOST, LOAD_CORE, PROXY_CORE, UPSTREAM_KEY, Service, free_port, pin


def rss_mb(pid: int) -> float:
    """The resident set size of one process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _load(port: int, concurrency: int, requests: int) -> dict[str, Any]:
    argv = [*pin(LOAD_CORE), sys.executable, str(BENCH_DIR / "load.py"), "--url", f"http://{HOST}:{port}{CHAT_PATH}"]
    argv += ["-c", str(concurrency), "-n", str(requests), "-d", "900", "--warmup", "0"]
    argv += ["--header", "X-Task-Type: summary", "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=960, check=True)
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def soak(runs: int, requests: int, concurrency: int, ledger: bool) -> int:
    """Run the soak; print one line per run; 0 when every request succeeded and was recorded."""
    python = sys.executable
    tiergate = str(Path(python).parent / "tiergate")
    with tempfile.TemporaryDirectory(prefix="tiergate-soak-") as tmp:
        raw = Path(tmp)
        up_port, proxy_port = free_port(), free_port()
        upstream_argv = [*pin(LOAD_CORE), python, str(BENCH_DIR / "upstream.py"), "--port", str(up_port)]
        proxy_argv = [*pin(PROXY_CORE), tiergate, "serve", "--config", str(BENCH_DIR / "rules.yaml")]
        proxy_argv += [
            "--host",
            HOST,
            "--port",
            str(proxy_port),
            "--db",
            str(raw / "soak.db"),
            "--log-level",
            "warning",
        ]
        if not ledger:
            proxy_argv.append("--no-ledger")
        env = {"OPENAI_BASE_URL": f"http://{HOST}:{up_port}/v1", "OPENAI_API_KEY": UPSTREAM_KEY}
        with Service("upstream", upstream_argv, {}, raw / "upstream.log") as upstream:
            upstream.wait_healthy(up_port, "/healthz", 10.0)
            with Service("tiergate", proxy_argv, env, raw / "tiergate.log") as proxy:
                proxy.wait_healthy(proxy_port, "/healthz", 15.0)
                # taskset execs the binary, so the service's pid is tiergate's own
                print(f"start: RSS {rss_mb(proxy.pid):.1f} MB")
                total_ok = 0
                for run in range(1, runs + 1):
                    report = _load(proxy_port, concurrency, requests)
                    total_ok += report["requests"] - report["errors"]
                    time.sleep(1.0)  # let the ledger writer drain
                    print(
                        f"run {run}: {report['requests']} requests, {report['errors']} errors, "
                        f"{report['rps']:.0f} RPS, RSS {rss_mb(proxy.pid):.1f} MB"
                    )
            if not ledger:
                return 0
            rows = sqlite3.connect(raw / "soak.db").execute("SELECT count(*) FROM requests").fetchone()[0]
            print(f"ledger rows: {rows} for {total_ok} successful requests")
            return 0 if rows == total_ok == runs * requests else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    parser.add_argument("--no-ledger", dest="ledger", action="store_false")
    args = parser.parse_args(argv)
    return soak(args.runs, args.requests, args.concurrency, args.ledger)


if __name__ == "__main__":
    raise SystemExit(main())
