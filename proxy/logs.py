"""Logging for ``tiergate serve``: tiergate's own loggers at the chosen level, libraries kept quiet.

At ``debug`` aiosqlite logs every statement with its parameters (a request's 5 MB ``user`` became a
10 MB log line) and httpx/httpcore log every connection event; they stay at WARNING unless
``--log-level trace`` asks for everything.
"""

from __future__ import annotations

import logging

_CHATTY = ("aiosqlite", "httpx", "httpcore", "hpack", "asyncio", "watchfiles", "multipart", "urllib3")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str) -> None:
    """Root logging at ``level`` (``trace`` means debug, libraries included)."""
    everything = level.lower() == "trace"
    numeric = logging.DEBUG if everything else getattr(logging, level.upper())
    logging.basicConfig(level=numeric, format=FORMAT)
    logging.getLogger().setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(numeric if everything else max(numeric, logging.WARNING))
