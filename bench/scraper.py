"""Scrape ``GET /metrics`` every ``--interval`` seconds, as a Prometheus server would, for ``tiergate-scraped``.

Each scrape must answer 200 with Prometheus text; a count of good and failed scrapes and the last
body's size are printed when it is stopped (SIGTERM). Until the proxy is up, refused connections are
retried.

    python bench/scraper.py --url http://127.0.0.1:4000/metrics --key sk-bench --interval 1
"""

from __future__ import annotations

import argparse
import http.client
import signal
import sys
import time
from types import FrameType
from urllib.parse import urlsplit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    url = urlsplit(args.url)
    headers = {"authorization": f"Bearer {args.key}"} if args.key else {}
    counts = {"ok": 0, "failed": 0, "bytes": 0}

    def stop(signum: int, frame: FrameType | None) -> None:
        print(
            f"scraper: {counts['ok']} scrapes ok, {counts['failed']} failed, last {counts['bytes']} bytes", flush=True
        )
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        started = time.monotonic()
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
        try:
            conn.request("GET", url.path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status == 200 and body.startswith(b"# HELP"):
                counts["ok"] += 1
                counts["bytes"] = len(body)
            else:
                counts["failed"] += 1
        except ConnectionRefusedError:
            pass  # not up yet
        except OSError:
            counts["failed"] += 1
        finally:
            conn.close()
        time.sleep(max(args.interval - (time.monotonic() - started), 0.0))


if __name__ == "__main__":
    main()
